"""What `status` and `history` show, read from the store; and the JSON shapes of a row and an event.

The reading is here, the showing in views.py (which never sees a store). `row_json` and `event_json`
are shared with the HTTP API: JSON for `status` is an array of rows with at least the seed's nine fields,
plus (issue 16) `ready`, `out_of_sync` and `message` (outofsync.py); fields are added, never renamed.
`FleetStatus` is what `status` shows of the whole fleet; survey.py builds it (it plans, read-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ReconcilerError
from .models import Event, Hold, ObservedResource, PassBeat
from .outofsync import Message, Ready
from .ports import StatusReader


@dataclass(frozen=True, slots=True)
class Daemon:
    """Who works the database, for `status`: `role` is "leader" (PostgreSQL) or "daemon" (SQLite)."""

    role: str
    pid: Any
    host: str
    since: str


@dataclass(frozen=True, slots=True)
class DesiredLoad:
    """Whether desired/ loads for this command: how many resources from how many files, or why not."""

    resources: int = 0
    files: int = 0
    error: str | None = None  # the first problem (file:line: field: message) and how many more


@dataclass(frozen=True, slots=True)
class Line:
    """One row of `status` with its verdict: READY and, when not in sync, why (the MESSAGE)."""

    row: ObservedResource
    ready: Ready
    message: Message | None = None


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """Everything `status` shows of the fleet: its lines, the header, the clock the ages are counted from."""

    lines: list[Line]
    desired: DesiredLoad
    daemon: Daemon | None
    last_pass: PassBeat | None  # the daemon's last pass, shown only while a daemon holds the database
    database: bool
    now: datetime
    not_created: int = 0  # declared, no row yet: `plan` shows them
    hidden: int = 0  # tombstones left out (shown with --all)
    observed: int = 0  # rows in the database, shown or not
    out_of_sync_only: bool = False  # `--out-of-sync`: only the lines with a message
    holds: dict[str, Hold] = field(default_factory=dict)  # what policy.yaml holds back (the daemon's last pass)


def line_json(line: Line) -> dict[str, Any]:
    """A row as `status -o json` shows it: `row_json` plus its verdict."""
    message = line.message
    return {**row_json(line.row), "ready": str(line.ready), "out_of_sync": str(message.kind) if message else None,
            "message": message.text if message else ""}


def row_json(row: ObservedResource) -> dict[str, Any]:
    extra = {
        "health": str(row.health), "error": row.error, "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at, "consecutive_failures": row.consecutive_failures,
        "last_check_at": row.last_check_at, "protected": row.protected, "generation": row.generation,
        "source": row.source,
    }
    return {**row.seed_fields(), **extra}


def hold_json(hold: Hold | None) -> dict[str, Any]:
    """A row's policy hold, as an added field of its JSON (nothing when it is not held)."""
    if hold is None:
        return {}
    return {"held": {"rules": list(hold.rules), "message": hold.message, "since": hold.since}}


def event_json(event: Event) -> dict[str, Any]:
    return {"at": event.at, "kind": event.kind, "message": event.message, "job_id": event.job_id,
            "desired_commit": event.desired_commit, **({"details": event.details} if event.details else {}),
            "actor": event.actor}


def daemon_holder(*, store: StatusReader | None) -> Daemon | None:
    """Which daemon works this database (SQLite: the one daemon; PostgreSQL: the leader that plans)."""
    from .models import iso, utcnow

    if store is None:
        return None
    for name, role in (("leader", "leader"), ("daemon", "daemon")):
        holder = store.lock_holder(name=name, now=iso(utcnow()))
        if holder is not None:
            return Daemon(role, holder["pid"], holder["host"], holder["since"])
    return None


def holds(*, store: StatusReader | None) -> dict[str, Hold]:
    """What policy.yaml holds back now (the daemon's last pass); no database holds nothing."""
    return store.holds() if store else {}


def rows(*, store: StatusReader | None) -> list[ObservedResource]:
    """Every observed row by id; no database reads as none."""
    return sorted(store.load_observed().values(), key=lambda r: r.resource_id) if store else []


def resource(*, store: StatusReader | None, resource_id: str) -> ObservedResource:
    row = store.get_resource(resource_id) if store else None
    if row is None:
        raise ReconcilerError(f"no resource '{resource_id}' in the observed state")
    return row
