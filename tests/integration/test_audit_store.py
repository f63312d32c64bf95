"""The audit trail in the store, on both backends: the actor of jobs and events, the fleet-wide audit
query, retention (prune) and an older database gaining the column (its events read as actor-less)."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.errors import StoreConflict
from reconciler.health import CheckResult
from reconciler.models import FLEET_ID, JobAction, JobRequest, JobResult, ResourceSpec, spec_hash
from reconciler.store import open_store
from reconciler.store.migrations import LATEST, MIGRATIONS, PG_MIGRATIONS

SPEC = ResourceSpec(resource_id="acme-prod", owner="acme", region="eu-west-1", deploy_ref="v1")
OTHER = ResourceSpec(resource_id="beta-one", owner="beta", region="eu-west-1", deploy_ref="v1")
GIT = "git:0123456789ab Ada Lovelace <ada@example.com>"


def at(second: int) -> str:
    return f"2026-01-01T00:00:{second:02d}.000000Z"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(url=url)
    yield opened
    opened.close()


def req(spec: ResourceSpec = SPEC, **extra) -> JobRequest:
    return JobRequest(spec.resource_id, JobAction.CREATE, "new", spec.model_dump(), target_hash=spec_hash(spec),
                      **extra)


def run_job(store, *, second: int = 1, ok: bool = True) -> None:
    job = store.claim(worker="w", now=at(second), lease_until=at(second + 30))[0]
    assert store.record_script(job_id=job.job_id, worker="w", pgid=7, host="h", now=at(second))
    store.finish(job=job, worker="w", result=JobResult(ok, 0 if ok else 1, "http://127.0.0.1:1/" if ok else None,
                                                       None if ok else "boom"), now=at(second + 1))


def test_a_job_and_every_event_of_it_carry_the_requests_actor_and_details(store):
    details = {"by": "cli:ada@box"}
    [job_id] = store.enqueue(requests=[req(actor=GIT, details=details)], now=at(0), commit="0123456789ab")
    assert store.get_job(job_id).actor == GIT
    run_job(store)
    events = store.events("acme-prod")
    assert [(e.kind, e.actor) for e in events] == [("queued", GIT), ("started", GIT), ("succeeded", GIT),
                                                   ("url_changed", GIT)]
    assert events[0].details == details


def test_enqueue_actor_is_the_default_for_requests_without_one(store):
    store.enqueue(requests=[req(), req(OTHER, actor="daemon:h")], now=at(0), commit=None, actor="cli:ada@box")
    assert store.events("acme-prod")[0].actor == "cli:ada@box"
    assert store.events("beta-one")[0].actor == "daemon:h"


def test_api_declarations_and_health_events_carry_their_actor(store):
    store.declare_api(resource_id="acme-prod", spec=SPEC.model_dump(), requests=[req(source="api")], now=at(0),
                      actor="api:admin")
    assert store.events("acme-prod")[0].actor == "api:admin"
    run_job(store)
    failing = [CheckResult("acme-prod", "http://127.0.0.1:1/", False, None, 0.0, "refused")]
    store.record_health(results=failing, now=at(5), unhealthy_after=1, actor="daemon:h")
    assert store.events("acme-prod")[-1].kind == "unhealthy"
    assert store.events("acme-prod")[-1].actor == "daemon:h"


def test_audit_lists_the_fleets_events_filtered_newest_last(store):
    store.enqueue(requests=[req(actor=GIT)], now=at(0), commit=None)
    store.enqueue(requests=[req(OTHER, actor="api:team_50%")], now=at(2), commit=None)
    run_job(store, second=4)  # acme-prod's or beta-one's job: one of them
    every = store.audit_events()
    assert [e.at for e in every] == sorted(e.at for e in every) and len(every) == 5
    assert [e.resource_id for e in store.audit_events(actor="ADA")] == ["acme-prod"] + [
        e.resource_id for e in every[2:] if e.actor == GIT]
    # % and _ are literal, not wildcards
    assert [e.actor for e in store.audit_events(actor="m_50%")] == ["api:team_50%"] + [
        e.actor for e in every[2:] if e.actor == "api:team_50%"]
    assert store.audit_events(actor="team_5x") == []
    assert {e.resource_id for e in store.audit_events(owner="beta")} == {"beta-one"}
    assert [e.at for e in store.audit_events(since=at(2))] == [e.at for e in every[1:]]
    assert store.audit_events(limit=2) == every[-2:]


def test_prune_deletes_what_was_archived_and_records_itself(store):
    store.enqueue(requests=[req(actor=GIT)], now=at(0), commit=None)
    run_job(store, second=10)
    rows = store.events_before(before=at(11))
    assert [row["kind"] for row in rows] == ["queued", "started"] and rows[0]["actor"] == GIT
    with pytest.raises(StoreConflict):  # more rows than were archived: nothing deleted
        store.prune_events(before=at(12), archived=2, through_id=rows[-1]["id"] + 10, now=at(20), actor="cli:a@b",
                           details={"archive": "x.json"})
    assert len(store.events("acme-prod")) == 4
    assert store.prune_events(before=at(11), archived=2, through_id=rows[-1]["id"], now=at(20), actor="cli:a@b",
                              details={"archive": "x.json"}) == 2
    assert [e.kind for e in store.events("acme-prod")] == ["succeeded", "url_changed"]
    [pruned] = store.events(FLEET_ID)
    assert (pruned.kind, pruned.actor, pruned.details["count"], pruned.details["archive"]) == (
        "audit_pruned", "cli:a@b", 2, "x.json")


def test_export_import_round_trip_keeps_actors_and_records_the_restore(store, tmp_path):
    store.enqueue(requests=[req(actor=GIT)], now=at(0), commit=None)
    tables = store.export_rows()
    assert tables["events"][0]["actor"] == GIT and tables["jobs"][0]["actor"] == GIT
    target = open_store(url=str(tmp_path / "copy.db"))
    try:
        target.import_rows(tables=tables, replace=False, actor="cli:ada@box", now=at(30), name="backup.json")
        assert target.events("acme-prod")[0].actor == GIT
        assert target.export_rows()["jobs"] == tables["jobs"]
        store.import_rows(tables=target.export_rows(), replace=True, actor="cli:bob@box", now=at(40), name="b.json")
    finally:
        target.close()
    assert [(e.kind, e.actor) for e in store.events(FLEET_ID)] == [("imported", "cli:ada@box"),
                                                                  ("restored", "cli:bob@box")]


OLD_VERSION = LATEST - 1  # the schema before the actor column (today's databases)


def test_an_old_sqlite_database_migrates_and_its_events_have_no_actor(tmp_path):
    import sqlite_utils

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for number in range(OLD_VERSION):
        MIGRATIONS[number](sqlite_utils.Database(conn))
    conn.execute(f"PRAGMA user_version = {OLD_VERSION}")
    conn.execute("INSERT INTO events (resource_id, at, kind, message) VALUES ('acme-prod', ?, 'queued', 'old')",
                 (at(0),))
    conn.commit()
    conn.close()
    _check_migrated(open_store(url=str(path)))


def test_an_old_postgres_database_migrates_and_its_events_have_no_actor(pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statements in PG_MIGRATIONS[:OLD_VERSION]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("CREATE TABLE reconciler_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO reconciler_schema (version) VALUES (%s)", (OLD_VERSION,))
        conn.execute("INSERT INTO events (resource_id, at, kind, message) VALUES ('acme-prod', %s, 'queued', 'old')",
                     (at(0),))
    _check_migrated(open_store(url=pg_url))


def _check_migrated(store) -> None:
    try:
        [old] = store.events("acme-prod")
        assert (old.message, old.actor) == ("old", None)
        store.enqueue(requests=[req(actor=GIT)], now=at(5), commit=None)
        assert [e.actor for e in store.audit_events()] == [None, GIT]
    finally:
        store.close()
