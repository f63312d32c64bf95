"""The operator's controls as commands: `suspend`, `resume` and `reconcile` (issue 16).

cli.py parses and exits; this module checks what was asked against what is declared and stored, makes
the change through the store (which writes the rows and their events, with actor and reason, in one
transaction), and says what happened. `reconcile` writes a request row the planning daemon answers,
then waits for the answer and, with `--wait`, for its jobs.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .errors import ReconcilerError
from .models import Job, JobStatus, PassRequest, PassRequestStatus, iso, utcnow
from .ports import PassRequests, SuspensionStore
from .suspensions import Suspension, parse_until

POLL_SECONDS = 0.2
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class Declared:
    """What `desired/` says about ids: which it declares, and which its files suspend (file:line)."""

    ids: frozenset[str]
    suspended: Mapping[str, Suspension]
    loaded: bool = True  # False: desired/ did not load; only the database's ids are known


def check_known(*, ids: Iterable[str], declared: Declared, stored: Iterable[str]) -> None:
    """Every id must be declared or in the database: a typo is an error naming the closest id."""
    known = declared.ids | set(stored)
    for resource_id in ids:
        if resource_id not in known:
            hint = difflib.get_close_matches(resource_id, sorted(known), n=1)
            raise ReconcilerError(f"{resource_id}: no such resource in desired/ or the database"
                                  + (f" (did you mean '{hint[0]}'?)" if hint else "") + "; nothing was changed")


def suspend(*, store: SuspensionStore, ids: tuple[str, ...], reason: str, until: str | None, actor: str,
            declared: Declared, daemon: bool) -> list[str]:
    """Suspend `ids` (or, with none, the fleet); returns the lines to print."""
    reason = _reason(reason)
    now = utcnow()
    expiry = _until(until, now=now)
    if not ids:
        cancelled = store.suspend_fleet(reason=reason, actor=actor, until=expiry, now=iso(now))
        lines = [f"Suspended the fleet: {reason}" + (f" (until {expiry})" if expiry else "") + ". "
                 "Nothing is started until `reconciler resume --all`; running scripts finish."]
    else:
        check_known(ids=ids, declared=declared, stored=store.load_observed())
        cancelled = store.suspend(resource_ids=ids, reason=reason, actor=actor, until=expiry, now=iso(now))
        lines = [f"Suspended {', '.join(sorted(set(ids)))}: {reason}" + (f" (until {expiry})" if expiry else "")
                 + ". Running scripts finish; nothing else starts for them."]
    if cancelled:
        lines.append(f"Cancelled {len(cancelled)} queued job{'s' if len(cancelled) != 1 else ''}: "
                     + ", ".join(cancelled[:20]) + (" …" if len(cancelled) > 20 else ""))
    if daemon:  # the daemon plans now: it shows the suspension and wakes itself when it lapses
        store.request_pass(resource_ids=ids or None, actor=actor, now=iso(now))
    return lines


def resume(*, store: SuspensionStore, ids: tuple[str, ...], reason: str | None, actor: str, declared: Declared,
           daemon: bool) -> list[str]:
    """Lift the suspensions of `ids` (or, with none, the fleet's); a file's `suspend:` is refused."""
    reason = _reason(reason) if reason is not None else None
    now = iso(utcnow())
    if not ids:
        was_suspended = store.resume_fleet(actor=actor, reason=reason, now=now)
        if was_suspended and daemon:
            store.request_pass(resource_ids=None, actor=actor, now=now)
        return ["Resumed the fleet." if was_suspended else "The fleet was not suspended; nothing to resume."]
    in_files = {rid: declared.suspended[rid] for rid in ids if rid in declared.suspended}
    if in_files:
        raise ReconcilerError("; ".join(
            f"{rid} is {suspension.describe()}: only removing `suspend:` from {suspension.file} lifts it"
            for rid, suspension in sorted(in_files.items())) + ". Nothing was resumed")
    check_known(ids=ids, declared=declared, stored=store.load_observed())
    lifted = store.resume(resource_ids=ids, actor=actor, reason=reason, now=now)
    if lifted and daemon:
        store.request_pass(resource_ids=lifted, actor=actor, now=now)
    lines = [f"Resumed {', '.join(lifted)}."] if lifted else []
    idle = sorted(set(ids) - set(lifted))
    if idle:
        lines.append(f"Not suspended: {', '.join(idle)}.")
    fleet = store.fleet_suspension(now=now)
    if fleet is not None:
        lines.append(f"Note: the fleet is still {fleet.describe()}; `reconciler resume --all` lifts that.")
    if not declared.loaded:
        lines.append("Note: desired/ did not load, so a `suspend:` in its files was not checked.")
    return lines


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise ReconcilerError("--reason must say why (it is shown by plan and recorded in the audit trail)")
    if len(reason) > 500:
        raise ReconcilerError(f"--reason is {len(reason)} characters; keep it under 500")
    return reason


def _until(text: str | None, *, now: datetime) -> str | None:
    if text is None:
        return None
    try:
        return parse_until(text, now=now)
    except ValueError as exc:
        raise ReconcilerError(str(exc)) from None


# --- a pass on demand -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Waited:
    """What `reconcile --wait` saw: each job as it ended (or as it was when time ran out)."""

    jobs: list[Job]
    timed_out: bool

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(job.status is JobStatus.SUCCEEDED for job in self.jobs)


def ask_for_pass(*, store: PassRequests, ids: tuple[str, ...], actor: str, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> PassRequest:
    """Write a request, then wait until the planning daemon answered it (ReconcilerError on timeout)."""
    request_id = store.request_pass(resource_ids=ids or None, actor=actor, now=iso(utcnow()))
    deadline = clock() + timeout
    while True:
        answer = store.get_request(request_id)
        if answer is not None and answer.status in (PassRequestStatus.DONE, PassRequestStatus.FAILED):
            return answer
        if clock() >= deadline:
            taken = answer is not None and answer.status is PassRequestStatus.RUNNING
            raise ReconcilerError(f"the daemon {'took' if taken else 'did not take'} request {request_id} but did "
                                  f"not answer within {timeout:g} s; it will still be answered (see `reconciler "
                                  "status` and the daemon's log)")
        time.sleep(POLL_SECONDS)


def wait_for_jobs(*, store: PassRequests, job_ids: Iterable[str], timeout: float,
                  on_end: Callable[[Job], None] = lambda job: None,
                  clock: Callable[[], float] = time.monotonic) -> Waited:
    """Poll the jobs until each ended (succeeded, failed, cancelled) or `timeout` passed."""
    waiting = list(dict.fromkeys(job_ids))
    ended: dict[str, Job] = {}
    deadline = clock() + timeout
    while True:
        for job_id in waiting:
            job = store.get_job(job_id)
            if job is not None and job.status in FINISHED and job_id not in ended:
                ended[job_id] = job
                on_end(job)
        if len(ended) == len(waiting):
            return Waited([ended[job_id] for job_id in waiting], timed_out=False)
        if clock() >= deadline:
            left = [store.get_job(job_id) for job_id in waiting if job_id not in ended]
            return Waited([*ended.values(), *[job for job in left if job is not None]], timed_out=True)
        time.sleep(POLL_SECONDS)
