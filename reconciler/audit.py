"""The fleet's audit trail as `reconciler audit` reads it, and its retention (`audit prune`).

Events are append-only: nothing in the CLI or the API deletes them, except a restore (`import
--replace`, which records itself) and the retention here, which writes the events it prunes to a
JSON archive first (atomically, never over an existing file), then deletes exactly those in one
transaction with an event recording the prune and who ran it. `parse_moment` (pure) reads the
dates and durations both commands take.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import ReconcilerError
from .models import Event, iso
from .ports import AuditStore
from .store.migrations import LATEST

ARCHIVE_FORMAT = "reconciler-audit-archive"
ARCHIVE_VERSION = 1
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, *, option: str, now: datetime) -> str:
    """A stored timestamp from `2026-01-31`, an ISO-8601 time (UTC unless it says otherwise) or a duration
    before `now` (`90m`, `12h`, `7d`, `2w`); a ReconcilerError naming `option` otherwise."""
    value = text.strip()
    duration = _DURATION.match(value)
    if duration:
        return iso(now - timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))}))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReconcilerError(f"{option} {text!r}: not a date (expected YYYY-MM-DD, an ISO-8601 time such as "
                              "2026-01-31T12:00:00Z, or a duration back from now such as 90m, 12h, 7d, 2w)") from None
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def list_events(*, store: AuditStore | None, since: str | None, actor: str | None, owner: str | None,
                limit: int | None) -> list[Event]:
    """The fleet's events, oldest first (the newest `limit`); no database reads as no events."""
    if store is None:
        return []
    return store.audit_events(since=since, actor=actor, owner=owner, limit=limit)


@dataclass(frozen=True, slots=True)
class Pruned:
    count: int
    archive: Path


def prune(*, store: AuditStore, before: str, archive: Path, actor: str, now: datetime, kind: str) -> Pruned:
    """Archive the events older than `before` to `archive` (a new file), then delete them and record it."""
    if before > iso(now):
        raise ReconcilerError(f"--before {before}: is in the future; events still being written would be pruned")
    if archive.exists():
        raise ReconcilerError(f"--archive {archive}: already exists; choose a new file (an archive is never "
                              "overwritten)")
    rows = store.events_before(before=before)
    _write_archive(path=archive, document={
        "format": ARCHIVE_FORMAT, "format_version": ARCHIVE_VERSION, "schema_version": LATEST, "source": kind,
        "archived_at": iso(now), "before": before, "archived_by": actor, "events": rows})
    try:
        count = store.prune_events(before=before, archived=len(rows), through_id=max((r["id"] for r in rows),
                                                                                      default=0),
                                   now=iso(now), actor=actor, details={"archive": str(archive)})
    except BaseException:  # nothing was pruned: the archive of it would only mislead
        with contextlib.suppress(OSError):
            archive.unlink()
        raise
    return Pruned(count, archive)


def _write_archive(*, path: Path, document: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then link it into place: the name
    appears complete or not at all, and a file that appeared meanwhile is not overwritten (link fails)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ReconcilerError(f"--archive {path}: cannot write there: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)
    except FileExistsError:
        raise ReconcilerError(f"--archive {path}: already exists; choose a new file") from None
    except OSError as exc:
        raise ReconcilerError(f"--archive {path}: cannot write it: {exc.strerror}; nothing was pruned") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
