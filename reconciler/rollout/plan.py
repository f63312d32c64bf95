"""Planning a rollout (pure): which of a plan's changes become one, in which wave, and what the plan holds.

`wave_sizes` turns cumulative targets into wave sizes; `propose` turns a plan's in-scope changes into
a `Proposal` (members in a stable order: canaries first, then sha256(rollout_id + resource_id));
`gate` takes the changes that belong to an active rollout out of a plan (they wait with the reason
`rollout: wave k of n`) and names the members a newer desired spec supersedes. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..models import Action
from ..plan import Change, Hold, Plan, Reason
from .model import ACTIVE, OUT, Member, MemberState, RolloutPolicy, RolloutState, WaveTarget

ROLLOUT_NOTE = "rollout: "
# waiting notes of these holds are the changes a rollout skips and reports (policy, suspension)
SKIPPED_HOLDS = frozenset(hold for hold in Hold if hold.value in {"policy", "suspended"})


def wave_sizes(*, total: int, waves: Iterable[WaveTarget]) -> tuple[int, ...]:
    """Sizes of the waves over `total` changes: cumulative targets, the last one 100%, empty waves dropped.
    `[1, 5%, 25%, 100%]` over 1,000 → (1, 49, 200, 750)."""
    reached, sizes = 0, []
    for target in (*waves, WaveTarget(percent=100.0)):
        reach = max(reached, target.reach(total))
        if reach > reached:
            sizes.append(reach - reached)
            reached = reach
    return tuple(sizes)


def order_key(*, rollout_id: str, resource_id: str) -> str:
    """A member's stable place in its rollout: the same ids always give the same waves."""
    return hashlib.sha256(f"{rollout_id}\x00{resource_id}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Proposal:
    """A rollout about to be created: its id, members (with waves), wave sizes, and what it skips."""

    rollout_id: str
    members: tuple[Member, ...]
    sizes: tuple[int, ...]
    policy: RolloutPolicy
    skipped: tuple[Change, ...] = ()  # held by policy or suspended: not part of it, reported

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(member.resource_id for member in self.members)

    def summary(self) -> str:
        """`Rollout: 4 waves — 1, 49, 200, 750 resources; bake 10m; halt at the first failure`."""
        policy = self.policy
        waves = len(self.sizes)
        failures = ("halt at the first failure" if policy.max_failures == 0
                    else f"halt when a wave has more than {policy.max_failures} failures")
        if policy.on_failure.value == "revert":
            failures = failures.replace("halt", "revert and halt", 1)
        text = (f"Rollout: {waves} wave{'s' if waves != 1 else ''} — {', '.join(map(str, self.sizes))} "
                f"resources; bake {duration_text(policy.bake)}; {failures}")
        if self.skipped:
            names = ", ".join(change.resource_id for change in self.skipped)
            text += f"; {len(self.skipped)} skipped (held or suspended): {names}"
        return text


def duration_text(seconds: float) -> str:
    """10m, 2s, 1h30m: the way policy.yaml writes it."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def propose(*, plan: Plan, policy: RolloutPolicy, rollout_id: str) -> Proposal | None:
    """The rollout this plan's changes make, or None (too few in-scope changes: they go at once)."""
    scope = [change for change in plan.changes if change.action in policy.actions]
    if len(scope) < max(policy.min_changes, 1):
        return None
    canaries = sorted((c for c in scope if policy.canary.matches(c.resource_id, c.after or c.before)),
                      key=lambda c: order_key(rollout_id=rollout_id, resource_id=c.resource_id))
    first = {c.resource_id for c in canaries}
    rest = sorted((c for c in scope if c.resource_id not in first),
                  key=lambda c: order_key(rollout_id=rollout_id, resource_id=c.resource_id))
    sizes = wave_sizes(total=len(scope), waves=policy.waves)
    members, ordered = [], [*canaries, *rest]
    position = 0
    for wave, size in enumerate(sizes, start=1):
        for change in ordered[position:position + size]:
            members.append(Member(rollout_id, change.resource_id, wave, MemberState.PENDING, change.action,
                                  change.before, change.after, change.applied_hash()))
        position += size
    skipped = tuple(note for note in (*plan.waiting, *plan.kept) if note.hold in SKIPPED_HOLDS)
    return Proposal(rollout_id, tuple(members), sizes, policy, skipped)


@dataclass(frozen=True, slots=True)
class Holding:
    """What an active rollout holds of one resource: its member row, its rollout's state and wave count."""

    member: Member
    rollout_state: RolloutState
    waves: int


@dataclass(frozen=True, slots=True)
class Gated:
    """A plan with the rollouts' changes taken out, and the members a newer desired spec supersedes."""

    plan: Plan
    superseded: tuple[Member, ...] = ()


def gate(*, plan: Plan, holdings: Mapping[str, Holding]) -> Gated:
    """Hold the changes an active rollout owns (they wait with `rollout: …`); a change to another spec
    than the member's supersedes it (the change goes ahead: a new rollout or at once)."""
    if not holdings:
        return Gated(plan)
    changes, waiting, superseded = [], list(plan.waiting), []
    for change in plan.changes:
        holding = holdings.get(change.resource_id)
        if holding is None or not holds(holding):
            changes.append(change)
        elif change.action is not Action.DELETE and change.applied_hash() == holding.member.to_hash:
            waiting.append(replace(change, action=Action.NOOP, reason=Reason.ROLLOUT, message=note(holding)))
        else:
            superseded.append(holding.member)
            changes.append(change)
    return Gated(replace(plan, changes=tuple(changes), waiting=tuple(waiting)), tuple(superseded))


def holds(holding: Holding) -> bool:
    """Whether this member keeps its resource: not yet done in an active rollout, or reverted / never
    reached in one that ended (until the desired state changes again)."""
    state = holding.member.state
    if state in OUT:
        return False
    if holding.rollout_state in ACTIVE:
        return state is not MemberState.SUCCEEDED
    return state in {MemberState.REVERTED, MemberState.REVERTING} or (
        holding.rollout_state is RolloutState.ABORTED and state is MemberState.PENDING)


def note(holding: Holding) -> str:
    """`rollout: wave k of n`, `rollout: reverted`, `rollout: halted (wave k of n)`…"""
    member, state = holding.member, holding.member.state
    if state in {MemberState.REVERTED, MemberState.REVERTING}:
        return f"{ROLLOUT_NOTE}reverted"
    where = f"wave {member.wave} of {holding.waves}"
    if holding.rollout_state is RolloutState.RUNNING and state is MemberState.PENDING:
        return f"{ROLLOUT_NOTE}{where}"
    if state in {MemberState.FAILED, MemberState.UNHEALTHY}:
        return f"{ROLLOUT_NOTE}{state} ({where}; rollout {holding.rollout_state})"
    return f"{ROLLOUT_NOTE}{holding.rollout_state} ({where})"
