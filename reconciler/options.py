"""The command line's option groups as frozen objects (Terraform's internal/command/arguments).

Each group of flags that several commands share (how to plan, how scripts run, how health is checked,
how the API is served) is parsed into one of these in cli.py, once, and handed down whole: a command
takes a handful of objects, and the retry policy and script settings are built in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from .plan import PlanPolicy
from .retry import RetryPolicy

if TYPE_CHECKING:  # a run without --override or --allow-mass-delete imports no policy code (benchmark P1)
    from .policy import Rule


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """What to plan: `--target` ids (none: the whole fleet), the mass-delete override, the policy rules
    this run may exceed (`--override RULE`, checked against the rule codes) with `--reason`, and the
    `--replace` ids."""

    targets: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    overrides: frozenset[Rule] = frozenset()
    reason: str | None = None
    mass_delete_by: str = "--allow-mass-delete"  # the reason recorded when only that flag overrides (destroy)
    replace: tuple[str, ...] = ()
    replace_reason: str | None = None  # `replace --reason`: recorded with each requested replace

    def policy(self, *, self_heal: bool = False) -> PlanPolicy:
        return PlanPolicy(allow_mass_delete=self.allow_mass_delete, self_heal=self_heal)

    @property
    def exceeding(self) -> frozenset[Rule]:
        """The rules this run may exceed: `--override`s, and `changes.mass_delete` under --allow-mass-delete."""
        if not self.allow_mass_delete:
            return self.overrides
        from .policy import Rule

        return self.overrides | {Rule.MASS_DELETE}

    @property
    def why(self) -> str | None:
        """The reason recorded with the overrides (--allow-mass-delete alone gives its flag as the reason)."""
        return self.reason or (self.mass_delete_by if self.allow_mass_delete else None)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How scripts run (apply, destroy, the daemon): how many at once, their timeout, the retry backoff."""

    parallelism: int
    timeout: float
    retry: RetryPolicy

    @classmethod
    def from_flags(cls, *, parallelism: int, timeout: float, retry_base: float, retry_cap: float) -> RunOptions:
        return cls(parallelism=parallelism, timeout=timeout, retry=RetryPolicy(base=retry_base, cap=retry_cap))


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """Health checks (`check` and the daemon's drift loop)."""

    concurrency: int
    timeout: float
    unhealthy_after: int


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """The daemon's HTTP API: where it listens (None: not served), its admin token file and its tokens file."""

    listen: str | None
    token_file: Path | None
    tokens: Path | None = None


@dataclass(frozen=True, slots=True)
class LoopOptions:
    """The daemon's cadence and rules: resync and drift intervals, self-heal, stop grace, settle time."""

    resync: float
    drift_interval: float
    self_heal: bool
    allow_mass_delete: bool
    stop_grace: float
    settle: float


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    """How the daemon holds the database: SQLite busy timeout, job leases, its lock and the leader lease."""

    busy_timeout: float
    lease_seconds: float
    lock_ttl: float
    leader_ttl: float


class Mode(StrEnum):
    """`destroy` is apply in destroy mode: planned as if desired/ were empty."""

    APPLY = "apply"
    DESTROY = "destroy"
