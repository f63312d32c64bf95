"""Rollouts at the store (issue 17), on SQLite and PostgreSQL: a rollout driven to completion through the real
queue (each transition one transaction), skipped held members, the operators' verbs recorded with their actor,
export/import of the rollout tables, and a database from before the rollouts migration."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from reconciler.engine import Fleet, PlanView, job_requests, plan_fleet
from reconciler.errors import ReconcilerError
from reconciler.models import JobResult, ResourceSpec
from reconciler.plan import PlanPolicy
from reconciler.policy import Governance, Policy
from reconciler.portable import export_document, import_document
from reconciler.rollout.model import MemberState, RolloutPolicy, RolloutState, WaveTarget
from reconciler.rolloutctl import control
from reconciler.rollouts import Driver, start_rollout
from reconciler.spec import DesiredState
from reconciler.store import open_store

IDS = [f"r{i}" for i in range(6)]
POLICY = RolloutPolicy(waves=(WaveTarget(count=1), WaveTarget(percent=50.0)), bake=0.0, min_changes=3)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    return str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def desired(ref: str) -> DesiredState:
    return DesiredState(resources={rid: ResourceSpec(resource_id=rid, owner="acme", region="eu", deploy_ref=ref)
                                   for rid in IDS})


def plan(store, ref: str, *, rollout: RolloutPolicy | None = POLICY) -> PlanView:
    fleet = Fleet(store.load_observed(), store.in_flight(), {}, holdings=store.holdings())
    return plan_fleet(desired=desired(ref), fleet=fleet, policy=PlanPolicy(),
                      governance=Governance(policy=Policy(file="policy.yaml", rollout=rollout), budgets=True))


def run_queue(store, *, ok: bool = True) -> list[str]:
    """Claim and finish every queued job (a worker, without scripts); returns the ids it ran."""
    ran = []
    while jobs := store.claim(worker="w", now=now(), lease_until="2999-01-01T00:00:00.000000Z", limit=50):
        for job in jobs:
            store.finish(job=job, worker="w", result=JobResult(ok, 0 if ok else 3,
                                                              f"http://127.0.0.1:9/{job.resource_id}", None if ok
                                                              else "boom"), now=now())
            ran.append(job.resource_id)
    return ran


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fleet_at_v1(store) -> None:
    view = plan(store, "v1", rollout=None)
    store.enqueue(requests=job_requests(view=view), now=now(), commit=None)
    run_queue(store)


def test_a_rollout_runs_wave_by_wave_through_the_queue_and_is_exported(url, tmp_path):
    store = open_store(url=url)
    try:
        fleet_at_v1(store)
        view = plan(store, "v2")
        assert view.rollout is not None and view.rollout.sizes == (1, 2, 3)
        assert job_requests(view=view) == []  # nothing queued at once: the rollout queues its waves
        rollout = start_rollout(store=store, view=view, commit=None, actor="cli:test@host")
        assert rollout is not None
        assert {n.message for n in plan(store, "v2").plan.waiting} == {f"rollout: wave {k} of 3" for k in (1, 2, 3)}
        driver, order = Driver(store=store, actor="cli:test@host", check=lambda pairs: []), []
        for _ in range(10):
            driver.tick()
            ran = run_queue(store)
            if not ran:
                break
            order.append(sorted(ran))
        (after,) = store.list_rollouts()
        assert after.state is RolloutState.COMPLETED and [len(wave) for wave in order] == [1, 2, 3]
        assert {m.state for m in store.rollout_members(after.rollout_id)} == {MemberState.SUCCEEDED}
        assert {row.deploy_ref for row in store.load_observed().values()} == {"v2"}
        document = export_document(store=store)
        assert len(document["tables"]["rollout_members"]) == 6
    finally:
        store.close()
    copy = open_store(url=str(tmp_path / "copy.db"))
    try:
        import json

        import_document(store=copy, text=json.dumps(document), name="export.json", replace=False)
        assert [r.state for r in copy.list_rollouts()] == [RolloutState.COMPLETED]
    finally:
        copy.close()


def test_two_proposals_at_once_make_one_rollout(url):
    first, second = open_store(url=url), open_store(url=url)  # a daemon's pass and an apply
    try:
        fleet_at_v1(first)
        one, other = plan(first, "v2"), plan(second, "v2")  # both planned before either wrote
        assert start_rollout(store=first, view=one, commit=None, actor="daemon:h") is not None
        assert start_rollout(store=second, view=other, commit=None, actor="cli:me@h") is None
        assert len(first.list_rollouts()) == 1 and len(first.holdings()) == len(IDS)
    finally:
        first.close()
        second.close()


def test_held_members_are_skipped_and_reported_and_verbs_are_recorded(url):
    store = open_store(url=url)
    try:
        fleet_at_v1(store)
        view = plan(store, "v2")
        rollout = start_rollout(store=store, view=view, commit=None, actor="cli:test@host")
        members = store.rollout_members(rollout.rollout_id)
        held = {m.resource_id for m in members if m.wave == 3}
        driver = Driver(store=store, actor="daemon:host", check=lambda pairs: [], held=lambda: held)
        for _ in range(10):
            driver.tick()
            if not run_queue(store):
                break
        states = {m.resource_id: m.state for m in store.rollout_members(rollout.rollout_id)}
        assert {rid for rid, state in states.items() if state is MemberState.SKIPPED} == held
        events = [e for e in store.events("*") if e.kind == "rollout_skipped"]
        assert len(events) == 1 and all(rid in events[0].message for rid in held)
        assert store.get_rollout(rollout.rollout_id).state is RolloutState.COMPLETED
        with pytest.raises(ReconcilerError, match="only a running rollout can be paused"):
            control(store=store, rollout_id=rollout.rollout_id, verb="pause", revert=False, actor="cli:me@h")
        assert store.get_rollout(rollout.rollout_id).state is RolloutState.COMPLETED  # nothing written
    finally:
        store.close()


def test_pause_and_abort_are_transitions_with_their_actor(url):
    store = open_store(url=url)
    try:
        fleet_at_v1(store)
        rollout = start_rollout(store=store, view=plan(store, "v2"), commit=None, actor="cli:test@host")
        control(store=store, rollout_id=rollout.rollout_id, verb="pause", revert=False, actor="cli:me@h")
        Driver(store=store, check=lambda pairs: []).tick()
        assert run_queue(store) == []  # paused before its first wave: nothing starts
        control(store=store, rollout_id=rollout.rollout_id, verb="abort", revert=False, actor="cli:me@h")
        assert store.get_rollout(rollout.rollout_id).state is RolloutState.ABORTED
        kinds = [(e.kind, e.actor) for e in store.events("*") if e.kind.startswith("rollout_")]
        assert ("rollout_pause", "cli:me@h") in kinds and ("rollout_abort", "cli:me@h") in kinds
        assert {n.message for n in plan(store, "v2").plan.waiting} == {f"rollout: aborted (wave {k} of 3)"
                                                                        for k in (1, 2, 3)}
    finally:
        store.close()


def test_promote_skips_the_rest_of_the_bake_and_resume_goes_on(url):
    from dataclasses import replace

    store = open_store(url=url)
    try:
        fleet_at_v1(store)
        rollout = start_rollout(store=store, view=plan(store, "v2", rollout=replace(POLICY, bake=3600.0)),
                                commit=None, actor="cli:test@host")
        driver = Driver(store=store, check=lambda pairs: [])
        driver.tick()
        assert len(run_queue(store)) == 1  # the canary
        driver.tick()
        assert run_queue(store) == []  # baking for an hour
        control(store=store, rollout_id=rollout.rollout_id, verb="pause", revert=False, actor="cli:me@h")
        control(store=store, rollout_id=rollout.rollout_id, verb="promote", revert=False, actor="cli:me@h")
        driver.tick()
        assert run_queue(store) == []  # promoted, but paused: no wave starts
        control(store=store, rollout_id=rollout.rollout_id, verb="resume", revert=False, actor="cli:me@h")
        driver.tick()
        assert len(run_queue(store)) == 2  # wave 2 without the rest of its predecessor's bake
        kinds = [e.kind for e in store.events("*") if e.kind.startswith("rollout_")]
        assert kinds[-3:] == ["rollout_pause", "rollout_promote", "rollout_resume"]
    finally:
        store.close()


def test_a_sqlite_database_from_before_rollouts_migrates(tmp_path):
    from reconciler.store import migrations

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    before = migrations.MIGRATIONS.index(migrations._v9_rollouts)
    for number in range(before):
        migrations.MIGRATIONS[number](db)
    conn.execute(f"PRAGMA user_version = {before}")
    conn.commit()
    conn.close()
    store = open_store(url=str(path))
    try:
        assert store.list_rollouts() == [] and store.holdings() == {}
    finally:
        store.close()
