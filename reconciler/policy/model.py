"""What a policy.yaml says, as frozen data: every limit and allowed value keeps its place in the file.

The loader (load.py) builds these once; the evaluation (evaluate.py) only reads them. Each rule value
carries the `Place` (file, line) it was written at, so a violation can point at the rule it broke as
precisely as at the resource that broke it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..rollout.model import RolloutPolicy

DEFAULT_KEY = "default"  # in a per-owner/region/target table: the limit of every name not listed
# the mass-delete guard's built-in settings (plan.PlanPolicy's defaults)
MASS_DELETE_MINIMUM = 10
MASS_DELETE_FRACTION = 0.25


class Mode(StrEnum):
    """`enforce` holds and refuses; `warn` reports the same violations everywhere and holds nothing."""

    ENFORCE = "enforce"
    WARN = "warn"


class Rule(StrEnum):
    """The rule codes violations carry and `--override` names (stable: added, never renamed)."""

    QUOTA_TOTAL = "quotas.total"
    QUOTA_PER_OWNER = "quotas.per_owner"
    QUOTA_PER_REGION = "quotas.per_region"
    QUOTA_PER_RUNTIME_TARGET = "quotas.per_runtime_target"
    QUOTA_PER_OWNER_RUNTIME_TARGET = "quotas.per_owner_runtime_target"
    ALLOWED_REGIONS = "allowed.regions"
    ALLOWED_RUNTIME_TARGETS = "allowed.runtime_targets"
    ALLOWED_DEPLOY_REF = "allowed.deploy_ref"
    ALLOWED_OWNERS = "allowed.owners"  # an owner's own regions/runtime_targets (allowed.owners.<owner>)
    PARAMS_REQUIRED = "params.required"
    PARAMS_FORBIDDEN = "params.forbidden"
    PROTECTED = "protected"  # allowed.owners.<owner>.protected: its resources are not deleted or replaced
    MAX_CREATES = "changes.max_per_plan.create"
    MAX_UPDATES = "changes.max_per_plan.update"
    MAX_DELETES = "changes.max_per_plan.delete"
    MAX_PER_OWNER_PER_HOUR = "changes.max_per_owner_per_hour"
    MASS_DELETE = "changes.mass_delete"


QUOTA_RULES = frozenset({Rule.QUOTA_TOTAL, Rule.QUOTA_PER_OWNER, Rule.QUOTA_PER_REGION,
                         Rule.QUOTA_PER_RUNTIME_TARGET, Rule.QUOTA_PER_OWNER_RUNTIME_TARGET})


@dataclass(frozen=True, slots=True)
class Place:
    """Where a rule is written: policy.yaml and the line of its key."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Limit:
    value: int
    place: Place


@dataclass(frozen=True, slots=True)
class Limits:
    """A limit per name (owner, region or runtime_target), with `default` for the names not listed."""

    named: Mapping[str, Limit] = field(default_factory=dict)
    default: Limit | None = None

    def get(self, name: str) -> Limit | None:
        return self.named.get(name, self.default)

    def __bool__(self) -> bool:
        return bool(self.named) or self.default is not None


@dataclass(frozen=True, slots=True)
class Quotas:
    """Most declared resources: in total, per owner, region, runtime_target, and (owner, runtime_target)."""

    total: Limit | None = None
    per_owner: Limits = Limits()
    per_region: Limits = Limits()
    per_runtime_target: Limits = Limits()
    # owner (or `default`) → that owner's limit per runtime_target (or `default`)
    per_owner_runtime_target: Mapping[str, Limits] = field(default_factory=dict)

    def pair(self, owner: str, target: str) -> Limit | None:
        """(owner, target), then (owner, default), then (default, target), then (default, default)."""
        for key in (owner, DEFAULT_KEY):
            limits = self.per_owner_runtime_target.get(key)
            found = limits.get(target) if limits is not None else None
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class Choice:
    """An allowed list of names."""

    values: frozenset[str]
    place: Place


@dataclass(frozen=True, slots=True)
class Pattern:
    """A Python regular expression a value must match (`re.search`: anchor it with ^…$)."""

    regex: re.Pattern[str]
    place: Place


@dataclass(frozen=True, slots=True)
class OwnerRules:
    """allowed.owners.<owner>: its own regions and runtime_targets, and whether it is protected."""

    regions: Choice | None = None
    runtime_targets: Choice | None = None
    protected: Place | None = None  # `protected: true` written here; None: not protected by the policy


@dataclass(frozen=True, slots=True)
class Allowed:
    regions: Choice | None = None
    runtime_targets: Choice | None = None
    deploy_ref: Pattern | None = None
    owners: Mapping[str, OwnerRules] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Params:
    """Keys `params` must (required) and must not (forbidden) contain, at its top level."""

    required: tuple[str, ...] = ()
    required_place: Place | None = None
    forbidden: tuple[str, ...] = ()
    forbidden_place: Place | None = None


@dataclass(frozen=True, slots=True)
class MassDelete:
    """The mass-delete guard: deleting every live resource, or more than max(minimum, fraction × live)."""

    minimum: int = MASS_DELETE_MINIMUM
    fraction: float = MASS_DELETE_FRACTION
    place: Place | None = None  # None: the built-in defaults


@dataclass(frozen=True, slots=True)
class Changes:
    """Change limits: per plan by kind (create, update, delete), per owner per hour, mass delete."""

    max_per_plan: Mapping[str, Limit] = field(default_factory=dict)  # "create" | "update" | "delete"
    max_per_owner_per_hour: Limit | None = None
    mass_delete: MassDelete = MassDelete()


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy.yaml, validated. `Policy(file=…)` alone limits nothing beyond the mass-delete guard."""

    file: str
    mode: Mode = Mode.ENFORCE
    quotas: Quotas = Quotas()
    allowed: Allowed = Allowed()
    params: Params = Params()
    changes: Changes = Changes()
    built_in: bool = False  # no policy file: only the built-in rule (mass delete), evaluated to record overrides
    rollout: RolloutPolicy | None = None  # `rollout:`: large change sets go in health-gated waves


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule broken. `resource_id` None: the plan as a whole (a change limit). `where`: the resource's
    declaration (file:line) when known; `place`: the rule's line in policy.yaml (None: a built-in default).
    `blocking`: it holds a change now (enforce mode, the resource changes in this plan, not overridden)."""

    rule: Rule
    resource_id: str | None
    message: str
    place: Place | None
    blocking: bool
    where: str | None = None
    overridden: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """Why one resource's change waits: the rule, a message, the rule's place."""

    rule: Rule
    message: str
    place: Place | None


@dataclass(frozen=True, slots=True)
class Usage:
    """An owner's declared resources counted against its quota (limit None: no per-owner quota)."""

    count: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class PolicyWarning:
    """Allowed but suspicious: a rule naming an owner, region or runtime_target nothing uses or provides."""

    message: str
    place: Place

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a policy says about one desired state and plan.

    `held`: ids whose change the policy holds (a blocking violation); `deferred`: ids whose change a
    budget pushes to a later pass (only with `budgets=True`); `overridden`: ids an `--override` let
    through, with the rules it exceeded (their jobs record it); `usage`: per owner.
    """

    policy: Policy
    violations: tuple[Violation, ...] = ()
    held: Mapping[str, Held] = field(default_factory=dict)
    deferred: Mapping[str, Held] = field(default_factory=dict)
    overridden: Mapping[str, frozenset[Rule]] = field(default_factory=dict)
    usage: Mapping[str, Usage] = field(default_factory=dict)
    warnings: tuple[PolicyWarning, ...] = ()

    @property
    def blocking(self) -> tuple[Violation, ...]:
        return tuple(violation for violation in self.violations if violation.blocking)

    @property
    def refused(self) -> bool:
        """The CLI refuses a plan with any blocking violation."""
        return any(violation.blocking for violation in self.violations)


_NO_STARTS: Mapping[str, int] = {}


@dataclass(frozen=True, slots=True)
class Governance:
    """What `engine.plan_fleet` needs to govern a plan (every path passes one: plan, apply, daemon, API).

    `policy` None: no policy.yaml, nothing but the mass-delete guard. `overrides`: rules this run may
    exceed (`--override`; `--allow-mass-delete` is `changes.mass_delete`). `started_last_hour`: jobs
    per owner started in the last hour (the store counts them; only read when the policy has
    `changes.max_per_owner_per_hour`). `budgets` False (the CLI): a blocking violation refuses the
    plan as a whole; True (the daemon's pass, the API): violators are held and changes over a change
    limit deferred, the rest goes ahead. `known_targets`: for warnings about unknown runtime_targets.
    `reason` and `actor`: why and by whom the overrides were asked for; the job of every resource an
    override let through records them (`JobRequest.details["override"]`, see `override_details`).
    """

    policy: Policy | None
    overrides: frozenset[Rule] = frozenset()
    started_last_hour: Mapping[str, int] = field(default_factory=lambda: _NO_STARTS)
    budgets: bool = False
    known_targets: frozenset[str] | None = None
    reason: str | None = None
    actor: str | None = None

    def override_details(self, verdict: Verdict | None, resource_id: str) -> dict[str, Any] | None:
        """`{"override": {"rules", "reason", "actor"}}` for a resource an override let through, else None.
        The rules are the ones this resource exceeded (not every rule named on the command line)."""
        rules = verdict.overridden.get(resource_id) if verdict is not None else None
        if not rules:
            return None
        return {"override": {"rules": sorted(map(str, rules)), "reason": self.reason, "actor": self.actor}}


# What governs a plan without a policy file: the mass-delete guard alone (its override is still recorded).
BUILT_IN = Policy(file="(no policy file)", built_in=True)
