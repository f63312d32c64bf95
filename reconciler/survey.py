"""What `status` knows of the fleet: the rows, a read-only plan over them, and each row's verdict.

`status` must tell the truth while the fleet is out of sync, and the truth about "not yet queued"
needs the plan: so it plans exactly as `plan` does (engine.plan_fleet over desired/ and the rows),
writes nothing, and hands each row, its open job and the plan's note to outofsync.status_message.
When desired/ does not load it says so (file:line) and falls back to what the rows alone show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .engine import load_files, plan_fleet, read_fleet
from .errors import ReconcilerError, SpecError
from .models import Action
from .outofsync import ready, status_message
from .plan import Change, PlanPolicy, Reason
from .ports import SurveyStore
from .spec import DesiredState
from .status import DesiredLoad, FleetStatus, Line, daemon_holder


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows `status` shows: only those out of sync, and tombstones too."""

    out_of_sync: bool = False
    show_all: bool = False


def survey(*, store: SurveyStore | None, desired_dir: Path, provision_dir: Path | None, settle: float,
           now: datetime, scope: Scope = Scope()) -> FleetStatus:
    """Read, plan (read-only) and judge every row; `store` None is a database not created yet.

    `provision_dir` (None: not here) checks each runtime_target as `plan` does; `status` run where the
    scripts are not (another machine, another directory) skips that check, as `validate` does."""
    fleet = read_fleet(store=store)
    load, desired = _load(desired_dir=desired_dir, provision_dir=provision_dir, settle=settle)
    notes: dict[str, Change] = {}
    not_created = 0
    if desired is not None:
        plan = plan_fleet(desired=desired, fleet=fleet, policy=PlanPolicy(allow_mass_delete=True), now=now).plan
        notes = {change.resource_id: change for change in plan.changes + plan.kept + plan.waiting}
        not_created = sum(1 for rid in notes if rid not in fleet.observed)
    holds = store.holds() if store is not None else {}
    for resource_id, hold in holds.items():  # the daemon's policy verdict: held, not merely pending
        notes[resource_id] = Change(resource_id, Action.NOOP, Reason.POLICY,
                                    f"held back by policy ({', '.join(hold.rules)}): {hold.message}")
    jobs = store.open_jobs() if store is not None else {}
    lines, hidden = [], 0
    for resource_id in sorted(fleet.observed):
        row = fleet.observed[resource_id]
        message = status_message(row, job=jobs.get(resource_id), plan_note=notes.get(resource_id), now=now,
                                 planned=desired is not None)
        if message is None and scope.out_of_sync:
            continue
        if message is None and not row.live and not scope.show_all:  # a tombstone declared again shows
            hidden += 1
            continue
        lines.append(Line(row, ready(message, planned=desired is not None), message))
    holder = daemon_holder(store=store)
    last = store.last_pass() if store is not None and holder is not None else None
    return FleetStatus(lines, load, holder, last, store is not None, now, not_created, hidden, len(fleet.observed),
                       scope.out_of_sync, holds)


def _load(*, desired_dir: Path, provision_dir: Path | None, settle: float) -> tuple[DesiredLoad, DesiredState | None]:
    """desired/ as `plan` loads it, or why it does not load (the first problem, file:line)."""
    try:
        state = load_files(directory=desired_dir, settle=settle, provision_dir=provision_dir)
    except SpecError as exc:
        first = str(exc.problems[0]) if exc.problems else str(exc)
        more = len(exc.problems) - 1
        return DesiredLoad(error=first + (f" (and {more} more problem{'s' if more != 1 else ''})" if more > 0
                                          else "")), None
    except ReconcilerError as exc:
        return DesiredLoad(error=str(exc)), None
    files = len({source.file for source in state.sources.values()})
    return DesiredLoad(resources=len(state.resources), files=files), state
