"""Who may work the queue and who may plan: one daemon per SQLite database, one leader among PostgreSQL's.

Both elections renew their lock each third of its TTL and keep a monotonic instant until which it is
known to be held. Decisions stop a third of the TTL before the lock could lapse unrenewed: on SQLite
claiming pauses (so a second daemon that takes the lapsed lock never works the queue beside us), on
PostgreSQL the leader stops planning (so two daemons never plan at once). A holder on this host whose
process is gone (kill -9) is not waited out (liveness.owner_is_dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from ..errors import StoreError
from ..liveness import HOST, owner_is_dead
from ..models import iso, utcnow
from ..ports import LockStore
from ..supervise import TRANSIENT, Outages, sleep_or_stop
from .options import DaemonRefused

LOCK_NAME = "daemon"
# PostgreSQL: several daemons share the queue; the one holding this lease plans and health-checks.
LEADER_LOCK = "leader"
LEADER_POLL = 1.0


class Election(Protocol):
    """What the other parts ask: may this process claim jobs, may it plan, and who holds the lock."""

    name: str
    leading: bool

    def may_claim(self) -> bool: ...
    def may_plan(self) -> bool: ...
    def problems(self) -> list[str]: ...  # why /health is degraded on the election's account
    def holder(self) -> dict[str, Any] | None: ...  # /health's "leader"
    def prepare(self) -> None: ...
    async def run(self, stop: asyncio.Event) -> None: ...
    async def close(self) -> None: ...


def lock_info(*, store: LockStore, name: str, worker_id: str) -> dict[str, Any] | None:
    """Who holds lock `name` now (pid, host, since, whether it is us), or None."""
    holder = store.lock_holder(name=name, now=iso(utcnow()))
    if holder is None:
        return None
    return {"pid": holder["pid"], "host": holder["host"], "since": holder["since"],
            "this_daemon": holder["holder"] == worker_id}


def _acquire(*, store: LockStore, name: str, worker_id: str, ttl: float) -> dict[str, Any] | None:
    """Take lock `name` for `ttl` seconds; the holder's row when another live process holds it."""
    now = utcnow()
    holder: dict[str, Any] | None = store.acquire_lock(
        name=name, holder=worker_id, pid=os.getpid(), host=HOST, now=iso(now),
        until=iso(now + timedelta(seconds=ttl)), holder_dead=owner_is_dead)
    return holder


class _HeldLock:
    """What both elections share: a named lock in the store, held for `ttl` and renewed well before."""

    def __init__(self, *, lock: str, store: LockStore, worker_id: str, ttl: float, outages: Outages,
                 log: Any) -> None:
        self.lock = lock
        self.store = store
        self.worker_id = worker_id
        self.ttl = ttl
        self.outages = outages
        self.log = log
        self._valid_until = 0.0  # monotonic instant until which the lock is known to be held

    def _safely_held(self) -> bool:
        """Held with a third of the ttl to spare: a holder that cannot renew stops acting before it lapses."""
        return time.monotonic() < self._valid_until - self.ttl / 3

    def holder(self) -> dict[str, Any] | None:
        return lock_info(store=self.store, name=self.lock, worker_id=self.worker_id)


class SingleDaemonLock(_HeldLock):
    """SQLite: one daemon per database. Taken before anything runs (else the start is refused, naming the
    holder), renewed by this heartbeat, released after the workers stopped. A lock taken by another
    process ends this daemon (`on_lost`); claiming resumed after an outage wakes the workers (`on_resumed`)."""

    name = "heartbeat"
    leading = True

    def __init__(self, *, store: LockStore, db: str, worker_id: str, ttl: float, outages: Outages, log: Any,
                 on_lost: Callable[[], None], on_resumed: Callable[[], None]) -> None:
        super().__init__(lock=LOCK_NAME, store=store, worker_id=worker_id, ttl=ttl, outages=outages, log=log)
        self.db = db
        self.on_lost = on_lost
        self.on_resumed = on_resumed
        self._paused = False

    def prepare(self) -> None:
        from ..store import redact

        started = time.monotonic()
        holder = _acquire(store=self.store, name=LOCK_NAME, worker_id=self.worker_id, ttl=self.ttl)
        if holder is not None:
            raise DaemonRefused(
                f"another daemon already runs on {redact(self.db)}: pid {holder['pid']} on "
                f"{holder['host']} since {holder['since']} (one daemon per SQLite database)")
        self._valid_until = started + self.ttl

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every third of the TTL; through a store outage retry (backed off) and pause claiming
        before the lock could lapse; resume once renewed; end the daemon if another took the lock."""
        delay: float | None = self.ttl / 3
        while delay is not None and not await sleep_or_stop(stop, delay):
            delay = await self._renew(stop)

    async def _renew(self, stop: asyncio.Event) -> float | None:
        """One renewal; the wait before the next, or None when the lock is gone."""
        interval = self.ttl / 3
        started = time.monotonic()
        until = iso(utcnow() + timedelta(seconds=self.ttl))
        try:
            held = await asyncio.to_thread(self.store.renew_lock, name=LOCK_NAME, holder=self.worker_id,
                                           until=until)
        except TRANSIENT as exc:
            delay = min(interval, self.outages.failed(loop=self.name, error=exc))
            self._note_claiming()
            return delay
        self.outages.recovered(loop=self.name)
        if not held:
            if not stop.is_set():  # stopping, our own close released it
                self.log.error("lost the daemon lock to another process; stopping")
                self.on_lost()
            return None
        self._valid_until = started + self.ttl
        self._note_claiming()
        return interval

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self.store.release_lock, name=LOCK_NAME, holder=self.worker_id)
        except StoreError as exc:  # the lock then lapses after --lock-ttl
            self.log.warning("could not release the daemon lock", error=str(exc))

    def may_claim(self) -> bool:
        return self._safely_held()

    def may_plan(self) -> bool:
        return True

    def problems(self) -> list[str]:
        return [] if self.may_claim() else ["daemon lock not renewed in time: not claiming jobs"]

    def _note_claiming(self) -> None:
        """Log when claiming pauses for an unrenewed lock, and when it resumes."""
        paused = not self.may_claim()
        if paused and not self._paused:
            self.log.warning("daemon lock not renewed in time; pausing claims until it is", lock_ttl_s=self.ttl)
        elif self._paused and not paused:
            self.log.info("daemon lock renewed; claiming again")
            self.on_resumed()
        self._paused = paused


class LeaderLease(_HeldLock):
    """PostgreSQL: many daemons work the queue; the one holding this lease plans and health-checks.

    Through a store outage the step is retried (backed off); a leader that cannot renew steps down a
    third of the lease before it could lapse. Becoming leader calls `on_elected`; stopping releases.
    """

    name = "leader"

    def __init__(self, *, store: LockStore, worker_id: str, ttl: float, outages: Outages, log: Any,
                 on_elected: Callable[[], None]) -> None:
        super().__init__(lock=LEADER_LOCK, store=store, worker_id=worker_id, ttl=ttl, outages=outages, log=log)
        self.on_elected = on_elected
        self.leading = False

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            held, delay = await self._attempt()
            if held and not self.leading:
                self.leading = True
                self.log.info("became leader")
                self.on_elected()
            elif not held and self.leading:
                self.leading = False
                self.log.warning("lost leadership; following")
            if await sleep_or_stop(stop, delay):
                if self.leading:
                    with contextlib.suppress(StoreError):  # else the lease runs out
                        await asyncio.to_thread(self.store.release_lock, name=LEADER_LOCK, holder=self.worker_id)
                return

    async def close(self) -> None:
        pass

    async def _attempt(self) -> tuple[bool, float]:
        """(whether we lead now, seconds until the next attempt)."""
        started = time.monotonic()
        try:
            held = await asyncio.to_thread(self._step)
        except TRANSIENT as exc:
            return self.may_plan(), min(LEADER_POLL, self.outages.failed(loop=self.name, error=exc))
        self.outages.recovered(loop=self.name)
        if held:
            self._valid_until = started + self.ttl
        return held, LEADER_POLL

    def _step(self) -> bool:
        if self.leading:
            until = iso(utcnow() + timedelta(seconds=self.ttl))
            return bool(self.store.renew_lock(name=LEADER_LOCK, holder=self.worker_id, until=until))
        return _acquire(store=self.store, name=LEADER_LOCK, worker_id=self.worker_id, ttl=self.ttl) is None

    def may_claim(self) -> bool:
        return True

    def may_plan(self) -> bool:
        """Leading with the lease safely held: the loop may be waiting on the store itself, so the lease's
        age is checked here too, not only when that wait ends."""
        return self.leading and self._safely_held()

    def problems(self) -> list[str]:
        return []
