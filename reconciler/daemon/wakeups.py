"""The pass loop's wake-ups — the periodic resync, a retry or a settling file coming due — on APScheduler.

APScheduler is the project's scheduler: one job per kind of wake-up, replaced when asked again (a new
retry time replaces the pending one), coalesced, with the resync's jitter. Jobs are coroutines, so they
run on the event loop itself (APScheduler's asyncio executor hands plain functions to a thread, where
setting the loop's event would not be safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..models import utcnow


class WakeUps:
    """Named wake-ups that each call `request(reason)` on the event loop when due."""

    def __init__(self, *, request: Callable[[str], None]) -> None:
        self._request = request
        self._scheduler: Any = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        self._scheduler.start()

    def every(self, key: str, *, seconds: float, jitter: float, reason: str) -> None:
        """`request(reason)` every `seconds` (plus up to `jitter` seconds), first after one interval."""
        self._scheduler.add_job(self._fire, "interval", args=[reason], seconds=seconds, jitter=jitter or None,
                                id=key, replace_existing=True, coalesce=True, max_instances=1)

    def once(self, key: str, *, delay: float, reason: str) -> None:
        """`request(reason)` once, `delay` seconds from now, replacing a pending wake-up of the same key."""
        self._scheduler.add_job(self._fire, "date", args=[reason], run_date=utcnow() + timedelta(seconds=delay),
                                id=key, replace_existing=True, misfire_grace_time=None)

    def pending(self, key: str) -> bool:
        return self._scheduler is not None and self._scheduler.get_job(key) is not None

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def _fire(self, reason: str) -> None:
        self._request(reason)
