"""A rollout's state machine (pure): rows and a clock reading in, the next transition out.

`decide` is the one rule of when a wave may start: the current wave's every member settled (no job
open), its failures within `max_failures`, and `bake` passed since the wave's last success (unless
promoted). Members change through `settle_job` (a job ended) and `record_check` (a health check
during bake); the operator's verbs are `pause`, `resume`, `abort` and `promote`. The executor
(rollouts.py) writes each transition in one transaction, so a crash resumes at the same decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from .model import FAILURES, OUT, Member, MemberState, Rollout, RolloutState


class Step(StrEnum):
    """What `decide` asks the executor to do."""

    WAIT = "wait"  # jobs open, baking, paused or halted: nothing to write
    START = "start"  # enqueue `start` (members of `wave`; a new wave when `wave` > rollout.wave)
    HALT = "halt"  # the failure budget is exceeded: no further wave starts
    REVERT = "revert"  # enqueue the previous spec for `revert`
    COMPLETE = "complete"  # the last wave baked
    CLOSE = "close"  # an ended rollout has nothing left to revert


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    wave: int = 0
    start: tuple[Member, ...] = ()
    revert: tuple[Member, ...] = ()
    reason: str | None = None
    bake_until: datetime | None = None  # the current wave bakes until then (checks run meanwhile)


def decide(*, rollout: Rollout, members: Iterable[Member], now: datetime) -> Decision:
    """The next transition of `rollout` (members: all of its members)."""
    every = tuple(members)
    if rollout.revert:
        return _reverting(rollout=rollout, members=every)
    if rollout.state not in {RolloutState.RUNNING, RolloutState.PAUSED}:
        return Decision(Step.WAIT, rollout.wave)
    if rollout.wave == 0:
        return _start(rollout=rollout, members=every, wave=1)
    current = [m for m in every if m.wave == rollout.wave and m.state not in OUT]
    failures = [m for m in current if m.state in FAILURES]
    if len(failures) > rollout.settings.max_failures:
        return Decision(Step.HALT, rollout.wave, reason=failure_reason(wave=rollout.wave, failures=failures))
    pending = [m for m in current if m.state is MemberState.PENDING]
    running = [m for m in current if m.state is MemberState.QUEUED]
    if pending:
        batch = _batch(pending=pending, running=len(running), limit=rollout.settings.max_parallel)
        return Decision(Step.START, rollout.wave, start=batch) if batch else Decision(Step.WAIT, rollout.wave)
    if running or any(superseded_open(m) for m in every if m.wave == rollout.wave):
        return Decision(Step.WAIT, rollout.wave)
    until = bake_until(rollout=rollout, members=[m for m in every if m.wave == rollout.wave])
    if until is not None and now < until and not rollout.promoted:
        return Decision(Step.WAIT, rollout.wave, bake_until=until)
    if rollout.wave >= rollout.waves:
        return Decision(Step.COMPLETE, rollout.wave)
    if rollout.state is RolloutState.PAUSED:
        return Decision(Step.WAIT, rollout.wave)
    return _start(rollout=rollout, members=every, wave=rollout.wave + 1)


def _start(*, rollout: Rollout, members: tuple[Member, ...], wave: int) -> Decision:
    if rollout.state is RolloutState.PAUSED:
        return Decision(Step.WAIT, rollout.wave)
    pending = [m for m in members if m.wave == wave and m.state is MemberState.PENDING]
    return Decision(Step.START, wave, start=_batch(pending=pending, running=0, limit=rollout.settings.max_parallel))


def _batch(*, pending: list[Member], running: int, limit: int | None) -> tuple[Member, ...]:
    room = len(pending) if limit is None else max(0, limit - running)
    return tuple(pending[:room])


def _reverting(*, rollout: Rollout, members: tuple[Member, ...]) -> Decision:
    """Revert the wave that failed (members reached by it, with a previous spec); close when done."""
    reached = {MemberState.SUCCEEDED, MemberState.FAILED, MemberState.UNHEALTHY}
    wave = [m for m in members if m.wave == rollout.wave]
    todo = tuple(m for m in wave if m.state in reached and m.from_spec is not None)
    if todo:
        return Decision(Step.REVERT, rollout.wave, revert=todo)
    if any(m.state is MemberState.QUEUED or m.state is MemberState.REVERTING for m in wave):
        return Decision(Step.WAIT, rollout.wave)
    return Decision(Step.CLOSE, rollout.wave)


def bake_until(*, rollout: Rollout, members: Iterable[Member]) -> datetime | None:
    """The wave's last success + bake (None: nothing succeeded, nothing to bake). Every success counts,
    also of a member that turned unhealthy within the failure budget or was superseded afterwards: a
    change that reached the fleet bakes before the next wave starts."""
    stamps = [m.succeeded_at for m in members if m.succeeded_at]
    if not stamps:
        return None
    return parse(max(stamps)) + timedelta(seconds=rollout.settings.bake)


def failure_reason(*, wave: int, failures: Iterable[Member]) -> str:
    named = [f"{m.resource_id} {m.state}" + (f" ({m.error})" if m.error else "") for m in failures]
    return f"wave {wave}: " + "; ".join(named)


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --- members ------------------------------------------------------------------------------------


def settle_job(member: Member, *, ok: bool, finished_at: str, error: str | None = None,
               cancelled: bool = False) -> Member:
    """A member's job ended: the rollout's job succeeds or fails (or was cancelled, its resource suspended
    after its wave started: skipped); a revert's job ends the revert."""
    if member.state is MemberState.SUPERSEDED:
        return _settle_superseded(member, ok=ok, finished_at=finished_at, error=error)
    if cancelled and member.state is MemberState.QUEUED:
        return replace(member, state=MemberState.SKIPPED, error=error or "cancelled before it ran",
                       updated_at=finished_at)
    if member.state is MemberState.REVERTING:
        return replace(member, state=MemberState.REVERTED, error=None if ok else error, updated_at=finished_at)
    if member.state is not MemberState.QUEUED:
        return member
    if ok:
        return replace(member, state=MemberState.SUCCEEDED, succeeded_at=finished_at, check_failures=0,
                       error=None, updated_at=finished_at)
    return replace(member, state=MemberState.FAILED, error=error, updated_at=finished_at)


def superseded_open(member: Member) -> bool:
    """A member superseded while its wave's job was still open: the rollout's change may yet reach the
    resource, so the wave waits for that job (and bakes from its success) though the member no longer counts."""
    return (member.state is MemberState.SUPERSEDED and member.job_id is not None and member.succeeded_at is None
            and member.error is None)


def job_open(member: Member) -> bool:
    """Whether a job of the rollout is open for this member (its wave cannot end yet)."""
    return member.state in {MemberState.QUEUED, MemberState.REVERTING} or superseded_open(member)


def _settle_superseded(member: Member, *, ok: bool, finished_at: str, error: str | None = None) -> Member:
    """The wave's job of a superseded member ended: a success bakes with its wave; anything else is noted."""
    if not superseded_open(member):
        return member
    if ok:
        return replace(member, succeeded_at=finished_at, updated_at=finished_at)
    return replace(member, error=f"its wave's job ended after it was superseded: {error or 'not run'}",
                   updated_at=finished_at)


def record_check(member: Member, *, ok: bool, unhealthy_after: int, now: str, error: str | None = None) -> Member:
    """One fast health check of a baking member: `unhealthy_after` failures in a row make it a failure."""
    if member.state is not MemberState.SUCCEEDED:
        return member
    if ok:
        return replace(member, check_failures=0) if member.check_failures else member
    failures = member.check_failures + 1
    if failures >= unhealthy_after:
        return replace(member, state=MemberState.UNHEALTHY, check_failures=failures, updated_at=now,
                       error=f"{failures} failed health checks during bake" + (f": {error}" if error else ""))
    return replace(member, check_failures=failures)


def baking(*, rollout: Rollout, members: Iterable[Member], now: datetime) -> tuple[Member, ...]:
    """The members whose health the executor checks now. While the wave's jobs run, each success during its
    own bake (`bake` from its success: with `bake: 0s` nothing is checked, as nothing bakes); once they all
    ended, every success of the wave until the wave's bake ends (its last success + `bake`)."""
    if rollout.state not in {RolloutState.RUNNING, RolloutState.PAUSED} or rollout.wave == 0:
        return ()
    current = [m for m in members if m.wave == rollout.wave]
    until = bake_until(rollout=rollout, members=current)
    if until is None or now >= until or not rollout.settings.bake:
        return ()
    succeeded = [m for m in current if m.state is MemberState.SUCCEEDED]
    if not any(m.state is MemberState.QUEUED for m in current):
        return tuple(succeeded)
    bake = timedelta(seconds=rollout.settings.bake)
    return tuple(m for m in succeeded if m.succeeded_at and parse(m.succeeded_at) + bake > now)


# --- the operator's verbs -----------------------------------------------------------------------


class Refused(Exception):
    """A verb that does not apply to the rollout's state (the message says why)."""


def pause(rollout: Rollout) -> Rollout:
    if rollout.state is not RolloutState.RUNNING:
        raise Refused(f"rollout {rollout.rollout_id} is {rollout.state}; only a running rollout can be paused")
    return replace(rollout, state=RolloutState.PAUSED)


def resume(rollout: Rollout) -> Rollout:
    if rollout.state is not RolloutState.PAUSED:
        raise Refused(f"rollout {rollout.rollout_id} is {rollout.state}; only a paused rollout can be resumed")
    return replace(rollout, state=RolloutState.RUNNING)


def abort(rollout: Rollout, *, revert: bool = False) -> Rollout:
    if not rollout.active:
        raise Refused(f"rollout {rollout.rollout_id} is {rollout.state} already")
    return replace(rollout, state=RolloutState.ABORTED, revert=revert or rollout.revert, reason="aborted")


def promote(rollout: Rollout) -> Rollout:
    """Skip the rest of the current wave's bake (recorded with the actor by the executor)."""
    if rollout.state not in {RolloutState.RUNNING, RolloutState.PAUSED} or rollout.wave == 0:
        raise Refused(f"rollout {rollout.rollout_id} is {rollout.state}; nothing is baking")
    return replace(rollout, promoted=True)


def apply_decision(rollout: Rollout, decision: Decision, *, now: str) -> Rollout:
    """The rollout row after `decision` (the members' rows are written alongside by the executor)."""
    if decision.step is Step.START and decision.wave != rollout.wave:
        return replace(rollout, wave=decision.wave, promoted=False, updated_at=now)
    if decision.step is Step.HALT:
        revert = rollout.revert or rollout.settings.on_failure.value == "revert"
        return replace(rollout, state=RolloutState.HALTED, reason=decision.reason, revert=revert, updated_at=now)
    if decision.step is Step.COMPLETE:
        return replace(rollout, state=RolloutState.COMPLETED, updated_at=now)
    if decision.step is Step.CLOSE:
        return replace(rollout, revert=False, updated_at=now)
    return rollout
