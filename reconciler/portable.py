"""The JSON document that carries a whole store between tiers: SQLite → JSON → PostgreSQL and back.

Every durable row goes in as it is (the schema is the same at every tier), with the schema version,
so an import can refuse a document it does not understand instead of loading half of it.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ReconcilerError
from .models import iso, utcnow
from .ports import Portable
from .store.migrations import LATEST

FORMAT = "reconciler-export"
FORMAT_VERSION = 1


def export_document(*, store: Portable) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "schema_version": LATEST,
            "exported_at": iso(utcnow()), "source": store.kind, "tables": store.export_rows()}


def import_document(*, store: Portable, text: str, name: str, replace: bool,
                    actor: str | None = None) -> dict[str, int]:
    """Load an export; the import records itself as an event with `actor` (a restore replaces history)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ReconcilerError(f"{name}: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReconcilerError(f"{name}: not a reconciler export (expected \"format\": \"{FORMAT}\")")
    if document.get("format_version") != FORMAT_VERSION or document.get("schema_version", 0) > LATEST:
        raise ReconcilerError(f"{name}: export format {document.get('format_version')} / schema "
                              f"{document.get('schema_version')} is newer than this release reads")
    tables = document.get("tables")
    if not isinstance(tables, dict) or not all(isinstance(rows, list) for rows in tables.values()):
        raise ReconcilerError(f"{name}: \"tables\" must map table names to lists of rows")
    return store.import_rows(tables=tables, replace=replace, actor=actor, now=iso(utcnow()), name=name)
