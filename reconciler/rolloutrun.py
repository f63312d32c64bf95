"""Rollouts in the foreground (issue 17): `apply` advancing (or watching) a rollout with per-wave progress.

One process advances a rollout: when a daemon holds the database (coordination.live_daemon) `apply`
only watches the rows and prints each wave's progress (`--no-wait`: not even that); otherwise it
advances them itself with `rollouts.Driver` and runs the waves' jobs on its own workers: one pool for
all the waves, claiming only rollouts' jobs, which the main thread wakes after queueing a wave and
waits for until they are quiet (then the next tick settles the wave and starts the next one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from .coordination import live_daemon
from .models import utcnow
from .ports import LockReader, QuietMark, RolloutStore
from .rollout.model import Rollout, RolloutState
from .rollout.report import observe, progress_line
from .rollouts import Driver, Pace

IDLE = 0.2  # seconds between ticks while nothing runs (baking); checks keep their own interval
BUSY = 2.0  # at most this long between ticks while a wave's jobs run (they wake the next tick when done)


class FollowStore(RolloutStore, LockReader, Protocol):
    """What following a rollout reads and writes (typing only)."""


class Workers(Protocol):
    """apply's workers while it drives rollouts (workers.WorkerPool.work_in)."""

    def wake(self) -> None: ...
    def mark(self) -> QuietMark: ...
    def wait_quiet(self, *, after: QuietMark, timeout: float) -> bool: ...


@dataclass
class Follow:
    """How `apply` follows its rollouts: `workers` starts apply's workers on the rollouts' jobs (stopped
    and joined when the context ends); `stopped` says apply was interrupted; `say` prints one line."""

    store: FollowStore
    workers: Callable[[], AbstractContextManager[Workers]]
    stopped: Callable[[], bool]
    say: Callable[[str], None]
    actor: str | None = None
    wait: bool = True
    held: Callable[[], Collection[str]] = frozenset

    def follow(self) -> bool:
        """Follow every open rollout until none runs; True when one halted (apply then exits 1)."""
        if not self.store.open_rollouts():
            return False
        holder = live_daemon(store=self.store)
        who = f"the daemon (pid {holder['pid']} on {holder['host']})" if holder else "the next apply or a daemon"
        if not self.wait:
            for rollout in self.store.open_rollouts():
                self.say(f"Rollout {rollout.rollout_id}: left to {who}; follow it with `reconciler rollout status`")
            return False
        return self._watch() if holder else self._drive()

    def _drive(self) -> bool:
        with self.workers() as workers:
            return self._advance(workers)

    def _advance(self, workers: Workers) -> bool:
        driver, halted = Driver(store=self.store, actor=self.actor, held=self.held), False
        shown: dict[str, str] = {}
        followed: set[str] = set()  # rollouts seen moving: only their halts are this apply's failure
        while not self.stopped():
            results = driver.tick()
            for rollout, decision in results:
                self._show(shown, rollout.rollout_id, progress_line(rollout=rollout, decision=decision))
            moving = [rollout for rollout, _ in results if driver.moving(rollout)]
            followed |= {rollout.rollout_id for rollout in moving}
            halted = any(r.state is RolloutState.HALTED and r.rollout_id in followed for r, _ in results)
            if not moving:
                self._finished(results=[r for r, _ in results])
                return halted
            self._pause(workers, driver.pace(results, longest=BUSY), wrote=driver.wrote)
        return halted

    def _pause(self, workers: Workers, pace: Pace, *, wrote: bool) -> None:
        """Until the next tick is due: jobs open, until the workers are quiet (the wave's jobs are done) or
        one failed. After a tick that changed nothing, `pace.seconds` whatever the workers say: the open
        jobs are ones they cannot take (held by a suspension, waiting out a retry, leased elsewhere), and
        waking at each of their idle claims would tick back to back."""
        if pace.jobs and wrote:
            mark = workers.mark()  # the tick's jobs are queued: a claim begun after this finds them
            workers.wake()
            workers.wait_quiet(after=mark, timeout=pace.seconds)
            return
        deadline = time.monotonic() + pace.seconds
        while not self.stopped() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(IDLE, left))

    def _watch(self) -> bool:
        """A daemon advances: show its progress from the rows until no rollout runs."""
        shown: dict[str, str] = {}
        followed: set[str] = set()
        while not self.stopped():
            opened = self.store.open_rollouts()
            for rollout in opened:
                members = self.store.rollout_members(rollout.rollout_id)
                decision = observe(rollout=rollout, members=members, now=utcnow())
                self._show(shown, rollout.rollout_id, progress_line(rollout=rollout, decision=decision))
            moving = {r.rollout_id for r in opened if r.state is RolloutState.RUNNING or r.revert}
            followed |= moving
            if not moving:
                return any(r.state is RolloutState.HALTED and r.rollout_id in followed for r in opened)
            time.sleep(1.0)
        return False

    def _show(self, shown: dict[str, str], rollout_id: str, line: str) -> None:
        if shown.get(rollout_id) != line:
            shown[rollout_id] = line
            self.say(line)

    def _finished(self, *, results: list[Rollout]) -> None:
        for rollout in results:
            if rollout.state is RolloutState.PAUSED:
                self.say(f"Rollout {rollout.rollout_id}: paused; `reconciler rollout resume {rollout.rollout_id}`")
