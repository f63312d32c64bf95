"""The statements of the operator controls (issue 16): suspensions, the fleet's flag, passes on demand.

A mixin of `SQLStore`, kept apart from the queue's statements in `base.py` so each file keeps one job;
it uses the store's connections and event writer. Every change here writes its events (with the actor
and the reason) in the same transaction as the rows, so the audit trail and the state cannot disagree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..defects import defect_enabled
from ..models import PassRequest, PassRequestStatus
from ..suspensions import FLEET_ID, Suspension, Suspensions

if TYPE_CHECKING:
    from .base import Connection

FLEET_SUSPENDED = "suspended"  # the fleet_flags row of `suspend --all`
# A job whose resource is suspended, or any job while the fleet is: claimed by no one, counted by no apply
_HELD = (" AND NOT EXISTS (SELECT 1 FROM suspensions s WHERE s.resource_id = jobs.resource_id"
         " AND (s.until IS NULL OR s.until > ?))")
_FLEET_HELD = (" AND NOT EXISTS (SELECT 1 FROM fleet_flags f WHERE f.name = 'suspended'"
               " AND (f.until IS NULL OR f.until > ?))")
_CANCELLED = "cancelled before it ran: {why}"


def held_clause(*, now: str, fleet_override: bool = False) -> tuple[str, tuple[Any, ...]]:
    """SQL (and its arguments) leaving out jobs a suspension holds; `fleet_override`: `destroy`'s own."""
    if defect_enabled("suspension-ignored"):  # test-only, see reconciler/defects.py
        return "", ()
    if fleet_override:
        return _HELD, (now,)
    return _HELD + _FLEET_HELD, (now, now)


class Controls:
    """Suspensions, the fleet flag and pass requests: mixed into `SQLStore`."""

    if TYPE_CHECKING:
        def _write(self) -> AbstractContextManager[Connection]: ...
        def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]: ...
        def _one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None: ...
        def _scope(self, resource_ids: Iterable[str] | None) -> tuple[str, tuple[Any, ...]]: ...
        @staticmethod
        def _event(conn: Connection, resource_id: str, now: str, kind: str, message: str,
                   job_id: str | None, commit: str | None, details: dict[str, Any] | None = None,
                   actor: str | None = None) -> None: ...

    # --- reading ---

    def suspensions(self) -> Suspensions:
        """Every suspension row and the fleet's flag (expired ones too: the plan compares with its `now`)."""
        if defect_enabled("suspension-ignored"):  # test-only, see reconciler/defects.py
            return Suspensions()
        rows = self._rows("SELECT resource_id, reason, actor, since, until FROM suspensions")
        fleet = self.fleet_suspension()
        return Suspensions({row["resource_id"]: _suspension(row) for row in rows}, fleet)

    def fleet_suspension(self, *, now: str | None = None) -> Suspension | None:
        """The fleet's suspension (`suspend --all`); with `now`, only while in force."""
        row = self._one("SELECT reason, actor, since, until FROM fleet_flags WHERE name = ?", (FLEET_SUSPENDED,))
        found = _suspension(row) if row else None
        return found if found is not None and (now is None or found.in_force(now)) else None

    # --- suspend and resume ---

    def suspend(self, *, resource_ids: Iterable[str], reason: str, actor: str, until: str | None,
                now: str) -> list[str]:
        """Suspend these resources and cancel their queued jobs, in one transaction; returns the cancelled jobs.

        A running job finishes: its script is never stopped halfway. Suspending again replaces the
        reason, actor and expiry.
        """
        ids = sorted(set(resource_ids))
        with self._write() as conn:
            for resource_id in ids:
                conn.execute(
                    "INSERT INTO suspensions (resource_id, reason, actor, since, until) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(resource_id) DO UPDATE SET reason = excluded.reason, actor = excluded.actor,"
                    " since = excluded.since, until = excluded.until", (resource_id, reason, actor, now, until))
                self._event(conn, resource_id, now, "suspended", _said("suspended", actor, reason, until), None,
                            None, {"reason": reason, "until": until}, actor)
            return self._cancel_in(conn, resource_ids=ids, now=now, why=f"suspended by {actor}: {reason}",
                                   actor=actor)

    def resume(self, *, resource_ids: Iterable[str], actor: str, reason: str | None, now: str) -> list[str]:
        """Lift these resources' suspensions; returns the ids that were suspended."""
        lifted = []
        with self._write() as conn:
            for resource_id in sorted(set(resource_ids)):
                gone = conn.execute("DELETE FROM suspensions WHERE resource_id = ?", (resource_id,)).rowcount
                if gone:
                    lifted.append(resource_id)
                    self._event(conn, resource_id, now, "resumed", _said("resumed", actor, reason, None), None,
                                None, {"reason": reason}, actor)
        return lifted

    def suspend_fleet(self, *, reason: str, actor: str, until: str | None, now: str) -> list[str]:
        """`suspend --all`: set the fleet's flag and cancel every queued job; returns the cancelled jobs."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO fleet_flags (name, reason, actor, since, until) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET reason = excluded.reason, actor = excluded.actor,"
                " since = excluded.since, until = excluded.until", (FLEET_SUSPENDED, reason, actor, now, until))
            self._event(conn, FLEET_ID, now, "suspended", _said("fleet suspended", actor, reason, until), None,
                        None, {"reason": reason, "until": until}, actor)
            return self._cancel_in(conn, resource_ids=None, now=now, why=f"fleet suspended by {actor}: {reason}",
                                   actor=actor)

    def resume_fleet(self, *, actor: str, reason: str | None, now: str) -> bool:
        """`resume --all`: clear the fleet's flag; False when it was not set."""
        with self._write() as conn:
            gone = conn.execute("DELETE FROM fleet_flags WHERE name = ?", (FLEET_SUSPENDED,)).rowcount
            if gone:
                self._event(conn, FLEET_ID, now, "resumed", _said("fleet resumed", actor, reason, None), None,
                            None, {"reason": reason}, actor)
        return bool(gone)

    def cancel_queued(self, *, resource_ids: Iterable[str], now: str, why: str, actor: str | None) -> list[str]:
        """Cancel the queued (never running) jobs of these resources: a pass found them suspended."""
        with self._write() as conn:
            return self._cancel_in(conn, resource_ids=sorted(set(resource_ids)), now=now, why=why, actor=actor)

    def _cancel_in(self, conn: Connection, *, resource_ids: Iterable[str] | None, now: str, why: str,
                   actor: str | None) -> list[str]:
        """Queued jobs → cancelled, each row back to what its last success left (nothing ran), with an event."""
        scope, args = self._scope(resource_ids)
        error = _CANCELLED.format(why=why)
        cancelled = conn.execute(
            f"UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ? WHERE status = 'queued'{scope}"
            " RETURNING job_id, resource_id, action, desired_commit", (error, now, *args)).fetchall()
        for job in cancelled:
            # a row that was applied before is what it was (active); one never created failed to be (errored)
            conn.execute(
                "UPDATE resources SET status = CASE WHEN spec_hash IS NOT NULL THEN 'active' ELSE 'errored' END,"
                " target_hash = spec_hash, error = CASE WHEN spec_hash IS NULL THEN ? ELSE error END,"
                " next_attempt_at = NULL, updated_at = ?, version = version + 1"
                " WHERE resource_id = ? AND status IN ('provisioning', 'deleting')", (error, now, job["resource_id"]))
            self._event(conn, job["resource_id"], now, "cancelled", f"{job['action']} {error}", job["job_id"],
                        job["desired_commit"], {"why": why}, actor)
        return [job["job_id"] for job in cancelled]

    # --- passes on demand ---

    def request_pass(self, *, resource_ids: Iterable[str] | None, actor: str, now: str) -> str:
        """Write a pass request for the planning daemon to pick up; returns its id."""
        request_id = "pass-" + uuid.uuid4().hex[:16]
        ids = None if resource_ids is None else json.dumps(sorted(set(resource_ids)))
        with self._write() as conn:
            conn.execute("INSERT INTO pass_requests (request_id, resource_ids_json, actor, requested_at, status)"
                         " VALUES (?, ?, ?, ?, 'pending')", (request_id, ids, actor, now))
            for resource_id in json.loads(ids) if ids else [FLEET_ID]:
                self._event(conn, resource_id, now, "pass_requested", f"pass requested by {actor}", None, None,
                            {"request_id": request_id}, actor)
        return request_id

    def pending_requests(self, *, limit: int = 20) -> list[PassRequest]:
        """The oldest unanswered requests: one indexed query, cheap enough to ask every second."""
        rows = self._rows("SELECT * FROM pass_requests WHERE status = 'pending' ORDER BY requested_at LIMIT ?",
                          (limit,))
        return [_request(row) for row in rows]

    def take_request(self, *, request_id: str, now: str) -> bool:
        """Mark a request as being answered; False when another daemon took it first."""
        with self._write() as conn:
            return conn.execute("UPDATE pass_requests SET status = 'running', picked_at = ? WHERE request_id = ?"
                                " AND status = 'pending'", (now, request_id)).rowcount == 1

    def answer_request(self, *, request_id: str, job_ids: Iterable[str], notes: Iterable[str],
                       error: str | None, now: str) -> None:
        status = PassRequestStatus.FAILED if error else PassRequestStatus.DONE
        with self._write() as conn:
            conn.execute("UPDATE pass_requests SET status = ?, done_at = ?, job_ids_json = ?, notes_json = ?,"
                         " error = ? WHERE request_id = ?",
                         (str(status), now, json.dumps(list(job_ids)), json.dumps(list(notes)), error, request_id))

    def prune_requests(self, *, before: str) -> int:
        """Forget answered requests older than `before` (the daemon keeps a day of them)."""
        with self._write() as conn:
            return conn.execute("DELETE FROM pass_requests WHERE status IN ('done', 'failed') AND done_at < ?",
                                (before,)).rowcount

    def get_request(self, request_id: str) -> PassRequest | None:
        row = self._one("SELECT * FROM pass_requests WHERE request_id = ?", (request_id,))
        return _request(row) if row else None


def _suspension(row: dict[str, Any]) -> Suspension:
    return Suspension(row["reason"], row["actor"], row["since"], row["until"])


def _request(row: dict[str, Any]) -> PassRequest:
    ids = row["resource_ids_json"]
    return PassRequest(row["request_id"], tuple(json.loads(ids)) if ids else None, row["actor"], row["requested_at"],
                       PassRequestStatus(row["status"]), tuple(json.loads(row["job_ids_json"] or "[]")),
                       tuple(json.loads(row["notes_json"] or "[]")), row["error"])


def _said(what: str, actor: str, reason: str | None, until: str | None) -> str:
    return f"{what} by {actor}" + (f": {reason}" if reason else "") + (f" (until {until})" if until else "")


