"""The invariants, as pure functions of what the harness did and what the world recorded.

- never two runs of one resource's script at once (the scripts' flock detector);
- never a teardown of a resource declared in every desired state the system could have read between
  the moment before its job was queued and the moment the script started (a replace excepted);
- a row is `deleted` only after a teardown of it exited 0;
- a forgotten resource's teardown never runs (after the `forget` that succeeded);
- nothing lost: a script run that exited 0 has its job's outcome in the history, unless the process
  that ran it was killed (kill -9) or the job was taken over and run again;
- no limit exceeded without a recorded override: a job that brings a resource into an owner's quota
  bucket (a create, or a change of owner) never makes the owner's resources exceed the loosest
  per-owner quota of the policies in force around it, unless its `queued` event records an override;
- a suspended resource is never touched: no run of it starts while it (or the fleet) is suspended,
  except of a job claimed before the suspension (a running job finishes);
- no wave starts before the previous one baked: a rollout's wave k is queued only after every job of wave
  k-1 finished and `bake` after the last of them succeeded (issue 17);
- convergence (checked once the faults stop, see `convergence_gaps`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .observe import Records, Run, Snapshot, WaveJob, iso_seconds

# How long before a job's creation the pass that queued it may have read desired/ (a pass on a busy
# 2-core machine: load, plan, queue); the window only widens what counts as a legitimate read.
READ_SLACK = 3.0
# How long after a script exits its worker may take to record it (a store outage included).
RECORD_SLACK = 20.0
# How long after a claim made just before a suspension its script may take to start (the start gate).
SUSPEND_SLACK = 3.0


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A policy.yaml the harness made visible at `at`: its per-owner quota (None: no limit)."""

    at: float
    per_owner: int | None
    what: str


@dataclass(frozen=True, slots=True)
class Version:
    """A desired state the harness made visible at `at` (files and API declarations together)."""

    at: float
    declared: frozenset[str]
    what: str


@dataclass(frozen=True, slots=True)
class Held:
    """A suspension the harness set: one resource's (or, with None, the fleet's), from `start` until `end`."""

    key: int
    resource_id: str | None
    start: float
    end: float | None = None  # None: still in force


def touched_while_suspended(records: Records, snap: Snapshot, held: Iterable[Held]) -> list[Violation]:
    """Runs that started inside a suspension's window, of a job queued or claimed inside it."""
    found = []
    for window in held:
        end = window.end if window.end is not None else snap.at
        for run in records.runs:
            inside = window.start + SUSPEND_SLACK < run.started < end
            if window.resource_id not in (None, run.resource_id) or not inside:
                continue
            job = snap.jobs.get(run.job_id)
            if job is None:
                continue
            queued, claimed = iso_seconds(job["created_at"]), iso_seconds(job.get("started_at"))
            if (queued and queued > window.start) or (claimed and window.start < claimed < end):
                what = "the fleet" if window.resource_id is None else window.resource_id
                found.append(Violation("touched while suspended", (
                    f"{run.resource_id} {run.action} (job {run.job_id}, pid {run.pid}) started {run.started:.3f} "
                    f"while {what} was suspended ({_window(window)}); job queued {queued}, "
                    f"claimed {claimed}")))
    return found


def _window(held: Held) -> str:
    # an open window is named without its moving end, so each violation is reported once
    return f"{held.start:.3f} to {held.end:.3f}" if held.end is not None else f"since {held.start:.3f}"


def overlaps(records: Records) -> list[Violation]:
    """One violation per resource: how many runs found its lock taken, and the first of them."""
    by_resource: dict[str, list[str]] = {}
    for line in records.overlaps:
        by_resource.setdefault(line.split()[2], []).append(line)
    return [Violation("overlap", f"{rid}: {len(lines)} run(s) started while another run of it held its lock; "
                      f"first: {lines[0]}") for rid, lines in sorted(by_resource.items())]


def visible(versions: list[Version], *, start: float, end: float) -> list[Version]:
    """Every version in force at some moment of [start, end]."""
    before = [v for v in versions if v.at <= start]
    return ([before[-1]] if before else []) + [v for v in versions if start < v.at <= end]


def unwarranted_teardowns(records: Records, snap: Snapshot, versions: list[Version]) -> list[Violation]:
    found = []
    for run in records.runs:
        job = snap.jobs.get(run.job_id) if run.teardown else None
        if job is None or job["action"] == "replace":
            continue
        queued = iso_seconds(job["created_at"]) or run.started
        states = visible(versions, start=queued - READ_SLACK, end=run.started)
        if states and all(run.resource_id in state.declared for state in states):
            found.append(Violation("unwarranted teardown", (
                f"{run.resource_id} torn down (job {run.job_id}, script pid {run.pid}, started {run.started:.3f}) "
                f"although every desired state visible since {queued - READ_SLACK:.3f} declared it: "
                + "; ".join(f"{state.what} @{state.at:.3f}" for state in states[-4:]))))
    return found


def forgotten_teardowns(records: Records, forgotten: dict[str, float]) -> list[Violation]:
    """`forgotten`: id → when the `forget` that succeeded started; no teardown of it may start after that."""
    return [Violation("forgotten resource torn down",
                      f"{run.resource_id} forgotten at {forgotten[run.resource_id]:.3f}, teardown started "
                      f"{run.started:.3f} (job {run.job_id}, pid {run.pid})")
            for run in records.runs if run.teardown and run.resource_id in forgotten
            and run.started > forgotten[run.resource_id]]


def deleted_without_teardown(records: Records, snap: Snapshot) -> list[Violation]:
    done = {run.resource_id for run in records.runs
            if run.teardown and run.completed and run.ended is not None and run.ended <= snap.at}
    return [Violation("deleted before its teardown succeeded", f"{rid} is deleted, no teardown of it exited 0")
            for rid, row in snap.resources.items() if row["status"] == "deleted" and rid not in done]


def lost_runs(records: Records, snap: Snapshot, *, killed: Iterable[int]) -> list[Violation]:
    killed_pids = set(killed)
    rerun = _rerun_jobs(records.runs)
    found = []
    for run in records.runs:
        if not run.completed or run.ended is None or run.ended > snap.at - RECORD_SLACK:
            continue
        if run.worker in killed_pids or (run.job_id, run.pid) in rerun:
            continue
        job = snap.jobs.get(run.job_id)
        kinds = snap.event_jobs.get(run.job_id, set())
        wanted = {"succeeded", "failed"} if job is not None and job["action"] == "replace" else {"succeeded"}
        if not kinds & wanted:
            found.append(Violation("completed run not recorded", (
                f"{run.resource_id} {run.action} (job {run.job_id}, pid {run.pid}, worker {run.worker}) exited 0 "
                f"at {run.ended:.3f}; job is {job['status'] if job else 'missing'}, events {sorted(kinds)}")))
    return found


def _rerun_jobs(runs: list[Run]) -> set[tuple[str, int]]:
    """(job, pid) of runs after which the same job was started again by someone (a takeover)."""
    by_job: dict[tuple[str, str], list[Run]] = {}
    for run in runs:  # sorted by start
        by_job.setdefault((run.job_id, run.action), []).append(run)
    return {(run.job_id, run.pid) for group in by_job.values() for run in group[:-1]}


def convergence_gaps(records: Records, snap: Snapshot, *, desired: dict[str, tuple[str, str]],
                     ever: set[str], open_scripts: int, forgotten: frozenset[str] = frozenset()) -> list[str]:
    """What still differs from desired: [] when converged. `desired`: id → (deploy_ref, region); a forgotten
    id stays `forgotten`."""
    gaps = []
    last_ok = _last_completed(records.runs)
    for rid, (ref, region) in sorted(desired.items()):
        row = snap.resources.get(rid)
        last = last_ok.get(rid)
        if row is None or row["status"] != "active":
            gaps.append(f"{rid}: {row['status'] if row else 'no row'}, want active")
        elif (row["deploy_ref"], row["region"]) != (ref, region):
            gaps.append(f"{rid}: row has {row['deploy_ref']}/{row['region']}, want {ref}/{region}")
        elif last is None or last.teardown or (last.deploy_ref, last.region) != (ref, region):
            gaps.append(f"{rid}: last completed run {last and (last.action, last.deploy_ref, last.region)}")
        elif row["url"] != last.url:
            gaps.append(f"{rid}: url {row['url']} is not the last provision's {last.url}")
    for rid in sorted(forgotten):
        row = snap.resources.get(rid)
        if row is None or row["status"] != "forgotten":
            gaps.append(f"{rid}: {row['status'] if row else 'no row'}, want forgotten")
    for rid in sorted(ever - set(desired) - forgotten):
        row = snap.resources.get(rid)
        if row is not None and row["status"] != "deleted":
            gaps.append(f"{rid}: {row['status']}, want deleted (removed from desired)")
    still_open = [job for job in snap.jobs.values() if job["status"] in ("queued", "running")]
    if still_open:
        gaps.append(f"{len(still_open)} open job(s): " + ", ".join(f"{j['resource_id']}:{j['action']}:{j['status']}"
                                                                    for j in still_open[:5]))
    if open_scripts:
        gaps.append(f"{open_scripts} script process(es) still running")
    return gaps


def _last_completed(runs: list[Run]) -> dict[str, Run]:
    last: dict[str, Run] = {}
    for run in sorted((r for r in runs if r.completed and r.ended is not None), key=lambda r: r.ended or 0.0):
        last[run.resource_id] = run
    return last


def loosest(policies: list[PolicyVersion], *, start: float, end: float) -> int | None:
    """The loosest per-owner quota any policy in force during [start, end] set (None: none, or no limit)."""
    before = [p for p in policies if p.at <= start]
    seen = ([before[-1]] if before else []) + [p for p in policies if start < p.at <= end]
    if not seen or any(p.per_owner is None for p in seen):
        return None
    return max(p.per_owner for p in seen if p.per_owner is not None)


def quota_exceeded(snap: Snapshot, policies: list[PolicyVersion], versions: list[Version]) -> list[Violation]:
    """Jobs in creation order; a resource occupies its owner's bucket from the job that brings it in (a
    create, or a change of owner) until its delete is queued. Counted at each entering job: the owner's
    resources that occupy the bucket and that every desired state visible then declared (a daemon may
    have planned from any of them), plus the one entering."""
    found = []
    occupying: dict[str, str] = {}
    for job in sorted(snap.jobs.values(), key=lambda j: (j["created_at"] or "", j["job_id"])):
        rid, owner, at = job["resource_id"], job.get("owner"), iso_seconds(job["created_at"])
        if job["action"] == "delete":
            occupying.pop(rid, None)
            continue
        if owner is None or at is None:
            continue
        entering = occupying.get(rid) != owner
        occupying[rid] = owner
        limit = loosest(policies, start=at - READ_SLACK, end=at)
        if not entering or limit is None or job["job_id"] in snap.overridden:
            continue
        states = visible(versions, start=at - READ_SLACK, end=at)
        others = sorted(other for other, whose in occupying.items() if whose == owner and other != rid
                        and all(other in state.declared for state in states))
        if len(others) + 1 > limit:
            found.append(Violation("quota exceeded without an override", (
                f"{rid} ({job['action']}, job {job['job_id']}) brought owner {owner!r} to {len(others) + 1} "
                f"resources; the loosest per-owner quota in force was {limit} (others: {', '.join(others[:8])})")))
    return found


def early_waves(jobs: list[WaveJob]) -> list[Violation]:
    """A wave queued before the previous one's jobs all ended, or before `bake` after its last success.
    (A promoted rollout skips one bake by an operator's word: only the jobs' end is checked for it.)"""
    waves: dict[tuple[str, int], list[WaveJob]] = {}
    for job in jobs:
        waves.setdefault((job.rollout_id, job.wave), []).append(job)
    found = []
    for (rollout_id, wave), members in sorted(waves.items()):
        previous = waves.get((rollout_id, wave - 1))
        if wave < 2 or not previous:
            continue
        started = min(job.queued for job in members)
        unfinished = [job for job in previous if job.finished is None or job.finished > started]
        successes = [job.finished for job in previous if job.status == "succeeded" and job.finished is not None]
        baked = max(successes) + (0.0 if members[0].promoted else members[0].bake) if successes else None
        if unfinished or (baked is not None and started < baked):
            found.append(Violation("wave started before the previous one baked", (
                f"rollout {rollout_id} wave {wave} queued at {started:.3f}; wave {wave - 1}: "
                f"{len(unfinished)} job(s) not finished by then, last success + bake at "
                f"{baked if baked is None else round(baked, 3)}")))
    return found
