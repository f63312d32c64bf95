"""The store's error model, on real faults: driver errors come out as StoreUnavailable / StoreConflict /
StoreError with what to do (the loops' retry policy, supervise.py, is in unit/test_supervise.py)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from reconciler.errors import StoreConflict, StoreError, StoreUnavailable
from reconciler.models import JobAction, JobRequest, iso, utcnow
from reconciler.store import open_store
from reconciler.store.faults import sqlite_error
from tests.support import ROOT, hold_write_lock

SPEC = {"resource_id": "a", "owner": "o", "region": "r", "runtime_target": "local", "deploy_ref": "v1",
        "params": {}, "protected": False}


def test_a_write_past_the_busy_timeout_is_store_unavailable_and_writes_nothing(tmp_path):
    store = open_store(url=str(tmp_path / "s.db"), busy_timeout=0.2)
    holder = hold_write_lock(tmp_path / "s.db", 3)
    try:
        request = JobRequest(resource_id="a", action=JobAction.CREATE, spec=SPEC, reason="test", target_hash="h",
                             expected_version=None)
        with pytest.raises(StoreUnavailable, match="locked.*busy-timeout"):
            store.enqueue(requests=[request], now=iso(utcnow()), commit=None)
        assert store.load_observed() == {}  # reads still work under WAL while the writer waits
    finally:
        holder.wait(timeout=10)
    assert store.enqueue(requests=[request], now=iso(utcnow()), commit=None)  # and the same call then succeeds


def test_threads_of_one_process_wait_for_the_write_lock_only_as_long_as_the_busy_timeout(tmp_path):
    store = open_store(url=str(tmp_path / "s.db"), busy_timeout=0.3)
    holder = hold_write_lock(tmp_path / "s.db", 4)
    errors: list[BaseException] = []

    def renew() -> None:
        try:
            store.renew(worker="w", lease_until=iso(utcnow()))
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=renew) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    holder.wait(timeout=10)
    assert len(errors) == 6 and all(isinstance(exc, StoreUnavailable) for exc in errors)


def test_a_corrupt_file_is_a_store_error_that_says_what_to_do(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database " * 400)
    with pytest.raises(StoreError, match="damaged.*Restore it from a backup") as caught:
        open_store(url=str(path))
    assert not isinstance(caught.value, StoreUnavailable)
    assert path.read_bytes() == b"this is not a database " * 400


@pytest.mark.parametrize(("error", "kind", "words"), [
    (sqlite3.OperationalError("database is locked"), StoreUnavailable, "busy-timeout"),
    (sqlite3.OperationalError("database or disk is full"), StoreUnavailable, "disk is full"),
    (sqlite3.OperationalError("attempt to write a readonly database"), StoreUnavailable, "read-only"),
    (sqlite3.OperationalError("disk I/O error"), StoreUnavailable, "I/O"),
    (sqlite3.OperationalError("unable to open database file"), StoreUnavailable, "directory"),
    (sqlite3.DatabaseError("database disk image is malformed"), StoreError, "backup"),
    (sqlite3.IntegrityError("UNIQUE constraint failed: jobs.job_id"), StoreConflict, "first"),
])
def test_sqlite_errors_translate_by_kind(error, kind, words):
    translated = sqlite_error(error, name="x.db")
    assert type(translated) is kind and words in str(translated) and "x.db" in str(translated)


def test_postgres_driver_errors_translate_by_kind():
    psycopg = pytest.importorskip("psycopg")
    from psycopg import errors as pg
    from psycopg_pool import PoolTimeout

    from reconciler.store.faults import postgres_error

    assert type(postgres_error(pg.AdminShutdown("terminating"), name="db")) is StoreUnavailable
    assert type(postgres_error(PoolTimeout("no connection"), name="db")) is StoreUnavailable
    assert type(postgres_error(psycopg.InterfaceError("closed"), name="db")) is StoreUnavailable
    assert type(postgres_error(pg.SerializationFailure("race"), name="db")) is StoreConflict
    assert type(postgres_error(pg.DeadlockDetected("race"), name="db")) is StoreConflict
    assert type(postgres_error(pg.UndefinedTable("no table"), name="db")) is StoreError


def test_nothing_outside_store_names_a_driver_exception():
    package = ROOT / "reconciler"
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path.parent.name != "store" and any(name in path.read_text()
                                                        for name in ("sqlite3.", "psycopg.", "psycopg_pool"))]
    assert offenders == []
