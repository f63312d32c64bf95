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
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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
    except TimeoutError:
        return False
    return True


def guarded_thread(*, target: Callable[[], None], name: str, on_crash: Crash) -> threading.Thread:
    """A daemon thread whose escaping exception reaches `on_crash` instead of vanishing."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            on_crash(name, exc)

    return threading.Thread(target=run, name=name, daemon=True)


def guarded_task(coro: Awaitable[Any], *, name: str, on_crash: Crash) -> asyncio.Task[Any]:
    """An asyncio task whose exception (not its cancellation) reaches `on_crash`."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)

    def done(finished: asyncio.Task[Any]) -> None:
        error = None if finished.cancelled() else finished.exception()
        if error is not None:
            on_crash(name, error)

    task.add_done_callback(done)
    return task


class Runnable(Protocol):
    """A long-lived part of a process that owns its state (controller-runtime's Runnable).

    `prepare` runs before any part runs and may refuse the start (take a lock, bind a socket); `run`
    works until `stop` is set; `close` lets go of what the part holds, after every part started later
    was closed (reverse order: the API before the workers, the workers before the lock).
    """

    name: str

    def prepare(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def close(self) -> None: ...


class Supervisor:
    """Runs runnables as guarded tasks: prepared and started in order, closed in reverse order, and a
    crash of any of them (or of a thread reporting to `crashed`) ends the process through `on_crash`."""

    def __init__(self, *, log: Any, on_crash: Callable[[], None]) -> None:
        self.log = log
        self.on_crash = on_crash  # called in the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: list[tuple[Runnable, asyncio.Task[Any]]] = []

    def start(self, runnables: Sequence[Runnable], *, stop: asyncio.Event) -> None:
        """Prepare every runnable (a refusal raises before anything runs), then start each as a task."""
        self._loop = asyncio.get_running_loop()
        for runnable in runnables:
            runnable.prepare()
        self._started = [(runnable, guarded_task(runnable.run(stop), name=runnable.name, on_crash=self.crashed))
                         for runnable in runnables]

    async def stop(self) -> None:
        """Close in reverse order of start, then cancel whatever still runs."""
        for runnable, _task in reversed(self._started):
            await runnable.close()
        tasks = [task for _runnable, task in self._started]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def crashed(self, name: str, exc: BaseException) -> None:
        """A loop or thread died of something other than a store outage: a bug. Log it with its traceback
        and end the process non-zero, so systemd restarts it rather than leave it half-alive. Thread-safe."""
        self.log.error("a daemon loop died; stopping so that systemd restarts the daemon", loop=name,
                       error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: the process is ending anyway
            self._loop.call_soon_threadsafe(self.on_crash)
