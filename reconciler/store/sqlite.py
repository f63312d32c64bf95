"""The SQLite store: observed rows, the job queue and the event history in one file.

One file holds all three so that finishing a job (job row, resource row, event) is one transaction:
a crash at any instant leaves either the whole transition or none of it. WAL mode lets readers
(`status`, `plan`) run while workers write; every writer takes the lock up front (BEGIN IMMEDIATE)
and waits through a busy timeout instead of failing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import StoreError
from .base import SQLStore
from .migrations import migrate

BUSY_TIMEOUT_S = 30.0


class SQLiteStore(SQLStore):
    """Rows in a SQLite file. Thread-safe: each thread gets its own connection."""

    kind = "sqlite"

    def __init__(self, *, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._create_file(create=create)
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
            raise StoreError(f"cannot create database {self.path}: {exc.strerror}") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}") from None
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

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
        Other processes still meet at SQLite's lock, with the busy timeout.
        """
        with self._writer:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        yield self._conn()  # autocommit: each read is its own snapshot under WAL

    def _tuples(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn().cursor()
        cursor.row_factory = None
        return cursor.execute(sql, tuple(args)).fetchall()

    def _scope(self, resource_ids: Iterable[str] | None) -> tuple[str, tuple[Any, ...]]:
        """SQL narrowing jobs to some resources; the ids travel as one JSON array parameter."""
        if resource_ids is None:
            return "", ()
        return " AND resource_id IN (SELECT value FROM json_each(?))", (json.dumps(sorted(resource_ids)),)
