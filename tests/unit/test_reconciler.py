"""The daemon's pass (engine.Reconciler) on a real SQLite file: idle resyncs are answered, changes are not."""

from __future__ import annotations

from reconciler.engine import Reconciler
from reconciler.models import JobResult, iso, utcnow
from reconciler.plan import PlanPolicy
from reconciler.store import open_store
from tests.support import write_resources


def test_idle_passes_are_skipped_and_any_change_is_planned(tmp_path):
    write_resources(tmp_path, {"a": {}, "b": {}})
    store = open_store(url=str(tmp_path / "state.db"))
    # settle=0: files written a moment ago count at once (the settle rules are tested in test_settle.py)
    reconciler = Reconciler(store=store, desired_dir=tmp_path / "desired", policy=PlanPolicy(), settle=0)
    first = reconciler.reconcile_once()
    assert (first.skipped, first.queued) == (False, 2)
    assert not reconciler.reconcile_once().skipped  # the queue changed under the last plan
    assert reconciler.reconcile_once().skipped  # nothing changed since

    job = store.claim(worker="w", now=iso(utcnow()), lease_until="9999")[0]
    assert not reconciler.reconcile_once().skipped  # a claim is a change
    store.finish(job=job, worker="w", result=JobResult(True, 0, "http://u/", None), now=iso(utcnow()))
    assert not reconciler.reconcile_once().skipped  # and so is a finish
    assert reconciler.reconcile_once().skipped

    write_resources(tmp_path, {"a": {"deploy_ref": "v2"}, "b": {}})
    changed = reconciler.reconcile_once()
    assert not changed.skipped and [c.resource_id for c in changed.plan.changes] == ["a"]

    reconciler.reconcile_once()
    store.declare_api(resource_id="c", spec={"resource_id": "c", "owner": "o", "region": "r",
                                             "runtime_target": "local", "deploy_ref": "v1", "params": {},
                                             "protected": False}, requests=[], now=iso(utcnow()))
    assert not reconciler.reconcile_once().skipped  # an API-declared spec is a change

    reconciler.reload()
    assert not reconciler.reconcile_once().skipped  # a forced pass (SIGHUP, drift loop) always plans


def test_a_pass_that_catches_a_file_mid_truncate_tears_nothing_down(tmp_path):
    """Chaos seed 28 (SQLite, under load): an editor's non-atomic save truncates fleet-a.yaml while a
    pass (woken by a retry, not by the file) reads it. Caught inside open(O_TRUNC), the file shows size 0
    with its old mtime, read alike before and after; that old mtime made the empty file count at once,
    and the pass tore down every resource in it. The pass must keep the last good state instead."""
    import os

    from reconciler.watch import WriteTracker
    from tests.unit.test_settle import _caught_mid_truncate, _old

    write_resources(tmp_path, {"a": {}, "b": {}})
    write_resources(tmp_path, {"c": {}}, name="other.yaml")
    for name in ("fleet.yaml", "other.yaml"):
        _old(tmp_path / "desired" / name)
    store = open_store(url=str(tmp_path / "state.db"))
    tracker = WriteTracker()
    tracker.active = True  # the watcher runs; the truncation's IN_MODIFY is not handled yet
    reconciler = Reconciler(store=store, desired_dir=tmp_path / "desired", policy=PlanPolicy(), settle=5,
                            writes=tracker)
    assert reconciler.reconcile_once().queued == 3
    while jobs := store.claim(worker="w", now=iso(utcnow()), lease_until="9999"):
        for job in jobs:
            store.finish(job=job, worker="w", result=JobResult(True, 0, "http://u/", None), now=iso(utcnow()))
    assert {row.status for row in store.load_observed().values()} == {"active"}

    _caught_mid_truncate(tmp_path / "desired" / "fleet.yaml")
    held = reconciler.reconcile_once()
    assert held.unsettled is not None and held.queued == 0
    assert not [change for change in held.plan.changes if change.action == "delete"]
    assert os.stat(tmp_path / "desired" / "fleet.yaml").st_size == 0
