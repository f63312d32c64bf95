"""The types every layer shares, so that the spec, the plan, the store and the runner speak one language.

`ResourceSpec` is the validated desired state of one resource (a pydantic model: it guards the
boundary). Rows read back from our own database (`ObservedResource`, `Job`, `Event`) are frozen
slotted dataclasses instead: they were validated on the way in, and at 100,000 rows the cost of
re-validating them would dominate a plan.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeAlias, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RESOURCE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
# runtime_target names a directory under provision/, so it must never contain a path separator.
TARGET_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Fields whose change forces a replacement (teardown, then provision); any other change re-runs provision in place.
REPLACE_FIELDS = ("region", "runtime_target")
# target_hash of a row whose last job was a teardown.
DELETE_TARGET = "delete"
# Scripts receive the whole spec in one environment variable (RESOURCE_JSON), and Linux refuses an
# execve whose single environment string exceeds 128 KiB (E2BIG): a bigger spec could never run.
MAX_SPEC_BYTES = 64 * 1024
# Levels of nesting inside params, the bound YAML files (yamlfast) and API bodies (httpguard) also
# have; deeper is refused as a validation error, never a RecursionError.
MAX_PARAMS_DEPTH = 64


class SuspendSpec(BaseModel):
    """`suspend:` in a resource's file: leave it alone (no provision, teardown or self-heal) until removed.

    Declared in the file so the change goes through review; it is not part of the spec (not hashed, never
    passed to a script), and only removing it from the file lifts it (`until` lets it lapse by itself).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    reason: Annotated[str, Field(min_length=1, description="Why the resource is left alone (shown by plan)")]
    until: Annotated[str | None, Field(description="When the suspension lapses by itself: an ISO-8601 time "
                                                   "with a time zone, e.g. 2026-12-01T00:00:00Z")] = None

    @field_validator("until", mode="before")
    @classmethod
    def _moment(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{value!r} is not a time; use ISO-8601 with a time zone, "
                                 "e.g. 2026-12-01T00:00:00Z") from None
        else:
            return value  # strict validation names the wrong type
        if moment.tzinfo is None:
            raise ValueError(f"{value} has no time zone; add one, e.g. {moment.isoformat()}Z")
        return iso(moment)


class ResourceSpec(BaseModel):
    """One resource as declared in desired/ or through the HTTP API."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    resource_id: Annotated[str, Field(pattern=RESOURCE_ID_PATTERN, description="Unique id: [a-z0-9][a-z0-9-]{0,62}")]
    owner: Annotated[str, Field(min_length=1, description="Team or tenant that owns the resource")]
    region: Annotated[str, Field(min_length=1, description="Where it runs; changing it forces replacement")]
    runtime_target: Annotated[
        str,
        Field(pattern=TARGET_PATTERN, description="Picks provision/<target>/ scripts; changing it forces replacement"),
    ] = "local"
    deploy_ref: Annotated[str, Field(min_length=1, description="Code/version pinned to this resource; quote numbers")]
    params: Annotated[dict[str, Any], Field(description="Free-form, passed to the script as JSON")] = {}
    protected: Annotated[bool, Field(description="Never torn down while true")] = False
    # not part of the spec: excluded from dumps, so never hashed and never handed to a script
    suspend: Annotated[SuspendSpec | None, Field(
        exclude=True, description="Leave this resource alone (no provision, teardown or self-heal) until this "
                                  "is removed from the file or `until` passes; not part of the spec hash")] = None

    @field_validator("params", mode="after")
    @classmethod
    def _sorted(cls, params: dict[str, Any]) -> dict[str, Any]:
        # Key order in YAML is not meaning: sorting here makes model_dump_json canonical, so the
        # hash below needs no Python-level JSON encoding (5x faster at 100k resources).
        sorted_params: dict[str, Any] = _sort_keys(params)
        return sorted_params

    @model_validator(mode="after")
    def _fits_in_the_environment(self) -> ResourceSpec:
        size = len(self.__pydantic_serializer__.to_json(self))
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"the spec is {size:,} bytes as JSON; the limit is {MAX_SPEC_BYTES:,} "
                             f"({MAX_SPEC_BYTES >> 10} KiB): scripts receive it in one environment variable")
        return self


# the spec's fields, in declaration order: the model is the one list of them (`suspend` is not the spec's)
SPEC_FIELDS = tuple(name for name, info in ResourceSpec.model_fields.items() if not info.exclude)
# every key a resource document may have: the spec's fields and `suspend`
DOCUMENT_FIELDS = tuple(ResourceSpec.model_fields)


def _sort_keys(value: Any, path: str = "params", depth: int = 1) -> Any:
    if isinstance(value, (dict, list)) and depth > MAX_PARAMS_DEPTH:
        raise ValueError(f"params nest deeper than {MAX_PARAMS_DEPTH} levels (at {path[:80]})")
    if isinstance(value, dict):
        return {key: _sort_keys(value[key], f"{path}.{key}", depth + 1) for key in sorted(value)}
    if isinstance(value, list):
        return [_sort_keys(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        # params travel as JSON, which has no infinity or NaN; silently sending null would lie
        raise ValueError(f"{path} is {value}, which JSON cannot carry; quote it if you mean the text")
    return value


def spec_hash(spec: ResourceSpec) -> str:
    """Identity of a spec's content: equal specs hash equal whatever their YAML key order."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def canonical_json(spec: dict[str, Any]) -> str:
    """How a spec dict is stored and handed to scripts: sorted keys, no spaces."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ResourceStatus(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    ERRORED = "errored"
    DELETING = "deleting"
    DELETED = "deleted"
    # dropped from management without a teardown (`reconciler forget`): not live, keeps its history
    FORGOTTEN = "forgotten"


# statuses of rows the controller no longer manages: a tombstone, or a forgotten resource
UNMANAGED_STATUSES = frozenset({"deleted", "forgotten"})


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # queued, then its resource was suspended: it never ran


class Action(StrEnum):
    """What a planned change does, and so what its job does: one enum for both (as Terraform's plans.Action).

    NOOP marks a plan's notes (kept, waiting); a job never carries it. A retry is not an action but a
    reason (plan.Reason): a failed create is retried by a create.
    """

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NOOP = "noop"


JobAction = Action  # the name jobs and the store have used; the same enum


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    """Timestamps are stored as fixed-width UTC ISO-8601 text, so they also sort as strings."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Rows per status (tombstones too) and live rows per health, from one scan of `resources`."""

    statuses: dict[str, int]
    health: dict[str, int]

    @classmethod
    def empty(cls) -> FleetCounts:
        return cls({status.value: 0 for status in ResourceStatus}, {health.value: 0 for health in Health})

    @property
    def live(self) -> int:
        return sum(count for status, count in self.statuses.items() if status not in UNMANAGED_STATUSES)

    @property
    def unhealthy(self) -> int:
        return self.health[Health.UNHEALTHY]

    def summary(self) -> dict[str, int]:
        """What /health shows: every status, then the live rows failing their checks."""
        return {**self.statuses, "unhealthy": self.unhealthy}


@dataclass(frozen=True, slots=True)
class ObservedResource:
    """One row of the `resources` table: what the controller last did and saw."""

    resource_id: str
    owner: str
    region: str
    runtime_target: str
    deploy_ref: str
    status: ResourceStatus
    url: str | None = None
    created_at: str | None = None
    last_seen: str | None = None
    spec_hash: str | None = None
    target_hash: str | None = None
    spec_json: str | None = None
    generation: int = 0
    error: str | None = None
    attempts: int = 0
    next_attempt_at: str | None = None
    health: Health = Health.UNKNOWN
    consecutive_failures: int = 0
    last_check_at: str | None = None
    protected: bool = False
    source: str = "file"
    version: int = 0
    updated_at: str | None = None
    # a forgotten row whose id is still declared: the plan keeps it unmanaged until it is undeclared
    unmanaged: bool = False

    @property
    def live(self) -> bool:
        return self.status is not ResourceStatus.DELETED and self.status is not ResourceStatus.FORGOTTEN

    def applied_spec(self) -> dict[str, Any]:
        """The spec the last successful run applied (or, before any, the columns we have)."""
        if self.spec_json:
            stored = json.loads(self.spec_json)
            return {name: stored[name] for name in SPEC_FIELDS if name in stored}
        return {"resource_id": self.resource_id, "owner": self.owner, "region": self.region,
                "runtime_target": self.runtime_target, "deploy_ref": self.deploy_ref,
                "params": {}, "protected": self.protected}

    def seed_fields(self) -> dict[str, Any]:
        """The seed's nine columns, the stable public shape of a row."""
        return {
            "resource_id": self.resource_id,
            "owner": self.owner,
            "region": self.region,
            "runtime_target": self.runtime_target,
            "deploy_ref": self.deploy_ref,
            "status": str(self.status),
            "url": self.url,
            "created_at": self.created_at,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt at one change of one resource: the handle a worker claims under a lease."""

    job_id: str
    resource_id: str
    action: Action
    status: JobStatus
    attempt: int
    spec: dict[str, Any] | None
    old_spec: dict[str, Any] | None = None
    run_after: str | None = None
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    exit_code: int | None = None
    output_tail: str | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    claims: int = 0
    script_pgid: int | None = None
    script_host: str | None = None
    desired_commit: str | None = None
    actor: str | None = None  # who caused the job (reconciler/actor.py); its finish events carry it


@dataclass(frozen=True, slots=True)
class RolloutJobs:
    """A queue scope (claim, count_open): the jobs rollouts launched, each one a member's current job.

    Not a list of ids: scoped to a wave of thousands, a claim then costs an index lookup per candidate
    job instead of an id set the database builds again for every statement (P9 measured 0.8 ms a claim).
    """


ROLLOUT_JOBS = RolloutJobs()
# which jobs a worker may claim: any (None), those of these resources, or the rollouts' own
JobScope: TypeAlias = "Iterable[str] | RolloutJobs | None"


# The resource_id of events about the whole store (an import, an audit prune): no resource has it.
FLEET_ID = "*"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a resource's append-only history."""

    resource_id: str
    at: str
    kind: str
    message: str
    job_id: str | None = None
    desired_commit: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None  # who caused it (reconciler/actor.py); None in events older than the column


@dataclass(frozen=True, slots=True)
class Hold:
    """A resource the daemon holds back because policy.yaml forbids its change: which rules, and why.

    `rules` (the rule codes, sorted) is what a `held` event is written for, once per change of them;
    `message` and `details` (each violation with its place in policy.yaml) may change without one.
    """

    resource_id: str
    owner: str
    rules: tuple[str, ...]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    since: str | None = None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What the engine asks the queue for: one change of one resource."""

    resource_id: str
    action: Action
    reason: str
    spec: dict[str, Any] | None
    old_spec: dict[str, Any] | None = None
    target_hash: str | None = None
    attempt: int = 1
    # the row version the plan saw (None: no row); the queue refuses the request if it changed since
    expected_version: int | None = None
    source: str = "file"  # who declares the resource: "file" (desired/) or "api"
    actor: str | None = None  # who caused the change (reconciler/actor.py): the job and its events keep it
    details: dict[str, Any] | None = None  # added to the `queued` event's details (e.g. an override)


@dataclass(frozen=True, slots=True)
class Adoption:
    """One existing resource to record as active from its declared spec, without running provision."""

    resource_id: str
    spec: dict[str, Any]
    spec_hash: str
    url: str
    created_at: str | None = None  # when it was really created (None: now)
    source: str = "file"


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended, as the store records it."""

    ok: bool
    exit_code: int | None
    url: str | None
    error: str | None
    output_tail: str = ""
    duration: float = 0.0
    next_attempt_at: str | None = None
    # a create whose target's observe.sh found the resource already there: adopted, not provisioned
    adopted: bool = False


class PassRequestStatus(StrEnum):
    """A `reconciler reconcile` request's life: written, taken by the planning daemon, answered."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PassRequest:
    """A pass asked for by `reconciler reconcile [ID…]`: a row the planning daemon polls and answers."""

    request_id: str
    resource_ids: tuple[str, ...] | None  # None: the whole fleet
    actor: str | None
    requested_at: str
    status: PassRequestStatus = PassRequestStatus.PENDING
    job_ids: tuple[str, ...] = ()  # the jobs the pass queued for its scope, and those already open there
    notes: tuple[str, ...] = ()  # why ids in its scope got no job (suspended, in backoff, protected, …)
    error: str | None = None



@dataclass(frozen=True, slots=True)
class PassBeat:
    """What the planning daemon last saw, written after each pass (table `daemon_passes`) so `status`
    can show the daemon's view: when it last passed and whether desired/ loads for it."""

    holder: str  # the daemon's worker id (host:pid:token)
    host: str
    pid: int
    at: str  # when the pass ended
    desired_loads: bool
    desired_resources: int  # in the state it plans from (the last good one while desired/ fails)
    desired_files: int
    desired_error: str | None = None  # the first problem, file:line, while desired/ does not load
    desired_commit: str | None = None
