"""The composition root of `reconciler daemon`: build every part, run them under one supervisor, stop them.

The parts (runnables) each own their state: the systemd reporter, the election (single-daemon lock on
SQLite, leader lease on PostgreSQL), the workers, the pass loop, the drift loop, the file watcher and
the API server. They are built here in dependency order, prepared and started in that order, and closed
in reverse. The daemon itself owns only the signals, reload and stop. asyncio owns timing and signals;
blocking work (parsing, SQL, scripts) runs in threads.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal

from ..actor import daemon_actor
from ..drift import DriftLoop, DriftReport, DriftSettings
from ..engine import PlanView, Reconciler
from ..errors import SpecError
from ..govern import Governor
from ..logs import get_logger
from ..models import PassRequest
from ..plan import PlanPolicy
from ..rollouts import held_now, start_rollout
from ..supervise import Outages, Runnable, Supervisor
from ..systemd import Notifier
from ..watch import WriteTracker
from ..workers import Finished, WorkerPool, new_worker_id
from .apiserver import ApiServer, loopback_only
from .election import Election, LeaderLease, SingleDaemonLock
from .options import DaemonOptions, DaemonRefused, engine_config, keyring
from .passes import PassLoop
from .plane import DaemonPlane
from .pool import Workers
from .reporter import SystemdReporter
from .requests import PassRequestPoller
from .rollouts import RolloutLoop
from .watcher import DesiredWatcher, PolicyWatcher


class Daemon:
    """One controller process, composed of runnables."""

    def __init__(self, *, options: DaemonOptions) -> None:
        from ..metrics import Metrics
        from ..store import open_store

        self.options = options
        self.log = get_logger()
        self.exit_code = 0
        self._stop = asyncio.Event()
        self.worker_id = new_worker_id()
        self.outages = Outages(log=self.log)
        self.supervisor = Supervisor(log=self.log, on_crash=self._fail)
        self.keyring = keyring(options)
        self.store = open_store(url=options.db, pool_size=options.parallelism + 16,
                                busy_timeout=options.busy_timeout)
        self.shared = self.store.kind == "postgres"  # PostgreSQL: many daemons, one of them leads
        self.writes = WriteTracker()
        self.metrics = Metrics()
        self.governor = self._governor()
        self.reconciler = Reconciler(store=self.store, desired_dir=options.desired, settle=options.settle,
                                     policy=PlanPolicy(allow_mass_delete=options.allow_mass_delete,
                                                       self_heal=options.self_heal),
                                     writes=self.writes, provision_dir=options.provision, gate=self.governor,
                                     actor=daemon_actor(), on_rollout=self._rollout_started)
        self.election = self._election()
        configure = functools.partial(engine_config, options=options, guard_orphans=self.store.kind != "sqlite")
        self.workers = Workers(pool=WorkerPool(store=self.store, config=configure(), parallelism=options.parallelism,
                                               on_finish=self._finished, outages=self.outages,
                                               on_crash=self.supervisor.crashed, may_claim=self.election.may_claim),
                               configure=configure, grace=options.stop_grace, log=self.log)
        self.reporter = SystemdReporter(notifier=Notifier(), busy=self.workers.pool.busy,
                                        busy_timeout=options.busy_timeout, log=self.log)
        self.passes = PassLoop(reconciler=self.reconciler, election=self.election, outages=self.outages,
                               reporter=self.reporter, metrics=self.metrics, wake_workers=self.workers.pool.wake,
                               desired=options.desired, resync=options.resync, log=self.log,
                               requests=self.store, recorder=self.store, holder=self.worker_id)
        self.asked = PassRequestPoller(store=self.store, may_plan=self.election.may_plan,
                                       on_requests=self._asked, outages=self.outages, log=self.log)
        self.drift = DriftLoop(store=self.store, outages=self.outages, log=self.log, metrics=self.metrics,
                               settings=DriftSettings(interval=options.drift_interval,
                                                      concurrency=options.check_concurrency,
                                                      timeout=options.check_timeout,
                                                      unhealthy_after=options.unhealthy_after,
                                                      actor=daemon_actor()),
                               may_run=self.election.may_plan, on_report=self._drifted)
        self.rollouts = RolloutLoop(store=self.store, outages=self.outages, log=self.log,
                                    may_run=self.election.may_plan, workers=self.workers.pool,
                                    actor=daemon_actor(), on_change=lambda: self.passes.request("rollout"),
                                    held=lambda: held_now(self.store), metrics=self.metrics)
        self.watcher = DesiredWatcher(directory=options.desired, tracker=self.writes, on_change=self.passes.request,
                                      log=self.log)
        self.policy_watcher = PolicyWatcher(path=self.governor.source.path, tracker=self.writes,
                                            on_change=self.passes.request, log=self.log) \
            if self.governor.source.path is not None else None
        self.plane = DaemonPlane(store=self.store, keyring=self.keyring, open_reads=loopback_only(options.api),
                                 reconciler=self.reconciler,
                                 provision=options.provision, pool=self.workers.pool, election=self.election,
                                 passes=self.passes, reporter=self.reporter, outages=self.outages,
                                 metrics=self.metrics, resync=options.resync, governor=self.governor)
        self.api = ApiServer(address=options.api, plane=self.plane, log=self.log) if options.api else None

    def _governor(self) -> Governor:
        """policy.yaml, loaded now: one that does not load refuses the start (SpecError, file:line, exit 1)."""
        from ..actor import daemon_actor
        from ..policy import default_policy_path, load_policy
        from ..policysource import PolicySource

        named = self.options.policy is not None
        path = self.options.policy or default_policy_path(desired=self.options.desired)
        source = PolicySource(path=path, load=lambda file: load_policy(path=file), required=named,
                              settle=self.options.settle, writes=self.writes)
        try:
            source.start()
        except SpecError as exc:
            raise DaemonRefused(f"the policy does not load, so the daemon does not start: "
                                f"{'; '.join(str(problem) for problem in exc.problems)}") from None
        if source.policy is not None:
            self.log.info("policy loaded", policy=str(path))
        return Governor(source=source, store=self.store, metrics=self.metrics, log=self.log,
                        allow_mass_delete=self.options.allow_mass_delete, actor=daemon_actor())

    def _election(self) -> Election:
        if self.shared:
            return LeaderLease(store=self.store, worker_id=self.worker_id, ttl=self.options.leader_ttl,
                               outages=self.outages, log=self.log, on_elected=self._elected)
        return SingleDaemonLock(store=self.store, db=self.options.db, worker_id=self.worker_id,
                                ttl=self.options.lock_ttl, outages=self.outages, log=self.log, on_lost=self._fail,
                                on_resumed=self._claiming)

    def _runnables(self) -> list[Runnable]:
        """In start order; they stop in reverse (the API first, the lock and systemd last)."""
        parts: list[Runnable | None] = [self.reporter, self.election, self.workers, self.passes, self.asked,
                                        self.drift, self.rollouts, self.watcher, self.policy_watcher, self.api]
        return [part for part in parts if part is not None]

    # --- what a part tells another built after it ---

    def _rollout_started(self, view: PlanView, commit: str | None, actor: str) -> None:
        """A pass's plan made a rollout (or superseded members of one): write it; the rollout loop advances it."""
        rollout = start_rollout(store=self.store, view=view, commit=commit, actor=actor)
        if rollout is not None:
            self.log.info("rollout started", rollout_id=rollout.rollout_id, sizes=list(rollout.sizes))

    def _finished(self, item: Finished) -> None:
        self.passes.job_finished(item)

    def _asked(self, requests: list[PassRequest]) -> None:
        self.passes.demand(requests)  # `reconciler reconcile`: answered by the next pass

    def _drifted(self, report: DriftReport) -> None:
        self.passes.refresh("drift")  # the pass after a drift pass sees the health it recorded

    def _elected(self) -> None:
        self.passes.refresh("became leader")  # what an earlier term of ours remembered may be stale

    def _claiming(self) -> None:
        self.workers.pool.wake()

    # --- run, signals, reload, stop ---

    async def run(self) -> int:
        from ..store import redact

        self._install_signals()
        self.supervisor.start(self._runnables(), stop=self._stop)
        self.log.info("daemon started", db=redact(self.options.db), desired=str(self.options.desired),
                      pid=os.getpid(), shared=self.shared)
        self.passes.request("start")
        await self._stop.wait()
        await self.supervisor.stop()
        self.log.info("stopped", handed_back=self.workers.handed_back)
        return self.exit_code

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def reload(self) -> None:
        """SIGHUP: re-read target settings, the tokens file, every desired file and the policy; READY=1 follows
        the next pass."""
        self.reporter.reloading()
        self.workers.reload()
        self._reload_tokens()
        self.governor.source.forget()  # and policy.yaml
        self.passes.refresh("reload")

    def _reload_tokens(self) -> None:
        if self.options.api_tokens is None:
            return
        problem = self.keyring.reload()
        if problem is None:
            self.log.info("api tokens reloaded", tokens=self.keyring.report())
        else:
            self.log.error("api tokens file does not load; the last good tokens stay in force", problem=problem)

    def stop(self) -> None:
        """Set the stop event first: nothing after it (a log line, a notify) can keep the daemon running."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.passes.wake()
        self.reporter.stop()
        self.log.info("stopping", grace_s=self.options.stop_grace)

    def _fail(self) -> None:
        self.exit_code = 1
        self.stop()


def run_daemon(*, options: DaemonOptions) -> int:
    """Entry point for the CLI: 0 after a clean stop, 1 when the lock was lost (refusal raises)."""
    return asyncio.run(Daemon(options=options).run())
