"""What systemd hears from the daemon: READY, a STATUS line after each pass, WATCHDOG, RELOADING, STOPPING.

The pass loop tells this reporter when a pass starts and what it found; the reporter turns that into
sd_notify messages and withholds the watchdog ping while a pass is stuck, so systemd restarts a daemon
whose loop hangs. /health reads `ready`, `stopping` and `stuck()` from here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..engine import PassResult
from ..supervise import sleep_or_stop
from ..systemd import Notifier, watchdog_interval

# A pass is parsing and SQL: one that runs this long is stuck, and the watchdog should fire.
STUCK_PASS_SECONDS = 120.0


class SystemdReporter:
    """sd_notify of one daemon, and the state behind it (ready, reload pending, stopping, pass started)."""

    name = "watchdog"

    def __init__(self, *, notifier: Notifier, busy: Callable[[], int], busy_timeout: float, log: Any) -> None:
        self.notifier = notifier
        self.busy = busy  # scripts running now, for the status line
        self.log = log
        # a pass waits at most about twice the busy timeout per call before it fails and is retried,
        # so only a pass far beyond that is stuck
        self.stuck_after = max(STUCK_PASS_SECONDS, 4 * busy_timeout)
        self.ready = False
        self.stopping = False
        self._reload_pending = False
        self._pass_started: float | None = None

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while not stop.is_set():
            if not self.stuck():
                self.notifier.watchdog()
            else:
                self.log.error("reconcile pass is stuck; withholding the watchdog ping")
            await sleep_or_stop(stop, interval)

    async def close(self) -> None:
        self.notifier.close()

    def pass_started(self) -> None:
        self._pass_started = time.monotonic()

    def pass_ended(self) -> None:
        self._pass_started = None

    def stuck(self) -> bool:
        """The loop's liveness, not the store's."""
        return self._pass_started is not None and time.monotonic() - self._pass_started > self.stuck_after

    def passed(self, result: PassResult) -> None:
        """After a pass: READY=1 after the first plan (and the first after a reload), else a STATUS line."""
        status = self.status_line(result)
        if result.plan is not None and (not self.ready or self._reload_pending):
            self.ready, self._reload_pending = True, False
            self.notifier.ready(status)
            self.log.info("ready", status=status)
        else:
            self.notifier.status(status)

    def following(self) -> None:
        """A follower only works the queue: it is ready as soon as it is up."""
        if not self.ready:
            self.ready = True
            self.notifier.ready("following: another daemon plans; working the shared queue")
            self.log.info("ready as a follower")

    def reloading(self) -> None:
        self.notifier.reloading()
        self._reload_pending = True

    def stop(self) -> None:
        self.stopping = True
        self.notifier.stopping()

    def status_line(self, result: PassResult | None) -> str:
        if result is None:
            return "starting"
        fleet = result.fleet.statuses
        text = (f"{result.fleet.live} resources: {fleet['active']} active, {fleet['provisioning']} provisioning, "
                f"{fleet['errored']} errored, {fleet['deleting']} deleting, {result.fleet.unhealthy} unhealthy; "
                f"{self.busy()} scripts running")
        if result.load_error is not None:
            text += f"; desired/ fails to load ({len(result.load_error.problems)} problems)"
        return text
