"""The worker pool as a runnable: claims from the shared queue from start to stop, then drains.

Jobs queued by `reconciler apply` in another process, by the API or by this daemon's passes are all
worked here. SIGHUP re-reads the script settings (provision/targets.yaml) for the jobs claimed next.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from ..runner import dropped_env
from ..workers import EngineConfig, WorkerPool


class Workers:
    name = "workers"

    def __init__(self, *, pool: WorkerPool, configure: Callable[[], EngineConfig], grace: float, log: Any) -> None:
        self.pool = pool
        self.configure = configure  # the script settings, read afresh from provision/
        self.grace = grace
        self.log = log
        self.handed_back = 0  # jobs whose scripts the stop ended: back in the queue for the next start

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        self.pool.serve()
        self._log_script_env(self.pool.config)
        await stop.wait()

    async def close(self) -> None:
        """Claim nothing more; give running scripts the stop grace; then end them and hand their jobs back."""
        self.handed_back = await asyncio.to_thread(self.pool.shutdown, grace=self.grace)

    def reload(self) -> None:
        """SIGHUP: new script settings for the jobs claimed from now on; a bad targets.yaml keeps the old."""
        try:
            config = self.configure()
        except Exception as exc:  # bad target.yaml: keep the running configuration
            self.log.error("reload: keeping the current configuration", error=str(exc))
            return
        if config.pass_env != self.pool.config.pass_env:
            self._log_script_env(config)
        self.pool.reconfigure(config)

    def _log_script_env(self, config: EngineConfig) -> None:
        """Once per configuration: which variables scripts no longer inherit (names only, never values)."""
        dropped = dropped_env(environ=os.environ, pass_env=config.pass_env)
        if dropped:
            self.log.info("scripts run without these variables of the daemon's environment; list them under"
                          " pass_env in provision/targets.yaml to pass them", dropped=dropped,
                          pass_env=list(config.pass_env))
