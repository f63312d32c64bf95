"""Views of observed state for `status` and `history`: rows and events as a table or JSON.

Kept out of cli.py (which only parses arguments) and out of render.py (which renders plans).
JSON for `status` is an array of rows with at least the seed's nine fields.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ReconcilerError
from .models import Event, ObservedResource
from .terminal import printable

_COLUMNS = ("RESOURCE", "STATUS", "HEALTH", "OWNER", "REGION", "DEPLOY_REF", "URL", "LAST_SEEN")


def row_json(row: ObservedResource) -> dict[str, Any]:
    extra = {
        "health": str(row.health), "error": row.error, "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at, "consecutive_failures": row.consecutive_failures,
        "last_check_at": row.last_check_at, "protected": row.protected, "generation": row.generation,
        "source": row.source,
    }
    return {**row.seed_fields(), **extra}


def event_json(event: Event) -> dict[str, Any]:
    return {"at": event.at, "kind": event.kind, "message": event.message, "job_id": event.job_id,
            "desired_commit": event.desired_commit, **({"details": event.details} if event.details else {})}


def leader_line(*, store: Any) -> str:
    """Which daemon works this database (SQLite: the one daemon; PostgreSQL: the leader that plans)."""
    from .models import iso, utcnow

    if store is None:
        return "daemon: none"
    for name, role in (("leader", "leader"), ("daemon", "daemon")):
        holder = store.lock_holder(name=name, now=iso(utcnow()))
        if holder is not None:
            return f"{role}: pid {holder['pid']} on {holder['host']} since {holder['since']}"
    return "daemon: none running"


def table(*, store: Any, output: str) -> str:
    rows = sorted(store.load_observed().values(), key=lambda r: r.resource_id) if store else []
    if output == "json":
        return json.dumps([row_json(row) for row in rows], indent=2) + "\n"
    if not rows:
        return "No resources observed yet.\n"
    cells = [_COLUMNS] + [
        (r.resource_id, str(r.status), str(r.health), printable(r.owner), printable(r.region),
         printable(r.deploy_ref), printable(r.url or "-"), r.last_seen or "-")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in cells)


def _require(store: Any, resource_id: str) -> ObservedResource:
    row = store.get_resource(resource_id) if store else None
    if row is None:
        raise ReconcilerError(f"no resource '{resource_id}' in the observed state")
    return row


def one(*, store: Any, resource_id: str, output: str, events: int = 10) -> str:
    row = _require(store, resource_id)
    recent = store.events(resource_id, limit=events)
    if output == "json":
        return json.dumps({**row_json(row), "events": [event_json(e) for e in recent]}, indent=2) + "\n"
    fields = row_json(row)
    width = max(len(name) for name in fields)
    lines = [f"{name.ljust(width)}  {'-' if value is None else printable(str(value))}"
             for name, value in fields.items()]
    lines.append(f"\nlatest events ({len(recent)}):" if recent else "\nno events yet")
    lines.extend(_event_line(event) for event in recent)
    return "\n".join(lines) + "\n"


def history(*, store: Any, resource_id: str, output: str) -> str:
    _require(store, resource_id)
    events = store.events(resource_id)
    if output == "json":
        return json.dumps([event_json(e) for e in events], indent=2) + "\n"
    return "".join(_event_line(event) + "\n" for event in events)


def _event_line(event: Event) -> str:
    commit = f" @{event.desired_commit}" if event.desired_commit else ""
    return printable(f"  {event.at}  {event.kind:<12} {event.message}{commit}")
