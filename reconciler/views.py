"""How each command shows its data, picked once per command (Terraform's internal/command/views).

A command reads what it shows (a plan, rows, events) and hands it to its view; a view never sees a
store, so what is shown and where it comes from change apart. `TextView` writes for people (colour
only on a terminal); `JsonView` writes the stable JSON shapes for scripts and CI, and sends progress
and summaries to stderr so stdout stays one JSON document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from .models import Event, Hold, ObservedResource
from .plan import Plan
from .policy import Verdict
from .render import render_json, render_text
from .rollout.plan import Proposal
from .status import Daemon, event_json, hold_json, row_json
from .terminal import printable

_COLUMNS = ("RESOURCE", "STATUS", "HEALTH", "OWNER", "REGION", "DEPLOY_REF", "URL", "LAST_SEEN")


class View(Protocol):
    """What every view shows; JSON views send progress and summaries to stderr."""

    @property
    def progress_to_stderr(self) -> bool: ...

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str: ...

    def fleet(self, *, rows: list[ObservedResource], daemon: Daemon | None, database: bool,
              holds: dict[str, Hold] | None = None) -> str: ...

    def resource(self, *, row: ObservedResource, events: list[Event]) -> str: ...

    def history(self, *, events: list[Event]) -> str: ...

    def audit(self, *, events: list[Event]) -> str: ...


@dataclass(frozen=True, slots=True)
class TextView:
    colour: bool = False
    progress_to_stderr: bool = False

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
        return render_text(plan, colour=self.colour, verdict=verdict, rollout=rollout)

    def fleet(self, *, rows: list[ObservedResource], daemon: Daemon | None, database: bool,
              holds: dict[str, Hold] | None = None) -> str:
        return _daemon_line(daemon, database=database) + "\n" + _table(rows) + _holds(holds or {})

    def resource(self, *, row: ObservedResource, events: list[Event]) -> str:
        fields = row_json(row)
        width = max(len(name) for name in fields)
        lines = [f"{name.ljust(width)}  {'-' if value is None else printable(str(value))}"
                 for name, value in fields.items()]
        lines.append(f"\nlatest events ({len(events)}):" if events else "\nno events yet")
        lines.extend(_event_lines(events))
        return "\n".join(lines) + "\n"

    def history(self, *, events: list[Event]) -> str:
        return "".join(line + "\n" for line in _event_lines(events))

    def audit(self, *, events: list[Event]) -> str:
        if not events:
            return "No events.\n"
        return "".join(line + "\n" for line in _event_lines(events, with_resource=True))


@dataclass(frozen=True, slots=True)
class JsonView:
    progress_to_stderr: bool = True

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
        return render_json(plan, verdict=verdict, rollout=rollout)

    def fleet(self, *, rows: list[ObservedResource], daemon: Daemon | None, database: bool,
              holds: dict[str, Hold] | None = None) -> str:
        held = holds or {}
        return json.dumps([{**row_json(row), **hold_json(held.get(row.resource_id))} for row in rows],
                          indent=2) + "\n"

    def resource(self, *, row: ObservedResource, events: list[Event]) -> str:
        return json.dumps({**row_json(row), "events": [event_json(e) for e in events]}, indent=2) + "\n"

    def history(self, *, events: list[Event]) -> str:
        return json.dumps([event_json(e) for e in events], indent=2) + "\n"

    def audit(self, *, events: list[Event]) -> str:
        return json.dumps([{"resource_id": e.resource_id, **event_json(e)} for e in events], indent=2) + "\n"


def pick_view(output: str, *, colour: bool) -> View:
    """The view of `--output text|json`; colour applies to text on a terminal only."""
    return JsonView() if output == "json" else TextView(colour=colour)


def _daemon_line(daemon: Daemon | None, *, database: bool) -> str:
    if daemon is None:
        return "daemon: none running" if database else "daemon: none"
    return f"{daemon.role}: pid {daemon.pid} on {daemon.host} since {daemon.since}"


def _table(rows: list[ObservedResource]) -> str:
    if not rows:
        return "No resources observed yet.\n"
    cells = [_COLUMNS] + [
        (r.resource_id, str(r.status), str(r.health), printable(r.owner), printable(r.region),
         printable(r.deploy_ref), printable(r.url or "-"), r.last_seen or "-")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in cells)


def _event_lines(events: list[Event], *, with_resource: bool = False) -> list[str]:
    """One line per event, the actor a column of its own (`-` for events older than the actor column)."""
    actor_width = max((len(event.actor or "-") for event in events), default=1)
    id_width = max((len(event.resource_id) for event in events), default=1)
    lines = []
    for event in events:
        commit = f" @{event.desired_commit}" if event.desired_commit else ""
        resource = f"{event.resource_id:<{id_width}}  " if with_resource else ""
        lines.append(printable(f"  {event.at}  {resource}{event.kind:<12} {event.actor or '-':<{actor_width}}  "
                               f"{event.message}{commit}"))
    return lines


def _holds(holds: dict[str, Hold]) -> str:
    """Resources policy.yaml holds back (their change, or their creation), with the rule and why."""
    if not holds:
        return ""
    lines = [f"\nheld back by policy ({len(holds)}):"]
    lines += [printable(f"  {rid}  {','.join(hold.rules)}  {hold.message}") for rid, hold in sorted(holds.items())]
    return "\n".join(lines) + "\n"
