"""policy.yaml at work in the daemon: what each pass is governed by, what it holds back, what the API admits.

The evaluation is pure and lives in `policy/`; this module feeds it what only a running daemon knows
(the policy in force from `PolicySource`, the jobs each owner started in the last hour, counted from
the shared queue so several daemons share the budget) and records what it decided: the holds table
(one `held` event per resource when its rules change, never per pass), the metrics (quota use and
limit per owner, holds and refusals by rule) and a log line when the holds change. The API's
one-resource step asks `admit`, which evaluates against the whole declared fleet (the files' last
good state plus the API's declarations), so a quota counts every resource, not the one posted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .defects import defect_enabled
from .engine import PlanView, Refusal, governance, with_api_desired
from .models import Hold, ObservedResource, ResourceSpec, iso, utcnow
from .policy import Governance, Policy, Rule, Verdict, Violation, evaluate
from .policysource import PolicySource
from .ports import PolicyStore
from .spec import DesiredState


class GovernMetrics(Protocol):
    def quota(self, *, used: dict[str, int], limits: dict[str, int]) -> None: ...
    def holding(self, *, by_rule: dict[str, int]) -> None: ...
    def refused(self, *, rules: Iterable[str]) -> None: ...
    def policy_loaded(self, *, problems: int) -> None: ...


class Governor:
    """The daemon's policy: engine.PlanGate for its passes, and the API's admission check."""

    def __init__(self, *, source: PolicySource[Policy], store: PolicyStore, metrics: GovernMetrics, log: Any,
                 allow_mass_delete: bool = False, actor: str | None = None) -> None:
        self.source = source
        self.store = store
        self.metrics = metrics
        self.log = log
        self.actor = actor
        self.overrides = frozenset({Rule.MASS_DELETE}) if allow_mass_delete else frozenset()
        self.held = 0  # resources held back or deferred by the last pass (/health)
        # a pass's plan-and-queue and an API call's admit-and-declare take turns, so two admissions
        # cannot each see the owner one under its quota (across daemons on PostgreSQL they still can)
        self._serial = threading.Lock()
        self._synced: bool | None = None  # whether the holds table may hold rows (None: not known yet)
        self._reported: list[str] | None = None
        self._warned: frozenset[tuple[str, str | None]] = frozenset()

    # --- engine.PlanGate ---

    @property
    def generation(self) -> int:
        return self.source.generation

    def serial(self) -> threading.Lock:
        return self._serial

    def refresh(self) -> float:
        """Re-read policy.yaml if it changed; log a load error (and its repair) once."""
        wait = self.source.refresh()
        problems = self.source.problems()
        if problems != self._reported:
            self._reported = problems
            self.metrics.policy_loaded(problems=len(problems))
            if problems:
                for problem in problems:
                    self.log.error("policy does not load; keeping the last good one in force", problem=problem,
                                   policy=str(self.source.path))
            elif self.source.policy is not None:
                self.log.info("policy loaded", policy=str(self.source.path))
        return wait

    def governance(self) -> Governance | None:
        """What this pass is governed by: the policy in force and the hourly window (None: no policy)."""
        policy = self.source.policy
        if policy is None or defect_enabled("policy-ignored"):  # test-only, see reconciler/defects.py
            return Governance(policy=None, overrides=self.overrides) if self.overrides else None
        return governance(policy=policy, store=self.store, overrides=self.overrides, budgets=True)

    def record(self, view: PlanView) -> None:
        """The pass's holds into the store (events for new ones), the metrics, a log line when they change."""
        verdict = view.verdict
        holds = holds_of(verdict=verdict, desired=view.desired.resources, observed=view.observed) if verdict else []
        self.held = len(holds)
        if verdict is not None:
            self.metrics.quota(used={owner: usage.count for owner, usage in verdict.usage.items()},
                               limits={owner: usage.limit for owner, usage in verdict.usage.items()
                                       if usage.limit is not None})
            self._warn(verdict)
        self.metrics.holding(by_rule=by_rule(holds))
        if not holds and self._synced is False:
            return  # nothing held now or before: no write
        noted = self.store.sync_holds(holds=holds, now=iso(utcnow()), actor=self.actor)
        self._synced = bool(holds)
        if noted:
            held = verdict.held if verdict else {}
            self.metrics.refused(rules=[rule for hold in holds if hold.resource_id in noted
                                        and hold.resource_id in held for rule in hold.rules])
            self.log.warning("policy holds changes back", newly=sorted(noted)[:10], count=len(noted),
                             held=len(holds))

    # --- the API ---

    def admit(self, view: PlanView, *, files: DesiredState | None) -> Refusal | None:
        """The policy's answer to one API call's plan, counted against the whole declared fleet."""
        policy = self.source.policy
        if policy is None or not view.plan.changes:
            return None
        change = view.plan.changes[0]
        rid = change.resource_id
        fleet = with_api_desired(desired=files or DesiredState(resources={}, sources={}),
                                 api=self.store.api_desired())
        desired = dict(fleet.resources)
        desired.pop(rid, None)
        desired.update(view.desired.resources)
        observed = self.store.load_observed()  # who is already live in each quota bucket
        rules = governance(policy=policy, store=self.store, budgets=True,
                           overrides=self.overrides | {Rule.MASS_DELETE})  # an explicit one-resource call
        verdict = evaluate(policy=policy, desired=desired, observed=observed, plan=view.plan,
                           started_last_hour=rules.started_last_hour, budgets=True, overrides=rules.overrides)
        refusal = refusal_of(verdict=verdict, resource_id=rid)
        if refusal is not None and not refusal.budget:
            self.metrics.refused(rules=refusal.rules)
        return refusal

    def _warn(self, verdict: Verdict) -> None:
        """mode: warn (and reports of live resources over a tightened quota): logged when they change."""
        found = frozenset((str(v.rule), v.resource_id) for v in verdict.violations if not v.blocking)
        if found != self._warned:
            self._warned = found
            shown = [f"{v.rule}: {v.message}" for v in verdict.violations if not v.blocking][:10]
            if shown:
                self.log.warning("policy violations reported, not held", count=len(found), violations=shown)


# --- pure: a verdict as holds and refusals -------------------------------------------------------------


def holds_of(*, verdict: Verdict, desired: Mapping[str, ResourceSpec],
             observed: Mapping[str, ObservedResource]) -> list[Hold]:
    """One Hold per resource the verdict holds (every blocking rule it breaks) or defers (the budget's rule)."""
    blocking: dict[str, list[Violation]] = {}
    for violation in verdict.violations:
        if violation.blocking and violation.resource_id is not None:
            blocking.setdefault(violation.resource_id, []).append(violation)
    holds = []
    for rid, held in sorted(verdict.held.items()):
        found = blocking.get(rid, [])
        rules = tuple(sorted({str(held.rule), *(str(v.rule) for v in found)}))
        details = {"violations": [{"rule": str(v.rule), "message": v.message,
                                   "policy": str(v.place) if v.place else None} for v in found]
                   or [{"rule": str(held.rule), "message": held.message,
                        "policy": str(held.place) if held.place else None}]}
        holds.append(Hold(rid, _owner(rid, desired, observed), rules, held.message, details))
    for rid, deferred in sorted(verdict.deferred.items()):
        if rid not in verdict.held:
            holds.append(Hold(rid, _owner(rid, desired, observed), (str(deferred.rule),), deferred.message,
                              {"budget": True, "policy": str(deferred.place) if deferred.place else None}))
    return holds


def refusal_of(*, verdict: Verdict, resource_id: str) -> Refusal | None:
    """Why the verdict stops this resource's change (None: it may go ahead)."""
    held = verdict.held.get(resource_id)
    if held is not None:
        found = [v for v in verdict.violations if v.blocking and v.resource_id == resource_id] or [
            Violation(held.rule, resource_id, held.message, held.place, True)]
        return Refusal(rules=tuple(sorted({str(v.rule) for v in found})),
                       message="; ".join(v.message for v in found),
                       places=tuple(sorted({str(v.place) for v in found if v.place is not None})))
    deferred = verdict.deferred.get(resource_id)
    if deferred is not None:
        return Refusal(rules=(str(deferred.rule),), message=deferred.message,
                       places=(str(deferred.place),) if deferred.place else (), budget=True)
    return None


def by_rule(holds: Iterable[Hold]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for hold in holds:
        for rule in hold.rules:
            counts[rule] = counts.get(rule, 0) + 1
    return counts


def _owner(rid: str, desired: Mapping[str, ResourceSpec], observed: Mapping[str, ObservedResource]) -> str:
    spec = desired.get(rid)
    if spec is not None:
        return spec.owner
    row = observed.get(rid)
    return row.owner if row is not None else ""
