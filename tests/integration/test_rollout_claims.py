"""ROLLOUT_JOBS claims (EXISTS a member whose job it is) by concurrent claimers, each with its own
store/connection (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: its write lock): no job is claimed twice."""

from __future__ import annotations

import threading

import pytest

from reconciler.models import ROLLOUT_JOBS
from reconciler.rollout.model import RolloutPolicy, WaveTarget
from reconciler.rollouts import Driver, start_rollout
from reconciler.store import open_store
from tests.integration.test_rollout_store import fleet_at_v1, now, plan

LEASE = "2999-01-01T00:00:00.000000Z"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    return str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.mark.parametrize("limit", [1, 3])
def test_two_claimers_never_take_one_rollout_job_twice(url, limit):
    store = open_store(url=url)
    try:
        fleet_at_v1(store)
        one_wave = RolloutPolicy(waves=(WaveTarget(percent=100.0),), bake=0.0, min_changes=3)
        assert start_rollout(store=store, view=plan(store, "v2", rollout=one_wave), commit=None,
                             actor="cli:t@h") is not None
        Driver(store=store, actor="cli:t@h", check=lambda pairs: []).tick()
        expected = {m.job_id for r in store.open_rollouts() for m in store.rollout_members(r.rollout_id) if m.job_id}
        assert len(expected) == 6
    finally:
        store.close()
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        mine = open_store(url=url)
        try:
            barrier.wait()
            for _ in range(20):
                jobs = mine.claim(worker=name, now=now(), lease_until=LEASE, resource_ids=ROLLOUT_JOBS, limit=limit)
                claimed[name].extend(job.job_id for job in jobs)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = claimed["a"] + claimed["b"]
    assert sorted(every) == sorted(expected), claimed
