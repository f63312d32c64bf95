"""Why a resource is not in sync, in one line: the MESSAGE of `status` and the API's `Ready` condition.

Pure: a row, its open job, the plan's note about it and the time in; a `Message` (a kind and a text)
out, or None when the row is in sync. `status` and the API both ask `status_message`, so the table
and the conditions cannot tell two stories. It never decides anything: the plan decided; this says
what it decided, and what the row shows (an error, failing checks, a job running).

What the plan knows arrives as its note about the row (`plan.Change`): a change not queued yet, or a
`waiting`/`kept` note whose `Reason` says why nothing is queued (BACKOFF with `retry_at`, UNHEALTHY,
PROTECTED, REPLACE_BLOCKED, IN_FLIGHT). When desired/ does not load there is no plan (`planned=False`)
and the rules fall back to what the row alone shows.

Adding a case (as SUSPENDED, POLICY, BUDGET and UNMANAGED were): add a member to `OutOfSync`, write
one rule `_name(facts) -> Message | None` that recognises it (from its plan `Reason`, or a row status
such as `forgotten`), and put it into `RULES` where it should win: the first rule that answers wins.
Until then a plan note with a Reason no rule knows still shows, as `held` with the plan's own message.
A case that needs what neither the row nor the plan note carries (a suspension kept in its own table,
say) adds a keyword to `status_message` and a field to `Facts` with a neutral default, and the two
callers (survey.py for `status`, api.py for `Ready`) pass it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from .models import Action, Health, Job, JobStatus, ObservedResource, ResourceStatus, parse_iso
from .plan import Change, Reason


class OutOfSync(StrEnum):
    """Why a row is not in sync (JSON `out_of_sync`, the API's Ready reason): codes are added, never renamed."""

    IN_PROGRESS = "in_progress"  # a job is queued or running
    PROTECTED = "protected"  # no longer declared, kept by `protected: true`
    REPLACE_BLOCKED = "replace_blocked"  # a replacement blocked by `protected: true`
    RETRY_WAITING = "retry_waiting"  # failed; the next attempt is not due yet
    ERRORED = "errored"  # failed; no later attempt is scheduled yet
    UNHEALTHY = "unhealthy"  # failing its health checks
    PENDING = "pending"  # desired and observed differ; the next pass or apply queues the change
    SUSPENDED = "suspended"  # `reconciler suspend`, `suspend:` in its file, or `suspend --all` (issue 16)
    POLICY = "policy"  # held back by a rule of policy.yaml (issue 15)
    BUDGET = "budget"  # waits for a change budget of policy.yaml (issue 15)
    UNMANAGED = "unmanaged"  # forgotten with --force while still declared (issue 16)
    HELD = "held"  # a plan note no rule below knows yet: its own message is shown


class Ready(StrEnum):
    """The READY column and the API's `Ready` condition status (Kubernetes spelling)."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"  # nothing wrong seen, but no plan to compare with (desired/ does not load)


@dataclass(frozen=True, slots=True)
class Message:
    kind: OutOfSync
    text: str


@dataclass(frozen=True, slots=True)
class Facts:
    """What every rule sees about one row."""

    row: ObservedResource
    job: Job | None  # its open (queued or running) job
    note: Change | None  # the plan's change or note about it (None: the plan leaves it alone)
    now: datetime
    planned: bool  # False: desired/ did not load, so there is no plan and notes are None


def status_message(row: ObservedResource, *, job: Job | None, plan_note: Change | None, now: datetime,
                   planned: bool = True) -> Message | None:
    """Why `row` is not in sync, or None when it is (the first rule of RULES that answers)."""
    facts = Facts(row, job, plan_note, now, planned)
    for rule in RULES:
        message = rule(facts)
        if message is not None:
            return message
    return None


def ready(message: Message | None, *, planned: bool) -> Ready:
    """READY: False with a message; True in sync; Unknown when there was no plan to say so."""
    if message is not None:
        return Ready.FALSE
    return Ready.TRUE if planned else Ready.UNKNOWN


def humanise(seconds: float) -> str:
    """A duration as kubectl shows an AGE: 5s, 3m, 2h, 4d (up to two years), then 3y."""
    whole = max(0, int(seconds))
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and (unit != "y" or whole >= 2 * size):
            return f"{whole // size}{unit}"
    return f"{whole}s"


def age(stamp: str | None, *, now: datetime) -> str:
    """How long ago `stamp` was, humanised; "-" when unknown."""
    moment = parse_iso(stamp)
    return "-" if moment is None else humanise((now - moment).total_seconds())


def _until(stamp: str | None, now: datetime) -> str:
    moment = parse_iso(stamp)
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    return f" (in {humanise(seconds)})" if seconds > 0 else " (due now)"


def _last_error(row: ObservedResource) -> str:
    return f"; last error: {row.error}" if row.error else ""


# --- the rules, in the order they are asked -------------------------------------------------------


def _in_progress(facts: Facts) -> Message | None:
    job = facts.job
    if job is None:
        if facts.note is not None and facts.note.reason is Reason.IN_FLIGHT:
            return Message(OutOfSync.IN_PROGRESS, "a job is in progress" + _last_error(facts.row))
        return None
    attempt = f" (attempt {job.attempt})" if job.attempt > 1 else ""
    if job.status is JobStatus.RUNNING:
        since = f", started {age(job.started_at, now=facts.now)} ago" if job.started_at else ""
        text = f"{job.action} running{attempt}{since}"
    else:
        due = _until(job.run_after, facts.now)
        text = f"{job.action} queued{attempt}{'' if due == ' (due now)' else due}"
    return Message(OutOfSync.IN_PROGRESS, text + _last_error(facts.row))


def _kept(facts: Facts) -> Message | None:
    note = facts.note
    kinds = {Reason.PROTECTED: OutOfSync.PROTECTED, Reason.REPLACE_BLOCKED: OutOfSync.REPLACE_BLOCKED,
             Reason.SUSPENDED: OutOfSync.SUSPENDED, Reason.POLICY: OutOfSync.POLICY, Reason.BUDGET: OutOfSync.BUDGET,
             Reason.UNMANAGED: OutOfSync.UNMANAGED}
    if note is None or note.reason not in kinds:
        return None
    return Message(kinds[note.reason], note.message)


def _retry_waiting(facts: Facts) -> Message | None:
    row, note = facts.row, facts.note
    if note is not None and note.reason is Reason.BACKOFF:
        at = note.retry_at
    elif not facts.planned and row.status is ResourceStatus.ERRORED and row.next_attempt_at and (
            (parse_iso(row.next_attempt_at) or facts.now) > facts.now):
        at = row.next_attempt_at
    else:
        return None
    what = "teardown retry" if row.target_hash == "delete" else "retry"
    return Message(OutOfSync.RETRY_WAITING,
                   f"{what} {row.attempts + 1} at {at}{_until(at, facts.now)}{_last_error(row)}")


def _errored(facts: Facts) -> Message | None:
    row, note = facts.row, facts.note
    if row.status is not ResourceStatus.ERRORED:
        return None
    then = f"; {note.shown} {note.attempt} pending" if note is not None and note.action is not Action.NOOP else ""
    return Message(OutOfSync.ERRORED, f"errored: {row.error or 'the last attempt failed'}{then}")


def _unhealthy(facts: Facts) -> Message | None:
    row, note = facts.row, facts.note
    if not row.live or row.health is not Health.UNHEALTHY:
        return None
    heal = "; self-heal re-provisions it" if note is not None and note.reason is Reason.SELF_HEAL else ""
    return Message(OutOfSync.UNHEALTHY, f"unhealthy: {row.consecutive_failures} failed checks in a row{heal}")


def _pending(facts: Facts) -> Message | None:
    note = facts.note
    if note is None or note.action is Action.NOOP:
        return None
    return Message(OutOfSync.PENDING, f"{note.shown} pending: {note.message}")


def _unsettled(facts: Facts) -> Message | None:
    """Without a plan: a row mid-change with no job open (an interrupted run); the next plan picks it up."""
    row = facts.row
    if facts.planned or row.status not in (ResourceStatus.PROVISIONING, ResourceStatus.DELETING):
        return None
    return Message(OutOfSync.PENDING, f"{row.status} with no job open; the next pass plans it")


def _held(facts: Facts) -> Message | None:
    note = facts.note
    return Message(OutOfSync.HELD, note.message) if note is not None else None


Rule = Callable[[Facts], Message | None]
# earlier wins: a running job says more than the error it retries; protection more than an error
RULES: tuple[Rule, ...] = (_in_progress, _kept, _retry_waiting, _errored, _unhealthy, _pending, _unsettled,
                           _held)
