"""Drift: health-check resources' URLs and record what was seen, once or at a cadence.

`reconciler check` runs one pass; the daemon runs the loop over every resource each --drift-interval;
a caller with a cadence of its own (a rollout watching one wave every few seconds) runs the loop over
the subset it cares about. The pass records all results in one transaction.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .models import ResourceStatus, iso, utcnow
from .ports import HealthStore
from .supervise import Outages, retry_async, sleep_or_stop

JITTER = 0.1  # each wait is the interval plus up to this fraction of it, so daemons do not check in step


@dataclass(frozen=True, slots=True)
class DriftReport:
    checked: int
    failures: list[Any]
    turned_unhealthy: list[str]
    results: list[Any]

    def summary(self) -> dict[str, int]:
        return {"checked": self.checked, "healthy": self.checked - len(self.failures),
                "failed": len(self.failures), "turned_unhealthy": len(self.turned_unhealthy)}


async def run_drift_pass(*, store: HealthStore, concurrency: int, timeout: float, unhealthy_after: int,
                         resources: Collection[str] | None = None, actor: str | None = None) -> DriftReport:
    """One health check of every active resource with a URL (only those in `resources`, when given);
    the events it records carry `actor` (`daemon:<host>`, or the CLI user of `reconciler check`)."""
    from .health import check_all

    rows = await asyncio.to_thread(store.load_observed)
    targets = [(rid, row.url) for rid, row in rows.items() if row.status is ResourceStatus.ACTIVE and row.url
               and (resources is None or rid in resources)]
    results = await check_all(targets, concurrency=concurrency, timeout=timeout)
    turned = await asyncio.to_thread(store.record_health, results=results, now=iso(utcnow()),
                                     unhealthy_after=unhealthy_after, actor=actor)
    return DriftReport(len(results), [result for result in results if not result.ok], turned, results)


class CheckSink(Protocol):
    """Where the loop tells what it checked (the daemon's metrics)."""

    def checked(self, *, results: Iterable[Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """What one loop checks and how: the resources (None: all), its cadence and the checks' limits."""

    interval: float
    concurrency: int = 100
    timeout: float = 5.0
    unhealthy_after: int = 3
    resources: frozenset[str] | None = None
    actor: str | None = None  # who the events of its passes name (the daemon: `daemon:<host>`)


class DriftLoop:
    """A drift pass every `interval` (plus jitter) while `may_run()`; through a store outage it retries
    (backed off, reported to `outages`); anything else escapes to the supervisor, which ends the daemon."""

    name = "drift"

    def __init__(self, *, store: HealthStore, settings: DriftSettings, outages: Outages, log: Any, metrics: CheckSink,
                 may_run: Callable[[], bool], on_report: Callable[[DriftReport], None],
                 rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.settings = settings
        self.outages = outages
        self.log = log
        self.metrics = metrics
        self.may_run = may_run
        self.on_report = on_report
        self.rand = rand

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.settings.interval * (1 + JITTER * self.rand())):
            await retry_async(self.check_once, loop=self.name, outages=self.outages, stop=stop)

    async def close(self) -> None:
        pass

    async def check_once(self) -> DriftReport | None:
        """One pass now (None when this process may not run it: a follower); its report goes to the sinks."""
        if not self.may_run():
            return None
        settings = self.settings
        report = await run_drift_pass(store=self.store, concurrency=settings.concurrency, timeout=settings.timeout,
                                      unhealthy_after=settings.unhealthy_after, resources=settings.resources,
                                      actor=settings.actor)
        self.metrics.checked(results=report.results)
        self.log.info("drift pass", **report.summary())
        for resource_id in report.turned_unhealthy:
            self.log.warning("resource turned unhealthy", resource_id=resource_id)
        self.on_report(report)
        return report
