"""The store's part of the policy (issue 15), on both backends: the hourly change window counted per owner
from the jobs themselves (so daemons sharing a database share it), and the holds table whose changes, not
its passes, write `held` events."""

from __future__ import annotations

import pytest

from reconciler.models import JobAction, JobRequest, ResourceSpec, spec_hash
from reconciler.store import open_store
from tests.integration.test_store_backends import at


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    return str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def spec(rid: str, owner: str) -> ResourceSpec:
    return ResourceSpec(resource_id=rid, owner=owner, region="eu-west-1", deploy_ref="v1")


def create(rid: str, owner: str) -> JobRequest:
    one = spec(rid, owner)
    return JobRequest(rid, JobAction.CREATE, "new", one.model_dump(), target_hash=spec_hash(one))


def test_the_window_counts_jobs_per_owner_from_any_store_on_the_database(url):
    first, second = open_store(url=url), open_store(url=url)  # two daemons' connections
    try:
        first.enqueue(requests=[create("a1", "acme"), create("g1", "globex")], now=at(10), commit=None)
        second.enqueue(requests=[create("a2", "acme")], now=at(20), commit=None)
        first.enqueue(requests=[create("a0", "acme")], now=at(1), commit=None)  # before the window
        assert second.jobs_per_owner(since=at(5)) == {"acme": 2, "globex": 1}
        assert first.jobs_per_owner(since=at(15)) == {"acme": 1}
        assert first.jobs_per_owner(since=at(30)) == {}
    finally:
        first.close()
        second.close()


def test_a_delete_counts_against_the_owner_of_what_it_tears_down(url):
    store = open_store(url=url)
    try:
        gone = spec("a1", "acme").model_dump()
        store.enqueue(requests=[create("a1", "acme")], now=at(1), commit=None)
        job = store.claim(worker="w", now=at(2), lease_until=at(60))[0]
        from reconciler.models import JobResult

        store.finish(job=job, worker="w", result=JobResult(True, 0, "http://127.0.0.1:9/", None), now=at(3))
        version = store.get_resource("a1").version
        store.enqueue(requests=[JobRequest("a1", JobAction.DELETE, "removed", gone, None, "delete",
                                           expected_version=version)], now=at(10), commit=None)
        assert store.jobs_per_owner(since=at(5)) == {"acme": 1}
    finally:
        store.close()


def hold(rid: str, rules: tuple[str, ...], message: str = "over quota"):
    from reconciler.models import Hold

    return Hold(rid, "acme", rules, message, details={"violations": [{"rule": rules[0], "place": "policy.yaml:3"}]})


def held_events(store, rid: str) -> list:
    return [event for event in store.events(rid) if event.kind == "held"]


def test_a_hold_writes_its_event_once_until_its_rules_change(url):
    store = open_store(url=url)
    try:
        assert store.sync_holds(holds=[hold("a1", ("quotas.per_owner",))], now=at(1)) == ["a1"]
        for second in range(2, 6):  # pass after pass: the same hold, a fresh message, no new event
            assert store.sync_holds(holds=[hold("a1", ("quotas.per_owner",), f"{second} over")], now=at(second)) == []
        assert len(held_events(store, "a1")) == 1
        event = held_events(store, "a1")[0]
        assert event.details["rules"] == ["quotas.per_owner"] and "policy.yaml:3" in str(event.details)
        assert store.holds()["a1"].message == "5 over" and store.holds()["a1"].since == at(1)
        # another rule: one more event
        assert store.sync_holds(holds=[hold("a1", ("allowed.regions", "quotas.per_owner"))], now=at(7)) == ["a1"]
        assert len(held_events(store, "a1")) == 2
        # lifted, then held again: a new episode, a new event
        assert store.sync_holds(holds=[], now=at(8)) == [] and store.holds() == {}
        assert store.sync_holds(holds=[hold("a1", ("quotas.per_owner",))], now=at(9)) == ["a1"]
        assert len(held_events(store, "a1")) == 3
    finally:
        store.close()


def test_a_reopened_store_remembers_its_holds(url):
    """A daemon restart reads the holds back: the same hold writes no second event."""
    store = open_store(url=url)
    store.sync_holds(holds=[hold("a1", ("quotas.per_owner",))], now=at(1))
    store.close()
    again = open_store(url=url)
    try:
        assert again.sync_holds(holds=[hold("a1", ("quotas.per_owner",))], now=at(2)) == []
        assert len(held_events(again, "a1")) == 1
    finally:
        again.close()


def test_holds_and_job_owners_survive_export_and_import(url, tmp_path):
    store = open_store(url=url)
    try:
        store.enqueue(requests=[create("a1", "acme")], now=at(1), commit=None)
        store.sync_holds(holds=[hold("a2", ("quotas.per_owner",))], now=at(2))
        rows = store.export_rows()
        assert [row["resource_id"] for row in rows["holds"]] == ["a2"]
        for row in rows["jobs"]:
            del row["owner"]  # an export made before jobs had an owner
        target = open_store(url=str(tmp_path / "copy.db"))
        target.import_rows(tables=rows, replace=False)
        assert target.jobs_per_owner(since=at(0)) == {"acme": 1}
        assert set(target.holds()) == {"a2"}
        target.close()
    finally:
        store.close()


def test_a_postgresql_database_from_before_the_policy_migrates_and_counts_old_jobs(pg_url):
    """The holds migration on an older PostgreSQL schema: every existing job gets its spec's owner."""
    import psycopg

    from reconciler.store.migrations import MIGRATIONS, PG_MIGRATIONS, _v5_policy_holds

    before = MIGRATIONS.index(_v5_policy_holds)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE reconciler_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO reconciler_schema (version) VALUES (%s)", (before,))
        for statements in PG_MIGRATIONS[:before]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("INSERT INTO jobs (job_id, resource_id, action, status, spec_json, created_at)"
                     " VALUES ('job-1', 'a1', 'create', 'succeeded', %s, %s)",
                     (spec("a1", "acme").model_dump_json(), at(5)))
    store = open_store(url=pg_url)
    try:
        assert store.jobs_per_owner(since=at(0)) == {"acme": 1} and store.holds() == {}
    finally:
        store.close()
