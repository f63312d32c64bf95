"""The operator's lifecycle commands besides apply: `forget` and `adopt` (one id, or a fleet from a file).

They change which rows the controller manages without running a provision or teardown script, so
each is all or nothing (checked first, then one transaction) and records who did it and why as an
event. `replace` needs no module of its own: it is `apply` with ids to replace (apply.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .adoption import AdoptRow, Checked, check_rows, read_file
from .engine import load_files, with_api_desired
from .errors import ReconcilerError
from .models import iso, utcnow
from .options import CheckOptions
from .ports import Lifecycle
from .spec import DesiredState
from .store import open_store
from .terminal import printable

MAX_ADOPT_FILE = 512 * 1024 * 1024  # bytes: a 100k-row file is a few MiB


@dataclass(frozen=True, slots=True)
class Operator:
    """Who runs the command and why (recorded with every event it writes)."""

    actor: str
    reason: str | None = None


def load_declared(*, settings: Any, store: Lifecycle | None) -> DesiredState:
    """desired/ plus the API's declarations: what may be adopted, and what forget must not leave declared."""
    files = load_files(directory=settings.desired, settle=settings.settle, provision_dir=settings.provision)
    api = store.api_desired() if store is not None else {}
    return with_api_desired(desired=files, api=api)


# --- forget ---------------------------------------------------------------------------------------


def forget(*, settings: Any, resource_ids: Sequence[str], force: bool, yes: bool, operator: Operator) -> int:
    """Drop resources from management without teardown; refused while declared unless `force`."""
    store = open_store(url=settings.db, create=False)
    try:
        declared = load_declared(settings=settings, store=store)
        rows = store.load_observed()
        problems = [problem for rid in dict.fromkeys(resource_ids)
                    if (problem := _forget_problem(rid, rows=rows, declared=declared, force=force))]
        if problems:
            raise ReconcilerError("nothing was forgotten:\n  " + "\n  ".join(problems))
        ids = list(dict.fromkeys(resource_ids))
        click.echo("These resources will be forgotten: no teardown runs, they keep running, their rows and "
                   "history stay:")
        for rid in ids:
            kept = " (stays declared: the plan keeps it unmanaged)" if rid in declared.resources else ""
            click.echo(f"  - {rid} ({rows[rid].url or 'no URL'}){kept}")
        if not confirmed(yes=yes, verb="forget"):
            return 1
        store.forget(resource_ids=ids, reason=operator.reason or "", actor=operator.actor, now=iso(utcnow()))
    finally:
        store.close()
    click.echo(f"Forgot {len(ids)} resource{'s' if len(ids) != 1 else ''}.")
    return 0


def _forget_problem(resource_id: str, *, rows: dict[str, Any], declared: DesiredState, force: bool) -> str | None:
    row = rows.get(resource_id)
    if row is None:
        return f"{resource_id}: no such resource in the database"
    if not row.live:
        return f"{resource_id}: not managed ({row.status})"
    source = declared.sources.get(resource_id)
    if source is not None and not force:
        return (f"{resource_id}: still declared ({source}); remove it from desired/ first, or pass --force to keep "
                "it declared but unmanaged")
    return None


def confirmed(*, yes: bool, verb: str) -> bool:
    """The confirmation apply and destroy ask for: --yes, or 'yes' typed on a terminal; no terminal refuses."""
    if yes:
        return True
    if not sys.stdin.isatty():
        click.echo(f"Error: refusing to {verb} without confirmation: no terminal to ask on. "
                   "Review the list above, then pass --yes.", err=True)
        return False
    click.echo("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n")
    if click.prompt("  Enter a value", default="", show_default=False).strip() != "yes":
        click.echo(f"\n{verb.capitalize()} cancelled.", err=True)
        return False
    return True


# --- adopt ----------------------------------------------------------------------------------------


def adopt(*, settings: Any, rows: list[AdoptRow], name: str, dry_run: bool, check: CheckOptions | None,
          operator: Operator) -> int:
    """Adopt the rows (every one checked first; any bad row adopts nothing), then optionally check them once.

    A dry run only reads: a database that does not exist yet is not created (it manages nothing)."""
    from .store import exists

    store = open_store(url=settings.db) if not dry_run or exists(settings.db) else None
    try:
        declared = load_declared(settings=settings, store=store)
        checked = check_adoptions(declared=declared, store=store, rows=rows, name=name)
        if checked.problems:
            for problem in checked.problems:
                click.echo(f"error: {problem}", err=True)
            count = len(checked.problems)
            raise ReconcilerError(f"{count} bad row{'s' if count != 1 else ''}; nothing was adopted")
        if dry_run or store is None:
            _show_adoptions(checked)
            return 0
        store.adopt(adoptions=checked.adoptions, actor=operator.actor, reason=operator.reason, now=iso(utcnow()))
        count = len(checked.adoptions)
        click.echo(f"Adopted {count} resource{'s' if count != 1 else ''} (health unknown until checked).")
        if check is not None:
            return _check_adopted(store=store, ids=[a.resource_id for a in checked.adoptions], check=check)
    finally:
        if store is not None:
            store.close()
    return 0


def check_adoptions(*, declared: DesiredState, store: Lifecycle | None, rows: list[AdoptRow],
                    name: str) -> Checked:
    """Every row against the declared state (loaded once, by the caller) and the ids the store manages now
    (None: no database yet, nothing managed)."""
    api = {rid for rid, source in declared.sources.items() if source.file == "api"}
    managed = store.managed_ids() if store is not None else set()
    return check_rows(rows=rows, desired=declared.resources, managed=managed, name=name,
                      hashes=declared.hashes, api=api)


def read_adoption_file(*, path: Path) -> list[AdoptRow]:
    """The file's rows; a line that does not parse is an error naming FILE:LINE (nothing adopted)."""
    try:
        if path.stat().st_size > MAX_ADOPT_FILE:
            raise ReconcilerError(f"{path}: larger than {MAX_ADOPT_FILE >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconcilerError(f"{path}: cannot read: {exc}") from None
    rows, problems = read_file(text=text, name=str(path))
    if problems:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        raise ReconcilerError(f"{len(problems)} unreadable line{'s' if len(problems) != 1 else ''}; "
                              "nothing was adopted")
    return rows


def _show_adoptions(checked: Checked) -> None:
    for adoption in checked.adoptions:
        click.echo(printable(f"  + {adoption.resource_id} {adoption.url}"))
    count = len(checked.adoptions)
    click.echo(f"Would adopt {count} resource{'s' if count != 1 else ''} (dry run: nothing was written).")


def _check_adopted(*, store: Any, ids: list[str], check: CheckOptions) -> int:
    from .drift import run_drift_pass

    report = asyncio.run(run_drift_pass(store=store, concurrency=check.concurrency, timeout=check.timeout,
                                        unhealthy_after=check.unhealthy_after, resources=frozenset(ids)))
    for failure in sorted(report.failures, key=lambda f: f.resource_id):
        click.echo(printable(f"✗ {failure.resource_id}: {failure.error} ({failure.url})"))
    counts = report.summary()
    click.echo(f"Checked {counts['checked']}: {counts['healthy']} healthy, {counts['failed']} failed.")
    return 1 if report.failures else 0
