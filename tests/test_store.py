"""The SQLite store on a real file: opening, the schema, and the job queue with its leases."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.errors import StoreError
from reconciler.models import (
    JobAction,
    JobRequest,
    JobResult,
    JobStatus,
    ResourceSpec,
    ResourceStatus,
    canonical_json,
    iso,
    spec_hash,
)
from reconciler.store import open_store
from reconciler.store.migrations import LATEST
from reconciler.store.sqlite import SQLiteStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


SPEC = ResourceSpec(resource_id="acme-prod", owner="acme", region="eu-west-1", deploy_ref="v1",
                    params={"size": "small"})


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    opened = open_store(url=str(tmp_path / "state.db"))
    yield opened
    opened.close()


def request(spec: ResourceSpec = SPEC, action: JobAction = JobAction.CREATE, version: int | None = None) -> JobRequest:
    """As the engine builds them: `version` is the row version the plan saw (None: it saw no row)."""
    if action is JobAction.DELETE:
        return JobRequest(spec.resource_id, action, "no longer declared", spec.model_dump(), None, "delete",
                          expected_version=version)
    return JobRequest(spec.resource_id, action, "not yet created", spec.model_dump(), target_hash=spec_hash(spec),
                      expected_version=version)


def version(store: SQLiteStore, resource_id: str = "acme-prod") -> int:
    return store.get_resource(resource_id).version


def claimed(store: SQLiteStore, *, worker: str = "w1", now: float = 0, lease: float = 30):
    jobs = store.claim(worker=worker, now=at(now), lease_until=at(now + lease))
    assert len(jobs) == 1, jobs
    return jobs[0]


def created(store: SQLiteStore, spec: ResourceSpec = SPEC, url: str = "http://127.0.0.1:8001/") -> None:
    """Take `spec` through a successful create."""
    store.enqueue(requests=[request(spec)], now=at(0), commit=None)
    job = claimed(store)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, url, None), now=at(1))


def raw(store: SQLiteStore, sql: str, *args):
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql, args).fetchall()


# --- opening -------------------------------------------------------------------------------------


def test_new_database_is_private_wal_and_current(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    opened = open_store(url=str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST >= 1
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"resources", "jobs", "events"} <= tables
    conn.close()
    opened.close()


def test_reopening_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = open_store(url=str(path))
    created(first)
    first.close()
    again = open_store(url=str(path), create=False)
    assert again.get_resource("acme-prod").status is ResourceStatus.ACTIVE
    assert raw(again, "PRAGMA user_version") == [(LATEST,)]
    again.close()


def test_relative_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opened = open_store(url="sqlite:///data/rel.db")
    assert (tmp_path / "data" / "rel.db").is_file() and opened.path == Path("data/rel.db")
    opened.close()


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    opened = open_store(url=f"sqlite:///{path}")  # sqlite:////tmp/... — four slashes
    assert f"sqlite:///{path}".startswith("sqlite:////") and path.is_file()
    opened.close()


@pytest.mark.parametrize("url", ["mysql://x", "http://example.com/db", "postgresx://h/db"])
def test_unsupported_scheme_errors(tmp_path: Path, url: str) -> None:
    with pytest.raises(StoreError, match="unsupported database URL scheme"):
        open_store(url=url)


def test_create_false_on_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(url=str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()


def test_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(url=str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(StoreError, match="newer"):
        open_store(url=str(path))


# --- enqueue -------------------------------------------------------------------------------------


def test_enqueue_writes_job_row_and_event_together(store: SQLiteStore) -> None:
    queued = store.enqueue(requests=[request()], now=at(0), commit="abc123")
    assert len(queued) == 1
    job = store.get_job(queued[0])
    assert (job.status, job.action, job.attempt, job.spec) == (JobStatus.QUEUED, JobAction.CREATE, 1, SPEC.model_dump())
    row = store.get_resource("acme-prod")
    assert row.status is ResourceStatus.PROVISIONING and row.target_hash == spec_hash(SPEC)
    assert [(e.kind, e.job_id, e.desired_commit) for e in store.events("acme-prod")] == [("queued", queued[0], "abc123")]
    assert store.in_flight() == {"acme-prod"}


def test_second_enqueue_while_a_job_is_open_is_skipped(store: SQLiteStore) -> None:
    first = store.enqueue(requests=[request()], now=at(0), commit=None)
    second = store.enqueue(requests=[request(), request(SPEC.model_copy(update={"resource_id": "other"}))],
                           now=at(1), commit=None)
    assert len(first) == 1 and len(second) == 1
    assert store.get_job(second[0]).resource_id == "other"
    assert raw(store, "SELECT COUNT(*) FROM jobs WHERE resource_id = 'acme-prod'") == [(1,)]
    assert [e.kind for e in store.events("acme-prod")] == ["queued"]


def test_request_planned_against_a_row_that_moved_on_is_skipped(store: SQLiteStore) -> None:
    created(store)
    seen = version(store)
    updated = SPEC.model_copy(update={"deploy_ref": "v2"})
    assert len(store.enqueue(requests=[request(updated, JobAction.UPDATE, seen)], now=at(10), commit=None)) == 1
    job = claimed(store, now=10)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:8001/", None), now=at(11))
    # a second planner that saw the row before that update must not run it again
    assert store.enqueue(requests=[request(updated, JobAction.UPDATE, seen)], now=at(12), commit=None) == []
    assert store.enqueue(requests=[request(updated)], now=at(12), commit=None) == []  # "no row" is stale too
    assert raw(store, "SELECT COUNT(*) FROM jobs") == [(2,)]


def test_one_open_job_per_resource_is_enforced_by_the_database(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    with pytest.raises(sqlite3.IntegrityError):
        raw(store, "INSERT INTO jobs (job_id, resource_id, action, status) VALUES ('x', 'acme-prod', 'update', 'running')")
    # a finished job does not count as open
    raw(store, "INSERT INTO jobs (job_id, resource_id, action, status) VALUES ('y', 'acme-prod', 'update', 'failed')")
    assert raw(store, "SELECT COUNT(*) FROM jobs WHERE resource_id = 'acme-prod'") == [(2,)]


# --- claiming and leases ---------------------------------------------------------------------------


def test_claim_takes_a_lease(store: SQLiteStore) -> None:
    [job_id] = store.enqueue(requests=[request()], now=at(0), commit=None)
    job = claimed(store, worker="w1", now=1, lease=30)
    assert job.job_id == job_id
    stored = store.get_job(job_id)
    assert (stored.status, stored.lease_owner, stored.lease_expires_at, stored.claims) == (
        JobStatus.RUNNING, "w1", at(31), 1)


def test_second_worker_waits_for_the_lease_to_expire(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    job = claimed(store, worker="w1", now=0, lease=30)
    assert store.claim(worker="w2", now=at(10), lease_until=at(40)) == []
    assert store.claim(worker="w2", now=at(29.9), lease_until=at(60)) == []
    again = store.claim(worker="w2", now=at(30), lease_until=at(60))
    assert [j.job_id for j in again] == [job.job_id]
    stored = store.get_job(job.job_id)
    assert (stored.lease_owner, stored.claims) == ("w2", 2)


def test_renew_extends_leases(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    job = claimed(store, worker="w1", now=0, lease=30)
    assert store.renew(worker="w1", lease_until=at(90)) == 1
    assert store.renew(worker="w2", lease_until=at(900)) == 0
    assert store.get_job(job.job_id).lease_expires_at == at(90)
    assert store.claim(worker="w2", now=at(60), lease_until=at(120)) == []


def test_release_puts_the_job_back(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    job = claimed(store, worker="w1", now=0)
    store.release(job_id=job.job_id, worker="w1", now=at(5))
    stored = store.get_job(job.job_id)
    assert (stored.status, stored.lease_owner, stored.lease_expires_at, stored.run_after) == (
        JobStatus.QUEUED, None, None, at(5))
    assert [j.job_id for j in store.claim(worker="w2", now=at(5), lease_until=at(35))] == [job.job_id]


# --- finishing ---------------------------------------------------------------------------------------


def test_finish_ok_makes_the_row_active(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit="c1")
    job = claimed(store)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:8001/", None, "ok\n", 0.5),
                        now=at(2))
    row = store.get_resource("acme-prod")
    assert (row.status, row.url, row.spec_hash, row.generation, row.attempts, row.error) == (
        ResourceStatus.ACTIVE, "http://127.0.0.1:8001/", spec_hash(SPEC), 1, 0, None)
    assert row.spec_json == canonical_json(SPEC.model_dump()) and row.last_seen == at(2)
    assert [e.kind for e in store.events("acme-prod")] == ["queued", "succeeded", "url_changed"]
    finished = store.get_job(job.job_id)
    assert (finished.status, finished.exit_code, finished.lease_owner, finished.finished_at) == (
        JobStatus.SUCCEEDED, 0, None, at(2))
    assert store.in_flight() == set()


def test_finish_ok_with_the_same_url_records_no_url_change(store: SQLiteStore) -> None:
    created(store)
    updated = SPEC.model_copy(update={"deploy_ref": "v2"})
    store.enqueue(requests=[request(updated, JobAction.UPDATE, version(store))], now=at(10), commit=None)
    job = claimed(store, now=10)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://127.0.0.1:8001/", None), now=at(11))
    assert [e.kind for e in store.events("acme-prod")][-2:] == ["queued", "succeeded"]
    assert store.get_resource("acme-prod").deploy_ref == "v2"


def test_finish_failed_makes_the_row_errored(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    job = claimed(store)
    result = JobResult(False, 3, None, "exit 3", "boom\n", next_attempt_at=at(60))
    assert store.finish(job=job, worker="w1", result=result, now=at(2))
    row = store.get_resource("acme-prod")
    assert (row.status, row.error, row.attempts, row.next_attempt_at, row.spec_hash) == (
        ResourceStatus.ERRORED, "exit 3", 1, at(60), None)
    events = store.events("acme-prod")
    assert events[-1].kind == "failed" and "exit 3" in events[-1].message and events[-1].details["exit_code"] == 3
    assert store.get_job(job.job_id).status is JobStatus.FAILED


def test_finish_by_a_worker_that_lost_the_lease_changes_nothing(store: SQLiteStore) -> None:
    store.enqueue(requests=[request()], now=at(0), commit=None)
    stale = claimed(store, worker="w1", now=0, lease=30)
    fresh = claimed(store, worker="w2", now=31, lease=30)
    before_row, before_events = store.get_resource("acme-prod"), store.events("acme-prod")
    assert not store.finish(job=stale, worker="w1", result=JobResult(True, 0, "http://x/", None), now=at(32))
    assert store.get_resource("acme-prod") == before_row and store.events("acme-prod") == before_events
    assert store.get_job(fresh.job_id).lease_owner == "w2"
    assert store.finish(job=fresh, worker="w2", result=JobResult(True, 0, "http://y/", None), now=at(33))
    assert store.get_resource("acme-prod").url == "http://y/"


def test_a_run_whose_lease_lapsed_and_was_claimed_again_by_the_same_owner_records_nothing(store: SQLiteStore) -> None:
    """A store outage longer than the lease: a thread of the same process (same lease owner) claims the
    job again; the first run's late finish must not record over the second run."""
    store.enqueue(requests=[request()], now=at(0), commit=None)
    stale = claimed(store, worker="w1", now=0, lease=30)
    fresh = claimed(store, worker="w1", now=31, lease=30)
    assert not store.finish(job=stale, worker="w1", result=JobResult(False, 1, None, "killed"), now=at(32))
    assert store.get_job(fresh.job_id).status is JobStatus.RUNNING
    assert store.finish(job=fresh, worker="w1", result=JobResult(True, 0, "http://y/", None), now=at(33))
    assert [event.kind for event in store.events("acme-prod")].count("succeeded") == 1


def test_delete_success_leaves_a_tombstone_with_its_history(store: SQLiteStore) -> None:
    created(store)
    store.enqueue(requests=[request(action=JobAction.DELETE, version=version(store))], now=at(10), commit=None)
    assert store.get_resource("acme-prod").status is ResourceStatus.DELETING
    job = claimed(store, now=10)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, None, None), now=at(11))
    row = store.get_resource("acme-prod")
    assert (row.status, row.url, row.spec_hash, row.live) == (ResourceStatus.DELETED, None, None, False)
    assert [e.kind for e in store.events("acme-prod")] == [
        "queued", "succeeded", "url_changed", "queued", "succeeded"]
    assert "acme-prod" in store.load_observed()


def test_parallel_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer, reader = open_store(url=str(path)), open_store(url=str(path), create=False)
    created(writer)
    assert reader.get_resource("acme-prod").status is ResourceStatus.ACTIVE
    assert os.path.exists(str(path) + "-wal")
    writer.close()
    reader.close()
