"""The SQLite store on a real file: opening, the schema, the file's mode and WAL, two stores on one file.

The job queue, its leases and the rows it writes are the store contract, tested once on both backends
in integration/test_store_backends.py."""

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
    ResourceSpec,
    ResourceStatus,
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


def request(spec: ResourceSpec = SPEC) -> JobRequest:
    return JobRequest(spec.resource_id, JobAction.CREATE, "not yet created", spec.model_dump(),
                      target_hash=spec_hash(spec))


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


# --- one file, two stores --------------------------------------------------------------------------


def test_parallel_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer, reader = open_store(url=str(path)), open_store(url=str(path), create=False)
    created(writer)
    assert reader.get_resource("acme-prod").status is ResourceStatus.ACTIVE
    assert os.path.exists(str(path) + "-wal")
    writer.close()
    reader.close()


def test_a_database_from_before_the_policy_opens_and_its_jobs_count_for_their_owner(tmp_path: Path) -> None:
    """Issue 15's migration on an older file: the holds table appears, every old job gets its owner."""
    import sqlite_utils

    from reconciler.store.migrations import MIGRATIONS, _v5_policy_holds

    path = tmp_path / "old.db"
    before = MIGRATIONS.index(_v5_policy_holds)
    with sqlite3.connect(path) as conn:
        db = sqlite_utils.Database(conn)
        for migration in MIGRATIONS[:before]:
            migration(db)
        conn.execute(f"PRAGMA user_version = {before}")
        conn.execute("INSERT INTO jobs (job_id, resource_id, action, status, spec_json, created_at)"
                     " VALUES ('job-1', 'acme-prod', 'create', 'succeeded', ?, ?)", (SPEC.model_dump_json(), at(5)))
        conn.execute("INSERT INTO jobs (job_id, resource_id, action, status, old_spec_json, created_at)"
                     " VALUES ('job-2', 'acme-prod', 'delete', 'queued', ?, ?)", (SPEC.model_dump_json(), at(6)))
    store = open_store(url=str(path))
    assert store.jobs_per_owner(since=at(0)) == {"acme": 2}
    assert store.holds() == {}
    store.close()
