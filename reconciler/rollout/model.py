"""What a rollout is, as frozen data and enums: the policy (policy.yaml's `rollout:`), a rollout, its members.

A rollout rolls one change set across the fleet in waves. Its state lives in the database (tables
`rollouts` and `rollout_members`); these types are what the pure parts (`plan`, `machine`) read and
return, so every decision about waves is a function of rows and a clock reading passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..models import Action

DEFAULT_MIN_CHANGES = 10
DEFAULT_CHECK_INTERVAL = 2.0  # seconds between the fast health checks of a baking wave
DEFAULT_UNHEALTHY_AFTER = 3  # consecutive failed checks during bake that count as a failure
DEFAULT_ACTIONS = frozenset({Action.UPDATE, Action.REPLACE})


class OnFailure(StrEnum):
    """What a rollout does when a wave's failures exceed `max_failures`."""

    HALT = "halt"  # no further wave starts; reached resources stay as they are
    REVERT = "revert"  # and the failed wave goes back to the recorded previous spec, held there


class RolloutState(StrEnum):
    """A rollout's lifecycle. RUNNING, PAUSED and HALTED are active: their members are the rollout's."""

    RUNNING = "running"
    PAUSED = "paused"  # no wave starts; the current one finishes and bakes
    HALTED = "halted"  # the failure budget was exceeded (or aborted with --revert in progress)
    COMPLETED = "completed"
    ABORTED = "aborted"


ACTIVE = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED})


class MemberState(StrEnum):
    """One resource in a rollout."""

    PENDING = "pending"  # its wave has not started: its row keeps the old spec
    QUEUED = "queued"  # its wave started: a job with the rollout's spec is open
    SUCCEEDED = "succeeded"  # the job succeeded (and `succeeded_at` starts its bake)
    FAILED = "failed"  # the script failed
    UNHEALTHY = "unhealthy"  # `unhealthy_after` consecutive checks failed during bake
    REVERTING = "reverting"  # a job with the previous spec is open
    REVERTED = "reverted"  # back at the previous spec, held there until the desired state changes
    SUPERSEDED = "superseded"  # a newer desired spec took it out of this rollout
    SKIPPED = "skipped"  # suspended or held by policy when its wave started


FAILURES = frozenset({MemberState.FAILED, MemberState.UNHEALTHY})
# settled: its wave's job is over (for good or bad); REVERTING/REVERTED count as settled failures
SETTLED = frozenset({MemberState.SUCCEEDED, MemberState.FAILED, MemberState.UNHEALTHY, MemberState.REVERTING,
                     MemberState.REVERTED})
OUT = frozenset({MemberState.SUPERSEDED, MemberState.SKIPPED})  # no longer part of its wave's count


class WaveState(StrEnum):
    """A wave as `rollout status` shows it (derived from its members and the rollout, never stored)."""

    PENDING = "pending"
    RUNNING = "running"
    BAKING = "baking"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WaveTarget:
    """One entry of `waves:`: a cumulative count, or a cumulative percentage of the change set (rounded up)."""

    count: int | None = None
    percent: float | None = None

    def reach(self, total: int) -> int:
        """How many of `total` changes are reached once this wave is done."""
        if self.count is not None:
            return min(self.count, total)
        percent = self.percent or 0.0
        return min(total, -(-round(percent * 1_000_000) * total // 100_000_000))

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        percent = self.percent or 0.0
        return f"{percent:g}%"


@dataclass(frozen=True, slots=True)
class Canary:
    """Resources that go first: named ids, or every resource of these owners or regions."""

    ids: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()

    def matches(self, resource_id: str, spec: dict[str, Any] | None) -> bool:
        if resource_id in self.ids:
            return True
        spec = spec or {}
        return spec.get("owner") in self.owners or spec.get("region") in self.regions


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """policy.yaml's `rollout:` (README "Rollouts"). Without it, changes go at once as before."""

    waves: tuple[WaveTarget, ...] = (WaveTarget(count=1), WaveTarget(percent=100.0))
    bake: float = 600.0  # seconds
    max_failures: int = 0  # per wave; more halts the rollout
    max_parallel: int | None = None  # at most this many of a wave's jobs open at once
    min_changes: int = DEFAULT_MIN_CHANGES  # smaller change sets go at once
    on_failure: OnFailure = OnFailure.HALT
    canary: Canary = Canary()
    actions: frozenset[Action] = DEFAULT_ACTIONS  # which changes roll out (creates and deletes go at once)
    check_interval: float = DEFAULT_CHECK_INTERVAL
    unhealthy_after: int = DEFAULT_UNHEALTHY_AFTER

    def settings(self) -> dict[str, Any]:
        """What a rollout row keeps of its policy: it runs to the end under the policy it started with."""
        return {"bake": self.bake, "max_failures": self.max_failures, "max_parallel": self.max_parallel,
                "on_failure": str(self.on_failure), "check_interval": self.check_interval,
                "unhealthy_after": self.unhealthy_after}


@dataclass(frozen=True, slots=True)
class Settings:
    """A running rollout's settings, as recorded in its row when it was created."""

    bake: float
    max_failures: int = 0
    max_parallel: int | None = None
    on_failure: OnFailure = OnFailure.HALT
    check_interval: float = DEFAULT_CHECK_INTERVAL
    unhealthy_after: int = DEFAULT_UNHEALTHY_AFTER

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(bake=float(data.get("bake", 0.0)), max_failures=int(data.get("max_failures", 0)),
                   max_parallel=data.get("max_parallel"), on_failure=OnFailure(data.get("on_failure", "halt")),
                   check_interval=float(data.get("check_interval", DEFAULT_CHECK_INTERVAL)),
                   unhealthy_after=int(data.get("unhealthy_after", DEFAULT_UNHEALTHY_AFTER)))


class StoredSpec(Mapping[str, Any]):
    """A member's spec as its row stores it (JSON), decoded on first use: every tick of a rollout reads all
    of its members, and only the few it launches need their specs (at 10,000 members, half the read)."""

    __slots__ = ("_text", "_value")

    def __init__(self, text: str) -> None:
        self._text = text
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            self._value = json.loads(self._text)
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def plain(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A spec as a dict (a job's spec is encoded as JSON)."""
    return None if spec is None else dict(spec)


@dataclass(frozen=True, slots=True)
class Member:
    """One resource of a rollout: its wave, its from → to specs, where it is."""

    rollout_id: str
    resource_id: str
    wave: int  # 1-based
    state: MemberState
    action: Action
    from_spec: Mapping[str, Any] | None
    to_spec: Mapping[str, Any] | None
    to_hash: str | None
    job_id: str | None = None
    succeeded_at: str | None = None  # the last success: its bake runs from here
    check_failures: int = 0  # consecutive failed checks during bake
    error: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    """One rollout row. `wave`: the current wave (0: none started yet). `promoted`: the current wave's bake
    was skipped (`rollout promote`). `revert`: revert the halted wave (on_failure: revert, abort --revert)."""

    rollout_id: str
    state: RolloutState
    waves: int
    wave: int
    settings: Settings
    created_at: str
    updated_at: str
    actor: str | None = None
    desired_commit: str | None = None
    reason: str | None = None  # why it halted (names the failures)
    promoted: bool = False
    revert: bool = False
    sizes: tuple[int, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.state in ACTIVE
