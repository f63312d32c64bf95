"""How each command shows its data, picked once per command (Terraform's internal/command/views).

A command reads what it shows (a plan, rows, events) and hands it to its view; a view never sees a
store, so what is shown and where it comes from change apart. `TextView` writes for people (colour
only on a terminal); `JsonView` writes the stable JSON shapes for scripts and CI, and sends progress
and summaries to stderr so stdout stays one JSON document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .models import Event, Hold, ObservedResource
from .outofsync import age
from .plan import Plan
from .render import render_json, render_text
from .rollout.plan import Proposal
from .status import DesiredLoad, FleetStatus, Line, event_json, hold_json, line_json, row_json
from .terminal import printable

if TYPE_CHECKING:  # a plan without a policy imports no policy code (benchmark P1)
    from .policy import Verdict

# `status` (kubectl's shape): the verdict first, MESSAGE last; `-o wide` adds where and how it runs
_COLUMNS = ("RESOURCE", "READY", "STATUS", "HEALTH", "OWNER", "DEPLOY_REF", "AGE", "MESSAGE")
_WIDE = ("RESOURCE", "READY", "STATUS", "HEALTH", "OWNER", "DEPLOY_REF", "TARGET", "REGION", "URL", "LAST_CHECK",
         "ATTEMPTS", "AGE", "MESSAGE")


class View(Protocol):
    """What every view shows; JSON views send progress and summaries to stderr."""

    @property
    def progress_to_stderr(self) -> bool: ...

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str: ...

    def fleet(self, *, status: FleetStatus) -> str: ...

    def resource(self, *, row: ObservedResource, events: list[Event], line: Line | None = None) -> str: ...

    def history(self, *, events: list[Event]) -> str: ...

    def audit(self, *, events: list[Event]) -> str: ...


@dataclass(frozen=True, slots=True)
class TextView:
    colour: bool = False
    progress_to_stderr: bool = False
    wide: bool = False  # `status -o wide`: more columns

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
        return render_text(plan, colour=self.colour, verdict=verdict, rollout=rollout)

    def fleet(self, *, status: FleetStatus) -> str:
        header = _desired_line(status.desired, not_created=status.not_created) + "\n"
        header += _daemon_line(status) + "\n"
        return header + _table(status, wide=self.wide) + _hidden_line(status.hidden) + _holds(status.holds)

    def resource(self, *, row: ObservedResource, events: list[Event], line: Line | None = None) -> str:
        fields = line_json(line) if line is not None else row_json(row)
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

    def fleet(self, *, status: FleetStatus) -> str:
        return json.dumps([{**line_json(line), **hold_json(status.holds.get(line.row.resource_id))}
                           for line in status.lines], indent=2) + "\n"

    def resource(self, *, row: ObservedResource, events: list[Event], line: Line | None = None) -> str:
        fields = line_json(line) if line is not None else row_json(row)
        return json.dumps({**fields, "events": [event_json(e) for e in events]}, indent=2) + "\n"

    def history(self, *, events: list[Event]) -> str:
        return json.dumps([event_json(e) for e in events], indent=2) + "\n"

    def audit(self, *, events: list[Event]) -> str:
        return json.dumps([{"resource_id": e.resource_id, **event_json(e)} for e in events], indent=2) + "\n"


@dataclass(frozen=True, slots=True)
class YamlView:
    """The JSON view's documents as YAML (`status -o yaml`, kubectl's spelling): the same data, never more."""

    progress_to_stderr: bool = True

    def plan(self, plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
        return _yaml(JsonView().plan(plan, verdict=verdict, rollout=rollout))

    def fleet(self, *, status: FleetStatus) -> str:
        return _yaml(JsonView().fleet(status=status))

    def resource(self, *, row: ObservedResource, events: list[Event], line: Line | None = None) -> str:
        return _yaml(JsonView().resource(row=row, events=events, line=line))

    def history(self, *, events: list[Event]) -> str:
        return _yaml(JsonView().history(events=events))

    def audit(self, *, events: list[Event]) -> str:
        return _yaml(JsonView().audit(events=events))


def _yaml(document: str) -> str:
    import yaml

    data: Any = json.loads(document)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16))


def pick_view(output: str, *, colour: bool) -> View:
    """The view of `--output text|wide|json|yaml`; colour applies to text on a terminal only."""
    if output == "json":
        return JsonView()
    if output == "yaml":
        return YamlView()
    return TextView(colour=colour, wide=output == "wide")


def _desired_line(load: DesiredLoad, *, not_created: int) -> str:
    if load.error is not None:
        return printable(f"desired/: does not load: {load.error}; messages come from the rows alone")
    text = f"desired/: {_count(load.resources, 'resource')} from {_count(load.files, 'file')}"
    return text + (f"; {not_created} not created yet (reconciler plan shows them)" if not_created else "")


def _daemon_line(status: FleetStatus) -> str:
    """Who works the database and, when a daemon does, its view: its last pass and whether its desired/ loads."""
    daemon, last = status.daemon, status.last_pass
    if daemon is None:
        return "daemon: none running" if status.database else "daemon: none"
    text = f"{daemon.role}: pid {daemon.pid} on {daemon.host} since {daemon.since}"
    if last is None:
        return text + "; no pass recorded yet"
    text += f"; last pass {age(last.at, now=status.now)} ago ({last.at}); "
    if last.desired_loads:
        return text + f"its desired/ loads ({_count(last.desired_resources, 'resource')} from " \
                      f"{_count(last.desired_files, 'file')})"
    return text + printable(f"its desired/ does not load: {last.desired_error}; it plans from the last good "
                            f"state ({_count(last.desired_resources, 'resource')})")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _cells(line: Line, *, wide: bool, status: FleetStatus) -> tuple[str, ...]:
    r, message = line.row, line.message
    text = printable(message.text) if message else ""
    first = (r.resource_id, str(line.ready), str(r.status), str(r.health), printable(r.owner), printable(r.deploy_ref))
    if not wide:
        return (*first, age(r.created_at, now=status.now), text)
    return (*first, printable(r.runtime_target), printable(r.region), printable(r.url or "-"),
            age(r.last_check_at, now=status.now), str(r.attempts), age(r.created_at, now=status.now), text)


def _table(status: FleetStatus, *, wide: bool) -> str:
    if not status.lines:
        if status.observed == 0:
            return "No resources observed yet.\n"
        return "Every resource is in sync.\n" if status.out_of_sync_only else "No resources to show.\n"
    columns = _WIDE if wide else _COLUMNS
    cells = [columns] + [_cells(line, wide=wide, status=status) for line in status.lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
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


def _hidden_line(hidden: int) -> str:
    if not hidden:
        return ""
    return f"({_count(hidden, 'deleted resource')} hidden; --all shows them)\n"

