"""The policy's one evaluation: desired state + observed rows + plan in, a `Verdict` out. Pure.

No I/O, no clock (the caller counts the jobs started in the last hour), so `validate`, `plan`,
`apply`, the daemon's pass and the API cannot disagree. One pass over the declared resources with
counters (allowed values checked once per distinct (owner, region, target, deploy_ref)), then the
few resources that are new to a quota bucket, in resource_id order, then the plan's changes: the cost
grows with the fleet, not with the number of rules.

The semantics, which the README states for users:
- quotas count declared resources; one already live in its bucket (a row not deleted, same owner,
  region and runtime_target) is never held: over a tightened quota it is reported, not blocked; the
  others are admitted in resource_id order up to the limit, so the same inputs hold the same ones;
- allowed values and params are checked on every declared resource; a violation blocks only a
  resource this plan changes (an unchanged live one is reported);
- change limits count the plan's changes left after holds (a replace counts as a create and a
  delete); with `budgets` (the daemon) the excess is deferred in resource_id order, without (the CLI)
  the plan is over the limit and refused;
- `mode: warn` reports every violation and holds or defers nothing; an override (`--override RULE`)
  lets its rule be exceeded and names the resources that exceeded it (`Verdict.overridden`).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Action, ObservedResource, ResourceSpec, ResourceStatus
from ..plan import Change, Plan, Reason
from .model import (
    DEFAULT_KEY,
    Held,
    Limit,
    Limits,
    Mode,
    Place,
    Policy,
    PolicyWarning,
    Rule,
    Usage,
    Verdict,
    Violation,
)

# what each action counts against in changes.max_per_plan
KINDS: Mapping[Action, tuple[str, ...]] = {Action.CREATE: ("create",), Action.UPDATE: ("update",),
                                           Action.REPLACE: ("create", "delete"), Action.DELETE: ("delete",)}
PER_PLAN_RULES = {"create": Rule.MAX_CREATES, "update": Rule.MAX_UPDATES, "delete": Rule.MAX_DELETES}
_Problem = tuple[Rule, str, Place | None]
_Group = tuple[str, str, str, str]  # (owner, region, runtime_target, deploy_ref)


class Located(Protocol):
    """Where a resource is declared (spec.Source): shown beside its violations."""

    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...


_NOWHERE: Mapping[str, Located] = {}
_NONE: Mapping[str, int] = {}


def evaluate(*, policy: Policy, desired: Mapping[str, ResourceSpec], observed: Mapping[str, ObservedResource],
             plan: Plan | None, started_last_hour: Mapping[str, int] = _NONE,
             overrides: frozenset[Rule] = frozenset(), budgets: bool = False,
             sources: Mapping[str, Located] = _NOWHERE, known_targets: frozenset[str] | None = None) -> Verdict:
    """The verdict of `policy` on `desired` (planned against `observed` into `plan`).

    `plan` None (`validate`: no database) treats every declared resource as changing and checks no
    change limits. `started_last_hour`: jobs per owner the store saw start in the last hour.
    `known_targets`, when given, is what an `allowed`/quota runtime_target name is checked against
    for warnings (else the targets the desired state uses).
    """
    run = _Run(policy=policy, plan=plan, overrides=overrides, sources=sources)
    with _no_gc_pauses():
        candidates, fresh = run.resources(desired=desired, observed=observed)
        run.over_quota()
        run.admit(candidates=candidates, fresh=fresh, desired=desired)
        if plan is not None:
            run.protected(observed=observed)
            run.change_limits(desired=desired, observed=observed, started=started_last_hour,
                              budgets=budgets and run.enforce)
            run.mass_delete()
    return Verdict(policy=policy, violations=tuple(run.violations), held=run.held, deferred=run.deferred,
                   overridden={rid: frozenset(rules) for rid, rules in run.overridden.items()},
                   usage=run.usage(), warnings=_warnings(policy=policy, counts=run.counts, observed=observed,
                                                        known_targets=known_targets))


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """The pass allocates one small tuple per resource and nothing cyclic; the cyclic collector would
    only rescan the plan's 100,000 changes meanwhile (half the evaluation's time at that size)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class _Counts:
    """Declared resources per bucket: established ones first, then admitted ones."""

    total: int = 0
    owner: dict[str, int] = field(default_factory=dict)
    region: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    pair: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, owner: str, region: str, target: str, count: int = 1) -> None:
        self.total += count
        self.owner[owner] = self.owner.get(owner, 0) + count
        self.region[region] = self.region.get(region, 0) + count
        self.target[target] = self.target.get(target, 0) + count
        self.pair[owner, target] = self.pair.get((owner, target), 0) + count

    def add_groups(self, groups: Mapping[_Group, int]) -> None:
        """Resources counted per (owner, region, runtime_target, deploy_ref): few groups, many resources."""
        for (owner, region, target, _ref), count in groups.items():
            self.add(owner, region, target, count)


class _Run:
    """One evaluation's state: what it found so far."""

    def __init__(self, *, policy: Policy, plan: Plan | None, overrides: frozenset[Rule],
                 sources: Mapping[str, Located]) -> None:
        self.policy, self.plan, self.overrides, self.sources = policy, plan, overrides, sources
        self.enforce = policy.mode is Mode.ENFORCE
        self._changing: frozenset[str] | None = None  # ids the plan changes, built at the first violation
        self.violations: list[Violation] = []
        self.held: dict[str, Held] = {}
        self.deferred: dict[str, Held] = {}
        self.overridden: dict[str, set[Rule]] = {}
        self.counts = _Counts()

    def changes_now(self, resource_id: str) -> bool:
        """Whether this run changes the resource (validate, with no plan: every declared one)."""
        if self.plan is None:
            return True
        if self._changing is None:
            self._changing = frozenset(change.resource_id for change in self.plan.changes)
        return resource_id in self._changing

    def report(self, rule: Rule, resource_id: str | None, message: str, place: Place | None, *, now: bool) -> bool:
        """Record a violation; True when the rule stops it (enforced, bears on this run, not overridden)."""
        applies = now and self.enforce
        overridden = applies and rule in self.overrides
        blocking = applies and not overridden
        source = self.sources.get(resource_id) if resource_id is not None else None
        where = f"{source.file}:{source.line}" if source is not None else None
        self.violations.append(Violation(rule, resource_id, message, place, blocking, where, overridden))
        if resource_id is not None and overridden:
            self.overridden.setdefault(resource_id, set()).add(rule)
        if resource_id is not None and blocking and resource_id not in self.held:
            self.held[resource_id] = Held(rule, message, place)
        return blocking

    # --- declared resources: allowed values, params, established quota counts -----------------------

    def resources(self, *, desired: Mapping[str, ResourceSpec],
                  observed: Mapping[str, ObservedResource]) -> tuple[list[str], dict[_Group, int]]:
        """One pass: check every declared resource, count the established ones by group; returns the
        others' ids (new to their buckets) and their counts by group."""
        params = self.policy.params
        required, forbidden = frozenset(params.required), frozenset(params.forbidden)
        allowed: dict[_Group, tuple[_Problem, ...]] = {}
        established: dict[_Group, int] = {}
        fresh: dict[_Group, int] = {}
        candidates: list[str] = []
        deleted = ResourceStatus.DELETED
        for resource_id, spec in desired.items():
            owner, region, target = spec.owner, spec.region, spec.runtime_target
            key = (owner, region, target, spec.deploy_ref)
            problems = allowed.get(key)
            if problems is None:
                problems = allowed[key] = self._check_allowed(spec)
            if required or forbidden:  # set operations on the keys view: in C, no per-key Python
                keys = spec.params.keys()
                if not keys >= required or not keys.isdisjoint(forbidden):
                    problems += self._check_params(spec)
            for rule, message, place in problems:
                self.report(rule, resource_id, f"{resource_id}: {message}", place, now=self.changes_now(resource_id))
            row = observed.get(resource_id)
            if (row is not None and row.status is not deleted and row.owner == owner and row.region == region
                    and row.runtime_target == target):
                established[key] = established.get(key, 0) + 1
            else:
                candidates.append(resource_id)
                fresh[key] = fresh.get(key, 0) + 1
        self.counts.add_groups(established)
        return candidates, fresh

    def _check_allowed(self, spec: ResourceSpec) -> tuple[_Problem, ...]:
        allowed, found = self.policy.allowed, []
        if allowed.regions is not None and spec.region not in allowed.regions.values:
            found.append((Rule.ALLOWED_REGIONS, f"region {spec.region!r} is not allowed "
                          f"(allowed: {_names(allowed.regions.values)})", allowed.regions.place))
        if allowed.runtime_targets is not None and spec.runtime_target not in allowed.runtime_targets.values:
            found.append((Rule.ALLOWED_RUNTIME_TARGETS, f"runtime_target {spec.runtime_target!r} is not allowed "
                          f"(allowed: {_names(allowed.runtime_targets.values)})", allowed.runtime_targets.place))
        if allowed.deploy_ref is not None and allowed.deploy_ref.regex.search(spec.deploy_ref) is None:
            found.append((Rule.ALLOWED_DEPLOY_REF, f"deploy_ref {spec.deploy_ref!r} does not match "
                          f"{allowed.deploy_ref.regex.pattern!r}", allowed.deploy_ref.place))
        own = allowed.owners.get(spec.owner)
        if own is not None:
            if own.regions is not None and spec.region not in own.regions.values:
                found.append((Rule.ALLOWED_OWNERS, f"owner {spec.owner!r} may use regions "
                              f"{_names(own.regions.values)}, not {spec.region!r}", own.regions.place))
            if own.runtime_targets is not None and spec.runtime_target not in own.runtime_targets.values:
                found.append((Rule.ALLOWED_OWNERS, f"owner {spec.owner!r} may use runtime_targets "
                              f"{_names(own.runtime_targets.values)}, not {spec.runtime_target!r}",
                              own.runtime_targets.place))
        return tuple(found)

    def _check_params(self, spec: ResourceSpec) -> tuple[_Problem, ...]:
        rules, keys, found = self.policy.params, spec.params, []
        missing = [name for name in rules.required if name not in keys]
        if missing:
            found.append((Rule.PARAMS_REQUIRED, f"params lacks required key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}", rules.required_place))
        present = [name for name in rules.forbidden if name in keys]
        if present:
            found.append((Rule.PARAMS_FORBIDDEN, f"params must not contain {', '.join(present)}",
                          rules.forbidden_place))
        return tuple(found)

    # --- quotas ----------------------------------------------------------------------------------

    def _limits(self, owner: str, region: str, target: str) -> list[tuple[Rule, str, int, Limit]]:
        """Every quota bucket of one resource that has a limit: (rule, bucket named, its count, limit)."""
        quotas, counts, found = self.policy.quotas, self.counts, []
        if quotas.total is not None:
            found.append((Rule.QUOTA_TOTAL, "the fleet", counts.total, quotas.total))
        for rule, noun, name, table, limit in (
                (Rule.QUOTA_PER_OWNER, "owner", owner, counts.owner, quotas.per_owner.get(owner)),
                (Rule.QUOTA_PER_REGION, "region", region, counts.region, quotas.per_region.get(region)),
                (Rule.QUOTA_PER_RUNTIME_TARGET, "runtime_target", target, counts.target,
                 quotas.per_runtime_target.get(target))):
            if limit is not None:
                found.append((rule, f"{noun} {name!r}", table.get(name, 0), limit))
        pair = quotas.pair(owner, target) if quotas.per_owner_runtime_target else None
        if pair is not None:
            found.append((Rule.QUOTA_PER_OWNER_RUNTIME_TARGET, f"owner {owner!r} on runtime_target {target!r}",
                          counts.pair.get((owner, target), 0), pair))
        return found

    def over_quota(self) -> None:
        """Buckets whose established resources already exceed their quota (a tightened policy): reported."""
        quotas, counts = self.policy.quotas, self.counts
        over: list[tuple[Rule, str, int, Limit | None]] = [(Rule.QUOTA_TOTAL, "the fleet", counts.total, quotas.total)]
        over += [(Rule.QUOTA_PER_OWNER, f"owner {name!r}", n, quotas.per_owner.get(name))
                 for name, n in counts.owner.items()]
        over += [(Rule.QUOTA_PER_REGION, f"region {name!r}", n, quotas.per_region.get(name))
                 for name, n in counts.region.items()]
        over += [(Rule.QUOTA_PER_RUNTIME_TARGET, f"runtime_target {name!r}", n, quotas.per_runtime_target.get(name))
                 for name, n in counts.target.items()]
        if quotas.per_owner_runtime_target:
            over += [(Rule.QUOTA_PER_OWNER_RUNTIME_TARGET, f"owner {o!r} on runtime_target {t!r}", n,
                      quotas.pair(o, t)) for (o, t), n in counts.pair.items()]
        for rule, bucket, count, limit in sorted(over, key=lambda item: (item[0], item[1])):
            if limit is not None and count > limit.value:
                self.report(rule, None, f"{bucket} has {count} live resources, over its quota of {limit.value}: "
                            "none is held or torn down for it; new ones are held", limit.place, now=False)

    def admit(self, *, candidates: list[str], fresh: dict[_Group, int], desired: Mapping[str, ResourceSpec]) -> None:
        """New resources (to their buckets) in resource_id order, each while every bucket has room.

        When every bucket has room for all of them (the common case), they are admitted at once, counted
        by group; otherwise one by one in resource_id order, so the same inputs hold the same ones.
        """
        if not self._has_quota() or self._all_fit(fresh):
            self.counts.add_groups(fresh)
            return
        for resource_id in sorted(candidates):
            spec = desired[resource_id]
            owner, region, target = spec.owner, spec.region, spec.runtime_target
            stopped = False
            for rule, bucket, count, limit in self._limits(owner, region, target):
                if count >= limit.value:
                    message = (f"{resource_id}: {bucket} is at its quota of {limit.value} ({count} declared "
                               "resources come first in resource_id order)")
                    self.report(rule, resource_id, message, limit.place, now=self.changes_now(resource_id))
                    # held (or, outside this plan, would be): it takes no room from the ones after it
                    stopped = stopped or (self.enforce and rule not in self.overrides)
            if not stopped:
                self.counts.add(owner, region, target)

    def _has_quota(self) -> bool:
        quotas = self.policy.quotas
        return (quotas.total is not None or bool(quotas.per_owner) or bool(quotas.per_region)
                or bool(quotas.per_runtime_target) or bool(quotas.per_owner_runtime_target))

    def _all_fit(self, fresh: dict[_Group, int]) -> bool:
        """Whether every bucket holds its established resources plus all the new ones within its limit."""
        after = _Counts()
        after.add_groups(fresh)
        for owner, region, target in {(o, r, t) for o, r, t, _ in fresh}:
            for rule, _bucket, count, limit in self._limits(owner, region, target):
                if count + _new_in_bucket(rule, after, owner, region, target) > limit.value:
                    return False
        return True

    def usage(self) -> dict[str, Usage]:
        per_owner = self.policy.quotas.per_owner
        return {owner: Usage(count, limit.value if (limit := per_owner.get(owner)) else None)
                for owner, count in sorted(self.counts.owner.items())}

    # --- the plan's changes ----------------------------------------------------------------------

    def protected(self, *, observed: Mapping[str, ObservedResource]) -> None:
        owners = self.policy.allowed.owners
        if not any(rules.protected for rules in owners.values()):
            return
        for change in self.plan.changes if self.plan else ():
            row = observed.get(change.resource_id)
            if change.action not in (Action.DELETE, Action.REPLACE) or row is None:
                continue
            rules = owners.get(row.owner)
            if rules is not None and rules.protected is not None:
                verb = "deleted" if change.action is Action.DELETE else "replaced"
                self.report(Rule.PROTECTED, change.resource_id, f"{change.resource_id}: owner {row.owner!r} is "
                            f"protected by the policy: its resources are not {verb}", rules.protected, now=True)

    def change_limits(self, *, desired: Mapping[str, ResourceSpec], observed: Mapping[str, ObservedResource],
                      started: Mapping[str, int], budgets: bool) -> None:
        """changes.max_per_plan and max_per_owner_per_hour over the changes not held."""
        changes = self.policy.changes
        hourly = changes.max_per_owner_per_hour
        if not changes.max_per_plan and hourly is None:
            return
        held = self.held
        left = [c for c in self.plan.changes if c.resource_id not in held] if held and self.plan else (
            list(self.plan.changes) if self.plan else [])
        actions = Counter(change.action for change in left)
        per_kind = {kind: sum(n for action, n in actions.items() if kind in KINDS.get(action, ()))
                    for kind in changes.max_per_plan}
        # the common case decided from counts alone: no kind over its limit, and no owner able to exceed
        # the hourly budget (all the changes plus the busiest owner's last hour stay within it)
        over_kind = any(per_kind[kind] > limit.value for kind, limit in changes.max_per_plan.items())
        if not over_kind and (hourly is None or len(left) + max(started.values(), default=0) <= hourly.value):
            return
        owners = _owners(left, desired, observed) if hourly is not None else {}
        if budgets:
            self._defer(left=left, owners=owners, started=started)
            return
        for kind, limit in sorted(changes.max_per_plan.items()):
            if per_kind[kind] > limit.value:
                ids = [c.resource_id for c in left if kind in KINDS.get(c.action, ())]
                self._over(PER_PLAN_RULES[kind], ids, f"the plan would {kind} {per_kind[kind]} resources; at most "
                           f"{limit.value} per plan", limit.place)
        if hourly is None:
            return
        for owner, count in sorted(Counter(owners.values()).items()):
            done = started.get(owner, 0)
            if done + count > hourly.value:
                ids = [rid for rid, whose in owners.items() if whose == owner]
                self._over(Rule.MAX_PER_OWNER_PER_HOUR, ids, f"owner {owner!r} would start {count} changes after "
                           f"{done} in the last hour; at most {hourly.value} per hour", hourly.place)

    def _over(self, rule: Rule, ids: list[str], message: str, place: Place | None) -> None:
        """A limit over the plan as a whole: one violation; an override marks every change it let through."""
        self.report(rule, None, message, place, now=True)
        if self.enforce and rule in self.overrides:
            for resource_id in ids:
                self.overridden.setdefault(resource_id, set()).add(rule)

    def _defer(self, *, left: list[Change], owners: dict[str, str], started: Mapping[str, int]) -> None:
        """Budgets: the changes up to each limit now, in resource_id order; the rest wait for a later pass."""
        changes = self.policy.changes
        hourly = changes.max_per_owner_per_hour
        taken: dict[str, int] = {}
        by_owner: dict[str, int] = dict(started)
        for change in left:
            over = self._over_budget(change, taken=taken, by_owner=by_owner, owners=owners)
            if over is not None and over[0] not in self.overrides:
                self.deferred[change.resource_id] = Held(*over)
                continue
            if over is not None:
                self.overridden.setdefault(change.resource_id, set()).add(over[0])
            for kind in KINDS.get(change.action, ()):
                taken[kind] = taken.get(kind, 0) + 1
            if hourly is not None:
                owner = owners[change.resource_id]
                by_owner[owner] = by_owner.get(owner, 0) + 1

    def _over_budget(self, change: Change, *, taken: dict[str, int], by_owner: dict[str, int],
                     owners: dict[str, str]) -> tuple[Rule, str, Place | None] | None:
        changes = self.policy.changes
        for kind in KINDS.get(change.action, ()):
            limit = changes.max_per_plan.get(kind)
            if limit is not None and taken.get(kind, 0) >= limit.value:
                return (PER_PLAN_RULES[kind], f"waits for a later pass: {limit.value} {kind}s per pass already "
                        "started", limit.place)
        hourly = changes.max_per_owner_per_hour
        if hourly is not None:
            owner = owners[change.resource_id]
            if by_owner.get(owner, 0) >= hourly.value:
                return (Rule.MAX_PER_OWNER_PER_HOUR, f"waits: owner {owner!r} started {hourly.value} changes in "
                        "the last hour", hourly.place)
        return None

    def mass_delete(self) -> None:
        """The mass-delete guard, as rule changes.mass_delete (today's guard: it stops a plan in warn mode too)."""
        plan = self.plan
        if plan is None:
            return
        settings = self.policy.changes.mass_delete
        deletes, live = plan.deletes, plan.live
        limit = max(settings.minimum, int(live * settings.fraction))
        if deletes == 0 or (deletes < live and deletes <= limit):
            return
        if Rule.MASS_DELETE in self.overrides:
            for change in plan.changes:
                if change.action is Action.DELETE:
                    self.overridden.setdefault(change.resource_id, set()).add(Rule.MASS_DELETE)
            self.violations.append(Violation(Rule.MASS_DELETE, None, f"the plan deletes {deletes} of {live} live "
                                             "resources", settings.place, False, None, True))
            return
        whole = f"every live resource ({deletes} of {live})" if deletes >= live else (
            f"{deletes} of {live} live resources (more than {limit})")
        self.violations.append(Violation(Rule.MASS_DELETE, None, f"the plan would delete {whole}", settings.place,
                                         True))


def _new_in_bucket(rule: Rule, after: _Counts, owner: str, region: str, target: str) -> int:
    if rule is Rule.QUOTA_TOTAL:
        return after.total
    if rule is Rule.QUOTA_PER_OWNER:
        return after.owner.get(owner, 0)
    if rule is Rule.QUOTA_PER_REGION:
        return after.region.get(region, 0)
    if rule is Rule.QUOTA_PER_RUNTIME_TARGET:
        return after.target.get(target, 0)
    return after.pair.get((owner, target), 0)


def _owners(changes: list[Change], desired: Mapping[str, ResourceSpec],
            observed: Mapping[str, ObservedResource]) -> dict[str, str]:
    """The owner each change counts against: its desired spec's, or (a delete) its row's."""
    found = {}
    for change in changes:
        rid = change.resource_id
        spec = desired.get(rid)
        row = observed.get(rid) if spec is None else None
        found[rid] = spec.owner if spec is not None else row.owner if row is not None else ""
    return found


def _names(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _warnings(*, policy: Policy, counts: _Counts, observed: Mapping[str, ObservedResource],
              known_targets: frozenset[str] | None) -> tuple[PolicyWarning, ...]:
    """Rules naming an owner or region nothing declares or runs, or a runtime_target nothing provides."""
    quotas, allowed = policy.quotas, policy.allowed
    named: list[tuple[str, str, Place]] = []
    named += [("owner", name, limit.place) for name, limit in quotas.per_owner.named.items()]
    named += [("owner", name, place) for name, limits in quotas.per_owner_runtime_target.items()
              if name != DEFAULT_KEY and (place := _first_place(limits)) is not None]
    named += [("owner", name, _owner_place(policy, name)) for name in allowed.owners]
    named += [("region", name, limit.place) for name, limit in quotas.per_region.named.items()]
    named += [("region", name, allowed.regions.place) for name in sorted(allowed.regions.values)
              ] if allowed.regions else []
    named += [("region", name, rules.regions.place) for rules in allowed.owners.values() if rules.regions
              for name in sorted(rules.regions.values)]
    named += [("runtime_target", name, limit.place) for name, limit in quotas.per_runtime_target.named.items()]
    named += [("runtime_target", name, limit.place) for limits in quotas.per_owner_runtime_target.values()
              for name, limit in limits.named.items()]
    named += [("runtime_target", name, allowed.runtime_targets.place)
              for name in sorted(allowed.runtime_targets.values)] if allowed.runtime_targets else []
    if not named:
        return ()
    owners, regions = set(counts.owner), set(counts.region)
    if any(kind != "runtime_target" and name not in (owners if kind == "owner" else regions)
           for kind, name, _ in named):
        live = [row for row in observed.values() if row.live]
        owners.update(row.owner for row in live)
        regions.update(row.region for row in live)
    known = {"owner": owners, "region": regions,
             "runtime_target": set(known_targets) if known_targets is not None else set(counts.target)}
    seen: set[tuple[str, str, Place]] = set()
    found = []
    for kind, name, place in named:
        if name not in known[kind] and (kind, name, place) not in seen:
            seen.add((kind, name, place))
            where = "provided under provision/" if kind == "runtime_target" and known_targets is not None else (
                "declared or live")
            found.append(PolicyWarning(f"names {kind} {name!r}, which is not {where} (a typo?)", place))
    return tuple(found)


def _first_place(limits: Limits) -> Place | None:
    first = next(iter(limits.named.values()), limits.default)
    return first.place if first is not None else None


def _owner_place(policy: Policy, owner: str) -> Place:
    rules = policy.allowed.owners[owner]
    for place in (rules.regions.place if rules.regions else None,
                  rules.runtime_targets.place if rules.runtime_targets else None, rules.protected):
        if place is not None:
            return place
    return Place(policy.file, 0)


# --- the verdict applied to a plan -----------------------------------------------------------------


def held_plan(plan: Plan, verdict: Verdict) -> Plan:
    """The plan the daemon acts on: held changes (Reason.POLICY) and deferred ones (Reason.BUDGET) become
    waiting notes, so they are shown and never queued; everything else stays as planned."""
    if not verdict.held and not verdict.deferred:
        return plan
    changes, notes = [], list(plan.waiting)
    for change in plan.changes:
        held = verdict.held.get(change.resource_id)
        deferred = verdict.deferred.get(change.resource_id) if held is None else None
        if held is not None:
            notes.append(Change(change.resource_id, Action.NOOP, Reason.POLICY,
                                f"held by policy rule {held.rule} ({held.place}): {_short(held.message)}"))
        elif deferred is not None:
            notes.append(Change(change.resource_id, Action.NOOP, Reason.BUDGET,
                                f"{change.shown} {deferred.message} (rule {deferred.rule}, {deferred.place})"))
        else:
            changes.append(change)
    notes.sort(key=lambda note: note.resource_id)
    return Plan(tuple(changes), plan.kept, tuple(notes), plan.unchanged, plan.live, plan.refusal)


def refused_plan(plan: Plan, verdict: Verdict) -> Plan:
    """The plan `plan`/`apply` show: refused as a whole when the verdict has a blocking violation."""
    if plan.refusal or not verdict.refused:
        return plan
    blocking = verdict.blocking
    rules = sorted({str(violation.rule) for violation in blocking})
    refusal = (f"the plan violates the policy in {verdict.policy.file} ({len(blocking)} violation"
               f"{'s' if len(blocking) != 1 else ''} of {', '.join(rules)}); nothing was changed. "
               "`apply --override RULE --reason TEXT` lets one run exceed a rule")
    return Plan(plan.changes, plan.kept, plan.waiting, plan.unchanged, plan.live, refusal)


def _short(message: str) -> str:
    return message.split(": ", 1)[1] if ": " in message else message

