"""The observed-state store: the only code that speaks SQL, behind one small interface.

`open_store(url=...)` picks the backend from the URL, so the engine, CLI and daemon never know
whether the rows live in a SQLite file or (later) PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError

if TYPE_CHECKING:
    from .sqlite import SQLiteStore

DEFAULT_DB = "reconciler.db"


def sqlite_path(url: str) -> Path:
    """`path`, `sqlite:///relative/path` or `sqlite:////absolute/path` (SQLAlchemy's convention)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported database URL scheme '{scheme}://' (use a file path or sqlite:///path)")
    return Path(url)


def open_store(*, url: str, create: bool = True) -> SQLiteStore:
    """Open (and migrate) the store at `url`; `create=False` refuses to make a new database."""
    from .sqlite import SQLiteStore

    return SQLiteStore(path=sqlite_path(url), create=create)
