"""The daemon's rollout loop (issue 17): advance every open rollout a step, a few times a second.

Only where the election allows (the SQLite lock holder, the PostgreSQL leader), so one process
advances a rollout. Each tick is `rollouts.Driver.tick` in a thread: settle members from their jobs,
check a baking wave's health every `check_interval`, write the next transition. A tick reads every
member, so the loop looks every TICK but steps only when one is due (`Driver.pace`): while a wave's
jobs run, once the workers are quiet or BUSY passed; while waves bake, when a check or a bake's end is.
A store outage is retried like every loop's; a halt is logged as a warning with the failures it names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from ..ports import QuietMark, RolloutStore
from ..rollout.model import FAILURES, Rollout, RolloutState
from ..rollout.report import progress_line
from ..rollouts import Driver, Pace
from ..supervise import Outages, retry_async, sleep_or_stop


class RolloutSink(Protocol):
    def rollouts_seen(self, *, states: dict[str, int], failures: Iterable[tuple[str, str, str]]) -> None: ...


TICK = 0.25  # seconds between looks: a wave starts within this of its bake ending (or its jobs' end)
BUSY = 1.0  # at most this long between steps while jobs run (settles members; an operator's verb is seen)


class Workers(Protocol):
    """The daemon's worker pool, as this loop uses it (workers.WorkerPool)."""

    def wake(self) -> None: ...
    def mark(self) -> QuietMark: ...
    def quiet_since(self, mark: QuietMark) -> bool: ...


class RolloutLoop:
    name = "rollouts"

    def __init__(self, *, store: RolloutStore, outages: Outages, log: Any, may_run: Callable[[], bool],
                 workers: Workers, actor: str, on_change: Callable[[], None],
                 held: Callable[[], Collection[str]], metrics: RolloutSink, tick: float = TICK) -> None:
        self.driver = Driver(store=store, actor=actor, held=held)
        self.store, self.metrics = store, metrics
        self.outages, self.log, self.may_run = outages, log, may_run
        self.workers, self.on_change, self.tick = workers, on_change, tick
        self._shown: dict[str, str] = {}
        self._pace: Pace | None = None  # after the last step: when the next one is due (None: at the next look)
        self._stepped_at = 0.0
        self._mark = QuietMark(0, 0)

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.tick):
            if self._due():
                await retry_async(self.step, loop=self.name, outages=self.outages, stop=stop)

    def _due(self) -> bool:
        pace = self._pace
        if pace is None or time.monotonic() - self._stepped_at >= pace.seconds:
            return True
        return pace.jobs and self.workers.quiet_since(self._mark)

    async def close(self) -> None:
        pass

    async def step(self) -> None:
        if not self.may_run():
            self._pace = None
            return
        results = await asyncio.to_thread(self.driver.tick)
        self._stepped_at, self._mark = time.monotonic(), self.workers.mark()  # the tick's jobs are queued
        self._pace = self.driver.pace(results, longest=BUSY) if results else None
        changed = False
        for rollout, decision in results:
            line = progress_line(rollout=rollout, decision=decision)
            if self._shown.get(rollout.rollout_id) == line:
                continue
            self._shown[rollout.rollout_id] = line
            changed = True
            if rollout.state is RolloutState.HALTED:
                self.log.warning("rollout halted", rollout_id=rollout.rollout_id, wave=rollout.wave,
                                 reason=rollout.reason)
            else:
                self.log.info("rollout", rollout_id=rollout.rollout_id, state=str(rollout.state), wave=rollout.wave,
                              waves=rollout.waves, progress=line)
        if changed:
            self.workers.wake()  # a wave's jobs were queued, or a revert's
            self.on_change()  # a pass after a transition sees the rows it wrote
            await asyncio.to_thread(self._measure, [rollout for rollout, _ in results])

    def _measure(self, rollouts: list[Rollout]) -> None:
        states: dict[str, int] = {}
        failures = []
        for rollout in (rollout for rollout in rollouts if rollout.active):
            states[str(rollout.state)] = states.get(str(rollout.state), 0) + 1
            if rollout.state is RolloutState.HALTED:
                failures += [(rollout.rollout_id, m.resource_id, str(m.state))
                             for m in self.store.rollout_members(rollout.rollout_id)
                             if m.wave == rollout.wave and m.state in FAILURES]
        self.metrics.rollouts_seen(states=states, failures=failures)
