"""The workers: claim a job under a lease, make sure no earlier run of it is alive, run its script(s),
record the end in one transaction, and claim the next.

Split from engine.py, which plans and queues: this half runs what was queued, whoever queued it
(this apply, another apply, a daemon, the API), on as many threads as `parallelism` says.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .liveness import HOST, owner_is_dead
from .models import Action, Job, JobResult, JobScope, iso, utcnow
from .ports import QuietMark
from .retry import RetryPolicy, next_delay
from .supervise import TRANSIENT, Crash, Outages, guarded_thread, retry_sync

if TYPE_CHECKING:
    from .health import CheckResult
    from .ports import Queue
    from .runner import ScriptOutcome

T = TypeVar("T")
SLICE = 0.1  # seconds: how soon a wait for quiet workers sees an interrupt


@dataclass(frozen=True, slots=True)
class AfterCheck:
    """The health check right after a successful provision: the drift check's timeout and threshold."""

    timeout: float = 5.0
    unhealthy_after: int = 3
    actor: str | None = None  # who its health events name: `daemon:<host>`, or the CLI user of `apply`


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How scripts run: where they are, where their working directories go, and the time limits."""

    provision_dir: Path
    work_dir: Path
    timeout: float = 900.0
    grace: float = 10.0
    lease_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    target_timeouts: dict[str, float] = field(default_factory=dict)
    # end a script's group when its worker dies: needed when another machine may reclaim the job
    # (PostgreSQL); on one machine the reclaiming worker ends the orphan itself and this costs spawns
    guard_orphans: bool = True
    # names or patterns of our environment scripts also get (provision/targets.yaml `pass_env`)
    pass_env: tuple[str, ...] = ()
    # claim while the fleet is suspended (`destroy` only: it tears down its scope although it is)
    fleet_override: bool = False
    # check the URL once right after a successful provision, so HEALTH is known at once (None: off)
    after_check: AfterCheck | None = field(default_factory=AfterCheck)

    def timeout_for(self, target: str) -> float:
        return self.target_timeouts.get(target, self.timeout)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job this process ran to the end (recorded or not)."""

    job: Job
    result: JobResult
    recorded: bool
    handed_back: bool = False  # stopped by our own shutdown or interrupt; back in the queue


def new_worker_id() -> str:
    """host:pid:token — the host and pid let a later process on this machine see that we died."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def expire_dead_leases(*, store: Queue, now: datetime) -> int:
    """Free at once the jobs of workers on this host that died (kill -9), instead of waiting out the lease."""
    count = 0
    for job_id, owner in store.running_leases():
        host, _, rest = (owner or "").partition(":")  # a worker id: host:pid:token
        if owner and owner_is_dead(host, rest.partition(":")[0]):
            store.expire_lease(job_id=job_id, worker=owner, now=iso(now))
            count += 1
    return count


class JobRunner:
    """Runs claimed jobs: makes sure an earlier run is gone, runs the script(s), records the result."""

    def __init__(self, *, store: Queue, config: EngineConfig, worker_id: str, outages: Outages,
                 may_claim: Callable[[], bool] = lambda: True, rand: Callable[[], float] = random.random,
                 no_more_claims: threading.Event | None = None) -> None:
        self.store = store
        self.config = config
        self.worker_id = worker_id
        self.outages = outages
        self.may_claim = may_claim
        self.rand = rand
        self._no_more_claims = no_more_claims or threading.Event()  # set: finish without claiming the next
        self._running: dict[str, int | None] = {}  # job_id → process group of its current script
        self._unstarted: set[str] = set()  # jobs whose start could not be recorded (store unavailable)
        self._lock = threading.Lock()
        self._abandoning = threading.Event()

    def run(self, job: Job, *, claim_next: bool = False,
            scope: JobScope = None) -> tuple[Finished, Job | None]:
        """Run `job` and record it; with `claim_next` also claim the next job (in `scope`, or any) in the
        same transaction. Returns what finished and the next job, if one was claimed."""
        with self._lock:
            self._running[job.job_id] = None
        try:
            still_running = self._bury_previous_run(job)
            result = self._result(job, still_running) if still_running else self._execute(job)
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
        with self._lock:
            unstarted = job.job_id in self._unstarted
            self._unstarted.discard(job.job_id)
        if unstarted or (self._abandoning.is_set() and not result.ok):
            # not the script's fault (our shutdown, or the store refused the start): run it again later
            self._persist(lambda: self.store.release(job_id=job.job_id, worker=self.worker_id, now=iso(utcnow())))
            return Finished(job=job, result=result, recorded=False, handed_back=True), None
        if not claim_next or self._abandoning.is_set() or self._no_more_claims.is_set() or not self.may_claim():
            recorded = self._persist(lambda: self.store.finish(job=job, worker=self.worker_id, result=result,
                                                               now=iso(utcnow())))
            self._check_after(job, result, recorded=bool(recorded))
            return Finished(job=job, result=result, recorded=bool(recorded)), None
        outcome = self._persist(lambda: self._finish_and_claim(job, result, scope))
        recorded, following = outcome if outcome is not None else (False, None)
        self._check_after(job, result, recorded=recorded)
        return Finished(job=job, result=result, recorded=recorded), following

    def _check_after(self, job: Job, result: JobResult, *, recorded: bool) -> None:
        """Check the new URL once, as a drift check would count it; never the job's business.

        Bounded by the check's timeout (plus a second for the client to close), so a worker waits no
        longer; any failure of the check or of recording it is logged and dropped.
        """
        check = self.config.after_check
        if check is None or not recorded or not result.ok or not result.url or job.action is Action.DELETE:
            return
        try:
            results = check_one(resource_id=job.resource_id, url=result.url, timeout=check.timeout)
            self.store.record_health(results=results, now=iso(utcnow()), unhealthy_after=check.unhealthy_after,
                                     actor=check.actor)
        except Exception as exc:
            from .logs import get_logger

            get_logger().warning("health check after provision failed", resource_id=job.resource_id,
                                 error=f"{type(exc).__name__}: {exc}")

    def _finish_and_claim(self, job: Job, result: JobResult, scope: JobScope) -> tuple[bool, Job | None]:
        now = utcnow()
        return self.store.finish_and_claim(
            job=job, worker=self.worker_id, result=result, now=iso(now),
            lease_until=iso(now + timedelta(seconds=self.config.lease_seconds)), resource_ids=scope,
            fleet_override=self.config.fleet_override)

    def _persist(self, call: Callable[[], T]) -> T | None:
        """Record through a store outage: a result is worth waiting for (until our own shutdown gives up;
        then the lease runs out and the job is claimed again). The outage bound is in README."""
        return retry_sync(call, loop=threading.current_thread().name, outages=self.outages,
                          stop=self._abandoning)

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def abandon_all(self, *, grace: float) -> int:
        """End every script still running (TERM, grace, KILL on its group); their jobs go back to the queue."""
        from .runner import kill_process_group

        self._abandoning.set()
        with self._lock:
            groups = [(job_id, pgid) for job_id, pgid in self._running.items()]
        for _job_id, pgid in groups:
            if pgid:
                kill_process_group(pgid=pgid, grace=grace)
        return len(groups)

    def _bury_previous_run(self, job: Job) -> ScriptOutcome | None:
        """A reclaimed job's first script may still run (its worker died): end it before running again.

        Returns a failed outcome when it outlives SIGKILL (stuck in the kernel): the job is retried later
        rather than started beside it. The row keeps naming that run until a new one records its own.
        """
        from .runner import ScriptOutcome, group_runs_job, kill_process_group

        pgid = job.script_pgid
        if not (pgid and job.script_host == HOST and group_runs_job(pgid=pgid, job_id=job.job_id)):
            return None
        kill_process_group(pgid=pgid, grace=self.config.grace)
        if not group_runs_job(pgid=pgid, job_id=job.job_id):
            return None
        return ScriptOutcome(ok=False, exit_code=None, url=None, permanent=False, output_tail="", duration=0.0,
                             error=f"not started: the previous run (process group {pgid}) survived SIGKILL")

    def _execute(self, job: Job) -> JobResult:
        if job.action is Action.CREATE:
            adopted = self._observe(job)
            if adopted is not None:
                return adopted
        if job.action is Action.REPLACE:
            first = self._script(job, spec=job.old_spec or job.spec, action="delete")
            if not first.ok:
                return self._result(job, first, prefix="teardown of the old resource: ")
            return self._result(job, self._script(job, spec=job.spec, action="create"))
        action = {Action.DELETE: "delete", Action.CREATE: "create"}.get(job.action, "update")
        return self._result(job, self._script(job, spec=job.spec, action=action))

    def _observe(self, job: Job) -> JobResult | None:
        """Adopt-or-create: a target's observe.sh says whether the resource already exists.

        Exit 0 with a URL: it exists, and the job ends as adopted (no provision). Exit 3: it does not,
        and provision runs (None). Anything else fails the job like a failed script, retried later.
        """
        from .runner import OBSERVE_ABSENT, observe_script

        spec = job.spec or {}
        script = observe_script(provision_dir=self.config.provision_dir, runtime_target=spec.get("runtime_target", ""))
        if script is None:
            return None
        outcome = self._script(job, spec=job.spec, action="observe", script=script)
        if outcome.exit_code == OBSERVE_ABSENT:
            return None
        result = self._result(job, outcome, prefix="observe.sh: ")
        return replace(result, adopted=True) if result.ok else result

    def _script(self, job: Job, *, spec: dict[str, Any] | None, action: str,
                script: Path | None = None) -> ScriptOutcome:
        from .runner import resolve_script, run_script

        if spec is None:
            raise ValueError(f"job {job.job_id} carries no spec to run its script with")
        target = spec["runtime_target"]
        if script is None:
            script = resolve_script(provision_dir=self.config.provision_dir, runtime_target=target, action=action)
        return run_script(
            script=script, spec=spec, action=action, workdir=self.config.work_dir / job.resource_id,
            timeout=self.config.timeout_for(target), grace=self.config.grace, needs_url=action != "delete",
            job_id=job.job_id, on_start=lambda pgid: self._record_start(job, pgid),
            guard=self.config.guard_orphans, pass_env=self.config.pass_env,
        )

    def _record_start(self, job: Job, pgid: int) -> None:
        if self._abandoning.is_set():
            raise RuntimeError("shutting down")
        with self._lock:
            self._running[job.job_id] = pgid
        try:
            recorded = self.store.record_script(job_id=job.job_id, worker=self.worker_id, pgid=pgid, host=HOST,
                                                now=iso(utcnow()))
        except TRANSIENT:
            with self._lock:
                self._unstarted.add(job.job_id)
            raise
        if not recorded:
            raise RuntimeError("lease lost before the script started")

    def _result(self, job: Job, outcome: ScriptOutcome, *, prefix: str = "") -> JobResult:
        retry_at = None
        if not outcome.ok:
            delay = next_delay(attempt=job.attempt, policy=self.config.retry, random=self.rand,
                               permanent=outcome.permanent)
            retry_at = iso(utcnow() + timedelta(seconds=delay))
        error = f"{prefix}{outcome.error}" if outcome.error else None
        return JobResult(outcome.ok, outcome.exit_code, outcome.url, error, outcome.output_tail,
                         outcome.duration, retry_at)


class WorkerPool:
    """`parallelism` threads claiming jobs from the shared queue under one lease owner id.

    One extra thread renews all of this process's leases in a single statement, so a slow script
    keeps its job while a dead process's jobs become reclaimable after `lease_seconds`. `apply`
    uses `run_until_done`; the daemon uses `serve` … `shutdown`.
    """

    def __init__(self, *, store: Queue, config: EngineConfig, parallelism: int,
                 on_finish: Callable[[Finished], None] = lambda finished: None, idle_poll: float = 1.0,
                 outages: Outages | None = None, on_crash: Crash | None = None,
                 may_claim: Callable[[], bool] = lambda: True) -> None:
        from .logs import get_logger

        self.store = store
        self.config = config
        self.parallelism = max(1, parallelism)
        self.worker_id = new_worker_id()
        self.on_finish = on_finish
        self.idle_poll = idle_poll
        self.outages = outages or Outages(log=get_logger())
        self.on_crash = on_crash or _log_crash
        self.may_claim = may_claim
        self._stop_claiming = threading.Event()
        self._stopped = threading.Event()
        self._wake = threading.Condition()
        # work_in: claim attempts so far, the last one that found the pool quiet, jobs held by workers
        self._quiet = threading.Condition()
        self._attempts = self._quiet_at = self._holding = self._failures = 0
        self._threads: list[threading.Thread] = []
        self._renewer: threading.Thread | None = None
        self._runner = JobRunner(store=store, config=config, worker_id=self.worker_id, outages=self.outages,
                                 may_claim=may_claim, no_more_claims=self._stop_claiming)
        self._abandon_requested = threading.Event()
        self.deaths: list[str] = []  # apply: "thread: Error: message" of each worker that died

    # --- apply: work through a scope, then return ---

    def run_until_done(self, *, scope: set[str] | None, poll: float = 0.1) -> list[Finished]:
        """Work until no open job in `scope` remains (others' leases included); return what we ran."""
        finished: list[Finished] = []
        lock = threading.Lock()
        # frozen once: every claim of every worker passes this one object, and the store keeps its
        # encoding (SQLite: the JSON array) instead of sorting and encoding thousands of ids per claim
        frozen = frozenset(scope) if scope is not None else None

        def record(item: Finished) -> None:
            with lock:
                finished.append(item)
            self.on_finish(item)

        self._start(target=lambda: self._guarded(lambda: self._until_done_loop(frozen, poll, record)))
        self._join_until_done()
        self._stopped.set()
        return finished

    def stop_claiming(self) -> None:
        """First interrupt: claim nothing more; the scripts running now finish and are recorded."""
        self._stop_claiming.set()

    def abandon(self) -> None:
        """Second interrupt: end the running scripts' groups and hand their jobs back (run_until_done does it)."""
        self._stop_claiming.set()
        self._abandon_requested.set()

    def _join_until_done(self) -> None:
        # joined with a timeout: the main thread must keep running signal handlers (interrupts) and
        # act on abandon() while the workers wait for their scripts
        abandoned = False
        while alive := [thread for thread in self._threads if thread.is_alive()]:
            if self._abandon_requested.is_set() and not abandoned:
                abandoned = True
                self._runner.abandon_all(grace=min(self.config.grace, 5.0))
                continue
            alive[0].join(0.1)

    def _guarded(self, loop: Callable[[], None]) -> None:
        """A worker that dies must not pass for one that finished: it is recorded, the others stop claiming."""
        try:
            loop()
        except BaseException as exc:
            self._stop_claiming.set()
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.deaths.append(f"{threading.current_thread().name} stopped: {type(exc).__name__}: {exc}"
                               f" (at {Path(where.filename).name}:{where.lineno})")

    def _until_done_loop(self, scope: JobScope, poll: float, record: Callable[[Finished], None]) -> None:
        job: Job | None = None
        try:
            while not self._stop_claiming.is_set() or job is not None:
                job = job or self._claim(scope)
                if job is not None:
                    if self._stop_claiming.is_set():
                        break  # claimed with the last finish, never started: handed back below
                    finished, job = self._runner.run(job, claim_next=True, scope=scope)  # raises: `job` is handed back
                    record(finished)
                elif not retry_sync(lambda: self.store.count_open(resource_ids=scope,
                                                                  fleet_override=self.config.fleet_override),
                                    loop=threading.current_thread().name, outages=self.outages,
                                    stop=self._stop_claiming):
                    return
                else:
                    self._stop_claiming.wait(poll)
        finally:
            if job is not None:
                self._hand_back(job)

    def _hand_back(self, job: Job) -> None:
        """Back to the queue; if the store refuses, the lease lapses when this process stops renewing it."""
        with contextlib.suppress(Exception):
            self.store.release(job_id=job.job_id, worker=self.worker_id, now=iso(utcnow()))

    # --- daemon: serve until told to stop ---

    def serve(self) -> None:
        """Start claiming in the background; `wake()` after enqueueing to claim without waiting."""
        self._start(target=self._serve_loop)

    # --- apply's rollouts: claim in a scope in the background while the main thread advances waves ---

    def work_in(self, *, scope: JobScope) -> None:
        """Claim jobs in `scope` in the background until `stop_claiming()`, then `join()`. One pool for
        all of a rollout's waves: the main thread queues each wave, `wake()`s the workers and waits for
        them with `wait_quiet`. A worker that dies is recorded in `deaths` and the others stop claiming."""
        self._start(target=lambda: self._guarded(lambda: self._serve_loop(scope)))

    def mark(self) -> QuietMark:
        """A point in the pool's life: `wait_quiet(after=...)` waits for something worth a look after it."""
        with self._quiet:
            return QuietMark(self._attempts, self._failures)

    def wait_quiet(self, *, after: QuietMark, timeout: float) -> bool:
        """Wait until the pool is quiet after `after` (a claim attempt begun after it found nothing in scope
        while no worker held a job: every job queued before the mark is done) or a job failed since (a
        wave may halt at once), or `timeout`, or claiming stopped (an interrupt: its handler only sets
        flags, so the wait looks every SLICE); True when quiet or failed."""
        deadline = time.monotonic() + timeout
        with self._quiet:
            while not self._noticed(after):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop_claiming.is_set() or self._stopped.is_set():
                    return False
                self._quiet.wait(min(SLICE, left))
            return True

    def quiet_since(self, mark: QuietMark) -> bool:
        """`wait_quiet` without waiting: quiet, or a job failed, since `mark`."""
        with self._quiet:
            return self._noticed(mark)

    def _noticed(self, mark: QuietMark) -> bool:
        return self._quiet_at > mark.attempts or self._failures > mark.failures

    def join(self) -> None:
        """After `stop_claiming()`: wait for the running scripts (acting on `abandon()` meanwhile)."""
        self._join_until_done()
        self._stopped.set()
        with self._quiet:
            self._quiet.notify_all()

    def _attempt(self) -> int:
        with self._quiet:
            self._attempts += 1
            return self._attempts

    def _hold(self, delta: int) -> None:
        with self._quiet:
            self._holding += delta

    def _finished(self, finished: Finished) -> None:
        if finished.recorded and not finished.result.ok:
            with self._quiet:
                self._failures += 1
                self._quiet.notify_all()
        self.on_finish(finished)

    def _found_nothing(self, ticket: int) -> None:
        with self._quiet:
            if self._holding == 0 and ticket > self._quiet_at:
                self._quiet_at = ticket
                self._quiet.notify_all()

    def reconfigure(self, config: EngineConfig) -> None:
        """New script settings (SIGHUP) for the jobs claimed from now on."""
        self.config = config
        self._runner.config = config

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def busy(self) -> int:
        return self._runner.running_count()

    def dead_threads(self) -> list[str]:
        """Names of this pool's threads that ended while it should be serving (for /health)."""
        if self._stopped.is_set() or self._stop_claiming.is_set():
            return []
        threads = [*self._threads, *([self._renewer] if self._renewer else [])]
        return [thread.name for thread in threads if not thread.is_alive()]

    def shutdown(self, *, grace: float) -> int:
        """Stop claiming; give running scripts `grace` seconds; then end them and hand their jobs back.

        Returns how many jobs were handed back (they run again on the next start, from the queue).
        """
        self._stop_claiming.set()
        self.wake()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        handed_back = self._runner.abandon_all(grace=min(self.config.grace, 5.0))
        for thread in self._threads:
            thread.join()
        self._stopped.set()
        return handed_back

    def _serve_loop(self, scope: JobScope = None) -> None:
        job: Job | None = None
        try:
            while not self._stop_claiming.is_set():
                if job is None:
                    job = self._claim_or_wait(scope)
                    if job is None:
                        continue
                    self._hold(1)
                finished, job = self._runner.run(job, claim_next=True, scope=scope)  # raises: `job` is handed back
                if job is None:
                    self._hold(-1)
                self._finished(finished)
        finally:
            if job is not None:  # claimed with the last finish but never started: back to the queue
                self._hand_back(job)

    def _claim_or_wait(self, scope: JobScope) -> Job | None:
        """Claim one job; when there is none, say so to `wait_quiet` and wait for `wake()` or `idle_poll`."""
        ticket = self._attempt()
        job = self._claim(scope)
        if job is None:
            self._found_nothing(ticket)
            with self._wake:
                if not self._stop_claiming.is_set():
                    self._wake.wait(self.idle_poll)
        return job

    # --- shared ---

    def _start(self, *, target: Callable[[], None]) -> None:
        self._threads = [guarded_thread(target=target, name=f"worker-{i}", on_crash=self.on_crash)
                         for i in range(self.parallelism)]
        self._renewer = guarded_thread(target=self._renew_loop, name="lease-renewer", on_crash=self.on_crash)
        self._renewer.start()
        for thread in self._threads:
            thread.start()

    def _claim(self, scope: JobScope) -> Job | None:
        """The next job, or None (nothing due, claiming paused, or the store unavailable: then after a wait)."""
        if self._stop_claiming.is_set() or not self.may_claim():
            return None
        now = utcnow()
        until = iso(now + timedelta(seconds=self.config.lease_seconds))
        loop = threading.current_thread().name
        try:
            jobs = self.store.claim(worker=self.worker_id, now=iso(now), lease_until=until, resource_ids=scope,
                                    fleet_override=self.config.fleet_override)
        except TRANSIENT as exc:
            self._stop_claiming.wait(self.outages.failed(loop=loop, error=exc))
            return None
        self.outages.recovered(loop=loop)
        return jobs[0] if jobs else None

    def _renew_loop(self) -> None:
        """Renew every lease each third of the lease; through an outage, retry sooner (backed off)."""
        interval = min(self.config.lease_seconds / 3, 5.0)
        delay = interval
        while not self._stopped.wait(delay):
            try:
                until = iso(utcnow() + timedelta(seconds=self.config.lease_seconds))
                self.store.renew(worker=self.worker_id, lease_until=until)
                expire_dead_leases(store=self.store, now=utcnow())
            except TRANSIENT as exc:
                delay = min(interval, self.outages.failed(loop="lease-renewer", error=exc))
                continue
            self.outages.recovered(loop="lease-renewer")
            delay = interval


def check_one(*, resource_id: str, url: str, timeout: float) -> list[CheckResult]:
    """One health check from a worker thread (its own event loop), never longer than `timeout` + 1 s."""
    import asyncio

    from .health import check_all

    async def bounded() -> list[CheckResult]:
        return await asyncio.wait_for(check_all([(resource_id, url)], concurrency=1, timeout=timeout), timeout + 1)

    return asyncio.run(bounded())


def _log_crash(name: str, exc: BaseException) -> None:
    from .logs import get_logger

    get_logger().error("thread died", thread=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
