"""Passes on demand: poll the `pass_requests` rows `reconciler reconcile` writes, and hand them to the pass loop.

A request goes through the database, so asking needs no API address or token, and it reaches whichever
daemon plans (the lock holder on SQLite, the leader on PostgreSQL): only that one polls. One indexed
query a second (the pending rows are few or none), on its own runnable so a long pass never delays
noticing a request — the pass loop answers it as soon as the pass running now ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..models import PassRequest
from ..ports import PassRequests
from ..supervise import TRANSIENT, Outages

POLL_SECONDS = 1.0


class PassRequestPoller:
    """Every second, while this daemon may plan: hand the pending requests to `on_requests`."""

    name = "pass requests"

    def __init__(self, *, store: PassRequests, may_plan: Callable[[], bool],
                 on_requests: Callable[[list[PassRequest]], None], outages: Outages, log: Any,
                 interval: float = POLL_SECONDS) -> None:
        self.store = store
        self.may_plan = may_plan
        self.on_requests = on_requests
        self.outages = outages
        self.log = log
        self.interval = interval

    def prepare(self) -> None:
        """Nothing to take before the others run."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self.interval
            if self.may_plan():
                try:
                    pending = await asyncio.to_thread(self.store.pending_requests)
                except TRANSIENT as exc:  # the store is away: the usual backed-off wait
                    delay = self.outages.failed(loop=self.name, error=exc)
                else:
                    self.outages.recovered(loop=self.name)
                    if pending:
                        self.on_requests(pending)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def close(self) -> None:
        """Nothing held."""
