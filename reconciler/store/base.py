"""The store's logic, once for every SQL backend: observed rows, the job queue, events, health, locks.

SQLite and PostgreSQL differ in how they connect, lock and migrate, not in what a transition is, so
the statements live here in the subset both speak (`?` placeholders, ON CONFLICT DO NOTHING,
RETURNING) and each backend supplies connections, transactions and the few spellings that differ.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from ..defects import defect_enabled
from ..errors import StoreConflict, StoreError
from ..models import (
    DELETE_TARGET,
    FLEET_ID,
    UNMANAGED_STATUSES,
    Action,
    Adoption,
    Event,
    FleetCounts,
    Health,
    Hold,
    Job,
    JobRequest,
    JobResult,
    JobScope,
    JobStatus,
    ObservedResource,
    PassBeat,
    ResourceStatus,
    RolloutJobs,
    canonical_json,
    iso,
    utcnow,
)
from .controls import Controls, held_clause
from .rollouts import RolloutRows

if TYPE_CHECKING:
    from ..ports import (
        ApiStore,
        AuditStore,
        FleetFlagReader,
        HealthStore,
        Lifecycle,
        LockStore,
        PassRecorder,
        PassRequests,
        PassStore,
        PolicyStore,
        Portable,
        Queue,
        StatusReader,
        SurveyStore,
        SuspensionStore,
    )

# a rollout's jobs: each is its member's current job (rollout_members is indexed by resource_id)
_ROLLOUT_JOBS_SQL = (" AND EXISTS (SELECT 1 FROM rollout_members m WHERE m.resource_id = jobs.resource_id"
                     " AND m.job_id = jobs.job_id)")
FEW_RESULTS = 100  # record_health: up to this many results read only their own rows
EXPORTED_TABLES = {"resources": "resource_id", "jobs": "created_at, job_id", "events": "id",
                   "api_desired": "resource_id", "holds": "resource_id", "suspensions": "resource_id",
                   "fleet_flags": "name", "daemon_passes": "name", "rollouts": "created_at, rollout_id",
                   "rollout_members": "rollout_id, resource_id"}
_JOB_FIELDS = Job.__slots__
# the row's columns are the dataclass's fields, in order: one decoder reads every SELECT of them
_RESOURCE_COLUMNS = ", ".join(ObservedResource.__slots__)
_STATUS = {status.value: status for status in ResourceStatus}
_HEALTH = {health.value: health for health in Health}
_AT_STATUS = ObservedResource.__slots__.index("status")
_AT_HEALTH = ObservedResource.__slots__.index("health")
_AT_PROTECTED = ObservedResource.__slots__.index("protected")
_AT_UNMANAGED = ObservedResource.__slots__.index("unmanaged")


def _resource(row: Any) -> ObservedResource:
    values = list(row)
    values[_AT_STATUS] = _STATUS[values[_AT_STATUS]]
    values[_AT_HEALTH] = _HEALTH[values[_AT_HEALTH] or "unknown"]
    values[_AT_PROTECTED] = bool(values[_AT_PROTECTED])
    values[_AT_UNMANAGED] = bool(values[_AT_UNMANAGED])
    return ObservedResource(*values)


def _job(row: Any) -> Job:
    values = dict(row)
    values["action"] = Action(values["action"])
    values["status"] = JobStatus(values["status"])
    values["spec"] = json.loads(values.pop("spec_json")) if values.get("spec_json") else None
    values["old_spec"] = json.loads(values.pop("old_spec_json")) if values.get("old_spec_json") else None
    fields: dict[str, Any] = {name: values.get(name) for name in _JOB_FIELDS}
    return Job(**fields)


def _event(row: Any) -> Event:
    return Event(row["resource_id"], row["at"], row["kind"], row["message"] or "", row["job_id"],
                 row["desired_commit"], json.loads(row["details_json"] or "{}"), row["actor"])


class Cursor(Protocol):
    """What the statements read back: sqlite3's and psycopg's cursors both have it."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The one spelling of a connection the statements use (`?` placeholders; PostgreSQL's is wrapped)."""

    def execute(self, sql: str, args: Any = (), /) -> Cursor: ...
    def executemany(self, sql: str, rows: Any, /) -> Any: ...


class SQLStore(Controls, RolloutRows):
    """The store interface. Subclasses provide `_read`, `_write`, `_scope` and the locking spellings."""

    # appended to SELECTs that pick rows to change: PostgreSQL locks them, SQLite's writer lock already has
    skip_locked = ""
    for_update = ""
    # taken before a rollout is created: two processes proposing at once must not both take a resource
    # (SQLite's writer lock already serialises; PostgreSQL takes a transaction-scoped advisory lock)
    rollout_lock = ""
    kind = "sql"

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        raise NotImplementedError
        yield

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        raise NotImplementedError
        yield

    def _scope(self, resource_ids: Iterable[str] | None) -> tuple[str, tuple[Any, ...]]:
        raise NotImplementedError

    def _job_scope(self, scope: JobScope) -> tuple[str, tuple[Any, ...]]:
        """SQL narrowing a statement on `jobs` to a worker's scope (see models.JobScope)."""
        if isinstance(scope, RolloutJobs):
            return _ROLLOUT_JOBS_SQL, ()
        return self._scope(scope)

    def _after_import(self, conn: Connection) -> None:
        """Backend-specific fix-ups after rows were inserted with their own ids."""

    def _tuples(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(row) for row in conn.execute(sql, tuple(args))]

    def _one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sql, tuple(args)).fetchone()
        return dict(row) if row is not None else None

    def _count(self, sql: str, args: Iterable[Any] = ()) -> int:
        row = self._one(sql, args)
        return int(row["n"]) if row else 0

    # --- export / import: every durable row, the same JSON for SQLite and PostgreSQL -------------

    def export_rows(self) -> dict[str, list[dict[str, Any]]]:
        return {table: self._rows(f"SELECT * FROM {table} ORDER BY {order}")
                for table, order in EXPORTED_TABLES.items()}

    def is_empty(self) -> bool:
        return all(self._count(f"SELECT count(*) AS n FROM {table}") == 0 for table in EXPORTED_TABLES)

    def import_rows(self, *, tables: dict[str, list[dict[str, Any]]], replace: bool, actor: str | None = None,
                    now: str | None = None, name: str = "") -> dict[str, int]:
        """Load exported rows in one transaction; refuses a non-empty store unless `replace`.

        With `now`, the import records itself as a fleet event (resource "*") with its actor: a restore
        (`--replace`) deletes the history it replaces, so it must leave a trace of that.
        """
        unknown = set(tables) - set(EXPORTED_TABLES)
        if unknown:
            raise StoreError(f"unknown tables in the import: {', '.join(sorted(unknown))}")
        if not replace and not self.is_empty():
            raise StoreError("the target database is not empty; pass --replace to overwrite it")
        counts = {}
        with self._write() as conn:
            for table in EXPORTED_TABLES:
                if replace:
                    conn.execute(f"DELETE FROM {table}")
                rows = tables.get(table, [])
                if table == "jobs":
                    rows = [_with_owner(row) for row in rows]  # an export from before jobs had an owner
                counts[table] = len(rows)
                if rows:
                    columns = list(rows[0])
                    conn.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                        [tuple(row.get(column) for column in columns) for row in rows])
            self._after_import(conn)
            if now is not None:
                kind = "restored" if replace else "imported"
                summary = ", ".join(f"{count} {table}" for table, count in counts.items())
                self._event(conn, FLEET_ID, now, kind, f"{kind} {name or 'an export'}: {summary}", None, None,
                            {"replace": replace, "counts": counts, "source": name}, actor)
        return counts

    # --- reading -------------------------------------------------------------------------------

    def load_observed(self) -> dict[str, ObservedResource]:
        # Every pass reads every row: tuples in field order, built positionally (3x cheaper than dicts).
        rows = self._tuples(f"SELECT {_RESOURCE_COLUMNS} FROM resources")
        return {row[0]: _resource(row) for row in rows}

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever anything a plan reads changes (rows, open jobs, API specs); one cheap query."""
        return tuple(self._tuples(
            "SELECT (SELECT count(*) FROM resources), (SELECT sum(version) FROM resources),"
            " (SELECT max(last_check_at) FROM resources), (SELECT max(updated_at) FROM resources),"
            " (SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')),"
            " (SELECT sum(claims) FROM jobs WHERE status IN ('queued', 'running')),"
            " (SELECT max(created_at) FROM jobs),"
            " (SELECT count(*) FROM api_desired), (SELECT max(updated_at) FROM api_desired),"
            " (SELECT count(*) FROM suspensions), (SELECT max(since) FROM suspensions),"
            " (SELECT count(*) FROM fleet_flags), (SELECT max(since) FROM fleet_flags)")[0])

    def get_resource(self, resource_id: str) -> ObservedResource | None:
        rows = self._tuples(f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE resource_id = ?", (resource_id,))
        return _resource(rows[0]) if rows else None

    def in_flight(self) -> set[str]:
        """Ids of resources with an open (queued or running) job."""
        rows = self._rows("SELECT resource_id FROM jobs WHERE status IN ('queued', 'running')")
        return {row["resource_id"] for row in rows}

    def open_jobs(self, *, resource_ids: Iterable[str] | None = None) -> dict[str, Job]:
        """The open (queued or running) job of each resource that has one, by resource id (these resources;
        None: all)."""
        scope, args = self._scope(resource_ids)
        rows = self._rows(f"SELECT * FROM jobs WHERE status IN ('queued', 'running'){scope}", args)
        return {row["resource_id"]: _job(row) for row in rows}

    def latest_job(self, resource_id: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE resource_id = ? ORDER BY created_at DESC LIMIT 1", (resource_id,))
        return _job(row) if row else None

    def list_resources(self, *, owner: str | None = None, status: str | None = None,
                       health: str | None = None) -> list[ObservedResource]:
        clauses, args = [], []
        for column, value in (("owner", owner), ("status", status), ("health", health)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._tuples(f"SELECT {_RESOURCE_COLUMNS} FROM resources{where} ORDER BY resource_id", args)
        return [_resource(row) for row in rows]

    def counts(self) -> FleetCounts:
        """Rows per status and live rows per health, from one scan."""
        counts = FleetCounts.empty()
        for status, state, count in self._tuples(
                "SELECT status, health, count(*) FROM resources GROUP BY status, health"):
            counts.statuses[status] += count
            if status not in UNMANAGED_STATUSES:
                counts.health[state or "unknown"] += count
        return counts

    # --- desired state declared through the API ----------------------------------------------

    def api_desired(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT resource_id, spec_json FROM api_desired")
        return {row["resource_id"]: json.loads(row["spec_json"]) for row in rows}

    def api_declaration(self, resource_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT spec_json FROM api_desired WHERE resource_id = ?", (resource_id,))
        return json.loads(row["spec_json"]) if row else None

    @staticmethod
    def _put_api(conn: Connection, *, spec: dict[str, Any], now: str) -> None:
        conn.execute(
            "INSERT INTO api_desired (resource_id, spec_json, created_at, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(resource_id) DO UPDATE SET spec_json = excluded.spec_json,"
            " updated_at = excluded.updated_at", (spec["resource_id"], canonical_json(spec), now, now))

    def declare_api(self, *, resource_id: str, spec: dict[str, Any] | None, requests: Iterable[JobRequest],
                    now: str, actor: str | None = None) -> list[str]:
        """Store (`spec`) or drop (None) an API declaration and queue its change, in one transaction."""
        with self._write() as conn:
            if spec is None:
                conn.execute("DELETE FROM api_desired WHERE resource_id = ?", (resource_id,))
            else:
                self._put_api(conn, spec=spec, now=now)
            return self._enqueue_in(conn, requests=requests, now=now, commit=None, actor=actor)

    def get_job(self, job_id: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job(row) if row else None

    def events(self, resource_id: str, *, limit: int | None = None) -> list[Event]:
        sql = "SELECT * FROM events WHERE resource_id = ? ORDER BY id DESC"
        rows = self._rows(sql + (" LIMIT ?" if limit else ""), (resource_id, limit) if limit else (resource_id,))
        return [_event(row) for row in rows][::-1]

    # --- the audit trail: every resource's events, and their retention ---------------------------

    def audit_events(self, *, since: str | None = None, actor: str | None = None, owner: str | None = None,
                     limit: int | None = None) -> list[Event]:
        """Events across resources, oldest first (the newest `limit` when given); `actor` matches a part of
        the actor, ignoring case; `owner` keeps the events of that owner's resources."""
        clauses: list[str] = []
        args: list[Any] = []
        if since is not None:
            clauses.append("at >= ?")
            args.append(since)
        if actor:
            escaped = actor.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("lower(actor) LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        if owner is not None:
            clauses.append("resource_id IN (SELECT resource_id FROM resources WHERE owner = ?)")
            args.append(owner)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT * FROM events{where} ORDER BY id DESC" + (" LIMIT ?" if limit else ""),
                          [*args, limit] if limit else args)
        return [_event(row) for row in rows][::-1]

    def events_before(self, *, before: str) -> list[dict[str, Any]]:
        """The rows `prune_events(before=…)` would delete, as exported (for the archive written first)."""
        return self._rows("SELECT * FROM events WHERE at < ? ORDER BY id", (before,))

    def prune_events(self, *, before: str, archived: int, through_id: int, now: str, actor: str | None,
                     details: dict[str, Any]) -> int:
        """Delete the events older than `before` that were archived (`archived` rows, ids up to `through_id`)
        and record the prune, in one transaction; StoreConflict, deleting nothing, when they differ."""
        with self._write() as conn:
            count = conn.execute("DELETE FROM events WHERE at < ? AND id <= ?", (before, through_id)).rowcount
            if count != archived:
                raise StoreConflict(f"{count} events older than {before} exist, {archived} were archived: "
                                    "events changed meanwhile; nothing was pruned, run it again")
            self._event(conn, FLEET_ID, now, "audit_pruned", f"pruned {count} events older than {before}",
                        None, None, {**details, "before": before, "count": count}, actor)
        return count

    # --- the queue -----------------------------------------------------------------------------

    def enqueue(self, *, requests: Iterable[JobRequest], now: str, commit: str | None,
                actor: str | None = None) -> list[str]:
        """Write a job per request and mark its row, in one transaction.

        A request is skipped when its row changed since the plan was made (another apply or daemon
        got there first) or when the resource already has an open job: never two jobs for one change.
        Each job keeps its request's actor (`actor` for a request without one).
        """
        with self._write() as conn:
            return self._enqueue_in(conn, requests=requests, now=now, commit=commit, actor=actor)

    def _enqueue_in(self, conn: Connection, *, requests: Iterable[JobRequest], now: str,
                    commit: str | None, actor: str | None) -> list[str]:
        queued: list[str] = []
        for request in requests:
            if request.actor is None and actor is not None:
                request = replace(request, actor=actor)
            conn.execute("SAVEPOINT request")
            job_id = self._mark_row(conn, request=request, now=now) and self._insert_job(
                conn, request=request, now=now, commit=commit)
            if not job_id:
                conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
                continue
            conn.execute("RELEASE request")
            self._event(conn, request.resource_id, now, "queued", f"{request.action} queued: {request.reason}",
                        job_id, commit, request.details, request.actor)
            queued.append(job_id)
        return queued

    @staticmethod
    def _insert_job(conn: Connection, *, request: JobRequest, now: str, commit: str | None) -> str | None:
        job_id = "job-" + uuid.uuid4().hex[:16]
        cursor = conn.execute(
            "INSERT INTO jobs (job_id, resource_id, action, status, attempt, spec_json, old_spec_json,"
            " run_after, created_at, claims, desired_commit, actor, owner)"
            " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
            (job_id, request.resource_id, str(request.action), request.attempt,
             canonical_json(request.spec) if request.spec else None,
             canonical_json(request.old_spec) if request.old_spec else None, now, now, commit, request.actor,
             _job_owner(request)),
        )
        return job_id if cursor.rowcount == 1 else None

    @staticmethod
    def _mark_row(conn: Connection, *, request: JobRequest, now: str) -> bool:
        """Move the row to provisioning/deleting if it is still the version the plan saw."""
        if request.action is Action.DELETE and request.expected_version is not None:
            cursor = conn.execute(
                "UPDATE resources SET status = 'deleting', target_hash = ?, updated_at = ?, version = version + 1"
                " WHERE resource_id = ? AND version = ?",
                (DELETE_TARGET, now, request.resource_id, request.expected_version),
            )
            return cursor.rowcount == 1
        spec = request.spec
        assert spec is not None, "only a delete comes without a spec"
        if request.expected_version is None:
            cursor = conn.execute(
                "INSERT INTO resources (resource_id, owner, region, runtime_target, deploy_ref, status,"
                " created_at, target_hash, protected, updated_at, version, source)"
                " VALUES (?, ?, ?, ?, ?, 'provisioning', ?, ?, ?, ?, 1, ?) ON CONFLICT DO NOTHING",
                (spec["resource_id"], spec["owner"], spec["region"], spec["runtime_target"], spec["deploy_ref"],
                 now, request.target_hash, int(spec["protected"]), now, request.source),
            )
            return cursor.rowcount == 1
        cursor = conn.execute(
            "UPDATE resources SET status = 'provisioning', target_hash = ?, protected = ?, updated_at = ?,"
            # a tombstone (or a released forgotten row) declared again starts a new life
            " created_at = CASE WHEN status IN ('deleted', 'forgotten') THEN ? ELSE created_at END,"
            " version = version + 1, unmanaged = 0,"
            " source = ? WHERE resource_id = ? AND version = ?",
            (request.target_hash, int(spec["protected"]), now, now, request.source, request.resource_id,
             request.expected_version),
        )
        return cursor.rowcount == 1

    def claim(self, *, worker: str, now: str, lease_until: str, resource_ids: JobScope = None,
              limit: int = 1, fleet_override: bool = False) -> list[Job]:
        """Take up to `limit` runnable jobs (queued and due, or running under an expired lease).

        A suspended resource's jobs are never claimed, nor any while the fleet is suspended, unless
        `fleet_override` (`destroy`, which tears down its scope although the fleet is suspended).
        """
        with self._write() as conn:
            return self._claim_in(conn, worker=worker, now=now, lease_until=lease_until,
                                  resource_ids=resource_ids, limit=limit, fleet_override=fleet_override)

    def _claim_in(self, conn: Connection, *, worker: str, now: str, lease_until: str,
                  resource_ids: JobScope, limit: int, fleet_override: bool = False) -> list[Job]:
        scope, args = self._job_scope(resource_ids)
        held, held_args = held_clause(now=now, fleet_override=fleet_override)
        rows = conn.execute(
            f"SELECT * FROM jobs WHERE status = 'queued' AND run_after <= ?{scope}{held}"
            # ordered by the (status, run_after) index alone: a second sort key made every claim sort
            # all queued jobs (they share one run_after), which at 100k queued was the whole cost
            f" ORDER BY run_after LIMIT ?{self.skip_locked}", (now, *args, *held_args, limit)).fetchall()
        if len(rows) < limit:
            rows += conn.execute(
                f"SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at <= ?{scope}{held}"
                f" ORDER BY lease_expires_at LIMIT ?{self.skip_locked}",
                (now, *args, *held_args, limit - len(rows))).fetchall()
        picked = []
        for job in map(_job, rows):
            # script_pgid/script_host keep naming the previous run until the new one records its own
            # (record_script): if this claimer dies while it ends that run, the next claimer must still
            # know it, or it would start the script beside it.
            conn.execute(
                "UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires_at = ?, started_at = ?,"
                " claims = claims + 1 WHERE job_id = ?",
                (worker, lease_until, now, job.job_id),
            )
            if defect_enabled("claim-forgets-old-run"):  # test-only, see reconciler/defects.py
                conn.execute("UPDATE jobs SET script_pgid = NULL, script_host = NULL WHERE job_id = ?",
                             (job.job_id,))
            # as claimed, still naming the previous run's process group: it may need ending first
            picked.append(replace(job, status=JobStatus.RUNNING, lease_owner=worker,
                                  lease_expires_at=lease_until, started_at=now, claims=job.claims + 1))
        return picked

    def running_leases(self) -> list[tuple[str, str | None]]:
        """(job_id, lease_owner) of every running job: cheap enough to ask every few seconds."""
        return self._tuples("SELECT job_id, lease_owner FROM jobs WHERE status = 'running'")

    def count_open(self, *, resource_ids: JobScope = None, fleet_override: bool = False) -> int:
        """Open jobs an apply waits for: running ones, and queued ones no suspension holds (none would run)."""
        scope, args = self._job_scope(resource_ids)
        held, held_args = held_clause(now=iso(utcnow()), fleet_override=fleet_override)
        return self._count(f"SELECT count(*) AS n FROM jobs WHERE (status = 'running' OR (status = 'queued'{held}))"
                           f"{scope}", (*held_args, *args))

    def record_script(self, *, job_id: str, worker: str, pgid: int, host: str, now: str) -> bool:
        """Remember which process group runs the job, before the script is let go (the start gate)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET script_pgid = ?, script_host = ? WHERE job_id = ? AND lease_owner = ?"
                " AND status = 'running' RETURNING resource_id, action, claims, desired_commit, actor",
                (pgid, host, job_id, worker),
            )
            row = cursor.fetchone()
            if row is not None:
                again = f" (run {row['claims']}: an earlier worker stopped)" if row["claims"] > 1 else ""
                self._event(conn, row["resource_id"], now, "started",
                            f"{row['action']} started: process group {pgid} on {host}{again}", job_id,
                            row["desired_commit"], None, row["actor"])
        return row is not None

    def renew(self, *, worker: str, lease_until: str) -> int:
        """Extend every lease this worker holds; one statement for all its running jobs."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running'",
                (lease_until, worker),
            )
        return cursor.rowcount

    def expire_lease(self, *, job_id: str, worker: str, now: str) -> None:
        """Make a dead worker's lease reclaimable at once (its owner is known to be gone)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE job_id = ? AND lease_owner = ? AND status = 'running'",
                (now, job_id, worker),
            )

    def release(self, *, job_id: str, worker: str, now: str) -> None:
        """Give a job back to the queue untouched (shutdown): the next worker runs it again.

        The last run's process group stays recorded: the next claimer checks it is gone before it starts.
        """
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, run_after = ?"
                " WHERE job_id = ? AND lease_owner = ? AND status = 'running'",
                (now, job_id, worker),
            )

    def finish(self, *, job: Job, worker: str, result: JobResult, now: str) -> bool:
        """Record the job's end, its resource row and an event in one transaction.

        Returns False, recording nothing, when this worker no longer holds the lease.
        """
        with self._write() as conn:
            return self._finish_in(conn, job=job, worker=worker, result=result, now=now)

    def finish_and_claim(self, *, job: Job, worker: str, result: JobResult, now: str, lease_until: str,
                         resource_ids: JobScope = None,
                         fleet_override: bool = False) -> tuple[bool, Job | None]:
        """`finish`, then `claim` the worker's next job in the same transaction (one commit, not two)."""
        with self._write() as conn:
            recorded = self._finish_in(conn, job=job, worker=worker, result=result, now=now)
            picked = self._claim_in(conn, worker=worker, now=now, lease_until=lease_until,
                                    resource_ids=resource_ids, limit=1, fleet_override=fleet_override)
        return recorded, (picked[0] if picked else None)

    def _finish_in(self, conn: Connection, *, job: Job, worker: str, result: JobResult, now: str) -> bool:
        cursor = conn.execute(
            "UPDATE jobs SET status = ?, exit_code = ?, output_tail = ?, error = ?, finished_at = ?,"
            " lease_owner = NULL, lease_expires_at = NULL WHERE job_id = ? AND lease_owner = ?"
            # claims: a run whose lease lapsed in a store outage and was claimed again (even by a
            # thread of this process, same lease owner) must not record over the newer run
            " AND status = 'running' AND claims = ?",
            ("succeeded" if result.ok else "failed", result.exit_code, result.output_tail, result.error,
             now, job.job_id, worker, job.claims),
        )
        if cursor.rowcount != 1:
            return False
        old = conn.execute("SELECT url FROM resources WHERE resource_id = ?", (job.resource_id,)).fetchone()
        if result.ok:
            self._succeeded(conn, job=job, result=result, now=now)
        else:
            self._failed(conn, job=job, result=result, now=now)
        self._finish_events(conn, job=job, result=result, now=now, old_url=old["url"] if old else None)
        return True

    @staticmethod
    def _succeeded(conn: Connection, *, job: Job, result: JobResult, now: str) -> None:
        if job.action is Action.DELETE:
            conn.execute(
                "UPDATE resources SET status = 'deleted', url = NULL, spec_hash = NULL, target_hash = NULL,"
                " error = NULL, attempts = 0, next_attempt_at = NULL, health = 'unknown',"
                " consecutive_failures = 0, updated_at = ?, version = version + 1 WHERE resource_id = ?",
                (now, job.resource_id),
            )
            return
        spec = job.spec
        assert spec is not None, "only a delete job comes without a spec"
        conn.execute(
            "UPDATE resources SET status = 'active', url = ?, owner = ?, region = ?, runtime_target = ?,"
            " deploy_ref = ?, spec_hash = target_hash, spec_json = ?, protected = ?, generation = generation + 1,"
            " error = NULL, attempts = 0, next_attempt_at = NULL, last_seen = ?, updated_at = ?,"
            " health = 'unknown', consecutive_failures = 0,"
            " created_at = COALESCE(created_at, ?), version = version + 1 WHERE resource_id = ?",
            (result.url, spec["owner"], spec["region"], spec["runtime_target"], spec["deploy_ref"],
             canonical_json(spec), int(spec["protected"]), now, now, now, job.resource_id),
        )

    @staticmethod
    def _failed(conn: Connection, *, job: Job, result: JobResult, now: str) -> None:
        conn.execute(
            "UPDATE resources SET status = 'errored', error = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,"
            " version = version + 1 WHERE resource_id = ?",
            (result.error, job.attempt, result.next_attempt_at, now, job.resource_id),
        )

    def _finish_events(self, conn: Connection, *, job: Job, result: JobResult, now: str,
                       old_url: str | None) -> None:
        details = {"exit_code": result.exit_code, "output_tail": result.output_tail[-2000:],
                   "duration_s": round(result.duration, 3)}
        if result.ok and result.adopted:
            self._event(conn, job.resource_id, now, "adopted", f"{job.action}: observe.sh found it; adopted: "
                        f"{result.url}", job.job_id, job.desired_commit, details, job.actor)
        elif result.ok:
            message = f"{job.action} succeeded" + (f": {result.url}" if result.url else "")
            self._event(conn, job.resource_id, now, "succeeded", message, job.job_id, job.desired_commit, details,
                        job.actor)
        if result.ok:
            if result.url and result.url != old_url and job.action is not Action.DELETE:
                self._event(conn, job.resource_id, now, "url_changed", f"{old_url or '-'} -> {result.url}",
                            job.job_id, job.desired_commit, None, job.actor)
            return
        retry = f"; retry {job.attempt + 1} at {result.next_attempt_at}" if result.next_attempt_at else ""
        self._event(conn, job.resource_id, now, "failed", f"{job.action} failed: {result.error}{retry}",
                    job.job_id, job.desired_commit, details, job.actor)

    @staticmethod
    def _event(conn: Connection, resource_id: str, now: str, kind: str, message: str,
               job_id: str | None, commit: str | None, details: dict[str, Any] | None = None,
               actor: str | None = None) -> None:
        conn.execute(
            "INSERT INTO events (resource_id, at, kind, message, job_id, desired_commit, details_json, actor)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (resource_id, now, kind, message, job_id, commit, json.dumps(details) if details else None, actor),
        )


    # --- policy: the hourly change budget and the resources held back --------------------------

    def jobs_per_owner(self, *, since: str) -> dict[str, int]:
        """Jobs created at or after `since`, per owner: the sliding window of `max_per_owner_per_hour`,
        read from the queue itself so every daemon (and apply) sharing the database shares the budget."""
        rows = self._tuples("SELECT owner, count(*) FROM jobs WHERE created_at >= ? GROUP BY owner", (since,))
        return {owner: int(count) for owner, count in rows if owner is not None}

    def holds(self) -> dict[str, Hold]:
        """Every resource held back by the policy now (the last pass's verdict), by id."""
        rows = self._tuples("SELECT resource_id, owner, rules, message, since FROM holds")
        return {rid: Hold(rid, owner, tuple(rules.split(",")), message or "", since=since)
                for rid, owner, rules, message, since in rows}

    def sync_holds(self, *, holds: Iterable[Hold], now: str, actor: str | None = None) -> list[str]:
        """Make the holds table this pass's holds; returns the ids newly held or held by other rules.

        Each of those gets one `held` event (with the rules, the violations and their place in
        policy.yaml); a hold that stays the same writes nothing, however many passes (and restarts)
        see it, because the table remembers it. A resource no longer held leaves the table.
        """
        wanted = {hold.resource_id: hold for hold in holds}
        known = self.holds()
        gone = [(rid,) for rid in known.keys() - wanted.keys()]
        changed = [hold for rid, hold in wanted.items()
                   if rid not in known or (known[rid].rules, known[rid].message) != (hold.rules, hold.message)]
        noted = [hold.resource_id for hold in changed
                 if hold.resource_id not in known or known[hold.resource_id].rules != hold.rules]
        if not gone and not changed:
            return []
        with self._write() as conn:
            conn.executemany("DELETE FROM holds WHERE resource_id = ?", gone)
            conn.executemany(
                "INSERT INTO holds (resource_id, owner, rules, message, since, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(resource_id) DO UPDATE SET owner = excluded.owner, rules = excluded.rules,"
                " message = excluded.message, updated_at = excluded.updated_at,"
                " since = CASE WHEN holds.rules = excluded.rules THEN holds.since ELSE excluded.since END",
                [(hold.resource_id, hold.owner, ",".join(hold.rules), hold.message, now, now) for hold in changed])
            for rid in noted:
                hold = wanted[rid]
                self._event(conn, rid, now, "held", f"held back by policy ({', '.join(hold.rules)}): {hold.message}",
                            None, None, {"rules": list(hold.rules), **hold.details}, actor=actor)
        return noted

    # --- operator transitions: forget, adopt (issue 16) ----------------------------------------

    def forget(self, *, resource_ids: Sequence[str], reason: str, actor: str, now: str) -> None:
        """Drop managed rows from management without a teardown, all or none (StoreConflict names why).

        The row stays (status `forgotten`, history kept, `unmanaged` until its id is no longer declared);
        a row with an open job is refused: its job would act on a resource nobody manages any more.
        """
        with self._write() as conn:
            problems = [problem for rid in resource_ids if (problem := self._unforgettable(conn, rid))]
            if problems:
                raise StoreConflict("nothing was forgotten: " + "; ".join(problems))
            for resource_id in resource_ids:
                conn.execute(
                    "UPDATE resources SET status = 'forgotten', unmanaged = 1, error = NULL, attempts = 0,"
                    " next_attempt_at = NULL, health = 'unknown', consecutive_failures = 0, updated_at = ?,"
                    " version = version + 1 WHERE resource_id = ?", (now, resource_id))
                self._event(conn, resource_id, now, "forgotten", f"forgotten by {actor}: {reason} (no teardown ran)",
                            None, None, {"reason": reason}, actor)

    def _unforgettable(self, conn: Connection, resource_id: str) -> str | None:
        row = conn.execute(f"SELECT status FROM resources WHERE resource_id = ?{self.for_update}",
                           (resource_id,)).fetchone()
        if row is None:
            return f"{resource_id}: no such resource"
        if row["status"] in UNMANAGED_STATUSES:
            return f"{resource_id}: not managed ({row['status']})"
        if conn.execute("SELECT 1 FROM jobs WHERE resource_id = ? AND status IN ('queued', 'running')",
                        (resource_id,)).fetchone():
            return f"{resource_id}: a job is open; wait for it to finish, then forget it"
        return None

    def managed_ids(self) -> set[str]:
        """Ids of live rows (a tombstone or a forgotten row is not managed): what adopt must not overwrite."""
        return {row[0] for row in self._tuples(
            "SELECT resource_id FROM resources WHERE status NOT IN ('deleted', 'forgotten')")}

    def release_forgotten(self, *, resource_ids: Iterable[str], now: str) -> None:
        """Forgotten ids no longer declared: from now on declaring them again creates them (plan.released)."""
        scope, args = self._scope(resource_ids)
        with self._write() as conn:
            conn.execute("UPDATE resources SET unmanaged = 0, updated_at = ?, version = version + 1"
                         f" WHERE status = 'forgotten' AND unmanaged = 1{scope}", (now, *args))

    def adopt(self, *, adoptions: Sequence[Adoption], actor: str, reason: str | None, now: str) -> int:
        """Record existing resources as active from their declared specs, in one transaction, all or none.

        A new id gets a row; a tombstone or forgotten row starts a new life; an id managed meanwhile
        fails the whole call (StoreConflict), so nothing is half-adopted. Health is left unknown.
        """
        with self._write() as conn:
            conn.executemany(_ADOPT, [
                (a.resource_id, a.spec["owner"], a.spec["region"], a.spec["runtime_target"], a.spec["deploy_ref"],
                 a.url, a.created_at or now, a.spec_hash, a.spec_hash, canonical_json(a.spec),
                 int(a.spec["protected"]), a.source, now) for a in adoptions])
            scope, args = self._scope([a.resource_id for a in adoptions])
            done = conn.execute("SELECT count(*) AS n FROM resources WHERE status = 'active' AND updated_at = ?"
                                f" AND unmanaged = 0{scope}", (now, *args)).fetchone()["n"]
            if done != len(adoptions):
                managed = conn.execute(f"SELECT resource_id FROM resources WHERE updated_at <> ?{scope}"
                                       " ORDER BY resource_id LIMIT 10", (now, *args)).fetchall()
                raise StoreConflict("nothing was adopted: already managed: "
                                    + ", ".join(row["resource_id"] for row in managed))
            details = json.dumps({"reason": reason}) if reason else None
            conn.executemany(
                "INSERT INTO events (resource_id, at, kind, message, job_id, desired_commit, details_json, actor)"
                " VALUES (?, ?, 'adopted', ?, NULL, NULL, ?, ?)",
                [(a.resource_id, now, f"adopted by {actor}: {a.url}" + (f" ({reason})" if reason else ""), details,
                  actor) for a in adoptions])
        return len(adoptions)

    # --- health ------------------------------------------------------------------------------

    def record_health(self, *, results: Iterable[Any], now: str, unhealthy_after: int,
                      actor: str | None = None) -> list[str]:
        """Write one drift pass in one transaction; returns the ids that just turned unhealthy.

        Success refreshes last_seen; failures count up and turn the row unhealthy at the threshold.
        Only active rows are touched: a row that started a job meanwhile is the job's business.
        """
        results = list(results)
        # a few results (the check after one provision) read their own rows by key, not every active row:
        # under the write lock, at 10k active rows that read was most of each job's cost (P9)
        ids = sorted({r.resource_id for r in results})
        where = (f"resource_id IN ({', '.join('?' * len(ids))})" if ids else "1 = 0", ids) \
            if len(ids) <= FEW_RESULTS else ("1 = 1", [])
        with self._write() as conn:
            prior = {row["resource_id"]: (row["health"], row["consecutive_failures"]) for row in conn.execute(
                f"SELECT resource_id, health, consecutive_failures, status FROM resources WHERE {where[0]}", where[1])
                if row["status"] == "active"}
            updates, events, turned = [], [], []
            for result in results:
                if result.resource_id not in prior:
                    continue
                health, failures = prior[result.resource_id]
                new_health, new_failures = _next_health(ok=result.ok, health=health, failures=failures,
                                                        unhealthy_after=unhealthy_after)
                updates.append((now if result.ok else None, now, new_health, new_failures, result.resource_id))
                event = _health_event(result=result, before=health, after=new_health, failures=new_failures)
                if event:
                    events.append((result.resource_id, now, *event, None, None, None, actor))
                    turned += [result.resource_id] if new_health == "unhealthy" else []
            conn.executemany(
                "UPDATE resources SET last_seen = COALESCE(?, last_seen), last_check_at = ?, health = ?,"
                " consecutive_failures = ? WHERE resource_id = ? AND status = 'active'", updates)
            conn.executemany(
                "INSERT INTO events (resource_id, at, kind, message, job_id, desired_commit, details_json, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)
        return turned

    # --- the planning daemon's last pass (what `status` shows as the daemon's view) -------------

    def record_pass(self, *, beat: PassBeat, name: str = "controller") -> None:
        """Replace the row of `name` with this pass (one small upsert after each pass)."""
        values = (name, beat.holder, beat.host, beat.pid, beat.at, int(beat.desired_loads), beat.desired_resources,
                  beat.desired_files, beat.desired_error, beat.desired_commit)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO daemon_passes (name, holder, host, pid, at, desired_loads, desired_resources,"
                " desired_files, desired_error, desired_commit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, host = excluded.host,"
                " pid = excluded.pid, at = excluded.at, desired_loads = excluded.desired_loads,"
                " desired_resources = excluded.desired_resources, desired_files = excluded.desired_files,"
                " desired_error = excluded.desired_error, desired_commit = excluded.desired_commit", values)

    def last_pass(self, *, name: str = "controller") -> PassBeat | None:
        row = self._one("SELECT * FROM daemon_passes WHERE name = ?", (name,))
        if row is None:
            return None
        return PassBeat(row["holder"], row["host"] or "", int(row["pid"] or 0), row["at"], bool(row["desired_loads"]),
                        int(row["desired_resources"] or 0), int(row["desired_files"] or 0), row["desired_error"],
                        row["desired_commit"])

    # --- the single-daemon lock ---------------------------------------------------------------

    def acquire_lock(self, *, name: str, holder: str, pid: int, host: str, now: str, until: str,
                     holder_dead: Callable[[Any, Any], bool]) -> dict[str, Any] | None:
        """Take the lock if free, expired or held by a dead process; else return who holds it."""
        with self._write() as conn:
            # make the row exist, then lock it: two takers must not both see "free"
            conn.execute("INSERT INTO locks (name, holder, expires_at) VALUES (?, '', '') ON CONFLICT DO NOTHING",
                         (name,))
            row = dict(conn.execute(f"SELECT * FROM locks WHERE name = ?{self.for_update}", (name,)).fetchone())
            held = row["holder"] and row["expires_at"] > now and not holder_dead(row["host"], row["pid"])
            if held and row["holder"] != holder:
                return row
            conn.execute("UPDATE locks SET holder = ?, pid = ?, host = ?, since = ?, expires_at = ? WHERE name = ?",
                         (holder, pid, host, row["since"] if row["holder"] == holder else now, until, name))
        return None

    def lock_holder(self, *, name: str, now: str) -> dict[str, Any] | None:
        """Who holds `name` now (None when nobody does): for `status` and /health."""
        row = self._one("SELECT * FROM locks WHERE name = ?", (name,))
        return row if row and row["holder"] and row["expires_at"] > now else None

    def renew_lock(self, *, name: str, holder: str, until: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute("UPDATE locks SET expires_at = ? WHERE name = ? AND holder = ?",
                                  (until, name, holder))
        return cursor.rowcount == 1

    def release_lock(self, *, name: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder))


def _with_owner(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("owner") is not None:
        return row
    spec = row.get("spec_json") or row.get("old_spec_json")
    return {**row, "owner": json.loads(spec).get("owner") if spec else None}


def _job_owner(request: JobRequest) -> str | None:
    """The owner a job's change counts against (a delete's spec is the one torn down)."""
    spec = request.spec or request.old_spec
    return str(spec["owner"]) if spec and "owner" in spec else None


# an adopted row: active from its declared spec, health unknown; over a tombstone or forgotten row only
_ADOPT = (
    "INSERT INTO resources (resource_id, owner, region, runtime_target, deploy_ref, status, url, created_at,"
    " spec_hash, target_hash, spec_json, generation, health, protected, source, updated_at, version, unmanaged)"
    " VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, 1, 'unknown', ?, ?, ?, 1, 0)"
    " ON CONFLICT (resource_id) DO UPDATE SET owner = excluded.owner, region = excluded.region,"
    " runtime_target = excluded.runtime_target, deploy_ref = excluded.deploy_ref, status = 'active',"
    " url = excluded.url, created_at = excluded.created_at, last_seen = NULL, spec_hash = excluded.spec_hash,"
    " target_hash = excluded.target_hash, spec_json = excluded.spec_json,"
    " generation = resources.generation + 1, error = NULL, attempts = 0, next_attempt_at = NULL,"
    " health = 'unknown', consecutive_failures = 0, last_check_at = NULL, protected = excluded.protected,"
    " source = excluded.source, updated_at = excluded.updated_at, version = resources.version + 1,"
    " unmanaged = 0 WHERE resources.status IN ('deleted', 'forgotten')")


def _next_health(*, ok: bool, health: str, failures: int, unhealthy_after: int) -> tuple[str, int]:
    if ok:
        return "healthy", 0
    failures += 1
    return ("unhealthy" if failures >= unhealthy_after else health), failures


def _health_event(*, result: Any, before: str, after: str, failures: int) -> tuple[str, str] | None:
    if after == "unhealthy" and before != "unhealthy":
        return "unhealthy", f"{failures} failed checks in a row; last: {result.error} ({result.url})"
    if after == "healthy" and before == "unhealthy":
        return "recovered", f"healthy again ({result.url})"
    return None


if TYPE_CHECKING:  # mypy proves here that the one store class fits every consumer's port

    def _fits_every_port(
        store: SQLStore,
    ) -> tuple[PassStore, Queue, LockStore, HealthStore, StatusReader, ApiStore, Portable, AuditStore,
               PolicyStore, Lifecycle, SurveyStore, PassRecorder]:
        return store, store, store, store, store, store, store, store, store, store, store, store

    def _fits_the_controls(store: SQLStore) -> tuple[SuspensionStore, PassRequests, FleetFlagReader]:
        return store, store, store
