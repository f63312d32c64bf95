"""The observed-state store: the only code that speaks SQL, behind one small interface.

`open_store(url=...)` picks the backend from the URL, so the engine, CLI and daemon never know
whether the rows live in a SQLite file or PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError

if TYPE_CHECKING:
    from .base import SQLStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def redact(url: str) -> str:
    """The database URL as logs and messages may show it (no password)."""
    from .postgres import redact as hide

    return hide(url) if is_postgres(url) else url


def sqlite_path(url: str) -> Path:
    """`path`, `sqlite:///relative/path` or `sqlite:////absolute/path` (SQLAlchemy's convention)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported database URL scheme '{scheme}://' "
                         "(use a file path, sqlite:///path or postgresql://…)")
    return Path(url)


def exists(url: str) -> bool:
    """Whether there is a database to read (a server is assumed to exist; a file may not yet)."""
    return is_postgres(url) or sqlite_path(url).exists()


def open_store(*, url: str, create: bool = True, pool_size: int = 20, busy_timeout: float | None = None) -> SQLStore:
    """Open (and migrate) the store at `url`; `create=False` refuses to make a new SQLite file.

    `busy_timeout`: seconds a SQLite write waits for another process's lock (default BUSY_TIMEOUT_S).
    """
    if is_postgres(url):
        from .postgres import PostgresStore

        return PostgresStore(url=url, pool_size=pool_size)
    from .sqlite import BUSY_TIMEOUT_S, SQLiteStore

    return SQLiteStore(path=sqlite_path(url), create=create,
                       busy_timeout=BUSY_TIMEOUT_S if busy_timeout is None else busy_timeout)
