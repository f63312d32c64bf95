"""One reconcile pass: load → plan → enqueue. The workers that then claim and run jobs are in workers.py.

This module and workers.py are the only ones that combine the store with side effects. Everything
they decide is decided elsewhere (the plan, the retry policy); they move data between them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ReconcilerError, SpecError, SpecProblem
from .models import (
    Action,
    FleetCounts,
    Job,
    JobRequest,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    iso,
    utcnow,
)
from .owners import FileOwners
from .plan import API_SOURCE, Change, Plan, PlanPolicy, compute_plan
from .ports import BudgetReader, ConvergeStore, Enqueuer, PassStore, PlanReader
from .rollout.model import Member
from .rollout.plan import Holding, Proposal, gate, propose
from .settle import DEFAULT_SETTLE, WriteHints
from .spec import DesiredCache, DesiredState, Source, Unsettled, load_desired
from .suspensions import Suspensions, declared_in_files
from .targets import known_targets, observing_targets, target_problems

if TYPE_CHECKING:  # a plan without a policy imports neither the policy nor the actor (benchmark P1)
    from .actor import Attribution, GitActor
    from .policy import Governance, Policy, Rule, Verdict


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan together with the desired state and the observed rows it was made from."""

    desired: DesiredState
    observed: dict[str, ObservedResource]
    plan: Plan
    verdict: Verdict | None = None  # the policy's, when one governs the plan (its JSON `policy` section)
    governance: Governance | None = None  # what governed it (the overrides' reason and actor, for the jobs)
    # issue 17: the rollout this plan's changes make (its members are not queued at once), and the members
    # of running rollouts that a newer desired spec takes over
    rollout: Proposal | None = None
    superseded: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Fleet:
    """What a plan reads from the store: observed rows, ids with an open job, API-declared specs, suspensions,
    and the resources rollouts hold (issue 17)."""

    observed: dict[str, ObservedResource]
    in_flight: set[str]
    api: dict[str, dict[str, Any]]
    suspensions: Suspensions = field(default_factory=Suspensions)
    holdings: Mapping[str, Holding] = field(default_factory=dict)


def read_fleet(*, store: PlanReader | None, with_api: bool = True) -> Fleet:
    """The whole fleet (None: no database yet, an empty fleet); `with_api=False` leaves API declarations out."""
    if store is None:
        return Fleet({}, set(), {})
    return Fleet(store.load_observed(), store.in_flight(), store.api_desired() if with_api else {},
                 store.suspensions(), store.holdings())


def read_one(*, store: ConvergeStore, resource_id: str) -> Fleet:
    """One resource's row and open job only: the API's one-resource step reads no more than that."""
    row = store.get_resource(resource_id)
    held = store.suspensions()
    own = {resource_id: held.resources[resource_id]} if resource_id in held.resources else {}
    return Fleet({resource_id: row} if row else {}, store.in_flight() & {resource_id}, {},
                 Suspensions(own, held.fleet))


def plan_fleet(*, desired: DesiredState, fleet: Fleet, policy: PlanPolicy, targets: Iterable[str] = (),
               now: datetime | None = None, governance: Governance | None = None, replace: Iterable[str] = (),
               observable: Iterable[str] = (), replace_reason: str | None = None,
               rollout_id: str | None = None) -> PlanView:
    """The one way to a plan (`plan`, `apply`, `destroy`, the daemon's pass, the API's converge).

    `desired` (files, or the last good state) plus the fleet's API-declared specs, planned against its
    rows and suspensions (the store's and the files' `suspend:`); `targets` narrows the plan and must
    each name a known resource; `replace` ids must each name a declared, managed resource; `observable`
    names the targets offering observe.sh (see targets.py). With `governance`, the policy's verdict is
    part of the view: the CLI's plan is refused on a blocking violation, the daemon's holds the
    violators and defers what a budget does not allow yet (policy/evaluate.py).
    Changes that running rollouts own wait for their waves; with a `rollout:` policy, a large enough
    change set becomes a rollout (`rollout_id` names it; the view's `rollout`), queued wave by wave.
    """
    full = with_api_desired(desired=desired, api=fleet.api)
    rules = governed_rules(policy=policy, governance=governance)
    plan = compute_plan(full.resources, fleet.observed, now=now or utcnow(), in_flight=fleet.in_flight,
                        policy=rules, targets=targets, hashes=full.hashes, api=api_declared(full),
                        suspensions=all_suspensions(desired=full, fleet=fleet), replace=replace,
                        observable=observable, replace_reason=replace_reason)
    require_replaceable(ids=replace, desired=full, observed=fleet.observed)
    require_known_ids(ids=targets, desired=full, observed=fleet.observed)
    gated = gate(plan=plan, holdings=fleet.holdings)
    plan = gated.plan
    if governance is None or (governance.policy is None and not governance.overrides):
        return PlanView(desired=full, observed=fleet.observed, plan=plan, superseded=gated.superseded)
    from .policy import evaluate, held_plan, refused_plan
    from .policy.model import BUILT_IN

    # without a policy file only the built-in rule (the mass-delete guard) is evaluated: an override of it
    # is still recorded; a verdict with nothing to say is left out
    verdict = evaluate(policy=governance.policy or BUILT_IN, desired=full.resources, observed=fleet.observed,
                       plan=plan, started_last_hour=governance.started_last_hour, overrides=governance.overrides,
                       budgets=governance.budgets, sources=full.sources, known_targets=governance.known_targets)
    if governance.policy is None and not verdict.violations:
        return PlanView(desired=full, observed=fleet.observed, plan=plan, superseded=gated.superseded)
    plan = held_plan(plan, verdict) if governance.budgets else refused_plan(plan, verdict)
    rolling = governance.policy.rollout if governance.policy is not None else None
    proposal = None
    if rolling is not None and not plan.refusal:
        proposal = propose(plan=plan, policy=rolling, rollout_id=rollout_id or new_rollout_id())
    return PlanView(desired=full, observed=fleet.observed, plan=plan, verdict=verdict, governance=governance,
                    rollout=proposal, superseded=gated.superseded)


def new_rollout_id() -> str:
    return "ro-" + uuid.uuid4().hex[:10]


def governance(*, policy: Policy | None, store: BudgetReader | None, overrides: frozenset[Rule] = frozenset(),
               budgets: bool = False, known_targets: frozenset[str] | None = None,
               now: datetime | None = None) -> Governance:
    """A `Governance` for one plan; the jobs per owner of the last hour are read only when the policy
    has an hourly budget (a sliding window over the shared database's jobs)."""
    from .policy import Governance

    started: dict[str, int] = {}
    if policy is not None and policy.changes.max_per_owner_per_hour is not None and store is not None:
        started = store.jobs_per_owner(since=iso((now or utcnow()) - timedelta(hours=1)))
    return Governance(policy=policy, overrides=overrides, started_last_hour=started, budgets=budgets,
                      known_targets=known_targets)


def governed_rules(*, policy: PlanPolicy, governance: Governance | None) -> PlanPolicy:
    """The plan's mass-delete guard with the policy's settings (changes.mass_delete), and its override."""
    if governance is None:
        return policy
    from .policy import Rule

    allow = policy.allow_mass_delete or Rule.MASS_DELETE in governance.overrides
    if governance.policy is None:
        return replace(policy, allow_mass_delete=allow)
    settings = governance.policy.changes.mass_delete
    return replace(policy, allow_mass_delete=allow, mass_delete_minimum=settings.minimum,
                   mass_delete_fraction=settings.fraction)


def all_suspensions(*, desired: DesiredState, fleet: Fleet) -> Suspensions:
    """The store's suspensions plus the files' `suspend:` blocks (named by file:line)."""
    held = {rid: spec for rid, spec in desired.resources.items() if spec.suspend is not None}
    if not held:  # the common case: no file suspends anything (a 100k fleet pays one scan)
        return fleet.suspensions
    where = {rid: f"{desired.sources[rid].file}:{desired.sources[rid].line}" for rid in held if rid in desired.sources}
    return fleet.suspensions.with_files(declared_in_files(resources=held, where=where))


def require_replaceable(*, ids: Iterable[str], desired: DesiredState,
                        observed: dict[str, ObservedResource]) -> None:
    """`--replace ID` must name a declared resource that exists: replacing nothing would only create it."""
    for resource_id in ids:
        row = observed.get(resource_id)
        if resource_id not in desired.resources:
            raise ReconcilerError(f"--replace {resource_id}: not declared in desired/ (or through the API); "
                                  "nothing to provision again")
        if row is None or not row.live or row.spec_hash is None:
            state = "forgotten; adopt it first" if row is not None and row.status is ResourceStatus.FORGOTTEN \
                else "not created yet; apply creates it"
            raise ReconcilerError(f"--replace {resource_id}: {state}")


# --- the desired source: files in desired/, checked against provision/, plus the API's declarations ----


def load_files(*, directory: Path, settle: float = DEFAULT_SETTLE, provision_dir: Path | None = None) -> DesiredState:
    """Load desired/; with `provision_dir`, a runtime_target it does not provide is refused (targets.py)."""
    files = load_desired(directory=directory, settle=settle)
    if provision_dir is not None:
        check_targets(desired=files, provision_dir=provision_dir)
    return files


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


def check_targets(*, desired: DesiredState, provision_dir: Path) -> None:
    """SpecError (file:line, did-you-mean) for every resource whose runtime_target is not provided."""
    problems = target_problems(resources=desired.resources, sources=desired.sources,
                               known=known_targets(provision_dir=provision_dir))
    if problems:
        raise SpecError(problems)


def require_known_ids(*, ids: Iterable[str], desired: DesiredState, observed: dict[str, ObservedResource]) -> None:
    """`--target ID` must name a resource in desired/ or the database: a typo is an error, not "No changes"."""
    import difflib

    known = desired.resources.keys() | observed.keys()
    for resource_id in ids:
        if resource_id not in known:
            hint = difflib.get_close_matches(resource_id, sorted(known), n=1)
            raise ReconcilerError(f"--target {resource_id}: no such resource in desired/ or the database"
                                  + (f" (did you mean '{hint[0]}'?)" if hint else ""))


def desired_commit(*, directory: Path) -> str | None:
    """The git commit of the desired directory, recorded with every event; None outside git.

    Through `GitActor`, so a checkout owned by another user (the systemd layout) still has one."""
    from .actor import GitActor

    return GitActor(directory).commit()


def file_attribution(*, git: GitActor, runner: str, files_version: Any = None) -> Attribution:
    """Who is behind a plan made from desired/: the git actor for file changes, `runner` for the rest."""
    from .actor import GIT_UNKNOWN, Attribution

    return Attribution(files=git.describe(files_version=files_version) or GIT_UNKNOWN, runner=runner)


# --- turning a plan into jobs -------------------------------------------------------------------


def job_requests(*, view: PlanView, attribution: Attribution | None = None) -> list[JobRequest]:
    """One queue request per change of the plan (none when the plan is refused): a projection of it."""
    if view.plan.refusal:
        return []
    rolled = view.rollout.ids if view.rollout is not None else frozenset()
    requests = [job_request(change, attribution=attribution) for change in view.plan.changes
                if change.resource_id not in rolled]
    governance, verdict = view.governance, view.verdict
    if governance is None or verdict is None or not verdict.overridden:
        return requests
    return [_with_override(request, governance.override_details(verdict, request.resource_id))
            for request in requests]


def _with_override(request: JobRequest, details: dict[str, Any] | None) -> JobRequest:
    """An override that let this change through is recorded in its queued event (with reason and actor)."""
    if details is None:
        return request
    override = details["override"]
    note = f" [override of {', '.join(override['rules'])} by {override['actor']}: {override['reason']}]"
    return replace(request, reason=request.reason + note, details={**(request.details or {}), **details})


def job_request(change: Change, *, attribution: Attribution | None = None) -> JobRequest:
    """What the queue needs of one change; the plan decided all of it, `attribution` who is behind it."""
    spec = change.before if change.action is Action.DELETE else change.after
    old = change.before if change.action is Action.REPLACE else None
    return JobRequest(change.resource_id, change.action, change.message, spec, old, change.applied_hash(),
                      change.attempt, change.expected_version, change.source,
                      attribution.actor(change) if attribution else None,
                      attribution.details(change) if attribution else None)


def enqueue(*, store: Enqueuer, view: PlanView, commit: str | None,
            attribution: Attribution | None = None) -> list[str]:
    """Queue the plan's changes in one transaction; returns the new job ids."""
    return store.enqueue(requests=job_requests(view=view, attribution=attribution), now=iso(utcnow()),
                         commit=commit)


def release(*, store: Enqueuer, view: PlanView) -> None:
    """Forgotten ids the plan found no longer declared: declaring them again from now on creates them.

    Bookkeeping, not an action on a resource: `apply` does it before asking, the daemon on every pass."""
    if view.plan.released and not view.plan.refusal:
        store.release_forgotten(resource_ids=view.plan.released, now=iso(utcnow()))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why policy.yaml refuses a change asked for through the API: the rule codes, what each violation
    says, and each rule's place in policy.yaml."""

    rules: tuple[str, ...]
    message: str
    places: tuple[str, ...] = ()
    budget: bool = False  # a change budget is used up for now (429, try again later), not a violation (403)


@dataclass(frozen=True, slots=True)
class Converged:
    """The job carrying one resource's change, and why nothing was queued when a rule held it back."""

    job: Job | None
    held: str | None = None
    refused: Refusal | None = None  # the policy forbids it (the API answers 403)


# The API's policy check of one resource's plan (daemon/plane.py: against the whole declared fleet).
Admit = Callable[[PlanView], Refusal | None]


def converge_one(*, store: ConvergeStore, resource_id: str, spec: ResourceSpec | None,
                 admit: Admit | None = None, actor: str | None = None) -> Converged:
    """Declare (`spec`) or withdraw (None) one API resource and queue its change now: the API's step.

    Planned first: when a rule holds the change back (protected) or `admit` refuses it (the policy),
    nothing is written and `held`/`refused` say why, so a refused call changes nothing. Otherwise the
    declaration and the job are written in one transaction, with `actor` (the API caller) on the job
    and its events. The job is the new one, the one already open, or (nothing to do) the latest. The
    plan sees only this row, so the fleet-wide mass-delete rule does not apply to this explicit request.
    """
    desired = DesiredState(resources={resource_id: spec} if spec else {},
                           sources={resource_id: Source(API_SOURCE, 0)} if spec else {})
    view = plan_fleet(desired=desired, fleet=read_one(store=store, resource_id=resource_id),
                      policy=PlanPolicy(allow_mass_delete=True))  # the fleet read is this one resource
    if view.plan.kept:
        return Converged(None, view.plan.kept[0].message)
    refused = admit(view) if admit is not None else None
    if refused is not None:
        return Converged(None, refused=refused)
    queued = store.declare_api(resource_id=resource_id, spec=spec.model_dump() if spec else None,
                               requests=job_requests(view=view), now=iso(utcnow()), actor=actor)
    return Converged(store.get_job(queued[0]) if queued else store.latest_job(resource_id))


def cancel_suspended(*, store: PassStore, plan: Plan, in_flight: set[str], actor: str | None) -> list[str]:
    """Cancel the queued jobs of resources the plan found suspended by their own suspension (a file's
    `suspend:` is first seen by a plan; the store's were cancelled when set, this closes any race).

    The fleet's flag cancels nothing here: `suspend --all` did when it was set, and `destroy` queues
    its own teardowns while it is on. Returns the cancelled job ids.
    """
    cancelled: list[str] = []
    for change in plan.suspended:
        suspension = change.suspension
        if change.resource_id in in_flight and suspension is not None and suspension is not plan.fleet_suspension:
            cancelled += store.cancel_queued(resource_ids=[change.resource_id], now=iso(utcnow()),
                                             why=suspension.describe(), actor=actor)
    return cancelled


def replace_one(*, store: ConvergeStore, spec: ResourceSpec, source: str, actor: str | None = None) -> Converged:
    """Queue one resource's replacement now (the API's replace): teardown, then provision, as one job.

    Planned first with the id as requested: a rule that holds it back (protected, an open job) says why
    in `held` and nothing is written; one that refuses it (not created yet, forgotten) raises.
    """
    resource_id = spec.resource_id
    desired = DesiredState(resources={resource_id: spec}, sources={resource_id: Source(source, 0)})
    view = plan_fleet(desired=desired, fleet=read_one(store=store, resource_id=resource_id),
                      policy=PlanPolicy(allow_mass_delete=True), replace=[resource_id])
    held = view.plan.kept + view.plan.waiting
    if held:
        return Converged(None, held[0].message)
    queued = store.enqueue(requests=job_requests(view=view), now=iso(utcnow()), commit=None, actor=actor)
    if not queued:
        return Converged(None, "its row changed meanwhile (another job was queued); try again")
    return Converged(store.get_job(queued[0]))


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
    fleet: FleetCounts
    next_retry_at: str | None
    skipped: bool = False  # nothing it reads had changed since the last pass: the same plan holds
    # desired files still being written (or just vanished): planned from the last good state instead
    unsettled: Unsettled | None = None
    job_ids: tuple[str, ...] = ()  # the jobs this pass queued
    next_expiry: str | None = None  # the earliest suspension to lapse: a pass is due then
    held: int = 0  # changes the policy holds back (govern.py)
    deferred: int = 0  # changes a policy budget pushed to a later pass


class PlanGate(Protocol):
    """What governs a pass's plan and records what it held: the daemon's policy (govern.py).

    `refresh` re-reads the policy if it changed (seconds until a change still being written may count);
    `generation` moves whenever the policy in force changes, so an idle pass is not answered from the
    last; `governance` is handed to plan_fleet; `record` keeps the verdict's holds (store, metrics).
    """

    @property
    def generation(self) -> int: ...
    def refresh(self) -> float: ...
    def governance(self) -> Governance | None: ...
    def record(self, view: PlanView) -> None: ...
    def serial(self) -> AbstractContextManager[Any]: ...  # held while a plan is made and queued (the API too)


class Reconciler:
    """Level-triggered passes over desired/ and the store, remembering only the last good desired state.

    A desired/ that fails to load keeps the last good state in force (retries and repairs go on),
    applies nothing new from the broken view, and reports why until the files are fixed.
    """

    def __init__(self, *, store: PassStore, desired_dir: Path, policy: PlanPolicy, settle: float = DEFAULT_SETTLE,
                 writes: WriteHints | None = None, provision_dir: Path | None = None,
                 gate: PlanGate | None = None, actor: str | None = None,
                 on_rollout: Callable[[PlanView, str | None, str], Any] | None = None) -> None:
        self.store = store
        self.gate = gate
        self.actor = actor  # who this controller is in the audit trail (`daemon:<host>`)
        # issue 17: writes a pass's proposed rollout (and superseded members); rollouts.start_rollout
        self.on_rollout = on_rollout
        self.desired_dir = Path(desired_dir)
        self.provision_dir = provision_dir
        self.policy = policy
        from .actor import GitActor

        self.git = GitActor(self.desired_dir)  # the actor of file changes, cached per HEAD
        self.cache = DesiredCache(settle=settle, writes=writes)
        self.last_good: DesiredState | None = None
        self.unsettled: Unsettled | None = None
        self.load_error: SpecError | None = None
        # which file owns which id, also for files failing to load now (the API asks)
        self.owners = FileOwners()
        self._owners_seen: tuple[DesiredCache, int] | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_result: PassResult | None = None

    def reload(self) -> None:
        """Forget cached parses (SIGHUP, the slow loop): the next pass reads every file and plans."""
        self.cache.forget()
        self._last_key = None

    def reconcile_once(self) -> PassResult:
        """One pass. An idle resync (no file, row, job or API spec changed, no retry due) is answered
        from the last pass: the plan is a pure function of those inputs, so it would come out the same,
        and its changes were queued then. That keeps an idle resync at 10k resources to a few queries.
        """
        load_error = self._load()
        key = self._key(load_error)
        last = self._last_result
        due = last is not None and (_retry_due(last.next_retry_at) or _retry_due(last.next_expiry))
        if key == self._last_key and last is not None and not due and not last.deferred:
            return replace(last, queued=0, skipped=True, unsettled=self.unsettled, job_ids=())
        result = replace(self._plan_and_queue(load_error), unsettled=self.unsettled)
        self._last_key, self._last_result = key, result
        return result

    def reconcile_now(self, *, targets: Iterable[str] = ()) -> PassResult:
        """A pass asked for (`reconciler reconcile`): planned whatever the fingerprint says, narrowed to
        `targets` when given (ReconcilerError for an unknown id); a whole pass counts as the last pass."""
        load_error = self._load()
        result = replace(self._plan_and_queue(load_error, targets=tuple(targets)), unsettled=self.unsettled)
        if not targets:
            self._last_key, self._last_result = self._key(load_error), result
        return result

    def _key(self, load_error: SpecError | None) -> tuple[Any, ...]:
        """What a pass's plan depends on: files, their loading, the rows and jobs, the policy in force."""
        return (self.cache.generation, load_error is None, self.store.fingerprint(),
                self.gate.generation if self.gate else None)

    def _plan_and_queue(self, load_error: SpecError | None, *, targets: tuple[str, ...] = ()) -> PassResult:
        fleet = read_fleet(store=self.store)
        if self.last_good is None:
            return PassResult(0, None, load_error, self.store.counts(), None)
        with self.gate.serial() if self.gate is not None else nullcontext():  # quotas: one admission at a time
            view = plan_fleet(desired=self.last_good, fleet=fleet, policy=self.policy, targets=targets,
                              governance=self.gate.governance() if self.gate else None, observable=self.observable())
            if self.gate is not None and not targets:  # a narrowed pass sees only some holds: not the set
                self.gate.record(view)
            cancel_suspended(store=self.store, plan=view.plan, in_flight=fleet.in_flight, actor=self.actor)
            release(store=self.store, view=view)
            queued: list[str] = []
            if view.plan.changes and not view.plan.refusal:
                from .actor import daemon_actor

                attribution = file_attribution(git=self.git, runner=daemon_actor(),
                                               files_version=self.cache.generation)
                queued = enqueue(store=self.store, view=view, commit=self.git.commit(), attribution=attribution)
                if self.on_rollout is not None and (view.rollout is not None or view.superseded):
                    self.on_rollout(view, self.git.commit(), attribution.files)
        verdict = view.verdict
        expiry = all_suspensions(desired=view.desired, fleet=fleet).next_expiry(iso(utcnow()))
        return PassResult(len(queued), view.plan, load_error, self.store.counts(), _next_retry(fleet.observed),
                          job_ids=tuple(queued), next_expiry=expiry,
                          held=len(verdict.held) if verdict else 0, deferred=len(verdict.deferred) if verdict else 0)

    def observable(self) -> frozenset[str]:
        """The targets whose creates may adopt (observe.sh), shown in the plan as `create (or adopt)`."""
        return observing_targets(provision_dir=self.provision_dir) if self.provision_dir else frozenset()

    def refresh_desired(self) -> None:
        """Load desired/ without planning (a follower, whose API still needs to know the files' ids)."""
        self._load()

    def _load(self) -> SpecError | None:
        self.unsettled = None
        policy_wait = self.gate.refresh() if self.gate is not None else 0.0
        try:
            state = self.cache.load(directory=self.desired_dir)
            if self.provision_dir is not None:
                check_targets(desired=state, provision_dir=self.provision_dir)
            self.last_good, self.load_error = state, None
        except Unsettled as exc:  # plan from the last good state; the caller loads again after exc.wait
            self.unsettled = exc
        except SpecError as exc:
            self.load_error = exc
        except Exception as exc:
            self.load_error = SpecError([SpecProblem(str(self.desired_dir), 0, "",
                                                     f"cannot load: {type(exc).__name__}: {exc}")])
        if policy_wait > 0 and self.unsettled is None:  # policy.yaml still being written: look again then
            self.unsettled = Unsettled(wait=policy_wait, files=["policy.yaml"])
        seen = (self.cache, self.cache.reads)
        if self._owners_seen is None or seen[0] is not self._owners_seen[0] or seen[1] != self._owners_seen[1]:
            self.owners.observe(self.cache.files())
            self._owners_seen = seen
        return self.load_error


def _retry_due(at: str | None) -> bool:
    return at is not None and at <= iso(utcnow())


def _next_retry(observed: dict[str, ObservedResource]) -> str | None:
    pending = [row.next_attempt_at for row in observed.values()
               if row.status is ResourceStatus.ERRORED and row.next_attempt_at]
    return min(pending, default=None)
