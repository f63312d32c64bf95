"""Versioned schema migrations: one list of versions, spelled for SQLite (sqlite-utils) and PostgreSQL.

Each version is applied once and in order, so a database made by any earlier release upgrades in
place. The tables are described once (the column dicts below) and both backends are built from
that description, so every tier has the same schema and a JSON export moves between them as is.
SQLite tracks the version in `PRAGMA user_version` and imports sqlite-utils only when a migration
must run; PostgreSQL tracks it in `reconciler_schema`, under an advisory lock so that several
daemons starting at once migrate exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

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
        defaults=RESOURCE_DEFAULTS,
    )
    db["resources"].create_index(["status"])
    db["jobs"].create(
        JOB_COLUMNS, pk="job_id", not_null=["resource_id", "action", "status"],
        defaults={"attempt": 1, "claims": 0},
    )
    # At most one open job per resource, enforced by the database itself, not by care.
    db.execute(ONE_OPEN_JOB)
    db["jobs"].create_index(["status", "run_after"])
    db["events"].create(EVENT_COLUMNS, pk="id", not_null=["resource_id", "at", "kind"])
    db["events"].create_index(["resource_id", "id"])


# One row per lock name; a holder that stops heartbeating loses it when expires_at passes.
LOCK_COLUMNS: dict[str, Any] = {"name": str, "holder": str, "pid": int, "host": str, "since": str,
                                "expires_at": str}
# Desired state declared through the HTTP API (tooling that cannot commit to git); files own the rest.
API_DESIRED_COLUMNS: dict[str, Any] = {"resource_id": str, "spec_json": str, "created_at": str, "updated_at": str}
RESOURCE_DEFAULTS = {"generation": 0, "attempts": 0, "health": "unknown", "consecutive_failures": 0,
                     "protected": 0, "source": "file", "version": 0}
ONE_OPEN_JOB = ("CREATE UNIQUE INDEX jobs_one_open_per_resource ON jobs(resource_id) "
                "WHERE status IN ('queued', 'running')")


def _v2_daemon_lock(db: Any) -> None:
    db["locks"].create(LOCK_COLUMNS, pk="name", not_null=["holder", "expires_at"])


def _v3_api_desired(db: Any) -> None:
    db["api_desired"].create(API_DESIRED_COLUMNS, pk="resource_id", not_null=["spec_json"])
    db["jobs"].create_index(["resource_id", "created_at"])


# Who caused each event and each job (reconciler/actor.py: git:…, cli:…, api:…, daemon:…); NULL in rows
# written before this version. The index on `at` serves `audit --since` and `audit prune --before`.
ACTOR_COLUMN = "actor"


def _v4_actor(db: Any) -> None:
    db["events"].add_column(ACTOR_COLUMN, str)
    db["jobs"].add_column(ACTOR_COLUMN, str)
    db["events"].create_index(["at"])


# Resources the daemon holds back because of policy.yaml (one row each, the pass's latest verdict), and
# the owner of every job, so the hourly change budget counts a window of jobs per owner with an index.
HOLD_COLUMNS: dict[str, Any] = {"resource_id": str, "owner": str, "rules": str, "message": str, "since": str,
                                "updated_at": str}
JOBS_BY_OWNER = "CREATE INDEX idx_jobs_created_at_owner ON jobs (created_at, owner)"


def _v5_policy_holds(db: Any) -> None:
    db["holds"].create(HOLD_COLUMNS, pk="resource_id", not_null=["owner", "rules", "since"])
    db["jobs"].add_column("owner", str)
    db.execute("UPDATE jobs SET owner = json_extract(COALESCE(spec_json, old_spec_json), '$.owner')")
    db.execute(JOBS_BY_OWNER)


# Issue 16: operator controls. A resource suspended by `reconciler suspend` (a file's `suspend:` lives in
# the file); the fleet's flags (`suspend --all`: name "suspended"); a pass asked for by `reconciler reconcile`.
SUSPENSION_COLUMNS: dict[str, Any] = {"resource_id": str, "reason": str, "actor": str, "since": str, "until": str}
FLEET_FLAG_COLUMNS: dict[str, Any] = {"name": str, "reason": str, "actor": str, "since": str, "until": str}
PASS_REQUEST_COLUMNS: dict[str, Any] = {
    "request_id": str, "resource_ids_json": str, "actor": str, "requested_at": str, "status": str,
    "picked_at": str, "done_at": str, "job_ids_json": str, "notes_json": str, "error": str,
}


def _v6_operator_controls(db: Any) -> None:
    db["suspensions"].create(SUSPENSION_COLUMNS, pk="resource_id", not_null=["reason", "actor", "since"])
    db["fleet_flags"].create(FLEET_FLAG_COLUMNS, pk="name", not_null=["reason", "actor", "since"])
    db["pass_requests"].create(PASS_REQUEST_COLUMNS, pk="request_id", not_null=["requested_at", "status"])
    db["pass_requests"].create_index(["status"])


def _v7_unmanaged(db: Any) -> None:
    """Issue 16's forget: 1 while a forgotten row's id is still declared (the plan keeps it unmanaged).

    Also the marker that this database may hold `forgotten` rows, a status older releases cannot read:
    they refuse the newer schema instead of failing on the row."""
    db["resources"].add_column("unmanaged", int, not_null_default=0)


# The planning daemon's last pass, one row per role ("controller"): what `status` shows as its view.
DAEMON_PASS_COLUMNS: dict[str, Any] = {
    "name": str, "holder": str, "host": str, "pid": int, "at": str, "desired_loads": int,
    "desired_resources": int, "desired_files": int, "desired_error": str, "desired_commit": str,
}


def _v8_daemon_passes(db: Any) -> None:
    db["daemon_passes"].create(DAEMON_PASS_COLUMNS, pk="name", not_null=["holder", "at"])


# Rollouts (issue 17): one row per rollout, one per resource in it (its wave, from → to spec, where it is).
# The state machine's every transition is one transaction over these rows (rollouts.py, store/rollouts.py).
ROLLOUT_COLUMNS: dict[str, Any] = {
    "rollout_id": str, "state": str, "waves": int, "wave": int, "sizes_json": str, "settings_json": str,
    "created_at": str, "updated_at": str, "actor": str, "desired_commit": str, "reason": str, "promoted": int,
    "revert": int,
}
ROLLOUT_MEMBER_COLUMNS: dict[str, Any] = {
    "rollout_id": str, "resource_id": str, "wave": int, "state": str, "action": str, "from_spec_json": str,
    "to_spec_json": str, "to_hash": str, "job_id": str, "succeeded_at": str, "check_failures": int, "error": str,
    "updated_at": str,
}


def _v9_rollouts(db: Any) -> None:
    db["rollouts"].create(ROLLOUT_COLUMNS, pk="rollout_id", not_null=["state", "waves", "wave", "created_at"],
                          defaults={"promoted": 0, "revert": 0})
    db["rollouts"].create_index(["state"])
    db["rollout_members"].create(ROLLOUT_MEMBER_COLUMNS, pk=("rollout_id", "resource_id"),
                                 not_null=["wave", "state", "action"], defaults={"check_failures": 0})
    db["rollout_members"].create_index(["resource_id"])


MIGRATIONS: list[Callable[[Any], None]] = [_v1_initial, _v2_daemon_lock, _v3_api_desired, _v4_actor,
                                          _v5_policy_holds, _v6_operator_controls, _v7_unmanaged,
                                          _v8_daemon_passes, _v9_rollouts]
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


# --- PostgreSQL: the same versions, as DDL ---------------------------------------------------------

PG_ADVISORY_KEY = 7_270_001  # serialises concurrent migrations


def _pg_table(name: str, columns: dict[str, Any], *, pk: str, not_null: tuple[str, ...] = (),
              defaults: dict[str, Any] | None = None, serial: str | None = None) -> str:
    def column(col: str, kind: Any) -> str:
        if col == serial:
            return f"{col} BIGSERIAL"
        text = f"{col} {'BIGINT' if kind is int else 'TEXT'}"
        if col in (defaults or {}):
            value = (defaults or {})[col]
            text += f" DEFAULT {value!r}" if isinstance(value, str) else f" DEFAULT {value}"
        return text + (" NOT NULL" if col in not_null else "")
    body = ", ".join(column(col, kind) for col, kind in columns.items())
    return f"CREATE TABLE {name} ({body}, PRIMARY KEY ({pk}))"


PG_MIGRATIONS: list[list[str]] = [
    [
        _pg_table("resources", RESOURCE_COLUMNS, pk="resource_id",
                  not_null=("owner", "region", "runtime_target", "deploy_ref", "status"),
                  defaults=RESOURCE_DEFAULTS),
        "CREATE INDEX idx_resources_status ON resources (status)",
        _pg_table("jobs", JOB_COLUMNS, pk="job_id", not_null=("resource_id", "action", "status"),
                  defaults={"attempt": 1, "claims": 0}),
        ONE_OPEN_JOB,
        "CREATE INDEX idx_jobs_status_run_after ON jobs (status, run_after)",
        _pg_table("events", EVENT_COLUMNS, pk="id", not_null=("resource_id", "at", "kind"), serial="id"),
        "CREATE INDEX idx_events_resource_id_id ON events (resource_id, id)",
    ],
    [_pg_table("locks", LOCK_COLUMNS, pk="name", not_null=("holder", "expires_at"))],
    [
        _pg_table("api_desired", API_DESIRED_COLUMNS, pk="resource_id", not_null=("spec_json",)),
        "CREATE INDEX idx_jobs_resource_id_created_at ON jobs (resource_id, created_at)",
    ],
    [
        f"ALTER TABLE events ADD COLUMN {ACTOR_COLUMN} TEXT",
        f"ALTER TABLE jobs ADD COLUMN {ACTOR_COLUMN} TEXT",
        "CREATE INDEX idx_events_at ON events (at)",
    ],
    [
        _pg_table("holds", HOLD_COLUMNS, pk="resource_id", not_null=("owner", "rules", "since")),
        "ALTER TABLE jobs ADD COLUMN owner TEXT",
        "UPDATE jobs SET owner = COALESCE(spec_json, old_spec_json)::json->>'owner'",
        JOBS_BY_OWNER,
    ],
    [
        _pg_table("suspensions", SUSPENSION_COLUMNS, pk="resource_id", not_null=("reason", "actor", "since")),
        _pg_table("fleet_flags", FLEET_FLAG_COLUMNS, pk="name", not_null=("reason", "actor", "since")),
        _pg_table("pass_requests", PASS_REQUEST_COLUMNS, pk="request_id", not_null=("requested_at", "status")),
        "CREATE INDEX idx_pass_requests_status ON pass_requests (status)",
    ],
    ["ALTER TABLE resources ADD COLUMN unmanaged BIGINT NOT NULL DEFAULT 0"],  # _v7_unmanaged
    [_pg_table("daemon_passes", DAEMON_PASS_COLUMNS, pk="name", not_null=("holder", "at"))],
    [
        _pg_table("rollouts", ROLLOUT_COLUMNS, pk="rollout_id", not_null=("state", "waves", "wave", "created_at"),
                  defaults={"promoted": 0, "revert": 0}),
        "CREATE INDEX idx_rollouts_state ON rollouts (state)",
        _pg_table("rollout_members", ROLLOUT_MEMBER_COLUMNS, pk="rollout_id, resource_id",
                  not_null=("wave", "state", "action"), defaults={"check_failures": 0}),
        "CREATE INDEX idx_rollout_members_resource_id ON rollout_members (resource_id)",
    ],
]
assert len(PG_MIGRATIONS) == LATEST, "every version needs both spellings"


def migrate_postgres(conn: Any) -> None:
    """Bring a PostgreSQL database to LATEST (conn: a psycopg connection, not in a transaction)."""
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({PG_ADVISORY_KEY})")
        conn.execute("CREATE TABLE IF NOT EXISTS reconciler_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM reconciler_schema").fetchone()
        version = row["version"] if row is not None else 0
        if row is None:
            conn.execute("INSERT INTO reconciler_schema (version) VALUES (0)")
        if version > LATEST:
            raise StoreError(f"database schema version {version} is newer than this release knows ({LATEST})")
        for number in range(version, LATEST):
            for statement in PG_MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute("UPDATE reconciler_schema SET version = %s", (number + 1,))

