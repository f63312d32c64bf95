"""The PostgreSQL store: the same rows as SQLite, for when one machine is not enough.

Several daemons on several machines share one database: workers claim jobs with
`SELECT … FOR UPDATE SKIP LOCKED` (no two take the same job, none waits on another's), leases make a
dead daemon's jobs reclaimable, and a lease row elects the one daemon that plans. Connections come
from a pool sized for the workers plus the API. A restart or a dropped connection surfaces as
`StoreUnavailable` (faults.py); the pool then checks its idle connections, so the next try gets a
fresh one. TCP keepalives bound how long a call can hang on a server that vanished without a word.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError, StoreUnavailable
from . import redact, redact_message
from .base import Connection, SQLStore
from .faults import postgres_errors
from .migrations import migrate_postgres


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """The shared statements use `?` placeholders; psycopg wants `%s` (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection that speaks the shared statements."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Any = (), /) -> Any:
        return self._conn.execute(_pg_sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]], /) -> None:
        rows = [tuple(row) for row in rows]
        if rows:
            with self._conn.cursor() as cursor:
                cursor.executemany(_pg_sql(sql), rows)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Seconds a call waits for a pooled connection before StoreUnavailable (the pool reconnects meanwhile).
POOL_TIMEOUT_S = 10.0
# A connection to a server that vanished without closing it is declared dead after about 10+3*5 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class PostgresStore(SQLStore):
    kind = "postgres"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"
    rollout_lock = "SELECT pg_advisory_xact_lock(7270017)"

    def __init__(self, *, url: str, pool_size: int = 20, wait: float | None = None) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        try:
            # one plain connection first: a wrong URL fails at once with the server's reason
            with psycopg.connect(url, connect_timeout=10, autocommit=True, row_factory=dict_row) as conn:
                migrate_postgres(conn)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot use database {redact(url)}: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            reason = redact_message(_first_line(exc), url=url)
            raise StoreError(f"cannot use database {redact(url)}: {reason}") from None
        timeout = min(POOL_TIMEOUT_S, wait or POOL_TIMEOUT_S)
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=timeout,
                                   kwargs={"row_factory": dict_row, "autocommit": True, **KEEPALIVES})

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate driver errors; after a lost connection, let the pool drop its other dead ones."""
        try:
            with postgres_errors(name=redact(self.url)):
                yield
        except StoreUnavailable:
            with contextlib.suppress(Exception):
                self.pool.check()
            raise

    @contextmanager
    def _read(self) -> Iterator[_Connection]:
        with self._errors(), self.pool.connection() as conn:
            yield _Connection(conn)

    @contextmanager
    def _write(self) -> Iterator[_Connection]:
        with self._errors(), self.pool.connection() as conn, conn.transaction():
            yield _Connection(conn)

    def _tuples(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        from psycopg.rows import tuple_row

        with self._errors(), self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            return cursor.execute(_pg_sql(sql), tuple(args)).fetchall()

    def _scope(self, resource_ids: Iterable[str] | None) -> tuple[str, tuple[Any, ...]]:
        if resource_ids is None:
            return "", ()
        return " AND resource_id = ANY(?)", (sorted(resource_ids),)

    def _after_import(self, conn: Connection) -> None:
        # explicit ids were inserted: move the sequence past them
        conn.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                     " FROM events")
