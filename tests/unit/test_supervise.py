"""The loops' one failure policy (supervise.py), pure and in-process: a store outage is retried with a
jittered, bounded delay and reported once per reason; anything else is a crash handed to the supervisor,
also from a worker thread of a real pool on a real SQLite file (split from integration/test_store_faults.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from reconciler.errors import StoreUnavailable
from reconciler.retry import RetryPolicy
from reconciler.supervise import (
    STORE_RETRY,
    Outages,
    guarded_task,
    guarded_thread,
    retry_delay,
    retry_sync,
)


class Log:
    """Collects what the policy logs (a structlog-shaped recorder; the real logger writes to stderr)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields) -> None:
        self.lines.append(("info", event, fields))


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
