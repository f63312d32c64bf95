"""Issue 16 items 1, 6 and 7 at the store, on a real SQLite file and the real PostgreSQL 15: suspending
cancels queued jobs and writes events with the actor; a held job is claimed by no one (the fleet flag
too, except by `destroy`'s own workers) and an apply does not wait for it; expiry is a comparison; pass
requests go pending → running → done; an older database migrates; suspensions survive export/import."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.models import JobStatus, PassRequestStatus, ResourceStatus
from reconciler.portable import export_document, import_document
from reconciler.store import open_store
from reconciler.store.migrations import LATEST, MIGRATIONS
from tests.integration.test_store_backends import SPEC, at, created, request_for, store  # noqa: F401

ACTOR = "cli:ann@ops"
OTHER = SPEC.model_copy(update={"resource_id": "other"})


def test_suspend_cancels_the_queued_job_puts_the_row_back_and_records_who_and_why(store):  # noqa: F811
    created(store)
    store.enqueue(requests=[request_for(SPEC.model_copy(update={"deploy_ref": "v2"}), version=2)],
                  now=at(2), commit=None)
    assert store.get_resource("acme-prod").status is ResourceStatus.PROVISIONING

    cancelled = store.suspend(resource_ids=["acme-prod"], reason="INC-42", actor=ACTOR, until=None, now=at(3))

    assert len(cancelled) == 1 and store.get_job(cancelled[0]).status is JobStatus.CANCELLED
    row = store.get_resource("acme-prod")
    assert row.status is ResourceStatus.ACTIVE and row.target_hash == row.spec_hash  # what it was: nothing ran
    kinds = {event.kind: event for event in store.events("acme-prod")}
    assert kinds["suspended"].details == {"reason": "INC-42", "until": None}
    assert kinds["suspended"].actor == ACTOR and kinds["cancelled"].actor == ACTOR
    assert "cancelled before it ran: suspended by cli:ann@ops: INC-42" in kinds["cancelled"].message
    held = store.suspensions()
    assert held.resources["acme-prod"].reason == "INC-42" and held.fleet is None
    assert store.resume(resource_ids=["acme-prod", "other"], actor=ACTOR, reason="done", now=at(4)) == ["acme-prod"]
    assert not store.suspensions().resources


def test_a_held_job_is_claimed_by_no_one_until_its_suspension_lapses(store):  # noqa: F811
    store.suspend(resource_ids=["acme-prod"], reason="r", actor=ACTOR, until=at(100), now=at(0))
    store.enqueue(requests=[request_for(), request_for(OTHER)], now=at(1), commit=None)  # planned before, say

    picked = store.claim(worker="w", now=at(2), lease_until=at(30), limit=5)
    assert [job.resource_id for job in picked] == ["other"]
    assert store.count_open(resource_ids=["acme-prod"]) == 1  # real now is after at(100): lapsed
    assert [job.resource_id for job in store.claim(worker="w", now=at(101), lease_until=at(130))] == ["acme-prod"]


def test_the_fleet_flag_holds_every_job_except_for_destroys_workers(store):  # noqa: F811
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    cancelled = store.suspend_fleet(reason="outage", actor=ACTOR, until=None, now=at(1))
    assert len(cancelled) == 1 and store.in_flight() == set()
    assert store.fleet_suspension(now=at(2)).reason == "outage"
    assert [(event.kind, event.actor) for event in store.events("*")] == [("suspended", ACTOR)]

    store.enqueue(requests=[request_for(OTHER)], now=at(2), commit=None)
    assert store.claim(worker="w", now=at(3), lease_until=at(30)) == []
    assert store.count_open() == 0  # an apply waits for nothing it could not run
    assert [job.resource_id for job in store.claim(worker="w", now=at(3), lease_until=at(30),
                                                   fleet_override=True)] == ["other"]
    assert store.resume_fleet(actor=ACTOR, reason=None, now=at(4)) is True
    assert store.fleet_suspension() is None and store.resume_fleet(actor=ACTOR, reason=None, now=at(5)) is False


def test_a_pass_request_goes_pending_running_done_and_is_taken_once(store):  # noqa: F811
    request_id = store.request_pass(resource_ids=["b", "a"], actor=ACTOR, now=at(0))
    pending = store.pending_requests()
    assert [(r.request_id, r.resource_ids, r.actor) for r in pending] == [(request_id, ("a", "b"), ACTOR)]
    assert store.take_request(request_id=request_id, now=at(1)) is True
    assert store.take_request(request_id=request_id, now=at(1)) is False and store.pending_requests() == []
    store.answer_request(request_id=request_id, job_ids=["job-1"], notes=["a: suspended"], error=None, now=at(2))
    answer = store.get_request(request_id)
    assert (answer.status, answer.job_ids, answer.notes) == (PassRequestStatus.DONE, ("job-1",), ("a: suspended",))
    assert [event.kind for event in store.events("a")] == ["pass_requested"]
    assert store.prune_requests(before=at(2)) == 0 and store.prune_requests(before=at(3)) == 1
    assert store.get_request(request_id) is None


def test_a_database_of_the_previous_schema_migrates_and_keeps_its_rows(tmp_path):
    import sqlite_utils

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        db = sqlite_utils.Database(conn)
        for migration in MIGRATIONS[:3]:
            migration(db)
        conn.execute("PRAGMA user_version = 3")
        conn.execute("INSERT INTO resources (resource_id, owner, region, runtime_target, deploy_ref, status)"
                     " VALUES ('old', 'o', 'r', 'local', 'v1', 'active')")
    store = open_store(url=str(path))
    try:
        assert store.get_resource("old").status is ResourceStatus.ACTIVE
        store.suspend(resource_ids=["old"], reason="r", actor=ACTOR, until=None, now=at(0))
        assert list(store.suspensions().resources) == ["old"]
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_suspensions_and_the_fleet_flag_survive_export_and_import(tmp_path, pg_url):
    source = open_store(url=str(tmp_path / "a.db"))
    created(source)
    source.suspend(resource_ids=["acme-prod"], reason="INC-42", actor=ACTOR, until=at(600), now=at(2))
    source.suspend_fleet(reason="outage", actor=ACTOR, until=None, now=at(3))
    document = export_document(store=source)
    assert document["tables"]["suspensions"][0]["reason"] == "INC-42"
    for url in (str(tmp_path / "b.db"), pg_url):
        target = open_store(url=url)
        try:
            import_document(store=target, text=__import__("json").dumps(document), name="x.json", replace=False)
            assert target.suspensions() == source.suspensions()
        finally:
            target.close()
    source.close()


def test_an_export_without_the_new_tables_still_imports(tmp_path):
    source = open_store(url=str(tmp_path / "a.db"))
    created(source)
    document = export_document(store=source)
    source.close()
    for table in ("suspensions", "fleet_flags"):
        del document["tables"][table]
    target = open_store(url=str(tmp_path / "b.db"))
    try:
        counts = import_document(store=target, text=__import__("json").dumps(document), name="x", replace=False)
        assert counts["suspensions"] == 0 and target.get_resource("acme-prod") is not None
    finally:
        target.close()


@pytest.mark.parametrize("until", [None, at(50)])
def test_the_suspensions_read_back_as_written(store, until):  # noqa: F811
    store.suspend(resource_ids=["x", "y"], reason="why", actor=ACTOR, until=until, now=at(1))
    held = store.suspensions()
    assert sorted(held.resources) == ["x", "y"] and held.resources["x"].until == until
    assert held.resources["x"].since == at(1)
