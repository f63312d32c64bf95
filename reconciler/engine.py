"""One reconcile pass and the workers that carry it out: load → plan → enqueue → claim → run → record.

This is the only module that combines the store with side effects. Everything it decides is
decided elsewhere (the plan, the retry policy); it only moves data between them and the scripts.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import ReconcilerError, SpecError
from .models import (
    DELETE_TARGET,
    Health,
    Job,
    JobAction,
    JobRequest,
    JobResult,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    iso,
    spec_hash,
    utcnow,
)
from .plan import Action, Change, Plan, PlanPolicy, compute_plan
from .retry import RetryPolicy, next_delay
from .spec import DesiredCache, DesiredState, Source, load_desired

# The name this process uses for itself in leases; containers that share a hostname can set it apart.
HOST = os.environ.get("RECONCILER_HOST") or socket.gethostname()


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan together with the desired state it was made from."""

    desired: DesiredState
    observed: dict[str, ObservedResource]
    plan: Plan


API_SOURCE = "api"


def with_api_desired(*, desired: DesiredState, api: dict[str, dict[str, Any]]) -> DesiredState:
    """Files plus resources declared through the API; a file declaring the same id wins."""
    if not api:
        return desired
    resources, sources = dict(desired.resources), dict(desired.sources)
    for resource_id, spec in api.items():
        if resource_id not in resources:
            resources[resource_id] = ResourceSpec.model_validate(spec)
            sources[resource_id] = Source(API_SOURCE, 0)
    return DesiredState(resources=resources, sources=sources, hashes=desired.hashes)


def api_declared(desired: DesiredState) -> frozenset[str]:
    """Ids declared through the API rather than by a file (shown as such in plans)."""
    return frozenset(rid for rid, source in desired.sources.items() if source.file == API_SOURCE)


def make_plan(
    *, desired_dir: Path, observed: dict[str, ObservedResource], in_flight: Iterable[str], now: datetime,
    policy: PlanPolicy, targets: Iterable[str] = (), api: dict[str, dict[str, Any]] | None = None,
) -> PlanView:
    """Load desired/ (plus API-declared specs) and plan against `observed`; `targets` narrows the plan."""
    desired = with_api_desired(desired=load_desired(directory=desired_dir), api=api or {})
    return plan_against(desired=desired, observed=observed, in_flight=in_flight, now=now, policy=policy,
                        targets=targets)


def plan_against(
    *, desired: DesiredState, observed: dict[str, ObservedResource], in_flight: Iterable[str], now: datetime,
    policy: PlanPolicy, targets: Iterable[str] = (),
) -> PlanView:
    plan = compute_plan(desired.resources, observed, now=now, in_flight=in_flight, policy=policy, targets=targets,
                        hashes=desired.hashes)
    return PlanView(desired=desired, observed=observed, plan=plan)


def desired_commit(*, directory: Path) -> str | None:
    """The git commit of the desired directory, recorded with every event; None outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# --- turning a plan into jobs -------------------------------------------------------------------


def job_requests(*, view: PlanView) -> list[JobRequest]:
    """One queue request per change of the plan (none when the plan is refused)."""
    if view.plan.refusal:
        return []
    return [_request(change=change, view=view) for change in view.plan.changes]


def _request(*, change: Change, view: PlanView) -> JobRequest:
    row = view.observed.get(change.resource_id)
    if change.job_action is JobAction.DELETE:
        return JobRequest(change.resource_id, JobAction.DELETE, change.reason, row.applied_spec(), None,
                          DELETE_TARGET, _attempt(change, row), row.version, row.source)
    spec = view.desired.resources[change.resource_id]
    old = row.applied_spec() if change.job_action is JobAction.REPLACE and row is not None else None
    source = view.desired.sources.get(change.resource_id)
    return JobRequest(change.resource_id, change.job_action, change.reason, spec.model_dump(), old,
                      spec_hash(spec), _attempt(change, row), row.version if row is not None else None,
                      API_SOURCE if source is not None and source.file == API_SOURCE else "file")


def _attempt(change: Change, row: ObservedResource | None) -> int:
    """Retries count up (for backoff); any other change is a fresh first attempt."""
    if change.action is Action.RETRY and row is not None and row.status is ResourceStatus.ERRORED:
        return row.attempts + 1
    return 1


def enqueue(*, store: Any, view: PlanView, commit: str | None) -> list[str]:
    """Queue the plan's changes in one transaction; returns the new job ids."""
    return store.enqueue(requests=job_requests(view=view), now=iso(utcnow()), commit=commit)


@dataclass(frozen=True, slots=True)
class Converged:
    """The job carrying one resource's change, and why nothing was queued when a rule held it back."""

    job: Job | None
    held: str | None = None


def converge_one(*, store: Any, resource_id: str, spec: ResourceSpec | None, source: str) -> Converged:
    """Plan and queue the change of one resource now (the API's synchronous step).

    The job is the new one, the one already open, or (nothing to do) the latest. The plan sees only
    this row, so the fleet-wide mass-delete rule does not apply to this explicit request.
    """
    row = store.get_resource(resource_id)
    desired = DesiredState(resources={resource_id: spec} if spec else {},
                           sources={resource_id: Source(source, 0)} if spec else {})
    view = plan_against(desired=desired, observed={resource_id: row} if row else {},
                        in_flight=store.in_flight() & {resource_id}, now=utcnow(),
                        policy=PlanPolicy(allow_mass_delete=True), targets=[resource_id])
    queued = enqueue(store=store, view=view, commit=None)
    held = view.plan.kept[0].reason if view.plan.kept else None
    return Converged(store.get_job(queued[0]) if queued else store.latest_job(resource_id), held)


def plan_scope(plan: Plan) -> set[str]:
    """Ids whose jobs an apply of this plan waits for: its changes and the ones already in progress."""
    return {change.resource_id for change in plan.changes + plan.waiting}


def target_timeouts(*, provision_dir: Path) -> dict[str, float]:
    """Per-target script timeouts from provision/<target>/target.yaml (`timeout: SECONDS`)."""
    import yaml

    found: dict[str, float] = {}
    for settings in sorted(Path(provision_dir).glob("*/target.yaml")):
        try:
            data = yaml.safe_load(settings.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ReconcilerError(f"{settings}: cannot read target settings: {exc}") from None
        timeout = data.get("timeout") if isinstance(data, dict) else None
        if timeout is None:
            continue
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ReconcilerError(f"{settings}: timeout: expected a positive number of seconds")
        found[settings.parent.name] = float(timeout)
    return found


# --- the daemon's pass ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one reconcile pass saw and did, for logs, sd_notify STATUS and /health."""

    queued: int
    plan: Plan | None
    load_error: SpecError | None
    fleet: dict[str, int]
    next_retry_at: str | None
    desired_count: int
    skipped: bool = False  # nothing it reads had changed since the last pass: the same plan holds


class Reconciler:
    """Level-triggered passes over desired/ and the store, remembering only the last good desired state.

    A desired/ that fails to load keeps the last good state in force (retries and repairs go on),
    applies nothing new from the broken view, and reports why until the files are fixed.
    """

    def __init__(self, *, store: Any, desired_dir: Path, policy: PlanPolicy) -> None:
        self.store = store
        self.desired_dir = Path(desired_dir)
        self.policy = policy
        self.cache = DesiredCache()
        self.last_good: DesiredState | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_result: PassResult | None = None

    def reload(self) -> None:
        """Forget cached parses (SIGHUP, the slow loop): the next pass reads every file and plans."""
        self.cache = DesiredCache()
        self._last_key = None

    def reconcile_once(self) -> PassResult:
        """One pass. An idle resync (no file, row, job or API spec changed, no retry due) is answered
        from the last pass: the plan is a pure function of those inputs, so it would come out the same,
        and its changes were queued then. That keeps an idle resync at 10k resources to a few queries.
        """
        load_error = self._load()
        key = (self.cache.generation, load_error is None, self.store.fingerprint())
        last = self._last_result
        if key == self._last_key and last is not None and not _retry_due(last.next_retry_at):
            return replace(last, queued=0, skipped=True)
        result = self._plan_and_queue(load_error)
        self._last_key, self._last_result = key, result
        return result

    def _plan_and_queue(self, load_error: SpecError | None) -> PassResult:
        observed, in_flight = self.store.load_observed(), self.store.in_flight()
        if self.last_good is None:
            return PassResult(0, None, load_error, fleet_counts(observed), None, 0)
        desired = with_api_desired(desired=self.last_good, api=self.store.api_desired())
        view = plan_against(desired=desired, observed=observed, in_flight=in_flight, now=utcnow(),
                            policy=self.policy)
        queued = 0
        if view.plan.changes and not view.plan.refusal:
            queued = len(enqueue(store=self.store, view=view, commit=desired_commit(directory=self.desired_dir)))
        return PassResult(queued, view.plan, load_error, fleet_counts(observed), _next_retry(observed),
                          len(self.last_good.resources))

    def _load(self) -> SpecError | None:
        try:
            self.last_good = self.cache.load(directory=self.desired_dir)
        except SpecError as exc:
            return exc
        return None


def _retry_due(at: str | None) -> bool:
    return at is not None and at <= iso(utcnow())


def fleet_counts(observed: dict[str, ObservedResource]) -> dict[str, int]:
    counts = {status.value: 0 for status in ResourceStatus}
    counts["unhealthy"] = 0
    for row in observed.values():
        counts[row.status.value] += 1
        counts["unhealthy"] += row.health is Health.UNHEALTHY and row.live
    return counts


def _next_retry(observed: dict[str, ObservedResource]) -> str | None:
    pending = [row.next_attempt_at for row in observed.values()
               if row.status is ResourceStatus.ERRORED and row.next_attempt_at]
    return min(pending, default=None)


# --- running jobs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How scripts run: where they are, where their working directories go, and the time limits."""

    provision_dir: Path
    work_dir: Path
    timeout: float = 900.0
    grace: float = 10.0
    lease_seconds: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    target_timeouts: dict[str, float] = field(default_factory=dict)

    def timeout_for(self, target: str) -> float:
        return self.target_timeouts.get(target, self.timeout)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job this process ran to the end (recorded or not)."""

    job: Job
    result: JobResult
    recorded: bool


def new_worker_id() -> str:
    """host:pid:token — the host and pid let a later process on this machine see that we died."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_owner_dead(*, owner: str) -> bool:
    """True when `owner` is a worker id of this host whose process no longer exists."""
    from .runner import process_alive

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host == HOST and pid.isdigit() and not process_alive(pid=int(pid))


def expire_dead_leases(*, store: Any, now: datetime) -> int:
    """Free at once the jobs of workers on this host that died (kill -9), instead of waiting out the lease."""
    count = 0
    for job in store.open_jobs():
        if job.lease_owner and lease_owner_dead(owner=job.lease_owner):
            store.expire_lease(job_id=job.job_id, worker=job.lease_owner, now=iso(now))
            count += 1
    return count


class JobRunner:
    """Runs claimed jobs: makes sure an earlier run is gone, runs the script(s), records the result."""

    def __init__(self, *, store: Any, config: EngineConfig, worker_id: str,
                 rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.config = config
        self.worker_id = worker_id
        self.rand = rand
        self._running: dict[str, int | None] = {}  # job_id → process group of its current script
        self._lock = threading.Lock()
        self._abandoning = threading.Event()

    def run(self, job: Job, *, next_from: set[str] | None | bool = False) -> tuple[Finished, Job | None]:
        """Run `job` and record it; with `next_from` (a scope, or None for any job) also claim the
        next job in the same transaction. Returns what finished and the next job, if one was claimed."""
        with self._lock:
            self._running[job.job_id] = None
        try:
            self._bury_previous_run(job)
            result = self._execute(job)
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
        if self._abandoning.is_set() and not result.ok:
            # stopped by our own shutdown, not by the script's fault: the next start runs it again
            self.store.release(job_id=job.job_id, worker=self.worker_id, now=iso(utcnow()))
            return Finished(job=job, result=result, recorded=False), None
        now = utcnow()
        if next_from is False or self._abandoning.is_set():
            recorded = self.store.finish(job=job, worker=self.worker_id, result=result, now=iso(now))
            return Finished(job=job, result=result, recorded=recorded), None
        recorded, following = self.store.finish_and_claim(
            job=job, worker=self.worker_id, result=result, now=iso(now),
            lease_until=iso(now + timedelta(seconds=self.config.lease_seconds)), resource_ids=next_from)
        return Finished(job=job, result=result, recorded=recorded), following

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def abandon_all(self, *, grace: float) -> int:
        """End every script still running (TERM, grace, KILL on its group); their jobs go back to the queue."""
        from .runner import kill_process_group

        self._abandoning.set()
        with self._lock:
            groups = [(job_id, pgid) for job_id, pgid in self._running.items()]
        for _job_id, pgid in groups:
            if pgid:
                kill_process_group(pgid=pgid, grace=grace)
        return len(groups)

    def _bury_previous_run(self, job: Job) -> None:
        """A reclaimed job's first script may still run (its worker died): end it before running again."""
        from .runner import group_runs_job, kill_process_group

        if job.script_pgid and job.script_host == HOST and group_runs_job(pgid=job.script_pgid, job_id=job.job_id):
            kill_process_group(pgid=job.script_pgid, grace=self.config.grace)

    def _execute(self, job: Job) -> JobResult:
        if job.action is JobAction.REPLACE:
            first = self._script(job, spec=job.old_spec or job.spec, action="delete")
            if not first.ok:
                return self._result(job, first, prefix="teardown of the old resource: ")
            return self._result(job, self._script(job, spec=job.spec, action="create"))
        action = {JobAction.DELETE: "delete", JobAction.CREATE: "create"}.get(job.action, "update")
        return self._result(job, self._script(job, spec=job.spec, action=action))

    def _script(self, job: Job, *, spec: dict[str, Any], action: str) -> Any:
        from .runner import resolve_script, run_script

        target = spec["runtime_target"]
        script = resolve_script(provision_dir=self.config.provision_dir, runtime_target=target, action=action)
        return run_script(
            script=script, spec=spec, action=action, workdir=self.config.work_dir / job.resource_id,
            timeout=self.config.timeout_for(target), grace=self.config.grace, needs_url=action != "delete",
            job_id=job.job_id, on_start=lambda pgid: self._record_start(job, pgid),
        )

    def _record_start(self, job: Job, pgid: int) -> None:
        if self._abandoning.is_set():
            raise RuntimeError("shutting down")
        with self._lock:
            self._running[job.job_id] = pgid
        if not self.store.record_script(job_id=job.job_id, worker=self.worker_id, pgid=pgid, host=HOST,
                                        now=iso(utcnow())):
            raise RuntimeError("lease lost before the script started")

    def _result(self, job: Job, outcome: Any, *, prefix: str = "") -> JobResult:
        retry_at = None
        if not outcome.ok:
            delay = next_delay(attempt=job.attempt, policy=self.config.retry, random=self.rand,
                               permanent=outcome.permanent)
            retry_at = iso(utcnow() + timedelta(seconds=delay))
        error = f"{prefix}{outcome.error}" if outcome.error else None
        return JobResult(outcome.ok, outcome.exit_code, outcome.url, error, outcome.output_tail,
                         outcome.duration, retry_at)


class WorkerPool:
    """`parallelism` threads claiming jobs from the shared queue under one lease owner id.

    One extra thread renews all of this process's leases in a single statement, so a slow script
    keeps its job while a dead process's jobs become reclaimable after `lease_seconds`. `apply`
    uses `run_until_done`; the daemon uses `serve` … `shutdown`.
    """

    def __init__(self, *, store: Any, config: EngineConfig, parallelism: int,
                 on_finish: Callable[[Finished], None] = lambda finished: None, idle_poll: float = 1.0) -> None:
        self.store = store
        self.config = config
        self.parallelism = max(1, parallelism)
        self.worker_id = new_worker_id()
        self.on_finish = on_finish
        self.idle_poll = idle_poll
        self._stop_claiming = threading.Event()
        self._stopped = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._runner = JobRunner(store=store, config=config, worker_id=self.worker_id)

    # --- apply: work through a scope, then return ---

    def run_until_done(self, *, scope: set[str] | None, poll: float = 0.1) -> list[Finished]:
        """Work until no open job in `scope` remains (others' leases included); return what we ran."""
        finished: list[Finished] = []
        lock = threading.Lock()

        def record(item: Finished) -> None:
            with lock:
                finished.append(item)
            self.on_finish(item)

        self._start(target=lambda: self._until_done_loop(scope, poll, record))
        for thread in self._threads:
            thread.join()
        self._stopped.set()
        return finished

    def _until_done_loop(self, scope: set[str] | None, poll: float, record: Callable[[Finished], None]) -> None:
        job: Job | None = None
        while True:
            job = job or self._claim(scope)
            if job is not None:
                finished, job = self._runner.run(job, next_from=scope)
                record(finished)
            elif not self.store.count_open(resource_ids=scope):
                return
            else:
                time.sleep(poll)

    # --- daemon: serve until told to stop ---

    def serve(self) -> None:
        """Start claiming in the background; `wake()` after enqueueing to claim without waiting."""
        self._start(target=self._serve_loop)

    def reconfigure(self, config: EngineConfig) -> None:
        """New script settings (SIGHUP) for the jobs claimed from now on."""
        self.config = config
        self._runner.config = config

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def busy(self) -> int:
        return self._runner.running_count()

    def shutdown(self, *, grace: float) -> int:
        """Stop claiming; give running scripts `grace` seconds; then end them and hand their jobs back.

        Returns how many jobs were handed back (they run again on the next start, from the queue).
        """
        self._stop_claiming.set()
        self.wake()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        handed_back = self._runner.abandon_all(grace=min(self.config.grace, 5.0))
        for thread in self._threads:
            thread.join()
        self._stopped.set()
        return handed_back

    def _serve_loop(self) -> None:
        job: Job | None = None
        while not self._stop_claiming.is_set():
            job = job or self._claim(None)
            if job is not None:
                finished, job = self._runner.run(job, next_from=None)
                self.on_finish(finished)
                continue
            with self._wake:
                if not self._stop_claiming.is_set():
                    self._wake.wait(self.idle_poll)
        if job is not None:  # claimed with the last finish but never started: back to the queue
            self.store.release(job_id=job.job_id, worker=self.worker_id, now=iso(utcnow()))

    # --- shared ---

    def _start(self, *, target: Callable[[], None]) -> None:
        self._threads = [threading.Thread(target=target, daemon=True, name=f"worker-{i}")
                         for i in range(self.parallelism)]
        threading.Thread(target=self._renew_loop, daemon=True, name="lease-renewer").start()
        for thread in self._threads:
            thread.start()

    def _claim(self, scope: set[str] | None) -> Job | None:
        if self._stop_claiming.is_set():
            return None
        now = utcnow()
        until = iso(now + timedelta(seconds=self.config.lease_seconds))
        jobs = self.store.claim(worker=self.worker_id, now=iso(now), lease_until=until, resource_ids=scope)
        return jobs[0] if jobs else None

    def _renew_loop(self) -> None:
        interval = min(self.config.lease_seconds / 3, 5.0)
        while not self._stopped.wait(interval):
            until = iso(utcnow() + timedelta(seconds=self.config.lease_seconds))
            self.store.renew(worker=self.worker_id, lease_until=until)
            expire_dead_leases(store=self.store, now=utcnow())
