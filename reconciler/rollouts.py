"""The rollouts' effects (issue 17): create a rollout from a plan, and advance every open rollout a step.

The decisions are rollout/machine.py's; this module reads the rows, runs the fast health checks of a
baking wave, and writes each transition through the store in one transaction (a wave's start with
its jobs, a halt with its event). `Driver.tick` is called by the daemon's rollout loop (only where
the election allows: the SQLite lock holder, the PostgreSQL leader) and by a foreground `apply`
when no daemon holds the database (coordination.py), so one process advances a rollout at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .defects import defect_enabled
from .engine import PlanView, job_request
from .models import Action, JobRequest, ObservedResource, ResourceSpec, iso, spec_hash, utcnow
from .plan import Change, Reason
from .ports import RolloutStore
from .rollout.machine import (
    Decision,
    Step,
    apply_decision,
    baking,
    decide,
    job_open,
    record_check,
    settle_job,
)
from .rollout.model import Member, MemberState, Rollout, RolloutState, Settings, plain

if TYPE_CHECKING:
    from .health import CheckResult
    from .suspensions import Suspensions

Checker = Callable[[list[tuple[str, str]]], list["CheckResult"]]
MAX_STEPS = 5  # transitions one tick may chain (a wave that completes, then the next starts)


def check_urls(pairs: list[tuple[str, str]]) -> list[CheckResult]:
    """The fast checks of a baking wave: the drift loop's checker, on this thread's own event loop."""
    from .health import check_all

    return asyncio.run(check_all(pairs, timeout=2.0))


def start_rollout(*, store: RolloutStore, view: PlanView, commit: str | None, actor: str | None,
                  now: datetime | None = None) -> Rollout | None:
    """Mark the members a newer spec superseded, then write the view's proposed rollout (if any)."""
    stamp = iso(now or utcnow())
    if view.superseded:
        store.save_rollout(members=_superseded(view.superseded), now=stamp)
    proposal = view.rollout
    if proposal is None:
        return None
    rollout = Rollout(rollout_id=proposal.rollout_id, state=RolloutState.RUNNING, waves=len(proposal.sizes), wave=0,
                      settings=Settings.from_json(proposal.policy.settings()), created_at=stamp, updated_at=stamp,
                      actor=actor, desired_commit=commit, sizes=proposal.sizes)
    taken = store.create_rollout(rollout=rollout, members=proposal.members, now=stamp)
    return rollout if taken else None


class HeldReader(Protocol):
    def holds(self) -> Mapping[str, Any]: ...
    def suspensions(self) -> Suspensions: ...


def held_now(store: HeldReader) -> frozenset[str]:
    """Ids a wave skips when it starts: held by the policy (the daemon's last pass) or suspended now. (A
    fleet-wide suspension skips nothing: its jobs wait unclaimed until it is lifted.)"""
    suspended = store.suspensions().in_force(iso(utcnow())).resources
    return frozenset(store.holds()) | frozenset(suspended)


def _superseded(members: Sequence[Member]) -> list[Member]:
    """Members a newer spec takes over. One whose wave job is still unsettled keeps its job id: the driver
    settles it (`machine.superseded_open`), so its wave waits for that job and bakes from its success."""
    return [replace(member, state=MemberState.SUPERSEDED) for member in members]


@dataclass(frozen=True, slots=True)
class Pace:
    """How long a tick loop may wait: `seconds` at most; with `jobs`, until the workers are quiet."""

    jobs: bool
    seconds: float


@dataclass
class Driver:
    """Advances open rollouts one step per `tick`; remembers only when it last checked each one's health."""

    store: RolloutStore
    actor: str | None = None
    check: Checker = check_urls
    clock: Callable[[], float] = time.monotonic
    # ids a wave skips when it starts: held by the policy now (issue 16's suspensions belong here too)
    held: Callable[[], Collection[str]] = field(default=lambda: frozenset())
    _checked: dict[str, float] = field(default_factory=dict)
    _baking: set[str] = field(default_factory=set)  # rollouts that had members to check at their last step
    _open: set[str] = field(default_factory=set)  # rollouts with a job open (queued/reverting members) after it
    wrote: bool = False  # the last tick wrote something (settled, checked, moved): False means nothing changed
    _seen: list[Rollout] = field(default_factory=list)

    def tick(self, *, now: datetime | None = None) -> list[tuple[Rollout, Decision]]:
        """One step of every open rollout; returns each one's row and last decision."""
        self._seen, self.wrote = self.store.open_rollouts(), False
        return [self.advance(rollout, now=now or utcnow()) for rollout in self._seen]

    def next_check_in(self, *, longest: float) -> float:
        """Seconds until the earliest health check due (at most `longest`): how long a tick loop may sleep.
        Only rollouts with members to check at the last tick count (a wave whose jobs run, without bake, has none)."""
        intervals = {r.rollout_id: r.settings.check_interval for r in self._seen}
        dues = [at + intervals[rid] - self.clock() for rid, at in self._checked.items()
                if rid in intervals and rid in self._baking]
        return max(0.0, min([longest, *dues]))

    def pace(self, results: Sequence[tuple[Rollout, Decision]], *, longest: float) -> Pace:
        """When the next tick is worth its cost (it reads every member): while jobs of a wave are open, once
        the workers are quiet (or after `longest`); while waves only bake, when a check or a bake's end is due."""
        moving = [(r, d) for r, d in results if self.moving(r)]
        jobs = [r for r, d in moving if d.step is not Step.WAIT or r.rollout_id in self._open]
        now = utcnow()
        ends = [(d.bake_until - now).total_seconds() for _, d in moving if d.bake_until is not None]
        # a success while its wave's jobs still run is checked from its end on: tick at the check interval
        checks = [r.settings.check_interval for r in jobs if r.settings.bake > 0]
        return Pace(jobs=bool(jobs), seconds=self.next_check_in(longest=min([longest, *ends, *checks])))

    def moving(self, rollout: Rollout) -> bool:
        """Someone must keep stepping it: running, reverting, or a wave's jobs still open (paused, halted)."""
        return rollout.state is RolloutState.RUNNING or rollout.revert or rollout.rollout_id in self._open

    def advance(self, rollout: Rollout, *, now: datetime) -> tuple[Rollout, Decision]:
        members = self._settled(rollout, self.store.rollout_members(rollout.rollout_id), now=now)
        members = self._checked_health(rollout, members, now=now)
        if defect_enabled("rollout-no-bake"):  # test-only: the next wave does not wait for the bake
            rollout = replace(rollout, settings=replace(rollout.settings, bake=0.0))
        decision = decide(rollout=rollout, members=members, now=now)
        for _ in range(MAX_STEPS):
            if decision.step is Step.WAIT:
                break
            rollout, members, moved = self._apply(rollout, members, decision, now=now)
            self.wrote = True
            decision = decide(rollout=rollout, members=members, now=now)
            if not moved:
                break
        (self._open.add if any(job_open(m) for m in members) else self._open.discard)(rollout.rollout_id)
        return rollout, decision

    def _settled(self, rollout: Rollout, members: list[Member], *, now: datetime) -> list[Member]:
        """Members whose job ended take its outcome (one transaction for all of them)."""
        waiting = {m.job_id: m for m in members if m.job_id and job_open(m)}
        if not waiting:
            return members
        changed: dict[str, Member] = {}
        for job_id, outcome in self.store.job_outcomes(waiting).items():
            if outcome["status"] not in {"succeeded", "failed", "cancelled"}:
                continue
            member = waiting[job_id]
            changed[member.resource_id] = settle_job(member, ok=outcome["status"] == "succeeded",
                                                     finished_at=outcome["finished_at"] or iso(now),
                                                     error=outcome["error"], cancelled=outcome["status"] == "cancelled")
        if changed:
            self.store.save_rollout(members=list(changed.values()), now=iso(now))
            self.wrote = True
        return [changed.get(m.resource_id, m) for m in members]

    def _checked_health(self, rollout: Rollout, members: list[Member], *, now: datetime) -> list[Member]:
        """Every `check_interval`, check the baking wave's URLs; a member failing `unhealthy_after` checks
        in a row becomes a failure of its wave."""
        interval = rollout.settings.check_interval
        due = self._checked.get(rollout.rollout_id, 0.0) + interval
        targets = baking(rollout=rollout, members=members, now=now)
        (self._baking.add if targets else self._baking.discard)(rollout.rollout_id)
        if not targets or self.clock() < due:
            return members
        # on a grid of `interval` while the checks keep up: a tick's lateness does not push the next one back
        self._checked[rollout.rollout_id] = due if self.clock() - due < interval else self.clock()
        urls = {rid: row.url for rid, row in self.store.load_observed().items() if row.url}
        pairs = [(m.resource_id, urls[m.resource_id]) for m in targets if m.resource_id in urls]
        results = {result.resource_id: result for result in self.check(pairs)} if pairs else {}
        changed = {}
        for member in targets:
            result = results.get(member.resource_id)
            if result is None:
                continue
            error = result.error or (f"HTTP {result.status}" if result.status else None)
            after = record_check(member, ok=result.ok, unhealthy_after=rollout.settings.unhealthy_after,
                                 now=iso(now), error=error)
            if after != member:
                changed[member.resource_id] = after
        if changed:
            self.store.save_rollout(members=list(changed.values()), now=iso(now))
            self.wrote = True
        return [changed.get(m.resource_id, m) for m in members]

    def _apply(self, rollout: Rollout, members: list[Member], decision: Decision, *,
               now: datetime) -> tuple[Rollout, list[Member], bool]:
        """Write one transition; returns the rows as they are now, and whether anything moved (a wave
        whose every job the queue refused, for an open job on each, waits for the next tick)."""
        stamp, after = iso(now), apply_decision(rollout, decision, now=iso(now))
        if decision.step not in {Step.START, Step.REVERT}:
            self.store.save_rollout(rollout=after, now=stamp, event=_event(after, decision), actor=self.actor,
                                    withdraw=decision.step is Step.HALT)
            if decision.step is Step.HALT:  # the members it withdrew are pending again: read them as they are
                members = self.store.rollout_members(rollout.rollout_id)
            return after, members, True
        chosen = decision.start if decision.step is Step.START else decision.revert
        skipped = self._skipped(after, chosen, now=stamp) if decision.step is Step.START else {}
        launches = self._launches(after, [m for m in chosen if m.resource_id not in skipped],
                                  revert=decision.step is Step.REVERT)
        started = {m.resource_id: m for m in self.store.launch(rollout=after, launches=launches, now=stamp,
                                                               commit=rollout.desired_commit)}
        if decision.wave != rollout.wave:
            self._checked.pop(rollout.rollout_id, None)
        moved = bool(started) or bool(skipped) or decision.wave != rollout.wave
        return after, [started.get(m.resource_id) or skipped.get(m.resource_id) or m for m in members], moved

    def _skipped(self, rollout: Rollout, chosen: Sequence[Member], *, now: str) -> dict[str, Member]:
        """Members held by the policy (or suspended) when their wave starts: skipped, with a fleet event that
        names them; the rest of the wave proceeds."""
        held = self.held()
        skipped = {m.resource_id: replace(m, state=MemberState.SKIPPED, error="held or suspended when its wave "
                                          "started") for m in chosen if m.resource_id in held}
        if skipped:
            names = ", ".join(sorted(skipped))
            self.store.save_rollout(rollout=rollout, members=list(skipped.values()), now=now, actor=self.actor,
                                    event=("rollout_skipped", f"rollout {rollout.rollout_id} wave {rollout.wave}: "
                                           f"skipped {len(skipped)} held or suspended: {names}"))
        return skipped

    def _launches(self, rollout: Rollout, chosen: Sequence[Member], *,
                  revert: bool) -> list[tuple[Member, JobRequest]]:
        rows = self.store.load_observed()
        launches = []
        for member in chosen:
            row = rows.get(member.resource_id)
            change = _revert_change(rollout, member, row) if revert else _wave_change(rollout, member, row)
            state = MemberState.REVERTING if revert else MemberState.QUEUED
            request = replace(job_request(change), actor=self.actor or rollout.actor,
                              details={"rollout": {"id": rollout.rollout_id, "wave": member.wave,
                                                   "waves": rollout.waves, "revert": revert}})
            launches.append((replace(member, state=state), request))
        return launches


def _wave_change(rollout: Rollout, member: Member, row: ObservedResource | None) -> Change:
    """The change a wave's job makes: the member's recorded to-spec, against the row as it is now."""
    message = f"rollout {rollout.rollout_id} wave {member.wave} of {rollout.waves}"
    return Change(member.resource_id, member.action, Reason.ROLLOUT, message, plain(member.from_spec),
                  plain(member.to_spec), (),
                  member.to_hash, row.version if row is not None else None, 1,
                  row.source if row is not None else "file")


def _revert_change(rollout: Rollout, member: Member, row: ObservedResource | None) -> Change:
    """Back to the recorded previous spec (a replace goes back by a replace)."""
    before = plain(member.from_spec) or {}
    action = Action.REPLACE if member.action is Action.REPLACE else Action.UPDATE
    return Change(member.resource_id, action, Reason.ROLLOUT, f"rollout {rollout.rollout_id}: revert wave "
                  f"{member.wave} to the previous spec", plain(member.to_spec), before, (),
                  spec_hash(ResourceSpec.model_validate(before)), row.version if row is not None else None, 1,
                  row.source if row is not None else "file")


def _event(rollout: Rollout, decision: Decision) -> tuple[str, str] | None:
    rid = rollout.rollout_id
    if decision.step is Step.HALT:
        return "rollout_halted", f"rollout {rid} halted at wave {rollout.wave} of {rollout.waves}: {decision.reason}"
    if decision.step is Step.COMPLETE:
        return "rollout_completed", f"rollout {rid} completed: {rollout.waves} waves"
    if decision.step is Step.CLOSE:
        return "rollout_reverted", f"rollout {rid}: wave {rollout.wave} reverted to the previous spec"
    return None
