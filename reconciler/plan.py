"""The plan: a purely computational function from (desired, observed, now) to the changes to make.

No I/O, no clock, no logging: everything it needs is an argument, so every rule of the plan
table is a small parametrised test, and `plan`, `apply` and the daemon can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Iterable, Mapping

from .models import (
    DELETE_TARGET,
    Health,
    REPLACE_FIELDS,
    JobAction,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    iso,
    spec_hash,
)


PROTECTED = "protected: "


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    RETRY = "retry"
    NOOP = "noop"


class Hold(StrEnum):
    """Why a resource gets no change now although it is not settled (kept and waiting notes)."""

    IN_PROGRESS = "in_progress"  # a job is open; its end decides
    RETRY = "retry"  # it failed; the next attempt is not due yet
    UNHEALTHY = "unhealthy"  # failing health checks, and self-heal is off: observed only
    PROTECTED = "protected"  # kept, or its replacement blocked, by `protected: true` (by design)


# Holds under which the plan still has work to do, only later (`plan --detailed-exitcode` exits 2).
PENDING = frozenset({Hold.IN_PROGRESS, Hold.RETRY})


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """Safety rules: deleting everything, or more than max(minimum, fraction × live), needs an override."""

    allow_mass_delete: bool = False
    mass_delete_minimum: int = 10
    mass_delete_fraction: float = 0.25
    # re-provision resources whose health checks failed (off by default, as in Argo CD)
    self_heal: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One resource's difference and what to do about it."""

    resource_id: str
    action: Action
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    changed: tuple[str, ...] = ()
    job_action: JobAction | None = None
    hold: Hold | None = None  # set on kept and waiting notes
    retry_at: str | None = None  # Hold.RETRY: when the next attempt is due


@dataclass(frozen=True, slots=True)
class Plan:
    """What a pass would do: `changes` to act on, `kept` (protected) and `waiting` to report only."""

    changes: tuple[Change, ...]
    kept: tuple[Change, ...] = ()
    waiting: tuple[Change, ...] = ()
    unchanged: int = 0
    live: int = 0
    refusal: str | None = None

    def count(self, action: Action) -> int:
        return sum(1 for change in self.changes if change.action is action)

    @property
    def deletes(self) -> int:
        return self.count(Action.DELETE)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def pending(self) -> tuple[Change, ...]:
        """Notes of work still to come (a job in progress, a retry not yet due); protected ones are not."""
        return tuple(change for change in self.waiting if change.hold in PENDING)


def compute_plan(
    desired: Mapping[str, ResourceSpec],
    observed: Mapping[str, ObservedResource],
    *,
    now: datetime,
    in_flight: Iterable[str] = (),
    policy: PlanPolicy = PlanPolicy(),
    targets: Iterable[str] = (),
    hashes: Mapping[str, str] | None = None,
) -> Plan:
    """Compare desired with observed; `in_flight` ids have an open job and are left to it.

    `targets`, when given, narrows the plan to those ids; safety limits still count the whole fleet.
    `hashes` may carry spec hashes computed earlier (by id); missing ones are computed here.
    """
    known = hashes or {}
    busy, stamp, only = frozenset(in_flight), iso(now), frozenset(targets)
    changes: list[Change] = []
    kept: list[Change] = []
    waiting: list[Change] = []
    ids = desired.keys() | observed.keys()
    for resource_id in sorted(ids & only if only else ids):
        row = observed.get(resource_id)
        if row is not None and not row.live and resource_id not in desired:
            continue
        if resource_id in busy:
            waiting.append(Change(resource_id, Action.NOOP, "a job is in progress", hold=Hold.IN_PROGRESS))
            continue
        spec = desired.get(resource_id)
        if spec is None:
            change = _for_removed(row, stamp)
        else:
            change = _for_desired(spec, row, stamp, policy, known.get(resource_id))
        if change.action is not Action.NOOP:
            changes.append(change)
        elif change.hold is Hold.PROTECTED:
            kept.append(change)
        elif change.hold is not None:
            waiting.append(change)
    live = sum(1 for row in observed.values() if row.live)
    considered = desired.keys() | {r for r, row in observed.items() if row.live}
    unchanged = len(considered & only if only else considered) - len(changes) - len(kept) - len(waiting)
    plan = Plan(tuple(changes), tuple(kept), tuple(waiting), unchanged, live)
    return _with_safety(plan, policy)


_UNCHANGED = Change("", Action.NOOP, "")


def _for_desired(spec: ResourceSpec, row: ObservedResource | None, stamp: str, policy: PlanPolicy,
                 known_hash: str | None) -> Change:
    if row is None or not row.live:
        reason = "declared again after deletion" if row is not None else "not yet created"
        return Change(spec.resource_id, Action.CREATE, reason, None, spec.model_dump(), (), JobAction.CREATE)
    wanted = known_hash or spec_hash(spec)
    if row.spec_hash == wanted and row.status is ResourceStatus.ACTIVE:
        if row.health is Health.UNHEALTHY:
            return _unhealthy(spec, row, policy)
        return _UNCHANGED  # the common case at scale: decided without building a dict
    after = spec.model_dump()
    if row.status is ResourceStatus.ERRORED and row.target_hash == wanted:
        return _retry(row, after, stamp)
    if row.spec_hash is None or row.status is ResourceStatus.DELETING:
        reason = "not yet created (the last attempt did not succeed)" if row.spec_hash is None else (
            "teardown was interrupted; declared again")
        return Change(spec.resource_id, Action.CREATE, reason, None, after, (), JobAction.CREATE)
    if row.spec_hash == wanted:
        reason = f"{row.status} although its spec is applied; running provision again"
        return Change(spec.resource_id, Action.RETRY, reason, None, after, (), JobAction.UPDATE)
    return _changed(row, after)


def _unhealthy(spec: ResourceSpec, row: ObservedResource, policy: PlanPolicy) -> Change:
    checks = f"unhealthy after {row.consecutive_failures} failed checks"
    if not policy.self_heal:
        return Change(spec.resource_id, Action.NOOP, f"{checks}; not re-provisioned (self-heal is off)",
                      hold=Hold.UNHEALTHY)
    return Change(spec.resource_id, Action.RETRY, f"{checks}; self-heal re-provisions", None, spec.model_dump(),
                  (), JobAction.UPDATE)


def _changed(row: ObservedResource, after: dict[str, Any]) -> Change:
    before = row.applied_spec()
    changed = tuple(name for name in after if before.get(name) != after[name])
    forcing = [name for name in REPLACE_FIELDS if name in changed]
    if not forcing:
        reason = ", ".join(changed) + " changed"
        return Change(row.resource_id, Action.UPDATE, reason, before, after, changed, JobAction.UPDATE)
    reason = " and ".join(forcing) + (" forces" if len(forcing) == 1 else " force") + " replacement"
    if before.get("protected"):
        return Change(row.resource_id, Action.NOOP, f"{PROTECTED}{reason} is blocked; set protected: false first",
                      before, after, changed, hold=Hold.PROTECTED)
    return Change(row.resource_id, Action.REPLACE, reason, before, after, changed, JobAction.REPLACE)


def _retry(row: ObservedResource, after: dict[str, Any], stamp: str) -> Change:
    if row.next_attempt_at and row.next_attempt_at > stamp:
        return Change(row.resource_id, Action.NOOP,
                      f"retry {row.attempts + 1} at {row.next_attempt_at} (last error: {row.error})",
                      hold=Hold.RETRY, retry_at=row.next_attempt_at)
    if row.spec_hash is None:
        action = JobAction.CREATE
    elif any(row.applied_spec().get(name) != after[name] for name in REPLACE_FIELDS):
        action = JobAction.REPLACE
    else:
        action = JobAction.UPDATE
    reason = f"attempt {row.attempts + 1} after: {row.error}"
    return Change(row.resource_id, Action.RETRY, reason, row.applied_spec() if row.spec_hash else None,
                  after, (), action)


def _for_removed(row: ObservedResource, stamp: str) -> Change:
    before = row.applied_spec()
    if row.protected:
        return Change(row.resource_id, Action.NOOP,
                      f"{PROTECTED}kept although no longer declared; set protected: false and apply first",
                      before, hold=Hold.PROTECTED)
    if row.status is ResourceStatus.ERRORED and row.target_hash == DELETE_TARGET:
        if row.next_attempt_at and row.next_attempt_at > stamp:
            return Change(row.resource_id, Action.NOOP,
                          f"teardown retry {row.attempts + 1} at {row.next_attempt_at} (last error: {row.error})",
                          hold=Hold.RETRY, retry_at=row.next_attempt_at)
    return Change(row.resource_id, Action.DELETE, "no longer declared", before, None, (), JobAction.DELETE)


def _with_safety(plan: Plan, policy: PlanPolicy) -> Plan:
    deletes, live = plan.deletes, plan.live
    if policy.allow_mass_delete or deletes == 0:
        return plan
    limit = max(policy.mass_delete_minimum, int(live * policy.mass_delete_fraction))
    if deletes >= live:
        refusal = f"the plan would delete every live resource ({deletes} of {live})"
    elif deletes > limit:
        refusal = f"the plan would delete {deletes} of {live} live resources (more than {limit})"
    else:
        return plan
    return Plan(plan.changes, plan.kept, plan.waiting, plan.unchanged, plan.live,
                refusal + "; pass --allow-mass-delete if that is what you want")
