"""Driver errors become the store's own, here and nowhere else.

The layers above must tell "try again later" (a locked file, a restarting server: `StoreUnavailable`)
from "lost a race, try again now" (`StoreConflict`) from "a human must act" (`StoreError`: a corrupt
file), without importing sqlite3 or psycopg. Each backend wraps its connections and transactions in
one of these context managers, as procrastinate's psycopg connector does with `wrap_exceptions`.
Every message says what to do; none carries a password (the caller passes a redacted name).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Iterator

from ..errors import StoreConflict, StoreError, StoreUnavailable

# SQLite's message fragments → (the error to raise, what the operator can do about it)
_SQLITE_TRANSIENT = (
    (("locked", "busy"), "is locked by another process or thread beyond the busy timeout "
                         "(a `sqlite3` shell, a backup, a long import?); finish or stop that, or raise --busy-timeout"),
    (("disk is full", "database or disk is full"), "cannot be written: the disk is full; free space on its "
                                                   "file system, then run the command again"),
    (("readonly", "read-only"), "cannot be written: the file or its file system is read-only; make it "
                                "writable (mount -o remount,rw, or fix the owner/mode) or use another --db"),
    (("disk i/o error",), "cannot be read or written: disk I/O error; check the disk (dmesg) and free space"),
    (("unable to open",), "cannot be opened: check that its directory exists and is writable "
                          "(SQLite also creates -wal and -shm files beside it)"),
)
_SQLITE_CORRUPT = ("not a database", "malformed", "corrupt")


def sqlite_error(exc: sqlite3.Error, *, name: str) -> StoreError:
    """The store's error for one SQLite failure on database `name` (its path)."""
    text = str(exc).strip() or type(exc).__name__
    lowered = text.lower() + " " + _file_system_state(name)
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(f"database {name}: {text} (another writer got there first, or the input repeats "
                             "a row); nothing was written")
    if any(fragment in lowered for fragment in _SQLITE_CORRUPT):
        return StoreError(f"database {name} is damaged ({text}); nothing was changed. Restore it from a backup "
                          f"or a `reconciler export`, or move it away to start an empty one")
    for fragments, advice in _SQLITE_TRANSIENT:
        if any(fragment in lowered for fragment in fragments):
            return StoreUnavailable(f"database {name} {advice} ({text}); nothing was written")
    return StoreError(f"database {name}: {text}")


def _file_system_state(path: str) -> str:
    """SQLite says "disk I/O error" or "unable to open" for both; the file system knows which it is."""
    try:
        info = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return ""
    if info.f_flag & os.ST_RDONLY:
        return "read-only"
    return "disk is full" if info.f_bavail == 0 else ""


@contextmanager
def sqlite_errors(*, name: str) -> Iterator[None]:
    """Translate every sqlite3 error raised inside the block."""
    try:
        yield
    except sqlite3.Error as exc:
        raise sqlite_error(exc, name=name) from exc


def postgres_error(exc: Exception, *, name: str) -> StoreError:
    """The store's error for one psycopg / psycopg_pool failure on database `name` (already redacted)."""
    import psycopg
    from psycopg import errors as pg

    text = _first_line(exc)
    if isinstance(exc, (pg.SerializationFailure, pg.DeadlockDetected, psycopg.IntegrityError)):
        return StoreConflict(f"database {name}: {text} (lost a race with another transaction, or the input "
                             "repeats a row); nothing was written")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        # connection refused or dropped, server restarting, pool timeout (PoolTimeout is one of these)
        return StoreUnavailable(f"database {name} is unreachable: {text}; nothing was written (is the server "
                                "up and reachable?)")
    return StoreError(f"database {name}: {text}")


@contextmanager
def postgres_errors(*, name: str) -> Iterator[None]:
    """Translate every psycopg error raised inside the block."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise postgres_error(exc, name=name) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
