"""One failure policy for every long-lived loop (workers, lease renewer, heartbeat, leader, passes, drift).

A store that is unavailable for a while (a locked SQLite file, a PostgreSQL restart) is weather:
each loop reports it here, waits a backed-off, jittered delay and tries again, and `/health` reads
what is wrong from the same place. Anything else that escapes a loop is a bug: it is logged with its
traceback and handed to `on_crash`, which ends the daemon with a non-zero exit so systemd restarts
it — a dead thread is never left behind silently (kopf's `aiotasks.guard`, procrastinate's
`_monitor_side_tasks`). The delay itself is `retry.RetryPolicy`, pure.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from .errors import StoreConflict, StoreUnavailable
from .retry import RetryPolicy, next_delay

T = TypeVar("T")

# Store retries: up to 0.5 s after the first failure, doubling, never more than 10 s apart, so a
# recovered database is noticed within seconds.
STORE_RETRY = RetryPolicy(base=0.5, factor=2.0, cap=10.0)
TRANSIENT = (StoreUnavailable, StoreConflict)

Crash = Callable[[str, BaseException], None]


@dataclass(frozen=True, slots=True)
class Outage:
    """One loop's current failure: since when (monotonic), how many tries, and the last reason."""

    since: float
    attempts: int
    reason: str


class Outages:
    """What is failing right now, per loop; thread-safe, read by /health."""

    def __init__(self, *, log: Any, policy: RetryPolicy = STORE_RETRY,
                 rand: Callable[[], float] = random.random) -> None:
        self.log = log
        self.policy = policy
        self.rand = rand
        self._lock = threading.Lock()
        self._current: dict[str, Outage] = {}

    def failed(self, *, loop: str, error: BaseException) -> float:
        """Record a failed try of `loop`; returns the seconds to wait before the next one."""
        with self._lock:
            before = self._current.get(loop)
            outage = Outage(since=before.since if before else time.monotonic(),
                            attempts=(before.attempts if before else 0) + 1, reason=str(error))
            self._current[loop] = outage
        delay = retry_delay(attempt=outage.attempts, policy=self.policy, rand=self.rand)
        self.log.warning("store unavailable; retrying", loop=loop, error=str(error), attempt=outage.attempts,
                         retry_in_s=round(delay, 2), down_for_s=round(time.monotonic() - outage.since, 1))
        return delay

    def recovered(self, *, loop: str) -> None:
        with self._lock:
            outage = self._current.pop(loop, None)
        if outage is not None:
            self.log.info("store reachable again", loop=loop, attempts=outage.attempts,
                          down_for_s=round(time.monotonic() - outage.since, 1))

    def reasons(self) -> list[str]:
        """One line per distinct reason, naming every loop that meets it ("heartbeat, worker-0: …")."""
        loops: dict[str, list[str]] = {}
        with self._lock:
            for loop, outage in sorted(self._current.items()):
                loops.setdefault(outage.reason, []).append(loop)
        return [f"{', '.join(names)}: {reason}" for reason, names in loops.items()]


def retry_delay(*, attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full jitter, but never below a tenth of the ceiling: a tight loop on a dead store helps nobody."""
    ceiling = policy.ceiling(attempt=attempt)
    return max(ceiling / 10, next_delay(attempt=attempt, policy=policy, random=rand))


def retry_sync(call: Callable[[], T], *, loop: str, outages: Outages, stop: threading.Event) -> T | None:
    """`call()` until it gets through the store; None when `stop` is set first."""
    while True:
        try:
            result = call()
        except TRANSIENT as exc:
            if stop.wait(outages.failed(loop=loop, error=exc)):
                return None
            continue
        outages.recovered(loop=loop)
        return result


async def retry_async(call: Callable[[], Awaitable[T]], *, loop: str, outages: Outages,
                      stop: asyncio.Event) -> T | None:
    """The asyncio twin of `retry_sync`."""
    while True:
        try:
            result = await call()
        except TRANSIENT as exc:
            if await sleep_or_stop(stop, outages.failed(loop=loop, error=exc)):
                return None
            continue
        outages.recovered(loop=loop)
        return result


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    return True


def guarded_thread(*, target: Callable[[], None], name: str, on_crash: Crash) -> threading.Thread:
    """A daemon thread whose escaping exception reaches `on_crash` instead of vanishing."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - the point: nothing escapes unseen
            on_crash(name, exc)

    return threading.Thread(target=run, name=name, daemon=True)


def guarded_task(coro: Awaitable[Any], *, name: str, on_crash: Crash) -> asyncio.Task[Any]:
    """An asyncio task whose exception (not its cancellation) reaches `on_crash`."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)

    def done(finished: asyncio.Task[Any]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            on_crash(name, finished.exception())

    task.add_done_callback(done)
    return task
