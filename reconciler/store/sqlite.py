"""The SQLite store: observed rows, the job queue and the event history in one file.

One file holds all three so that finishing a job (job row, resource row, event) is one transaction:
a crash at any instant leaves either the whole transition or none of it. WAL mode lets readers
(`status`, `plan`) run while workers write; every writer takes the lock up front (BEGIN IMMEDIATE)
and waits through a busy timeout instead of failing; past it the call raises `StoreUnavailable`
(see faults.py) and the caller's loop retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import StoreError, StoreUnavailable
from .base import SQLStore
from .faults import sqlite_errors
from .migrations import migrate

BUSY_TIMEOUT_S = 30.0  # default of --busy-timeout / RECONCILER_BUSY_TIMEOUT


class SQLiteStore(SQLStore):
    """Rows in a SQLite file. Thread-safe: each thread gets its own connection."""

    kind = "sqlite"

    def __init__(self, *, path: Path, create: bool = True, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._writer = threading.Lock()
        self._create_file(create=create)
        with sqlite_errors(name=str(self.path)):
            migrate(self._conn())

    def _create_file(self, *, create: bool) -> None:
        if self.path.exists():
            return
        if not create:
            raise StoreError(f"database {self.path} does not exist (run `reconciler apply` first)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite touches it: rows hold URLs and script output.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot create database {self.path}: {exc.strerror}; make its directory writable "
                             "(and free space on its file system) or choose another --db") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with sqlite_errors(name=str(self.path)):
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
                self._use_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL once; the switch needs the file to itself and SQLite answers "locked" at once (no busy
        handler) while another process holds it — two commands opening a new database together — so wait."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:  # only contention is worth waiting for (not a full disk)
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the lock up front so it never fails half-way on contention.

        Threads of this process queue on a Python lock first: SQLite's busy handler sleeps in coarse
        steps, which with 32 workers cost more than the scripts (measured: 3.7x xargs before, see P2).
        Other processes still meet at SQLite's lock, with the busy timeout. The Python lock has the
        same timeout, so a call waits at most about twice the busy timeout, never forever.
        """
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(f"database {self.path} is busy: another thread of this process has waited "
                                   f"{self.busy_timeout:g} s for the write lock; nothing was written")
        try:
            with sqlite_errors(name=str(self.path)):
                yield from self._transaction(self._conn())
        finally:
            self._writer.release()

    @staticmethod
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            # SQLite may already have rolled back (disk full, I/O error): never mask the first error
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with sqlite_errors(name=str(self.path)):
            yield self._conn()  # autocommit: each read is its own snapshot under WAL

    def _tuples(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with sqlite_errors(name=str(self.path)):
            cursor = self._conn().cursor()
            cursor.row_factory = None
            return cursor.execute(sql, tuple(args)).fetchall()

    def _scope(self, resource_ids: Iterable[str] | None) -> tuple[str, tuple[Any, ...]]:
        """SQL narrowing jobs to some resources; the ids travel as one JSON array parameter."""
        if resource_ids is None:
            return "", ()
        ids = _scope_json(resource_ids) if isinstance(resource_ids, frozenset) else _encode(resource_ids)
        return " AND resource_id IN (SELECT value FROM json_each(?))", (ids,)


def _encode(resource_ids: Iterable[str]) -> str:
    return json.dumps(sorted(resource_ids))


@lru_cache(maxsize=8)
def _scope_json(resource_ids: frozenset[str]) -> str:
    """An apply's scope, encoded once: its workers claim with the same frozenset (hashed once, found by
    identity), so a wave of thousands of ids is not sorted and encoded again for every claim."""
    return _encode(resource_ids)
