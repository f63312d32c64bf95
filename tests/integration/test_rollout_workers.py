"""apply's workers while it drives rollouts (issue 17, P9): one pool for all the waves, claiming only the jobs
rollouts launched (a scope the database answers by index, not an id list per claim), and telling the main
thread when a wave's jobs are done. Real SQLite and PostgreSQL, real scripts in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.models import ROLLOUT_JOBS, JobRequest, ResourceSpec, spec_hash
from reconciler.rollout.model import RolloutState
from reconciler.rollouts import Driver, start_rollout
from reconciler.store import open_store
from reconciler.store.sqlite import SQLiteStore
from reconciler.workers import EngineConfig, WorkerPool
from tests.integration.test_rollout_store import IDS, fleet_at_v1, now, plan
from tests.support import make_project

LEASE = "2999-01-01T00:00:00.000000Z"
# a ledger line per run; SLOW makes one resource's script take a while
SCRIPT = """#!/usr/bin/env bash
echo "$RESOURCE_ID $DEPLOY_REF" >> "$CONTROL/ledger.log"
if [ "$RESOURCE_ID" = "${SLOW:-}" ]; then sleep 1.5; fi
echo "http://127.0.0.1:9/$RESOURCE_ID"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    return str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def other_job(store) -> None:
    """A job no rollout launched: a new resource's create."""
    spec = ResourceSpec(resource_id="other", owner="acme", region="eu", deploy_ref="v1")
    store.enqueue(requests=[JobRequest("other", "create", "new", spec.model_dump(), target_hash=spec_hash(spec))],
                  now=now(), commit=None)


def rolled_out(store) -> Driver:
    """The 6-resource fleet at v1 and a rollout of v2 (waves 1, 2, 3) whose first wave is queued."""
    fleet_at_v1(store)
    assert start_rollout(store=store, view=plan(store, "v2"), commit=None, actor="cli:test@host") is not None
    driver = Driver(store=store, actor="cli:test@host", check=lambda pairs: [])
    driver.tick()
    return driver


def test_the_rollouts_scope_claims_only_the_jobs_rollouts_launched(url):
    store = open_store(url=url)
    try:
        rolled_out(store)
        other_job(store)
        assert store.count_open(resource_ids=ROLLOUT_JOBS) == 1 and store.count_open() == 2
        (job,) = store.claim(worker="w", now=now(), lease_until=LEASE, resource_ids=ROLLOUT_JOBS, limit=10)
        (member,) = [m for r in store.open_rollouts() for m in store.rollout_members(r.rollout_id) if m.job_id]
        assert job.job_id == member.job_id and job.resource_id in IDS
        assert store.claim(worker="w", now=now(), lease_until=LEASE, resource_ids=ROLLOUT_JOBS) == []
        assert store.count_open(resource_ids=ROLLOUT_JOBS) == 1  # running, under our lease
        (rest,) = store.claim(worker="w", now=now(), lease_until=LEASE, limit=10)
        assert rest.resource_id == "other"
    finally:
        store.close()


def project_store(tmp_path: Path):
    project = make_project(tmp_path / "p", provision=SCRIPT)
    store = open_store(url=str(project / "state.db"))
    config = EngineConfig(provision_dir=project / "provision", work_dir=project / "work",
                          pass_env=("CONTROL", "SLOW"))
    return project, store, config


def ledger(project: Path) -> list[str]:
    path = project / "control" / "ledger.log"
    return path.read_text().splitlines() if path.exists() else []


def test_one_pool_runs_every_wave_and_says_when_each_is_done(tmp_path, monkeypatch):
    project, store, config = project_store(tmp_path)
    monkeypatch.setenv("CONTROL", str(project / "control"))
    driver = rolled_out(store)
    other_job(store)
    finished = []
    pool = WorkerPool(store=store, config=config, parallelism=3, on_finish=finished.append, idle_poll=0.05)
    pool.work_in(scope=ROLLOUT_JOBS)
    try:
        waves = []
        for _ in range(6):
            mark = pool.mark()
            pool.wake()
            assert pool.wait_quiet(after=mark, timeout=30)
            waves.append(sorted(line.split()[0] for line in ledger(project)))
            (rollout, _), = driver.tick()
            if rollout.state is RolloutState.COMPLETED:
                break
    finally:
        pool.stop_claiming()
        pool.wake()
        pool.join()
    assert [len(wave) for wave in waves] == [1, 3, 6]  # cumulative: each wave ran when the last was done
    assert sorted(line.split()[0] for line in ledger(project)) == sorted(IDS)  # each once; "other" never
    assert len(finished) == 6 and not pool.deaths
    assert {job.resource_id for job in store.open_jobs().values()} == {"other"}
    store.close()


def test_quiet_waits_for_a_running_script_and_stop_lets_it_finish(tmp_path, monkeypatch):
    project, store, config = project_store(tmp_path)
    monkeypatch.setenv("CONTROL", str(project / "control"))
    rolled_out(store)
    (slow,) = [m.resource_id for r in store.open_rollouts() for m in store.rollout_members(r.rollout_id) if m.job_id]
    monkeypatch.setenv("SLOW", slow)
    finished = []
    pool = WorkerPool(store=store, config=config, parallelism=2, on_finish=finished.append, idle_poll=0.05)
    pool.work_in(scope=ROLLOUT_JOBS)
    mark = pool.mark()
    pool.wake()
    assert not pool.wait_quiet(after=mark, timeout=0.5)  # the other worker finds nothing, but one holds a job
    pool.stop_claiming()  # as a first Ctrl-C: the running script finishes and is recorded
    pool.wake()
    started = time.monotonic()
    pool.join()
    assert time.monotonic() - started < 10
    assert [(item.job.resource_id, item.recorded, item.result.ok) for item in finished] == [(slow, True, True)]
    assert store.count_open(resource_ids=ROLLOUT_JOBS) == 0
    store.close()


def test_a_worker_that_dies_while_apply_drives_a_rollout_stops_it_and_is_reported(tmp_path):
    """A bug in the scoped claim (injected by a subclass of the real SQLite store) must not leave apply
    ticking a rollout whose jobs nobody runs: the death stops the drive and is kept for the summary."""
    from types import SimpleNamespace

    from reconciler.apply import _Interrupts, _Work
    from reconciler.rolloutrun import Follow

    class Buggy(SQLiteStore):
        def claim(self, **kwargs):
            if kwargs.get("resource_ids") is ROLLOUT_JOBS:
                raise KeyError("bug in claim")
            return super().claim(**kwargs)

    project = make_project(tmp_path / "p", provision=SCRIPT)
    store = Buggy(path=project / "state.db")
    fleet_at_v1(store)
    assert start_rollout(store=store, view=plan(store, "v2"), commit=None, actor="cli:test@host") is not None
    options = SimpleNamespace(view=SimpleNamespace(progress_to_stderr=True), run=SimpleNamespace(parallelism=2))
    work = _Work(store=store, config=EngineConfig(provision_dir=project / "provision", work_dir=project / "work"),
                 options=options, interrupts=_Interrupts())
    lines: list[str] = []
    follow = Follow(store=store, workers=work.rollout_workers, stopped=lambda: work.stopped, say=lines.append)
    started = time.monotonic()
    follow.follow()
    assert time.monotonic() - started < 20
    assert work.deaths and all("KeyError: 'bug in claim'" in death for death in work.deaths)
    assert [r.state for r in store.open_rollouts()] == [RolloutState.RUNNING]  # left for the next apply
    store.close()


def test_the_daemons_loop_steps_again_once_the_workers_are_quiet_not_every_look(tmp_path):
    """A step reads every member of a rollout: while the wave's jobs run the daemon's loop waits for its
    workers to go quiet (or BUSY), instead of stepping every TICK. The pool here is a stand-in that only
    reports quiet when told (the real pool's quiet is tested above)."""
    import asyncio

    from reconciler.daemon.rollouts import BUSY, RolloutLoop
    from reconciler.metrics import Metrics
    from reconciler.supervise import Outages

    class Pool:
        quiet = False

        def wake(self) -> None: ...
        def mark(self) -> int: return 7
        def quiet_since(self, mark: int) -> bool: return self.quiet and mark == 7

    class Log:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    store = open_store(url=str(tmp_path / "state.db"))
    fleet_at_v1(store)
    assert start_rollout(store=store, view=plan(store, "v2"), commit=None, actor="cli:test@host") is not None
    pool = Pool()
    loop = RolloutLoop(store=store, outages=Outages(log=Log()), log=Log(), may_run=lambda: True, workers=pool,
                       actor="daemon:test", on_change=lambda: None, held=frozenset, metrics=Metrics())
    assert loop._due()  # never stepped
    asyncio.run(loop.step())  # wave 1 queued
    assert store.count_open(resource_ids=ROLLOUT_JOBS) == 1
    assert not loop._due()  # its job runs: not before the workers are quiet
    pool.quiet = True
    assert loop._due()
    pool.quiet = False
    loop._stepped_at -= BUSY
    assert loop._due()  # or after BUSY, whatever the workers say
    store.close()
