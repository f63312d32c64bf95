"""The plan: a purely computational function from (desired, observed, now) to the changes to make.

No I/O, no clock, no logging: everything it needs is an argument, so every rule of the plan
table is a small parametrised test, and `plan`, `apply` and the daemon can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as evolve
from datetime import datetime
from enum import StrEnum
from typing import Any

from .models import (
    DELETE_TARGET,
    REPLACE_FIELDS,
    Action,
    Health,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    iso,
    spec_hash,
)
from .suspensions import Suspension, Suspensions

PROTECTED = "protected: "


class Reason(StrEnum):
    """Why a change is planned, or why a resource gets none now (Terraform's ActionReason).

    It explains and sorts (kept or waiting, shown as a retry); it never decides: the rules below do.
    The value is the stable code in plan JSON (`reason_code`); codes are added, never renamed.
    """

    NEW = "new"  # declared, no row yet
    DECLARED_AGAIN = "declared_again"  # declared again after its deletion
    NOT_CREATED = "not_created"  # a row, but no attempt succeeded yet
    TEARDOWN_INTERRUPTED = "teardown_interrupted"  # declared again while its teardown was unfinished
    SPEC_CHANGED = "spec_changed"
    REPLACE_FORCED = "replace_forced"  # region or runtime_target changed
    REMOVED = "removed"  # no longer declared
    RETRY = "retry"  # failed; its backoff has elapsed
    NOT_SETTLED = "not_settled"  # its spec is applied but its status is not active: provision again
    SELF_HEAL = "self_heal"  # failing health checks, and self-heal is on
    IN_FLIGHT = "in_flight"  # a job is open; its end decides
    BACKOFF = "backoff"  # failed; the next attempt is not due yet
    UNHEALTHY = "unhealthy"  # failing health checks, and self-heal is off: observed only
    PROTECTED = "protected"  # no longer declared, kept by `protected: true`
    REPLACE_BLOCKED = "replace_blocked"  # a replacement blocked by `protected: true`
    POLICY = "policy"  # held: the change breaks a rule of policy.yaml (policy/evaluate.py)
    BUDGET = "budget"  # deferred: a change limit of policy.yaml is used up for now; a later pass starts it
    SUSPENDED = "suspended"  # `reconciler suspend`, `suspend:` in its file, or `suspend --all`: left alone
    REPLACE_REQUESTED = "replace_requested"  # `apply --replace ID`, `reconciler replace`, the API's replace
    UNMANAGED = "unmanaged"  # forgotten (`forget --force`) while still declared: never created again
    ROLLOUT = "rollout"  # a rollout owns this change: it waits for its wave (rollout/plan.py's gate)


class Hold(StrEnum):
    """The kind of note a held reason makes (plan JSON's `hold`): the grouping of kept and waiting notes."""

    IN_PROGRESS = "in_progress"
    RETRY = "retry"
    UNHEALTHY = "unhealthy"
    PROTECTED = "protected"  # kept, by design: listed under `kept`
    SUSPENDED = "suspended"  # left alone by an operator's (or a file's) suspension: listed under `kept`
    POLICY = "policy"  # held back by a rule of policy.yaml until the desired state or the policy changes
    BUDGET = "budget"  # a change limit's budget is used up: started by a later pass
    UNMANAGED = "unmanaged"  # kept, forgotten by an operator: listed under `kept`
    ROLLOUT = "rollout"  # a rollout's wave will start it (or it halted, or reverted it)


HOLDS = {Reason.IN_FLIGHT: Hold.IN_PROGRESS, Reason.BACKOFF: Hold.RETRY, Reason.UNHEALTHY: Hold.UNHEALTHY,
         Reason.PROTECTED: Hold.PROTECTED, Reason.REPLACE_BLOCKED: Hold.PROTECTED, Reason.POLICY: Hold.POLICY,
         Reason.BUDGET: Hold.BUDGET, Reason.SUSPENDED: Hold.SUSPENDED, Reason.UNMANAGED: Hold.UNMANAGED,
         Reason.ROLLOUT: Hold.ROLLOUT}
# Holds listed under `kept` (by design, not work still to come).
KEPT = frozenset({Hold.PROTECTED, Hold.SUSPENDED, Hold.UNMANAGED})
# Reasons shown as "retry" (JSON `"action": "retry"`, `~ … will be retried`): running a spec again.
RETRIES = frozenset({Reason.RETRY, Reason.NOT_SETTLED, Reason.SELF_HEAL})
# Holds under which the plan still has work to do, only later (`plan --detailed-exitcode` exits 2).
PENDING = frozenset({Hold.IN_PROGRESS, Hold.RETRY, Hold.BUDGET, Hold.ROLLOUT})
API_SOURCE = "api"
NONE_SUSPENDED = Suspensions()


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
    """One resource's decision: the action, why, and everything its job needs (a job is a projection)."""

    resource_id: str
    action: Action  # what the job does; NOOP for kept and waiting notes
    reason: Reason
    message: str  # the human reason
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    changed: tuple[str, ...] = ()
    # the spec hash the job applies (DELETE_TARGET for a teardown); see applied_hash for a create
    target_hash: str | None = None
    expected_version: int | None = None  # the row version planned against (None: no row)
    attempt: int = 1  # retries count up, for backoff
    source: str = "file"  # who declares it: "file" or "api"
    retry_at: str | None = None  # Reason.BACKOFF: when the next attempt is due
    suspension: Suspension | None = None  # Reason.SUSPENDED: whose, why, until when
    # a create whose target offers observe.sh: the job adopts the resource if it already exists
    or_adopt: bool = False
    # a create's spec, hashed only if it is queued: a create needs no hash to be decided, and a dry
    # run of a new 100k fleet would otherwise hash every spec for nothing
    spec: ResourceSpec | None = field(default=None, compare=False, repr=False)

    def applied_hash(self) -> str | None:
        """The hash the job applies: `target_hash`, or for a create planned without one, its spec's."""
        if self.target_hash is None and self.spec is not None:
            return spec_hash(self.spec)
        return self.target_hash

    @property
    def hold(self) -> Hold | None:
        return HOLDS.get(self.reason)

    @property
    def shown(self) -> str:
        """The action as plans show it: `retry` for a spec run again, else the action itself."""
        return "retry" if self.reason in RETRIES else str(self.action)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a pass would do: `changes` to act on, `kept` (protected, suspended) and `waiting` to report only."""

    changes: tuple[Change, ...]
    kept: tuple[Change, ...] = ()
    waiting: tuple[Change, ...] = ()
    unchanged: int = 0
    live: int = 0
    refusal: str | None = None
    fleet_suspension: Suspension | None = None  # `suspend --all` in force: nothing is started
    # forgotten rows kept unmanaged whose id is no longer declared: from now on a declaration creates them
    released: tuple[str, ...] = ()

    @property
    def suspended(self) -> tuple[Change, ...]:
        return tuple(change for change in self.kept if change.reason is Reason.SUSPENDED)

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
    api: Iterable[str] = (),
    suspensions: Suspensions = NONE_SUSPENDED,
    replace: Iterable[str] = (),
    observable: Iterable[str] = (),
    replace_reason: str | None = None,
) -> Plan:
    """Compare desired with observed; `in_flight` ids have an open job and are left to it.

    `targets`, when given, narrows the plan to those ids; safety limits still count the whole fleet.
    `hashes` may carry spec hashes computed earlier (by id); missing ones are computed here.
    `api` names the desired ids declared through the HTTP API rather than by a file.
    `suspensions` (those expired at `now` are ignored) turn what a resource would get into a kept note.
    `replace` names ids an operator asked to replace (teardown, then provision) although nothing changed.
    `observable` names the runtime targets that offer observe.sh: their creates may adopt instead.
    `replace_reason` is the operator's why, shown with (and recorded by) each requested replace.
    """
    rules = _Rules(stamp=iso(now), policy=policy, hashes=hashes or {}, api=frozenset(api),
                   replace=frozenset(replace), replace_reason=replace_reason)
    held = suspensions.in_force(iso(now))
    busy, only, adoptable = frozenset(in_flight), frozenset(targets), frozenset(observable)
    changes: list[Change] = []
    kept: list[Change] = []
    waiting: list[Change] = []
    released: list[str] = []
    ids = desired.keys() | observed.keys()
    for resource_id in sorted(ids & only if only else ids):
        row = observed.get(resource_id)
        if row is not None and not row.live and resource_id not in desired:
            if row.unmanaged:
                released.append(resource_id)
            continue
        change = rules.decide(resource_id, desired.get(resource_id), row, busy=resource_id in busy)
        if change.action is Action.CREATE and change.spec is not None and change.spec.runtime_target in adoptable:
            change = evolve(change, or_adopt=True)
        suspension = held.of(resource_id)
        if suspension is not None:
            change = _suspended(change, suspension, own=resource_id in held.resources, resource_id=resource_id)
        if change.action is not Action.NOOP:
            changes.append(change)
        elif change.hold in KEPT:
            kept.append(change)
        elif change.hold is not None:
            waiting.append(change)
    live = sum(1 for row in observed.values() if row.live)
    considered = desired.keys() | {r for r, row in observed.items() if row.live}
    unchanged = len(considered & only if only else considered) - len(changes) - len(kept) - len(waiting)
    plan = Plan(tuple(changes), tuple(kept), tuple(waiting), unchanged, live, fleet_suspension=held.fleet,
                released=tuple(released))
    return _with_safety(plan, policy)


_UNCHANGED = Change("", Action.NOOP, Reason.NEW, "")


def _suspended(change: Change, suspension: Suspension, *, own: bool, resource_id: str) -> Change:
    """A suspended resource gets a kept note instead of what it would get, which the note still says.

    A resource's own suspension is always shown; the fleet's only where something would happen, so a
    suspended fleet in sync plans as quietly as one that is not suspended.
    """
    if change is _UNCHANGED:
        if not own:
            return change
        return Change(resource_id, Action.NOOP, Reason.SUSPENDED, suspension.describe(), suspension=suspension)
    would = f"{change.shown}: {change.message}" if change.action is not Action.NOOP else change.message
    return Change(resource_id, Action.NOOP, Reason.SUSPENDED, f"{suspension.describe()}; would otherwise {would}",
                  change.before, change.after, change.changed, suspension=suspension)


@dataclass(frozen=True, slots=True)
class _Rules:
    """The plan table, row by row; what every rule needs besides the resource itself."""

    stamp: str | None
    policy: PlanPolicy
    hashes: Mapping[str, str]
    api: frozenset[str]
    replace: frozenset[str] = frozenset()
    replace_reason: str | None = None

    def decide(self, resource_id: str, spec: ResourceSpec | None, row: ObservedResource | None, *,
               busy: bool) -> Change:
        """What this resource gets (`_UNCHANGED` when nothing): the plan table, before any suspension."""
        if busy:
            return Change(resource_id, Action.NOOP, Reason.IN_FLIGHT, "a job is in progress")
        if spec is not None:
            return self.for_desired(spec, row)
        assert row is not None, "every id is desired or observed"
        return self.for_removed(row)

    def for_desired(self, spec: ResourceSpec, row: ObservedResource | None) -> Change:
        known = self.hashes.get(spec.resource_id)
        source = API_SOURCE if spec.resource_id in self.api else "file"
        if row is not None and row.status is ResourceStatus.FORGOTTEN:
            return _forgotten(spec, row, known, source)
        if row is None or not row.live:
            reason, message = (Reason.DECLARED_AGAIN, "declared again after deletion") if row is not None else (
                Reason.NEW, "not yet created")
            return _create(spec, row, known, source, reason, message)
        wanted = known or spec_hash(spec)
        if (spec.resource_id in self.replace and row.spec_hash is not None
                and row.status is not ResourceStatus.DELETING):
            return _replace_requested(spec, row, wanted, source, self.replace_reason)
        if row.spec_hash == wanted and row.status is ResourceStatus.ACTIVE:
            if row.health is Health.UNHEALTHY:
                return self._unhealthy(spec, row, wanted, source)
            return _UNCHANGED  # the common case at scale: decided without building a dict
        if row.status is ResourceStatus.ERRORED and row.target_hash == wanted:
            return self._retry(spec, row, wanted, source)
        if row.spec_hash is None or row.status is ResourceStatus.DELETING:
            reason, message = (Reason.NOT_CREATED, "not yet created (the last attempt did not succeed)") if (
                row.spec_hash is None) else (Reason.TEARDOWN_INTERRUPTED, "teardown was interrupted; declared again")
            return _create(spec, row, wanted, source, reason, message)
        if row.spec_hash == wanted:
            return Change(spec.resource_id, Action.UPDATE, Reason.NOT_SETTLED,
                          f"{row.status} although its spec is applied; running provision again", None,
                          spec.model_dump(), (), wanted, row.version, _next_attempt(row), source)
        return _changed(spec, row, wanted, source)

    def _unhealthy(self, spec: ResourceSpec, row: ObservedResource, wanted: str, source: str) -> Change:
        checks = f"unhealthy after {row.consecutive_failures} failed checks"
        if not self.policy.self_heal:
            return Change(spec.resource_id, Action.NOOP, Reason.UNHEALTHY,
                          f"{checks}; not re-provisioned (self-heal is off)")
        return Change(spec.resource_id, Action.UPDATE, Reason.SELF_HEAL, f"{checks}; self-heal re-provisions", None,
                      spec.model_dump(), (), wanted, row.version, _next_attempt(row), source)

    def _retry(self, spec: ResourceSpec, row: ObservedResource, wanted: str, source: str) -> Change:
        if row.next_attempt_at and row.next_attempt_at > (self.stamp or ""):
            return Change(row.resource_id, Action.NOOP, Reason.BACKOFF,
                          f"retry {row.attempts + 1} at {row.next_attempt_at} (last error: {row.error})",
                          retry_at=row.next_attempt_at)
        after = spec.model_dump()
        if row.spec_hash is None:
            action = Action.CREATE
        elif any(row.applied_spec().get(name) != after[name] for name in REPLACE_FIELDS):
            action = Action.REPLACE
        else:
            action = Action.UPDATE
        return Change(row.resource_id, action, Reason.RETRY, f"attempt {row.attempts + 1} after: {row.error}",
                      row.applied_spec() if row.spec_hash else None, after, (), wanted, row.version,
                      row.attempts + 1, source)

    def for_removed(self, row: ObservedResource) -> Change:
        before = row.applied_spec()
        if row.protected:
            return Change(row.resource_id, Action.NOOP, Reason.PROTECTED,
                          f"{PROTECTED}kept although no longer declared; set protected: false and apply first",
                          before)
        failed_teardown = row.status is ResourceStatus.ERRORED and row.target_hash == DELETE_TARGET
        if failed_teardown and row.next_attempt_at and row.next_attempt_at > (self.stamp or ""):
            return Change(row.resource_id, Action.NOOP, Reason.BACKOFF,
                          f"teardown retry {row.attempts + 1} at {row.next_attempt_at} (last error: {row.error})",
                          retry_at=row.next_attempt_at)
        # shown as a plain delete, so "source" stays "file" in plans; the store does not read it for a teardown
        return Change(row.resource_id, Action.DELETE, Reason.REMOVED, "no longer declared", before, None, (),
                      DELETE_TARGET, row.version, 1)


def _create(spec: ResourceSpec, row: ObservedResource | None, wanted: str | None, source: str, reason: Reason,
            message: str) -> Change:
    return Change(spec.resource_id, Action.CREATE, reason, message, None, spec.model_dump(), (), wanted,
                  row.version if row is not None else None, 1, source, spec=spec)


def _forgotten(spec: ResourceSpec, row: ObservedResource, known: str | None, source: str) -> Change:
    """A forgotten row: kept unmanaged while it stays declared; once released, a declaration creates it."""
    if row.unmanaged:
        return Change(row.resource_id, Action.NOOP, Reason.UNMANAGED,
                      "forgotten, not managed although declared (adopt it, or remove it from desired/)",
                      row.applied_spec())
    return _create(spec, row, known, source, Reason.DECLARED_AGAIN, "declared again after it was forgotten")


def _replace_requested(spec: ResourceSpec, row: ObservedResource, wanted: str, source: str,
                       why: str | None) -> Change:
    """An operator's replace: teardown of the applied spec, then provision of the declared one."""
    before, after = row.applied_spec(), spec.model_dump()
    changed = tuple(name for name in after if before.get(name) != after[name])
    message = "replace requested" + (f": {why}" if why else "") + (f"; {', '.join(changed)} changed" if changed else "")
    if before.get("protected"):
        return Change(row.resource_id, Action.NOOP, Reason.REPLACE_BLOCKED,
                      f"{PROTECTED}replace requested is blocked; set protected: false and apply first", before,
                      after, changed)
    return Change(row.resource_id, Action.REPLACE, Reason.REPLACE_REQUESTED, message, before, after, changed,
                  wanted, row.version, 1, source)


def _next_attempt(row: ObservedResource) -> int:
    """A spec run again after a failure counts up (for backoff); otherwise it is a fresh first attempt."""
    return row.attempts + 1 if row.status is ResourceStatus.ERRORED else 1


def _changed(spec: ResourceSpec, row: ObservedResource, wanted: str, source: str) -> Change:
    before, after = row.applied_spec(), spec.model_dump()
    changed = tuple(name for name in after if before.get(name) != after[name])
    forcing = [name for name in REPLACE_FIELDS if name in changed]
    if not forcing:
        return Change(row.resource_id, Action.UPDATE, Reason.SPEC_CHANGED, ", ".join(changed) + " changed", before,
                      after, changed, wanted, row.version, 1, source)
    message = " and ".join(forcing) + (" forces" if len(forcing) == 1 else " force") + " replacement"
    if before.get("protected"):
        return Change(row.resource_id, Action.NOOP, Reason.REPLACE_BLOCKED,
                      f"{PROTECTED}{message} is blocked; set protected: false first", before, after, changed)
    return Change(row.resource_id, Action.REPLACE, Reason.REPLACE_FORCED, message, before, after, changed, wanted,
                  row.version, 1, source)


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
    return evolve(plan, refusal=refusal + "; pass --allow-mass-delete if that is what you want")
