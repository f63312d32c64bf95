"""The store contract, run against both backends: a real SQLite file and a real PostgreSQL 15.

Whatever the engine, daemon, API and CLI rely on is asserted here once, so moving a fleet from
SQLite to PostgreSQL changes nothing they can see.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from reconciler.models import (
    JobAction,
    JobRequest,
    JobResult,
    JobStatus,
    PassBeat,
    ResourceSpec,
    ResourceStatus,
    spec_hash,
)
from reconciler.store import open_store

SPEC = ResourceSpec(resource_id="acme-prod", owner="acme", region="eu-west-1", deploy_ref="v1",
                    params={"size": "small"})


def at(seconds: float) -> str:
    whole = int(seconds)
    return f"2026-01-01T00:{whole // 60:02d}:{whole % 60:02d}.{int(round((seconds - whole) * 1e6)):06d}Z"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(url=url)
    yield opened
    opened.close()


def request_for(spec: ResourceSpec = SPEC, action: JobAction = JobAction.CREATE, version: int | None = None):
    if action is JobAction.DELETE:
        return JobRequest(spec.resource_id, action, "no longer declared", spec.model_dump(), None, "delete",
                          expected_version=version)
    return JobRequest(spec.resource_id, action, "why", spec.model_dump(), target_hash=spec_hash(spec),
                      expected_version=version)


def claim_one(store, *, worker="w1", now=0.0, lease=30.0):
    jobs = store.claim(worker=worker, now=at(now), lease_until=at(now + lease))
    assert len(jobs) == 1, jobs
    return jobs[0]


def created(store, spec: ResourceSpec = SPEC, url="http://127.0.0.1:8001/"):
    store.enqueue(requests=[request_for(spec)], now=at(0), commit="c1")
    job = claim_one(store)
    assert store.record_script(job_id=job.job_id, worker="w1", pgid=4242, host="h", now=at(0.5))
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, url, None), now=at(1))
    return job


def test_enqueue_claim_finish_records_row_job_and_events(store):
    job = created(store)
    row = store.get_resource("acme-prod")
    assert (row.status, row.url, row.spec_hash, row.version) == (ResourceStatus.ACTIVE, "http://127.0.0.1:8001/",
                                                                  spec_hash(SPEC), 2)
    assert row.applied_spec() == SPEC.model_dump()
    finished = store.get_job(job.job_id)
    assert (finished.status, finished.exit_code, finished.lease_owner, finished.script_pgid) == (
        JobStatus.SUCCEEDED, 0, None, 4242)
    kinds = [(e.kind, e.desired_commit) for e in store.events("acme-prod")]
    assert kinds == [("queued", "c1"), ("started", "c1"), ("succeeded", "c1"), ("url_changed", "c1")]
    assert store.in_flight() == set() and store.count_open() == 0


def test_enqueue_writes_job_row_and_event_together(store):
    queued = store.enqueue(requests=[request_for()], now=at(0), commit="abc123")
    assert len(queued) == 1
    job = store.get_job(queued[0])
    assert (job.status, job.action, job.attempt, job.spec) == (JobStatus.QUEUED, JobAction.CREATE, 1, SPEC.model_dump())
    row = store.get_resource("acme-prod")
    assert row.status is ResourceStatus.PROVISIONING and row.target_hash == spec_hash(SPEC)
    assert [(e.kind, e.job_id, e.desired_commit) for e in store.events("acme-prod")] == [("queued", queued[0], "abc123")]
    assert store.in_flight() == {"acme-prod"}


def test_request_planned_against_a_row_that_moved_on_is_skipped(store):
    created(store)
    seen = store.get_resource("acme-prod").version
    updated = SPEC.model_copy(update={"deploy_ref": "v2"})
    assert len(store.enqueue(requests=[request_for(updated, JobAction.UPDATE, seen)], now=at(10), commit=None)) == 1
    job = claim_one(store, now=10)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:8001/", None), now=at(11))
    # a second planner that saw the row before that update must not run it again
    assert store.enqueue(requests=[request_for(updated, JobAction.UPDATE, seen)], now=at(12), commit=None) == []
    assert store.enqueue(requests=[request_for(updated)], now=at(12), commit=None) == []  # "no row" is stale too
    assert store._tuples("SELECT COUNT(*) FROM jobs") == [(2,)]

def test_one_open_job_per_resource_and_stale_plans_are_skipped(store):
    assert len(store.enqueue(requests=[request_for()], now=at(0), commit=None)) == 1
    assert store.enqueue(requests=[request_for()], now=at(1), commit=None) == []  # row exists now
    assert [e.kind for e in store.events("acme-prod")] == ["queued"]
    with pytest.raises(Exception):  # the partial unique index, whatever the driver calls its error
        with store._write() as conn:
            conn.execute("INSERT INTO jobs (job_id, resource_id, action, status) VALUES ('x', 'acme-prod',"
                         " 'update', 'running')")
    with store._write() as conn:  # a finished job does not count as open
        conn.execute("INSERT INTO jobs (job_id, resource_id, action, status) VALUES ('y', 'acme-prod',"
                     " 'update', 'failed')")
    assert store._tuples("SELECT COUNT(*) FROM jobs WHERE resource_id = 'acme-prod'") == [(2,)]
    job = claim_one(store)
    store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://u/", None), now=at(2))
    seen = store.get_resource("acme-prod").version
    changed = SPEC.model_copy(update={"deploy_ref": "v2"})
    assert len(store.enqueue(requests=[request_for(changed, JobAction.UPDATE, seen)], now=at(3), commit=None)) == 1
    assert store.enqueue(requests=[request_for(changed, JobAction.UPDATE, seen)], now=at(4), commit=None) == []
    other = SPEC.model_copy(update={"resource_id": "other"})  # the rest of a batch is still enqueued
    [queued] = store.enqueue(requests=[request_for(changed, JobAction.UPDATE, seen), request_for(other)], now=at(5),
                             commit=None)
    assert store.get_job(queued).resource_id == "other"


def test_leases_claim_expire_renew_release(store):
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    job = claim_one(store, worker="w1", now=0, lease=10)
    stored = store.get_job(job.job_id)
    assert (stored.status, stored.lease_owner, stored.lease_expires_at, stored.claims) == (
        JobStatus.RUNNING, "w1", at(10), 1)
    assert store.claim(worker="w2", now=at(5), lease_until=at(15)) == []
    assert store.renew(worker="w1", lease_until=at(20)) == 1
    assert store.renew(worker="w2", lease_until=at(900)) == 0
    assert store.get_job(job.job_id).lease_expires_at == at(20)
    assert store.claim(worker="w2", now=at(15), lease_until=at(25)) == []
    assert store.claim(worker="w2", now=at(19.9), lease_until=at(25)) == []
    again = claim_one(store, worker="w2", now=20)  # the moment the lease expires
    assert (again.job_id, again.claims) == (job.job_id, 2)
    before_row, before_events = store.get_resource("acme-prod"), store.events("acme-prod")
    assert not store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://u/", None), now=at(22))
    assert store.get_resource("acme-prod") == before_row and store.events("acme-prod") == before_events
    store.release(job_id=job.job_id, worker="w2", now=at(23))
    stored = store.get_job(job.job_id)
    assert (stored.status, stored.lease_owner, stored.lease_expires_at, stored.run_after) == (
        JobStatus.QUEUED, None, None, at(23))
    store.expire_lease(job_id=claim_one(store, worker="w3", now=24).job_id, worker="w3", now=at(24))
    assert claim_one(store, worker="w4", now=24.5).job_id == job.job_id


def test_a_run_whose_lease_lapsed_and_was_claimed_again_by_the_same_owner_records_nothing(store):
    """A store outage longer than the lease: a thread of the same process (same lease owner) claims the
    job again; the first run's late finish must not record over the second run."""
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    stale = claim_one(store, worker="w1", now=0, lease=30)
    fresh = claim_one(store, worker="w1", now=31, lease=30)
    assert not store.finish(job=stale, worker="w1", result=JobResult(False, 1, None, "killed"), now=at(32))
    assert store.get_job(fresh.job_id).status is JobStatus.RUNNING
    assert store.finish(job=fresh, worker="w1", result=JobResult(True, 0, "http://y/", None), now=at(33))
    assert [event.kind for event in store.events("acme-prod")].count("succeeded") == 1


def test_finish_ok_with_the_same_url_records_no_url_change(store):
    created(store)
    updated = SPEC.model_copy(update={"deploy_ref": "v2"})
    store.enqueue(requests=[request_for(updated, JobAction.UPDATE, store.get_resource("acme-prod").version)],
                  now=at(10), commit=None)
    job = claim_one(store, now=10)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:8001/", None), now=at(11))
    assert [e.kind for e in store.events("acme-prod")][-2:] == ["queued", "succeeded"]
    assert store.get_resource("acme-prod").deploy_ref == "v2"

def test_failure_then_delete_leaves_a_tombstone_with_history(store):
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    job = claim_one(store)
    assert store.finish(job=job, worker="w1", now=at(1),
                        result=JobResult(False, 3, None, "exited 3", "boom", next_attempt_at=at(60)))
    row = store.get_resource("acme-prod")
    assert (row.status, row.error, row.attempts, row.next_attempt_at) == (ResourceStatus.ERRORED, "exited 3", 1, at(60))
    assert row.spec_hash is None and store.get_job(job.job_id).status is JobStatus.FAILED
    failed = store.events("acme-prod")[-1]
    assert failed.kind == "failed" and "exited 3" in failed.message and failed.details["exit_code"] == 3
    store.enqueue(requests=[request_for(action=JobAction.DELETE, version=row.version)], now=at(2), commit=None)
    assert store.get_resource("acme-prod").status is ResourceStatus.DELETING
    job = claim_one(store, now=2)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, None, None), now=at(3))
    row = store.get_resource("acme-prod")
    assert (row.status, row.url, row.spec_hash, row.live) == (ResourceStatus.DELETED, None, None, False)
    assert [e.kind for e in store.events("acme-prod")][-2:] == ["queued", "succeeded"]
    assert "acme-prod" in store.load_observed()


def test_concurrent_claims_never_hand_one_job_to_two_workers(store):
    store.enqueue(requests=[request_for(SPEC.model_copy(update={"resource_id": f"r{i:03d}"})) for i in range(60)],
                  now=at(0), commit=None)
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            jobs = store.claim(worker=name, now=at(1), lease_until=at(100))
            if not jobs:
                return
            with lock:
                taken.append(jobs[0].job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 60 and len(set(taken)) == 60


@dataclass
class Check:
    resource_id: str
    url: str
    ok: bool
    error: str | None = None
    latency: float = 0.001


def test_health_results_count_up_and_turn_unhealthy_in_one_pass_each(store):
    created(store)
    fail = [Check("acme-prod", "http://u/", False, "refused")]
    assert store.record_health(results=fail, now=at(10), unhealthy_after=2) == []
    assert store.record_health(results=fail, now=at(20), unhealthy_after=2) == ["acme-prod"]
    row = store.get_resource("acme-prod")
    assert (row.health.value, row.consecutive_failures, row.last_seen) == ("unhealthy", 2, at(1))
    store.record_health(results=[Check("acme-prod", "http://u/", True)], now=at(30), unhealthy_after=2)
    row = store.get_resource("acme-prod")
    assert (row.health.value, row.consecutive_failures, row.last_seen) == ("healthy", 0, at(30))
    assert [e.kind for e in store.events("acme-prod")][-2:] == ["unhealthy", "recovered"]
    counts = store.counts()
    assert counts.health["healthy"] == 1 and counts.statuses["active"] == 1 and counts.live == 1


def test_lock_lease_is_exclusive_expires_and_frees_a_dead_holder(store):
    never_dead = lambda host, pid: False  # noqa: E731
    assert store.acquire_lock(name="leader", holder="a", pid=1, host="h", now=at(0), until=at(10),
                              holder_dead=never_dead) is None
    held = store.acquire_lock(name="leader", holder="b", pid=2, host="h", now=at(5), until=at(15),
                              holder_dead=never_dead)
    assert (held["holder"], held["pid"], held["since"]) == ("a", 1, at(0))
    assert store.renew_lock(name="leader", holder="a", until=at(20))
    assert not store.renew_lock(name="leader", holder="b", until=at(20))
    assert store.acquire_lock(name="leader", holder="b", pid=2, host="h", now=at(21), until=at(30),
                              holder_dead=never_dead) is None  # expired
    assert store.acquire_lock(name="leader", holder="c", pid=3, host="h", now=at(22), until=at(30),
                              holder_dead=lambda host, pid: pid == 2) is None  # dead holder
    assert store.lock_holder(name="leader", now=at(23))["holder"] == "c"
    store.release_lock(name="leader", holder="c")
    assert store.lock_holder(name="leader", now=at(23)) is None


def test_api_desired_rows(store):
    store.declare_api(resource_id="acme-prod", spec=SPEC.model_dump(), requests=[], now=at(0))
    store.declare_api(resource_id="acme-prod", spec={**SPEC.model_dump(), "deploy_ref": "v2"}, requests=[], now=at(1))
    assert store.api_desired() == {"acme-prod": {**SPEC.model_dump(), "deploy_ref": "v2"}}
    store.declare_api(resource_id="acme-prod", spec=None, requests=[], now=at(2))
    assert store.api_desired() == {}


def test_the_daemons_last_pass_is_one_row_replaced_by_each_pass(store):
    assert store.last_pass() is None
    first = PassBeat("h:1:a", "h", 1, at(1), False, 3, 1, "desired/a.yaml:4: owner: required", "abc")
    store.record_pass(beat=first)
    assert store.last_pass() == first
    second = PassBeat("h:2:b", "h", 2, at(2), True, 5, 2)
    store.record_pass(beat=second)
    assert store.last_pass() == second
    assert store.export_rows()["daemon_passes"][0]["holder"] == "h:2:b"


def test_open_jobs_by_resource(store):
    assert store.open_jobs() == {}
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    (job,) = store.open_jobs().values()
    assert (job.resource_id, job.status) == ("acme-prod", JobStatus.QUEUED)
    running = claim_one(store)
    assert store.open_jobs()["acme-prod"].status is JobStatus.RUNNING
    store.finish(job=running, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:9/", None), now=at(1))
    assert store.open_jobs() == {}


def test_a_database_of_the_previous_schema_opens_and_migrates(request, tmp_path):
    """A newer release reads an older database: the version before daemon_passes gains the table, keeps its rows."""
    import sqlite3

    import sqlite_utils

    from reconciler.store import migrations

    sqlite_path = tmp_path / "old.db"
    conn = sqlite3.connect(sqlite_path)
    db = sqlite_utils.Database(conn)
    previous = migrations.LATEST - 1
    for number in range(previous):
        migrations.MIGRATIONS[number](db)
    conn.execute(f"PRAGMA user_version = {previous}")
    conn.execute("INSERT INTO resources (resource_id, owner, region, runtime_target, deploy_ref, status)"
                 " VALUES ('old', 'acme', 'eu-west-1', 'local', 'v1', 'active')")
    conn.commit()
    conn.close()
    store = open_store(url=str(sqlite_path))
    assert store.get_resource("old") is not None and store.last_pass() is None
    store.record_pass(beat=PassBeat("h:1:a", "h", 1, at(1), True, 1, 1))
    store.close()
    assert sqlite3.connect(sqlite_path).execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST


def test_a_postgres_database_of_the_previous_schema_opens_and_migrates(request):
    import psycopg

    from reconciler.store import migrations

    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE reconciler_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO reconciler_schema (version) VALUES (%s)", (migrations.LATEST - 1,))
        for statements in migrations.PG_MIGRATIONS[:-1]:
            for statement in statements:
                conn.execute(statement)
    store = open_store(url=url)
    assert store.last_pass() is None
    store.record_pass(beat=PassBeat("h:1:a", "h", 1, at(1), True, 1, 1))
    assert store.last_pass() is not None
    store.close()


def test_export_import_round_trip_into_the_other_backend(store, tmp_path, request):
    created(store)
    store.record_pass(beat=PassBeat("h:1:a", "h", 1, at(1), True, 1, 1, None, "abc"))
    store.declare_api(resource_id="api-one", spec=SPEC.model_copy(update={"resource_id": "api-one"}).model_dump(),
                      requests=[], now=at(2))
    exported = store.export_rows()
    other_url = request.getfixturevalue("pg_url") if store.kind == "sqlite" else str(tmp_path / "other.db")
    other = open_store(url=other_url)
    assert other.import_rows(tables=exported, replace=False) == {t: len(r) for t, r in exported.items()}
    assert other.export_rows() == exported
    with pytest.raises(Exception, match="not empty"):
        other.import_rows(tables=exported, replace=False)
    fresh = SPEC.model_copy(update={"resource_id": "fresh"})
    assert other.enqueue(requests=[request_for(fresh)], now=at(5), commit=None)
    assert other.events("fresh")[-1].kind == "queued"  # ids continue after the imported ones
    other.close()


def test_a_reclaim_keeps_the_previous_runs_group_until_the_new_run_records_its_own(store):
    """Issue 11 item 1: the old run's identity stays durable through a reclaim (and a crashed reclaimer)."""
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    first = claim_one(store, worker="w1", now=0, lease=10)
    assert store.record_script(job_id=first.job_id, worker="w1", pgid=4242, host="h1", now=at(1))
    second = claim_one(store, worker="w2", now=11, lease=10)  # w1 died; w2 reclaims …
    assert (second.script_pgid, second.script_host) == (4242, "h1")
    assert (store.get_job(first.job_id).script_pgid, store.get_job(first.job_id).script_host) == (4242, "h1")
    third = claim_one(store, worker="w3", now=22, lease=10)  # … and dies while ending the old group
    assert (third.script_pgid, third.script_host) == (4242, "h1")
    store.release(job_id=third.job_id, worker="w3", now=at(23))  # handed back before it ran anything
    assert (store.get_job(first.job_id).script_pgid, store.get_job(first.job_id).script_host) == (4242, "h1")
    fourth = claim_one(store, worker="w4", now=24, lease=10)
    assert store.record_script(job_id=fourth.job_id, worker="w4", pgid=777, host="h4", now=at(25))
    assert (store.get_job(first.job_id).script_pgid, store.get_job(first.job_id).script_host) == (777, "h4")
