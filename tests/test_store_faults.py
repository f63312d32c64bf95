"""The store's error model, on real faults: driver errors come out as StoreUnavailable / StoreConflict /
StoreError with what to do, and the loops' retry policy (supervise.py) is pure and bounded."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.errors import StoreConflict, StoreError, StoreUnavailable
from reconciler.models import JobAction, JobRequest, iso, utcnow
from reconciler.retry import RetryPolicy
from reconciler.store import open_store
from reconciler.store.faults import sqlite_error
from reconciler.supervise import STORE_RETRY, Outages, guarded_task, guarded_thread, retry_delay, retry_sync

SPEC = {"resource_id": "a", "owner": "o", "region": "r", "runtime_target": "local", "deploy_ref": "v1",
        "params": {}, "protected": False}


class Log:
    """Collects what the policy logs (a structlog-shaped recorder; the real logger writes to stderr)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields) -> None:
        self.lines.append(("info", event, fields))


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process takes SQLite's write lock (BEGIN IMMEDIATE) and keeps it for `seconds`."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('COMMIT')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


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
    package = Path(__file__).resolve().parents[1] / "reconciler"
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path.parent.name != "store" and any(name in path.read_text()
                                                        for name in ("sqlite3.", "psycopg.", "psycopg_pool"))]
    assert offenders == []


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 50])
@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_retry_delay_is_jittered_bounded_and_never_a_busy_loop(attempt, draw):
    ceiling = STORE_RETRY.ceiling(attempt=attempt)
    delay = retry_delay(attempt=attempt, policy=STORE_RETRY, rand=lambda: draw)
    assert ceiling / 10 <= delay <= ceiling <= STORE_RETRY.cap


def test_retry_sync_reports_the_outage_then_the_recovery():
    log, calls = Log(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("database x is unreachable")
        return "done"

    outages = Outages(log=log, policy=RetryPolicy(base=0.01, cap=0.01), rand=lambda: 1.0)
    assert retry_sync(flaky, loop="worker-0", outages=outages, stop=threading.Event()) == "done"
    assert [line[1] for line in log.lines] == ["store unavailable; retrying"] * 2 + ["store reachable again"]
    assert outages.reasons() == []


def test_retry_sync_gives_up_when_stopped():
    stop = threading.Event()
    stop.set()

    def down() -> None:
        raise StoreUnavailable("down")

    assert retry_sync(down, loop="worker-0", outages=Outages(log=Log()), stop=stop) is None


def test_retry_sync_lets_a_bug_through():
    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        retry_sync(bug, loop="worker-0", outages=Outages(log=Log()), stop=threading.Event())


def test_a_guarded_thread_hands_its_crash_over():
    crashes = []
    thread = guarded_thread(target=lambda: 1 / 0, name="worker-7", on_crash=lambda name, exc: crashes.append(
        (name, type(exc))))
    thread.start()
    thread.join(timeout=10)
    deadline = time.monotonic() + 5
    while not crashes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert crashes == [("worker-7", ZeroDivisionError)]


def test_a_guarded_task_hands_its_crash_over_but_not_its_cancellation():
    import asyncio

    crashes = []

    async def main() -> None:
        async def bug() -> None:
            raise KeyError("bug")

        failing = guarded_task(bug(), name="watcher", on_crash=lambda name, exc: crashes.append((name, type(exc))))
        cancelled = guarded_task(asyncio.sleep(60), name="leader", on_crash=lambda name, exc: crashes.append(name))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.gather(failing, cancelled, return_exceptions=True)

    asyncio.run(main())
    assert crashes == [("watcher", KeyError)]


def test_outages_group_loops_by_reason():
    outages = Outages(log=Log())
    for loop in ("worker-1", "heartbeat", "worker-0"):
        outages.failed(loop=loop, error=StoreUnavailable("database x is locked"))
    outages.failed(loop="leader", error=StoreUnavailable("unreachable"))
    assert outages.reasons() == ["heartbeat, worker-0, worker-1: database x is locked", "leader: unreachable"]
    outages.recovered(loop="leader")
    assert outages.reasons() == ["heartbeat, worker-0, worker-1: database x is locked"]


def test_a_worker_thread_that_dies_is_reported_and_listed_as_down(tmp_path):
    """A bug inside a worker iteration (here: the store's claim raising KeyError, injected by a
    subclass of the real SQLite store) reaches on_crash and shows in dead_threads (/health)."""
    from reconciler.store.sqlite import SQLiteStore
    from reconciler.workers import EngineConfig, WorkerPool

    class Buggy(SQLiteStore):
        def claim(self, **kwargs):
            raise KeyError("bug in claim")

    crashes = []
    pool = WorkerPool(store=Buggy(path=tmp_path / "s.db"), config=EngineConfig(provision_dir=tmp_path,
                      work_dir=tmp_path), parallelism=2, outages=Outages(log=Log()),
                      on_crash=lambda name, exc: crashes.append((name, type(exc))))
    pool.serve()
    deadline = time.monotonic() + 10
    while len(pool.dead_threads()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(pool.dead_threads()) == ["worker-0", "worker-1"]
    assert sorted(crashes) == [("worker-0", KeyError), ("worker-1", KeyError)]
    pool.shutdown(grace=0)
