"""The store as each consumer sees it: one narrow Protocol per seam, instead of `store: Any`.

`store/` is one class (`SQLStore`, for SQLite and PostgreSQL alike) with every statement; its
consumers each need a few of them. Naming what each one calls keeps the seams visible and checked
(mypy proves `SQLStore` fits every port), lets a test hand in a small fake, and tells the next
feature which door it walks through — as procrastinate's workers see a connector, not a driver.
The ports import nothing but the row types, so a module on any floor may name them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .models import Event, FleetCounts, Hold, Job, JobRequest, JobResult, ObservedResource

if TYPE_CHECKING:  # health pulls in asyncio and ssl: a plan has no use for them at run time
    from .health import CheckResult
    from .rollout.model import Member, Rollout
    from .rollout.plan import Holding

# whether the process `pid` on `host` is gone (then its lock is free to take)
HolderDead = Callable[[Any, Any], bool]


class PlanReader(Protocol):
    """What planning reads: the rows, the open jobs, the API's declarations, what rollouts hold."""

    def load_observed(self) -> dict[str, ObservedResource]: ...
    def in_flight(self) -> set[str]: ...
    def api_desired(self) -> dict[str, dict[str, Any]]: ...
    def holdings(self) -> dict[str, Holding]: ...


class RolloutReader(Protocol):
    """What `rollout status` reads (issue 17)."""

    def open_rollouts(self) -> list[Rollout]: ...
    def list_rollouts(self, *, limit: int = 20) -> list[Rollout]: ...
    def get_rollout(self, rollout_id: str) -> Rollout | None: ...
    def rollout_members(self, rollout_id: str) -> list[Member]: ...


class RolloutControl(RolloutReader, Protocol):
    """The operator's verbs (CLI and API): one pure transition written with its event."""

    def transition_rollout(self, *, rollout_id: str, change: Callable[[Rollout], Rollout], now: str, kind: str,
                           actor: str | None) -> Rollout | None: ...


class RolloutStore(RolloutControl, Protocol):
    """What the rollout executor (rollouts.py) reads and writes: each transition one call."""

    def load_observed(self) -> dict[str, ObservedResource]: ...
    def job_outcomes(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    def create_rollout(self, *, rollout: Rollout, members: Sequence[Member], now: str) -> list[str]: ...
    def launch(self, *, rollout: Rollout, launches: Sequence[tuple[Member, JobRequest]], now: str,
               commit: str | None) -> list[Member]: ...
    def save_rollout(self, *, rollout: Rollout | None = None, members: Sequence[Member] = (), now: str,
                     event: tuple[str, str] | None = None, actor: str | None = None) -> None: ...


class BudgetReader(Protocol):
    """What the policy's hourly change budget reads: jobs queued since a moment, per owner."""

    def jobs_per_owner(self, *, since: str) -> dict[str, int]: ...


class Enqueuer(Protocol):
    """Where a plan's changes become jobs, in one transaction."""

    def enqueue(self, *, requests: Iterable[JobRequest], now: str, commit: str | None,
                actor: str | None = None) -> list[str]: ...


class JobReader(Protocol):
    """One resource's row and jobs, by id."""

    def get_resource(self, resource_id: str) -> ObservedResource | None: ...
    def get_job(self, job_id: str) -> Job | None: ...
    def latest_job(self, resource_id: str) -> Job | None: ...


class ConvergeStore(JobReader, Protocol):
    """The API's single-resource step: plan one row, then declare and queue in one transaction."""

    def in_flight(self) -> set[str]: ...
    def declare_api(self, *, resource_id: str, spec: dict[str, Any] | None, requests: Iterable[JobRequest],
                    now: str, actor: str | None = None) -> list[str]: ...


class PassStore(PlanReader, Enqueuer, RolloutStore, Protocol):
    """The daemon's pass: read, plan, enqueue; the fingerprint says whether anything it reads moved."""

    def fingerprint(self) -> tuple[Any, ...]: ...
    def counts(self) -> FleetCounts: ...


class HoldReader(Protocol):
    """The resources policy.yaml holds back now (the last pass's verdict): `status`, the API, /metrics."""

    def holds(self) -> dict[str, Hold]: ...


class PolicyStore(HoldReader, BudgetReader, Protocol):
    """The daemon's policy (govern.py): the hourly change window, the holds, the API's declarations."""

    def sync_holds(self, *, holds: Iterable[Hold], now: str, actor: str | None = None) -> list[str]: ...
    def api_desired(self) -> dict[str, dict[str, Any]]: ...
    def load_observed(self) -> dict[str, ObservedResource]: ...


class Queue(Protocol):
    """What the workers call: claim under a lease, renew, record the script, finish or hand back."""

    def claim(self, *, worker: str, now: str, lease_until: str, resource_ids: Iterable[str] | None = None,
              limit: int = 1) -> list[Job]: ...
    def finish(self, *, job: Job, worker: str, result: JobResult, now: str) -> bool: ...
    def finish_and_claim(self, *, job: Job, worker: str, result: JobResult, now: str, lease_until: str,
                         resource_ids: Iterable[str] | None = None) -> tuple[bool, Job | None]: ...
    def release(self, *, job_id: str, worker: str, now: str) -> None: ...
    def record_script(self, *, job_id: str, worker: str, pgid: int, host: str, now: str) -> bool: ...
    def renew(self, *, worker: str, lease_until: str) -> int: ...
    def running_leases(self) -> list[tuple[str, str | None]]: ...
    def expire_lease(self, *, job_id: str, worker: str, now: str) -> None: ...
    def count_open(self, *, resource_ids: Iterable[str] | None = None) -> int: ...


class LockReader(Protocol):
    """Who holds a named lock now (None: nobody, or the lease lapsed)."""

    def lock_holder(self, *, name: str, now: str) -> dict[str, Any] | None: ...


class LockStore(LockReader, Protocol):
    """Elections: the single-daemon lock (SQLite) and the leader lease (PostgreSQL)."""

    def acquire_lock(self, *, name: str, holder: str, pid: int, host: str, now: str, until: str,
                     holder_dead: HolderDead) -> dict[str, Any] | None: ...
    def renew_lock(self, *, name: str, holder: str, until: str) -> bool: ...
    def release_lock(self, *, name: str, holder: str) -> None: ...


class HealthStore(Protocol):
    """The drift loop: read the rows, record what the checks saw; returns the ids that turned unhealthy."""

    def load_observed(self) -> dict[str, ObservedResource]: ...
    def record_health(self, *, results: Iterable[CheckResult], now: str, unhealthy_after: int,
                      actor: str | None = None) -> list[str]: ...


class StatusReader(LockReader, HoldReader, Protocol):
    """The read-only views (`status`, `history`)."""

    def load_observed(self) -> dict[str, ObservedResource]: ...
    def get_resource(self, resource_id: str) -> ObservedResource | None: ...
    def events(self, resource_id: str, *, limit: int | None = None) -> list[Event]: ...


class ApiStore(ConvergeStore, HoldReader, RolloutControl, Protocol):
    """The HTTP plane: the converge step plus the reads its GETs answer."""

    def list_resources(self, *, owner: str | None = None, status: str | None = None,
                       health: str | None = None) -> list[ObservedResource]: ...
    def api_declaration(self, resource_id: str) -> dict[str, Any] | None: ...
    def events(self, resource_id: str, *, limit: int | None = None) -> list[Event]: ...


class Portable(Protocol):
    """Export and import of every durable row (`reconciler export` / `import`)."""

    @property
    def kind(self) -> str: ...
    def export_rows(self) -> dict[str, list[dict[str, Any]]]: ...
    def import_rows(self, *, tables: dict[str, list[dict[str, Any]]], replace: bool, actor: str | None = None,
                    now: str | None = None, name: str = "") -> dict[str, int]: ...


class AuditStore(Protocol):
    """The audit trail across resources (`reconciler audit`) and its retention (`audit prune`)."""

    def audit_events(self, *, since: str | None = None, actor: str | None = None, owner: str | None = None,
                     limit: int | None = None) -> list[Event]: ...
    def events_before(self, *, before: str) -> list[dict[str, Any]]: ...
    def prune_events(self, *, before: str, archived: int, through_id: int, now: str, actor: str | None,
                     details: dict[str, Any]) -> int: ...
