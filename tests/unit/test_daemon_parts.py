"""The daemon's runnables one at a time (issue 14): a real SQLite store, real processes, no daemon around them.

The subprocess tests (e2e/test_daemon.py and the like) show the parts working together; these show each
part's own rule cheaply: the pass loop coalesces, the election takes over a dead holder's lock and
refuses a live one, the supervisor stops in reverse order, the drift loop checks only its subset.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import threading
from datetime import timedelta

import pytest

from reconciler.daemon import LOCK_NAME, DaemonRefused
from reconciler.daemon.election import SingleDaemonLock
from reconciler.daemon.passes import PassLoop
from reconciler.daemon.reporter import SystemdReporter
from reconciler.drift import DriftLoop, DriftSettings, run_drift_pass
from reconciler.engine import Reconciler
from reconciler.liveness import HOST, owner_is_dead
from reconciler.logs import get_logger
from reconciler.metrics import Metrics
from reconciler.models import ResourceSpec, iso, utcnow
from reconciler.plan import PlanPolicy
from reconciler.store import open_store
from reconciler.supervise import Outages, Supervisor
from reconciler.systemd import Notifier
from tests.integration.test_store_backends import created
from tests.support import make_project, write_resources


def dead_pid() -> int:
    """The pid of a process that ran and was reaped (the kernel does not hand it out again at once)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_owner_is_dead_only_for_a_gone_process_of_this_host():
    gone = dead_pid()
    assert owner_is_dead(HOST, gone) and owner_is_dead(HOST, str(gone))
    assert not owner_is_dead(HOST, os.getpid())
    assert not owner_is_dead("another-host", gone)  # its pid means nothing here: wait out the lease
    assert not owner_is_dead(HOST, None) and not owner_is_dead(None, gone)


def _lock(store, *, pid: int, outages=None, lost=None) -> SingleDaemonLock:
    return SingleDaemonLock(store=store, db="state.db", worker_id=f"{HOST}:{os.getpid()}:me", ttl=15.0,
                            outages=outages or Outages(log=get_logger()), log=get_logger(),
                            on_lost=lost or (lambda: None), on_resumed=lambda: None)


def _held_by(store, *, pid: int) -> None:
    now = utcnow()
    assert store.acquire_lock(name=LOCK_NAME, holder=f"{HOST}:{pid}:other", pid=pid, host=HOST, now=iso(now),
                              until=iso(now + timedelta(seconds=60)), holder_dead=lambda host, pid: False) is None


def test_single_daemon_lock_takes_over_a_dead_holder_and_refuses_a_live_one(tmp_path):
    store = open_store(url=str(tmp_path / "state.db"))
    _held_by(store, pid=dead_pid())
    lock = _lock(store, pid=os.getpid())
    lock.prepare()  # the holder was killed: no need to wait out its minute
    assert lock.may_claim() and lock.problems() == [] and lock.holder()["this_daemon"]

    other = open_store(url=str(tmp_path / "state.db"))
    with pytest.raises(DaemonRefused, match=f"pid {os.getpid()} on {HOST}"):
        SingleDaemonLock(store=other, db="state.db", worker_id=f"{HOST}:{os.getpid()}:second", ttl=15.0,
                         outages=Outages(log=get_logger()), log=get_logger(), on_lost=lambda: None,
                         on_resumed=lambda: None).prepare()
    asyncio.run(lock.close())
    assert store.lock_holder(name=LOCK_NAME, now=iso(utcnow())) is None


class CountingReconciler(Reconciler):
    """The real engine, counting its passes; the first one waits until the test lets it finish."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.passes = 0
        self.finished = 0
        self.first_running = threading.Event()
        self.release = threading.Event()

    def reconcile_once(self):
        self.passes += 1
        if self.passes == 1:
            self.first_running.set()
            self.release.wait(30)
        result = super().reconcile_once()
        self.finished += 1
        return result


def test_requests_during_a_pass_coalesce_into_one_more_pass(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}})
    store = open_store(url=str(project / "state.db"))
    reconciler = CountingReconciler(store=store, desired_dir=project / "desired", policy=PlanPolicy(),
                                    provision_dir=project / "provision", settle=0.0)
    log, outages = get_logger(), Outages(log=get_logger())
    reporter = SystemdReporter(notifier=Notifier(address=""), busy=lambda: 0, busy_timeout=30.0, log=log)
    woken: list[int] = []
    loop = PassLoop(reconciler=reconciler, election=_lock(store, pid=os.getpid()), outages=outages,
                    reporter=reporter, metrics=Metrics(), wake_workers=lambda: woken.append(1),
                    desired=project / "desired", resync=3600.0, log=log)

    async def scenario() -> None:
        stop = asyncio.Event()
        loop.prepare()
        task = asyncio.create_task(loop.run(stop))
        loop.request("first")
        await asyncio.to_thread(reconciler.first_running.wait, 30)
        for number in range(50):
            loop.request(f"save {number}")
        reconciler.release.set()
        while reconciler.finished < 2:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # room for a wrong third pass to show
        stop.set()
        loop.wake()
        await task
        await loop.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert reconciler.passes == 2  # fifty requests while the first ran: one more pass, not fifty
    assert woken and reporter.ready  # the first pass queued "a" (the workers were told) and READY was due


def test_supervisor_closes_in_reverse_order_and_a_crash_ends_the_run():
    events: list[str] = []

    class Part:
        def __init__(self, name: str, *, crash: bool = False) -> None:
            self.name, self.crash = name, crash

        def prepare(self) -> None:
            events.append(f"prepare {self.name}")

        async def run(self, stop: asyncio.Event) -> None:
            if self.crash:
                raise ZeroDivisionError("a bug")
            await stop.wait()

        async def close(self) -> None:
            events.append(f"close {self.name}")

    async def scenario() -> None:
        stop = asyncio.Event()
        supervisor = Supervisor(log=get_logger(), on_crash=stop.set)
        supervisor.start([Part("lock"), Part("workers"), Part("api", crash=True)], stop=stop)
        await asyncio.wait_for(stop.wait(), 10)  # the crash stopped everything
        await supervisor.stop()

    asyncio.run(scenario())
    assert events == ["prepare lock", "prepare workers", "prepare api", "close api", "close workers", "close lock"]


def test_a_drift_loop_checks_only_its_subset_at_its_own_cadence(tmp_path):
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    store = open_store(url=str(tmp_path / "state.db"))
    for name in ("a", "b", "c"):
        created(store, ResourceSpec(resource_id=name, owner="o", region="r", deploy_ref="v1"), url=url)
    reports = []

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = DriftLoop(store=store, settings=DriftSettings(interval=0.05, resources=frozenset({"a", "c"})),
                         outages=Outages(log=get_logger()), log=get_logger(), metrics=Metrics(),
                         may_run=lambda: True, on_report=reports.append)
        task = asyncio.create_task(loop.run(stop))
        while len(reports) < 3:
            await asyncio.sleep(0.02)
        stop.set()
        await task

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
        whole = asyncio.run(run_drift_pass(store=store, concurrency=10, timeout=5.0, unhealthy_after=3))
    finally:
        server.shutdown()
    assert {report.checked for report in reports} == {2}
    assert {result.resource_id for result in reports[0].results} == {"a", "c"}
    assert whole.checked == 3 and not whole.failures


def test_wake_ups_run_on_the_loop_replace_each_other_and_repeat():
    """The pass loop's wake-ups on APScheduler: a retry asked again replaces the pending one; the resync
    repeats; every request arrives on the event loop's own thread (never an executor thread)."""
    import asyncio
    import threading

    from reconciler.daemon.wakeups import WakeUps

    async def scenario():
        seen: list[tuple[str, bool]] = []
        wakeups = WakeUps(request=lambda reason: seen.append((reason, threading.current_thread() is main)))
        wakeups.start(asyncio.get_running_loop())
        wakeups.once("retry", delay=5.0, reason="late retry")
        wakeups.once("retry", delay=0.1, reason="retry due")  # replaces the 5 s one
        wakeups.every("resync", seconds=0.3, jitter=0.0, reason="resync")
        await asyncio.sleep(1.1)
        pending = wakeups.pending("retry")
        wakeups.stop()
        return seen, pending

    main = threading.current_thread()
    seen, pending = asyncio.run(scenario())
    reasons = [reason for reason, _ in seen]
    assert reasons.count("retry due") == 1 and "late retry" not in reasons and not pending
    assert reasons.count("resync") >= 2
    assert all(on_loop for _, on_loop in seen)
