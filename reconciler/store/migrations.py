"""Versioned schema migrations, applied through sqlite-utils and tracked in `PRAGMA user_version`.

Each migration is a function of its own, applied once and in order, so a database made by any
earlier release upgrades in place. sqlite-utils is imported only when a migration must run: the
common case (schema current) costs one PRAGMA.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from ..errors import StoreError

RESOURCE_COLUMNS: dict[str, Any] = {
    # the seed's nine columns
    "resource_id": str, "owner": str, "region": str, "runtime_target": str, "deploy_ref": str,
    "status": str, "url": str, "created_at": str, "last_seen": str,
    # what the controller needs
    "spec_hash": str, "target_hash": str, "spec_json": str, "generation": int, "error": str,
    "attempts": int, "next_attempt_at": str, "health": str, "consecutive_failures": int,
    "last_check_at": str, "protected": int, "source": str, "updated_at": str,
    # bumped by every lifecycle write (not by health checks): the token of optimistic concurrency
    "version": int,
}
JOB_COLUMNS: dict[str, Any] = {
    "job_id": str, "resource_id": str, "action": str, "status": str, "attempt": int, "spec_json": str,
    "old_spec_json": str, "run_after": str, "lease_owner": str, "lease_expires_at": str, "exit_code": int,
    "output_tail": str, "error": str, "created_at": str, "started_at": str, "finished_at": str,
    "claims": int, "script_pgid": int, "script_host": str, "desired_commit": str,
}
EVENT_COLUMNS: dict[str, Any] = {
    "id": int, "resource_id": str, "at": str, "kind": str, "message": str, "job_id": str,
    "desired_commit": str, "details_json": str,
}


def _v1_initial(db: Any) -> None:
    db["resources"].create(
        RESOURCE_COLUMNS, pk="resource_id",
        not_null=["owner", "region", "runtime_target", "deploy_ref", "status"],
        defaults={"generation": 0, "attempts": 0, "health": "unknown", "consecutive_failures": 0,
                  "protected": 0, "source": "file", "version": 0},
    )
    db["resources"].create_index(["status"])
    db["jobs"].create(
        JOB_COLUMNS, pk="job_id", not_null=["resource_id", "action", "status"],
        defaults={"attempt": 1, "claims": 0},
    )
    # At most one open job per resource, enforced by the database itself, not by care.
    db.execute(
        "CREATE UNIQUE INDEX jobs_one_open_per_resource ON jobs(resource_id) "
        "WHERE status IN ('queued', 'running')"
    )
    db["jobs"].create_index(["status", "run_after"])
    db["events"].create(EVENT_COLUMNS, pk="id", not_null=["resource_id", "at", "kind"])
    db["events"].create_index(["resource_id", "id"])


def _v2_daemon_lock(db: Any) -> None:
    # One row per lock name; a holder that stops heartbeating loses it when expires_at passes.
    db["locks"].create({"name": str, "holder": str, "pid": int, "host": str, "since": str, "expires_at": str},
                       pk="name", not_null=["holder", "expires_at"])


def _v3_api_desired(db: Any) -> None:
    # Desired state declared through the HTTP API (tooling that cannot commit to git); files own the rest.
    db["api_desired"].create({"resource_id": str, "spec_json": str, "created_at": str, "updated_at": str},
                             pk="resource_id", not_null=["spec_json"])
    db["jobs"].create_index(["resource_id", "created_at"])


MIGRATIONS: list[Callable[[Any], None]] = [_v1_initial, _v2_daemon_lock, _v3_api_desired]
LATEST = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to LATEST; refuse a database made by a newer release."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == LATEST:
        return
    if version > LATEST:
        raise StoreError(f"database schema version {version} is newer than this release knows ({LATEST})")
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for number in range(version, LATEST):
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] != number:
                continue  # another process migrated while we waited for the lock
            MIGRATIONS[number](db)
            conn.execute(f"PRAGMA user_version = {number + 1}")
