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
