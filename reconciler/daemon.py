"""`reconciler daemon`: the controller left running under systemd.

Passes are level-triggered and coalesced: a file save, the periodic resync, a retry coming due,
SIGHUP and the slow drift loop all just mark the state dirty, and one pass loop re-reads desired
and observed state and acts on the difference. Workers claim jobs from the shared queue all the
time, so jobs queued by `reconciler apply` in another process get done here too.

asyncio owns timing and signals; blocking work (parsing, SQLite, scripts) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .engine import PassResult, Reconciler, target_timeouts
from .workers import HOST, EngineConfig, Finished, WorkerPool, new_worker_id
from .errors import ReconcilerError, StoreError
from .logs import get_logger
from .models import Health, ResourceStatus, iso, parse_iso, utcnow
from .plan import PlanPolicy
from .retry import RetryPolicy
from .runner import dropped_env, read_pass_env
from .settle import DEFAULT_SETTLE
from .supervise import TRANSIENT, Outages, guarded_task, retry_async
from .systemd import Notifier, watchdog_interval
from .watch import DesiredWatch, WriteTracker

LOCK_NAME = "daemon"
LOCK_TTL = 15.0  # default of --lock-ttl: the single-daemon lock (SQLite) lapses this long after a renewal
# PostgreSQL: several daemons share the queue; the one holding this lease plans and health-checks.
LEADER_LOCK = "leader"
LEADER_TTL = 10.0  # default of --leader-ttl
LEADER_POLL = 1.0
# A pass is parsing and SQL: one that runs this long is stuck, and the watchdog should fire.
STUCK_PASS_SECONDS = 120.0
COUNTS_TTL = 1.0


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    db: str
    desired: Path
    provision: Path
    work_dir: Path
    resync: float = 60.0
    drift_interval: float = 300.0
    unhealthy_after: int = 3
    check_concurrency: int = 100
    check_timeout: float = 5.0
    self_heal: bool = False
    parallelism: int = 10
    timeout: float = 900.0
    stop_grace: float = 30.0
    allow_mass_delete: bool = False
    retry: RetryPolicy = RetryPolicy()
    api: str | None = "127.0.0.1:7878"  # HOST:PORT, or None for no API
    api_token_file: Path | None = None
    busy_timeout: float = 30.0  # SQLite: seconds a write waits for another process's lock
    lease_seconds: float = 30.0  # a job's lease; renewed every third of it while its script runs
    lock_ttl: float = LOCK_TTL
    leader_ttl: float = LEADER_TTL
    settle: float = DEFAULT_SETTLE  # seconds a changed desired file must stay unchanged (settle.py)


class DaemonRefused(ReconcilerError):
    """The daemon cannot start (another holds the database); the message says who."""


class Daemon:
    """One controller process: pass loop, workers, file watch, schedules, systemd and signals."""

    def __init__(self, *, options: DaemonOptions) -> None:
        self.options = options
        self.log = get_logger()
        self.notifier = Notifier()
        self.worker_id = new_worker_id()
        self.exit_code = 0
        self.last: PassResult | None = None
        self._ready = False
        self._reload_pending = False
        self._pass_started: float | None = None
        self._reported_error: str | None = None
        self._counts_lock = threading.Lock()
        self._counts_cache: tuple[float, Any] = (0.0, None)
        self.outages = Outages(log=self.log)
        # monotonic instants until which our single-daemon lock / leader lease is known to be held
        self._lock_valid_until = 0.0
        self._claims_paused = False
        self._leader_valid_until = 0.0
        self.writes = WriteTracker()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._reported_unsettled: list[str] | None = None

    async def run(self) -> int:
        from .store import open_store

        self.token = read_token(self.options.api_token_file)
        self.store = open_store(url=self.options.db, pool_size=self.options.parallelism + 16,
                                busy_timeout=self.options.busy_timeout)
        # SQLite: one daemon per database, refused otherwise. PostgreSQL: many, one of them leads.
        self.shared = self.store.kind == "postgres"
        self.leading = not self.shared
        if not self.shared:
            self._take_lock()
        listener = bind_api(address=self.options.api, token=self.token) if self.options.api else None
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        # everything a worker calls back into (metrics, the loop, the pass trigger) exists before it starts
        self.metrics = _metrics()
        self.desired_commit: str | None = None
        self.stopping = False
        self.reconciler = Reconciler(store=self.store, desired_dir=self.options.desired, policy=self._policy(),
                                     settle=self.options.settle, writes=self.writes,
                                     provision_dir=self.options.provision)
        self.pool = WorkerPool(store=self.store, config=self._engine_config(), parallelism=self.options.parallelism,
                               on_finish=self._finished, outages=self.outages, on_crash=self._crashed,
                               may_claim=self._may_claim)
        self._install_signals()
        self.scheduler = self._schedule()
        coros = {"pass loop": self._pass_loop(), "watcher": self._watch(), "watchdog": self._watchdog()}
        if self.shared:
            coros["leader"] = self._lead()
        else:
            coros["heartbeat"] = self._heartbeat()
        self.api_server = _api_server(plane=self, listener=listener) if listener else None
        if self.api_server is not None:
            coros["api"] = self.api_server.serve(sockets=[listener])
            self.log.info("api listening", address=self.options.api, token_required=self.token is not None)
        tasks = [guarded_task(coro, name=name, on_crash=self._crashed) for name, coro in coros.items()]
        self.pool.serve()
        from .store import redact

        self.log.info("daemon started", db=redact(self.options.db), desired=str(self.options.desired),
                      pid=self._pid(), shared=self.shared)
        self._log_script_env(self.pool.config)
        self.request_pass("start")
        await self._stop.wait()
        await self._shutdown(tasks)
        return self.exit_code

    # --- set-up -----------------------------------------------------------------------------

    def _policy(self) -> PlanPolicy:
        return PlanPolicy(allow_mass_delete=self.options.allow_mass_delete, self_heal=self.options.self_heal)

    def _engine_config(self) -> EngineConfig:
        return EngineConfig(provision_dir=self.options.provision, work_dir=self.options.work_dir,
                            timeout=self.options.timeout, retry=self.options.retry,
                            lease_seconds=self.options.lease_seconds,
                            target_timeouts=target_timeouts(provision_dir=self.options.provision),
                            guard_orphans=self.store.kind != "sqlite",
                            pass_env=read_pass_env(provision_dir=self.options.provision))

    def _log_script_env(self, config: EngineConfig) -> None:
        """Once per configuration: which variables scripts no longer inherit (names only, never values)."""
        dropped = dropped_env(environ=os.environ, pass_env=config.pass_env)
        if dropped:
            self.log.info("scripts run without these variables of the daemon's environment; list them under"
                          " pass_env in provision/targets.yaml to pass them", dropped=dropped,
                          pass_env=list(config.pass_env))

    @staticmethod
    def _pid() -> int:
        return os.getpid()

    def _take_lock(self) -> None:
        from .store import redact

        now, started = utcnow(), time.monotonic()
        holder = self.store.acquire_lock(name=LOCK_NAME, holder=self.worker_id, pid=self._pid(), host=HOST,
                                         now=iso(now), until=iso(now + timedelta(seconds=self.options.lock_ttl)),
                                         holder_dead=_holder_dead)
        if holder is not None:
            raise DaemonRefused(
                f"another daemon already runs on {redact(self.options.db)}: pid {holder['pid']} on "
                f"{holder['host']} since {holder['since']} (one daemon per SQLite database)")
        self._lock_valid_until = started + self.options.lock_ttl

    def _may_claim(self) -> bool:
        """Workers claim only while our single-daemon lock is safely held: a third of its TTL before it
        could lapse unrenewed (a store outage), claiming pauses, so a second daemon that takes the lapsed
        lock never works the queue beside us. PostgreSQL's many daemons need no such lock."""
        return self.shared or time.monotonic() < self._lock_valid_until - self.options.lock_ttl / 3

    def _may_plan(self) -> bool:
        """Plan only while leading with the lease safely held: the leader loop may be waiting on the
        store itself, so the lease's age is checked here too, not only when that wait ends."""
        return self.leading and (not self.shared or
                                 time.monotonic() < self._leader_valid_until - self.options.leader_ttl / 3)

    def _crashed(self, name: str, exc: BaseException) -> None:
        """A loop or thread died of something other than a store outage: a bug. Log it with its
        traceback and end the daemon non-zero, so systemd restarts it rather than leave it half-alive."""
        self.log.error("a daemon loop died; stopping so that systemd restarts the daemon", loop=name,
                       error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        with contextlib.suppress(RuntimeError):  # the loop already closed: the daemon is ending anyway
            self._loop.call_soon_threadsafe(self._fail)

    def _fail(self) -> None:
        self.exit_code = 1
        self.stop()

    def _install_signals(self) -> None:
        self._loop.add_signal_handler(signal.SIGTERM, self.stop)
        self._loop.add_signal_handler(signal.SIGINT, self.stop)
        self._loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _schedule(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(event_loop=self._loop, timezone="UTC")
        scheduler.add_job(self.request_pass, "interval", args=["resync"], seconds=self.options.resync,
                          jitter=self.options.resync * 0.1, id="resync", coalesce=True, max_instances=1)
        scheduler.add_job(self._drift_job, "interval", seconds=self.options.drift_interval,
                          jitter=self.options.drift_interval * 0.1, id="drift", coalesce=True, max_instances=1)
        scheduler.start()
        return scheduler

    # --- passes -----------------------------------------------------------------------------

    def request_pass(self, reason: str) -> None:
        self.log.debug("pass requested", reason=reason)
        self._dirty.set()

    async def _pass_loop(self) -> None:
        while not self._stop.is_set():
            await self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            if not self.leading:
                await self._follow()
                continue
            if not self._may_plan():  # leading, but the lease is unconfirmed (store away): ask again later
                self._loop.call_later(LEADER_POLL, self.request_pass, "leader lease unconfirmed")
                continue
            self._pass_started = time.monotonic()
            try:
                result = await asyncio.to_thread(self._pass)
            except TRANSIENT as exc:  # the store is away: try again after a backed-off wait
                self._loop.call_later(self.outages.failed(loop="pass loop", error=exc), self.request_pass,
                                      "store retry")
                continue
            except Exception:  # a pass must never take the daemon down; the next one starts afresh
                self.log.exception("reconcile pass failed")
                continue
            finally:
                self._pass_started = None
            self.outages.recovered(loop="pass loop")
            self._after_pass(result)

    def _pass(self) -> PassResult:
        from .engine import desired_commit

        result = self.reconciler.reconcile_once()
        if not result.skipped or self.desired_commit is None:
            self.desired_commit = desired_commit(directory=self.options.desired)
        return result

    async def _follow(self) -> None:
        """A follower only works the queue (it is ready as soon as it is up), and reads desired/ for its API."""
        try:
            await asyncio.to_thread(self.reconciler.refresh_desired)
        except Exception:  # as a pass: never the daemon's end
            self.log.exception("reading desired/ failed")
        if not self._ready:
            self._ready = True
            self.notifier.ready("following: another daemon plans; working the shared queue")
            self.log.info("ready as a follower")

    def _after_pass(self, result: PassResult) -> None:
        self.last = result
        self.last_pass_at = utcnow()
        problems = len(result.load_error.problems) if result.load_error else 0
        self.metrics.pass_done(at=self.last_pass_at.timestamp(), problems=problems)
        self._report_load_error(result)
        self._await_settle(result)
        if result.queued:
            self.pool.wake()
            self.log.info("jobs queued", count=result.queued)
        if result.plan is not None and result.plan.refusal:
            self.log.error("plan refused", reason=result.plan.refusal)
        self._schedule_retry(result.next_retry_at)
        status = self.status_line()
        if result.plan is not None and (not self._ready or self._reload_pending):
            self._ready, self._reload_pending = True, False
            self.notifier.ready(status)
            self.log.info("ready", status=status)
        else:
            self.notifier.status(status)

    def _report_load_error(self, result: PassResult) -> None:
        text = str(result.load_error) if result.load_error else None
        if text == self._reported_error:
            return
        self._reported_error = text
        if result.load_error is None:
            self.log.info("desired state loads again")
            return
        for problem in result.load_error.problems:
            self.log.error("desired state does not load; keeping the last good one", file=problem.file,
                           line=problem.line, field=problem.field, problem=problem.message)

    def _await_settle(self, result: PassResult) -> None:
        """Desired files still changing: the pass kept the last good state; look again once they may settle."""
        waiting = result.unsettled
        files = waiting.files if waiting else None
        if files != self._reported_unsettled:
            self._reported_unsettled = files
            if waiting is not None:
                self.log.info("desired file still changing; planning from the last good state until it settles",
                              files=waiting.files[:10], recheck_s=round(waiting.wait, 3))
        if waiting is not None and self._settle_timer is None:
            self._settle_timer = self._loop.call_later(waiting.wait, self._settle_due)

    def _settle_due(self) -> None:
        self._settle_timer = None
        self.request_pass("desired settling")

    def _schedule_retry(self, at: str | None) -> None:
        when = parse_iso(at)
        if when is None or when <= utcnow():
            return
        self.scheduler.add_job(self.request_pass, "date", args=["retry due"], run_date=when, id="retry",
                               replace_existing=True)

    def status_line(self) -> str:
        result = self.last
        if result is None:
            return "starting"
        fleet = result.fleet
        live = sum(count for status, count in fleet.items() if status not in ("deleted", "unhealthy"))
        text = (f"{live} resources: {fleet['active']} active, {fleet['provisioning']} provisioning, "
                f"{fleet['errored']} errored, {fleet['deleting']} deleting, {fleet['unhealthy']} unhealthy; "
                f"{self.pool.busy()} scripts running")
        if result.load_error is not None:
            text += f"; desired/ fails to load ({len(result.load_error.problems)} problems)"
        return text

    def _finished(self, item: Finished) -> None:
        job, result = item.job, item.result
        if item.recorded:
            self.metrics.job_finished(action=str(job.action), ok=result.ok, duration=result.duration)
        log = self.log.bind(resource_id=job.resource_id, job_id=job.job_id, action=str(job.action))
        if not item.recorded:
            log.warning("job handed back or lease lost; not recorded", error=result.error)
        elif result.ok:
            log.info("job succeeded", url=result.url, duration_s=round(result.duration, 3))
        else:
            log.error("job failed", error=result.error, exit_code=result.exit_code,
                      next_attempt_at=result.next_attempt_at, output_tail=result.output_tail[-500:])
        if item.recorded and not result.ok:
            self._loop.call_soon_threadsafe(self._schedule_retry, result.next_attempt_at)
        # level-triggered: the spec may have moved on while the job ran; a coalesced pass catches up
        self._loop.call_soon_threadsafe(self.request_pass, "job finished")

    # --- the slow loop --------------------------------------------------------------------------

    async def _drift_job(self) -> None:
        """The scheduled drift pass: through a store outage it retries (backed off); a bug ends the daemon."""
        try:
            await retry_async(self.drift_pass, loop="drift", outages=self.outages, stop=self._stop)
        except Exception as exc:
            self._crashed("drift", exc)

    async def drift_pass(self) -> DriftReport | None:
        """Health-check every active URL, record the results in one transaction, then a full pass."""
        if not self._may_plan():
            return None
        report = await run_drift_pass(store=self.store, concurrency=self.options.check_concurrency,
                                      timeout=self.options.check_timeout,
                                      unhealthy_after=self.options.unhealthy_after)
        self.metrics.checked(results=report.results)
        self.log.info("drift pass", **report.summary())
        for resource_id in report.turned_unhealthy:
            self.log.warning("resource turned unhealthy", resource_id=resource_id)
        self.reconciler.reload()
        self.request_pass("drift")
        return report

    # --- file watch, watchdog, lock ---------------------------------------------------------

    async def _watch(self) -> None:
        directory = self.options.desired
        if not directory.is_dir():
            self.log.error("desired directory does not exist; not watching it", desired=str(directory))
            return
        watch = DesiredWatch(directory=directory, tracker=self.writes, on_change=self.request_pass,
                             relevant=_desired_name)
        if watch.start(self._loop):
            try:
                await self._stop.wait()
            finally:
                watch.close()
            return
        self.log.warning("inotify is not available; watching with watchfiles and the settle clock alone")
        await self._watch_with_watchfiles(directory)

    async def _watch_with_watchfiles(self, directory: Path) -> None:
        from watchfiles import awatch

        async for changes in awatch(directory, stop_event=self._stop, debounce=100, step=20,
                                    watch_filter=_desired_change, recursive=True):
            self.request_pass(f"{len(changes)} file changes")

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while not self._stop.is_set():
            if not self._pass_stuck():
                self.notifier.watchdog()
            else:
                self.log.error("reconcile pass is stuck; withholding the watchdog ping")
            await _sleep_or_stop(self._stop, interval)

    def _pass_stuck(self) -> bool:
        """The loop's liveness, not the store's: a pass waits at most about twice the busy timeout per
        call before it fails and is retried, so only a pass far beyond that is stuck."""
        limit = max(STUCK_PASS_SECONDS, 4 * self.options.busy_timeout)
        return self._pass_started is not None and time.monotonic() - self._pass_started > limit

    async def _heartbeat(self) -> None:
        """Renew the single-daemon lock every third of its TTL; through a store outage retry (backed off)
        and pause claiming before the lock could lapse; resume once renewed; stop if another took it."""
        interval = self.options.lock_ttl / 3
        delay = interval
        while not await _sleep_or_stop(self._stop, delay):
            started = time.monotonic()
            until = iso(utcnow() + timedelta(seconds=self.options.lock_ttl))
            try:
                held = await asyncio.to_thread(self.store.renew_lock, name=LOCK_NAME, holder=self.worker_id,
                                               until=until)
            except TRANSIENT as exc:
                delay = min(interval, self.outages.failed(loop="heartbeat", error=exc))
                self._note_claiming()
                continue
            self.outages.recovered(loop="heartbeat")
            delay = interval
            if not held:
                self.log.error("lost the daemon lock to another process; stopping")
                self.exit_code = 1
                self.stop()
                return
            self._lock_valid_until = started + self.options.lock_ttl
            self._note_claiming()

    def _note_claiming(self) -> None:
        """Log when claiming pauses for an unrenewed lock, and when it resumes."""
        paused = not self._may_claim()
        if paused and not self._claims_paused:
            self.log.warning("daemon lock not renewed in time; pausing claims until it is",
                             lock_ttl_s=self.options.lock_ttl)
        elif self._claims_paused and not paused:
            self.log.info("daemon lock renewed; claiming again")
            self.pool.wake()
        self._claims_paused = paused

    # --- what the HTTP API asks of the daemon (api.Plane) -----------------------------------

    def desired_pending(self) -> str | None:
        if self.reconciler.last_good is not None:
            return None
        error = self.reconciler.load_error
        return str(error.problems[0]) if error is not None and error.problems else "the first pass has not run"

    def file_source(self, resource_id: str) -> str | None:
        from .engine import API_SOURCE

        owner = self.reconciler.owners.owner(resource_id)
        if owner is not None:
            return owner
        # the last good state stays in force while desired/ fails to load, even for a file removed since
        desired = self.reconciler.last_good
        source = desired.sources.get(resource_id) if desired else None
        return str(source) if source is not None and source.file != API_SOURCE else None

    def jobs_queued(self) -> None:
        self.pool.wake()

    def unknown_target(self, name: str) -> str | None:
        """Why `name` is not a runtime_target this daemon's provision/ provides (None: it is)."""
        from .targets import known_targets

        try:
            return known_targets(provision_dir=self.options.provision).unknown(name)
        except ReconcilerError as exc:
            return f"provision/targets.yaml does not load: {exc}"

    def problems(self) -> list[str]:
        """Why the daemon is degraded: store outages seen by its loops, dead threads, paused claims."""
        found = self.outages.reasons()
        found += [f"{name}: thread is down" for name in self.pool.dead_threads()]
        if not self._may_claim():
            found.append("daemon lock not renewed in time: not claiming jobs")
        return found

    def health_report(self) -> tuple[dict[str, Any], bool]:
        problems = self.problems()
        fleet, _ = self._counts(problems=problems)
        last = self.last
        stuck = self._pass_stuck()
        stale = self.leading and (last is None or (utcnow() - self.last_pass_at).total_seconds() > max(
            3 * self.options.resync, 60))
        degraded = bool(problems)
        ok = self._ready and not self.stopping and not stuck and not stale and not degraded
        error = last.load_error if last else None
        report = {
            "status": "ok" if ok else ("stopping" if self.stopping else "degraded" if degraded else
                                       "not ready" if not self._ready else "stuck" if stuck else "stale"),
            "reason": "; ".join(problems) if problems else None,
            "total": sum(count for status, count in fleet.items() if status not in ("deleted", "unhealthy")),
            **fleet,
            "scripts_running": self.pool.busy(),
            "last_pass_at": iso(self.last_pass_at) if last else None,
            "desired_commit": self.desired_commit,
            "desired_loads": error is None,
            "desired_errors": [str(problem) for problem in error.problems] if error else [],
            "daemon": {"pid": self._pid(), "host": HOST, "leading": self.leading},
            "leader": None if problems else self._leader_or_none(problems),
        }
        return report, ok

    def _leader_or_none(self, problems: list[str]) -> dict[str, Any] | None:
        try:
            return self.leader()
        except StoreError as exc:
            problems.append(f"health: {exc}")
            return None

    def _counts(self, *, problems: list[str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
        """Fleet counts for /health and /metrics, at most COUNTS_TTL old: a scan per scrape adds up.

        While the store is known to be away, the last counts are served without asking it (a probe
        must answer at once); a failed refresh also serves them and adds its reason to `problems`.
        """
        with self._counts_lock:
            at, counts = self._counts_cache
            if counts is None or (time.monotonic() - at > COUNTS_TTL and not self.outages.reasons()):
                try:
                    counts = self.store.counts()
                except StoreError as exc:
                    if problems is not None:
                        problems.append(f"health: {exc}")
                    return counts or _no_counts()
                self._counts_cache = (time.monotonic(), counts)
            return counts

    def metrics_text(self) -> tuple[bytes, str]:
        from .metrics import CONTENT_TYPE

        fleet, health = self._counts()
        body = self.metrics.render(fleet=fleet, health=health)
        return body, CONTENT_TYPE

    async def _lead(self) -> None:
        """Hold or seek the leader lease (PostgreSQL): exactly one daemon plans and health-checks.

        Through a store outage the step is retried (backed off); a leader that cannot renew steps down
        a third of the lease before it could lapse, so two daemons never plan at once.
        """
        while True:
            held, delay = await self._leadership_attempt()
            if held and not self.leading:
                self.leading = True
                self.log.info("became leader")
                self.reconciler.reload()  # what an earlier term of ours remembered may be stale
                self.request_pass("became leader")
            elif not held and self.leading:
                self.leading = False
                self.log.warning("lost leadership; following")
            if await _sleep_or_stop(self._stop, delay):
                if self.leading:
                    with contextlib.suppress(StoreError):  # else the lease runs out
                        await asyncio.to_thread(self.store.release_lock, name=LEADER_LOCK, holder=self.worker_id)
                return

    async def _leadership_attempt(self) -> tuple[bool, float]:
        """(whether we lead now, seconds until the next attempt)."""
        started = time.monotonic()
        try:
            held = await asyncio.to_thread(self._leadership_step)
        except TRANSIENT as exc:
            delay = min(LEADER_POLL, self.outages.failed(loop="leader", error=exc))
            return self.leading and time.monotonic() < self._leader_valid_until - self.options.leader_ttl / 3, delay
        self.outages.recovered(loop="leader")
        if held:
            self._leader_valid_until = started + self.options.leader_ttl
        return held, LEADER_POLL

    def _leadership_step(self) -> bool:
        now = utcnow()
        until = iso(now + timedelta(seconds=self.options.leader_ttl))
        if self.leading:
            return self.store.renew_lock(name=LEADER_LOCK, holder=self.worker_id, until=until)
        holder = self.store.acquire_lock(
            name=LEADER_LOCK, holder=self.worker_id, pid=self._pid(), host=HOST, now=iso(now), until=until,
            holder_dead=_holder_dead)
        return holder is None

    def leader(self) -> dict[str, Any] | None:
        holder = self.store.lock_holder(name=LEADER_LOCK if self.shared else LOCK_NAME, now=iso(utcnow()))
        if holder is None:
            return None
        return {"pid": holder["pid"], "host": holder["host"], "since": holder["since"],
                "this_daemon": holder["holder"] == self.worker_id}

    # --- signals and shutdown -----------------------------------------------------------------

    def stop(self) -> None:
        """Set the stop event first: nothing after it (a log line, a notify) can keep the daemon running."""
        self.stopping = True
        if self._stop.is_set():
            return
        self._stop.set()
        self._dirty.set()
        self.notifier.stopping()
        self.log.info("stopping", grace_s=self.options.stop_grace)

    def reload(self) -> None:
        """SIGHUP: re-read target settings and every desired file; READY=1 follows the next pass."""
        self.notifier.reloading()
        self._reload_pending = True
        try:
            config = self._engine_config()
        except Exception as exc:  # bad target.yaml: keep the running configuration
            self.log.error("reload: keeping the current configuration", error=str(exc))
        else:
            if config.pass_env != self.pool.config.pass_env:
                self._log_script_env(config)
            self.pool.reconfigure(config)
        self.reconciler.reload()
        self.request_pass("reload")

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        self.scheduler.shutdown(wait=False)
        if self.api_server is not None:
            self.api_server.should_exit = True
        handed_back = await asyncio.to_thread(self.pool.shutdown, grace=self.options.stop_grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(self.store.release_lock, name=LOCK_NAME, holder=self.worker_id)
        except StoreError as exc:  # the lock then lapses after --lock-ttl
            self.log.warning("could not release the daemon lock", error=str(exc))
        self.log.info("stopped", handed_back=handed_back)
        self.notifier.close()


def _no_counts() -> tuple[dict[str, int], dict[str, int]]:
    fleet = {status.value: 0 for status in ResourceStatus}
    fleet["unhealthy"] = 0
    return fleet, {health.value: 0 for health in Health}


def _holder_dead(host: str, pid: int | None) -> bool:
    """A lock holder on this host whose process is gone (kill -9): its lease need not be waited out."""
    from .runner import process_alive

    return host == HOST and pid is not None and not process_alive(pid=int(pid))


def read_token(path: Path | None) -> str | None:
    """The API's bearer token from its file (never from the command line, where `ps` shows it)."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise DaemonRefused(f"cannot read --api-token-file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise DaemonRefused(f"--api-token-file {path}: the token must be at least 16 characters")
    return token


def bind_api(*, address: str, token: str | None) -> Any:
    """Bind the API's socket up front, so a taken port or a bad address fails the start clearly."""
    import ipaddress
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise DaemonRefused(f"--api {address}: expected HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None:
        raise DaemonRefused(f"refusing to serve the API on {address} without --api-token-file "
                            "(only loopback addresses may go without a token)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise DaemonRefused(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _api_server(*, plane: Daemon, listener: Any) -> Any:
    import uvicorn

    from .api import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the daemon owns the signals
            yield

    config = uvicorn.Config(create_app(plane=plane), log_config=None, access_log=False, lifespan="off",
                            log_level="warning")
    return Server(config)


def _metrics() -> Any:
    from .metrics import Metrics

    return Metrics()


def _desired_change(change: Any, path: str) -> bool:
    return _desired_name(Path(path).name)


def _desired_name(name: str) -> bool:
    """A name that may be desired state (or a directory holding some)."""
    return not name.startswith((".", "_")) and (name.endswith((".yaml", ".yml")) or "." not in name)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class DriftReport:
    checked: int
    failures: list[Any]
    turned_unhealthy: list[str]
    results: list[Any]

    def summary(self) -> dict[str, int]:
        return {"checked": self.checked, "healthy": self.checked - len(self.failures),
                "failed": len(self.failures), "turned_unhealthy": len(self.turned_unhealthy)}


async def run_drift_pass(*, store: Any, concurrency: int, timeout: float, unhealthy_after: int) -> DriftReport:
    """One health check of every active resource with a URL; shared by the daemon and `reconciler check`."""
    from .health import check_all

    rows = await asyncio.to_thread(store.load_observed)
    targets = [(rid, row.url) for rid, row in rows.items() if row.status is ResourceStatus.ACTIVE and row.url]
    results = await check_all(targets, concurrency=concurrency, timeout=timeout)
    turned = await asyncio.to_thread(store.record_health, results=results, now=iso(utcnow()),
                                     unhealthy_after=unhealthy_after)
    return DriftReport(len(results), [result for result in results if not result.ok], turned, results)


def run_daemon(*, options: DaemonOptions) -> int:
    """Entry point for the CLI: 0 after a clean stop, 1 when the lock was lost (refusal raises)."""
    return asyncio.run(Daemon(options=options).run())

