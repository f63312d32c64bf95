"""The rollouts' rows (issue 17): every statement about `rollouts` and `rollout_members`, for both backends.

Each transition of a rollout is one transaction here: a wave's start writes the rollout row, the
wave's jobs and the members' job ids together, so a crash at any instant leaves either the wave
not started (started again after a restart) or started with its jobs queued (never twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ..models import FLEET_ID, Action, JobRequest
from ..rollout.model import ACTIVE, Member, MemberState, Rollout, RolloutState, Settings, StoredSpec, plain
from ..rollout.plan import Holding, holds

if TYPE_CHECKING:
    from .base import Connection


class _Store(Protocol):
    """What the mixin uses of SQLStore."""

    rollout_lock: str

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]: ...
    def _one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None: ...
    def _write(self) -> AbstractContextManager[Connection]: ...
    def _enqueue_in(self, conn: Connection, *, requests: Iterable[JobRequest], now: str, commit: str | None,
                    actor: str | None) -> list[str]: ...
    @staticmethod
    def _event(conn: Connection, resource_id: str, now: str, kind: str, message: str, job_id: str | None,
               commit: str | None, details: dict[str, Any] | None = None, actor: str | None = None) -> None: ...
    def _cancel_in(self, conn: Connection, *, resource_ids: Iterable[str] | None, now: str, why: str,
                   actor: str | None) -> list[str]: ...

_ACTIVE = tuple(str(state) for state in ACTIVE)
_HOLDING_SQL = (
    "SELECT m.*, r.state AS rollout_state, r.waves AS rollout_waves FROM rollout_members m"
    " JOIN rollouts r ON r.rollout_id = m.rollout_id"
    " WHERE m.state NOT IN ('superseded', 'skipped') AND (r.state IN ({active})"
    " OR m.state IN ('reverted', 'reverting') OR (r.state = 'aborted' AND m.state = 'pending'))"
    " ORDER BY r.created_at, r.rollout_id")


def _rollout(row: dict[str, Any]) -> Rollout:
    return Rollout(rollout_id=row["rollout_id"], state=RolloutState(row["state"]), waves=int(row["waves"]),
                   wave=int(row["wave"]), settings=Settings.from_json(json.loads(row["settings_json"] or "{}")),
                   created_at=row["created_at"], updated_at=row["updated_at"], actor=row["actor"],
                   desired_commit=row["desired_commit"], reason=row["reason"], promoted=bool(row["promoted"]),
                   revert=bool(row["revert"]), sizes=tuple(json.loads(row["sizes_json"] or "[]")))


_MEMBER_STATES = {state.value: state for state in MemberState}  # a dict lookup: 10,000 rows a tick
_ACTIONS = {action.value: action for action in Action}


def _member(row: dict[str, Any]) -> Member:
    return Member(rollout_id=row["rollout_id"], resource_id=row["resource_id"], wave=int(row["wave"]),
                  state=_MEMBER_STATES[row["state"]], action=_ACTIONS[row["action"]],
                  from_spec=StoredSpec(row["from_spec_json"]) if row["from_spec_json"] else None,
                  to_spec=StoredSpec(row["to_spec_json"]) if row["to_spec_json"] else None, to_hash=row["to_hash"],
                  job_id=row["job_id"], succeeded_at=row["succeeded_at"],
                  check_failures=int(row["check_failures"] or 0), error=row["error"], updated_at=row["updated_at"])


class RolloutRows:
    """Mixed into SQLStore: the rollouts' reads and transitions."""

    def open_rollouts(self: _Store) -> list[Rollout]:
        """Rollouts someone must advance: active ones, and ended ones with a revert still to do."""
        marks = ", ".join("?" for _ in _ACTIVE)
        rows = self._rows(f"SELECT * FROM rollouts WHERE state IN ({marks}) OR revert = 1"
                          " ORDER BY created_at, rollout_id", _ACTIVE)
        return [_rollout(row) for row in rows]

    def list_rollouts(self: _Store, *, limit: int = 20) -> list[Rollout]:
        rows = self._rows("SELECT * FROM rollouts ORDER BY created_at DESC, rollout_id DESC LIMIT ?", (limit,))
        return [_rollout(row) for row in rows]

    def get_rollout(self: _Store, rollout_id: str) -> Rollout | None:
        row = self._one("SELECT * FROM rollouts WHERE rollout_id = ?", (rollout_id,))
        return _rollout(row) if row else None

    def rollout_members(self: _Store, rollout_id: str) -> list[Member]:
        rows = self._rows("SELECT * FROM rollout_members WHERE rollout_id = ? ORDER BY wave, resource_id",
                          (rollout_id,))
        return [_member(row) for row in rows]

    def holdings(self: _Store) -> dict[str, Holding]:
        """For each resource a rollout holds: its member row (the newest rollout's when several)."""
        rows = self._rows(_HOLDING_SQL.format(active=", ".join("?" for _ in _ACTIVE)), _ACTIVE)
        return {row["resource_id"]: _holding(row) for row in rows}

    def job_outcomes(self: _Store, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """status, finished_at, error of these jobs (the ones that exist)."""
        ids = sorted(set(job_ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(f"SELECT job_id, status, finished_at, error FROM jobs WHERE job_id IN ({marks})",
                                  chunk):
                found[row["job_id"]] = row
        return found

    def create_rollout(self: _Store, *, rollout: Rollout, members: Sequence[Member], now: str) -> list[str]:
        """Write a rollout and its members in one transaction, unless another rollout already holds one of its
        resources (two processes proposed at once): then nothing is written and the next plan proposes again
        (no two rollouts touch one resource; the waves were sized for the whole set). Returns the ids taken."""
        with self._write() as conn:
            if self.rollout_lock:
                conn.execute(self.rollout_lock)
            # held as the plan's gate sees it: a member that already succeeded in a halted rollout holds
            # nothing (the gate let the new change through, so it must not be refused here)
            taken = {row["resource_id"] for row in conn.execute(
                _HOLDING_SQL.format(active=", ".join("?" for _ in _ACTIVE)), _ACTIVE) if holds(_holding(dict(row)))}
            if taken & {member.resource_id for member in members}:
                return []
            mine = list(members)
            conn.execute(
                "INSERT INTO rollouts (rollout_id, state, waves, wave, sizes_json, settings_json, created_at,"
                " updated_at, actor, desired_commit, reason, promoted, revert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, 0, 0)",
                (rollout.rollout_id, str(rollout.state), rollout.waves, rollout.wave, json.dumps(list(rollout.sizes)),
                 json.dumps(_settings(rollout)), now, now, rollout.actor, rollout.desired_commit, rollout.reason))
            conn.executemany(
                "INSERT INTO rollout_members (rollout_id, resource_id, wave, state, action, from_spec_json,"
                " to_spec_json, to_hash, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(m.rollout_id, m.resource_id, m.wave, str(m.state), str(m.action),
                  json.dumps(plain(m.from_spec)) if m.from_spec is not None else None,
                  json.dumps(plain(m.to_spec)) if m.to_spec is not None else None, m.to_hash, now) for m in mine])
            self._event(conn, FLEET_ID, now, "rollout_started",
                        f"rollout {rollout.rollout_id}: {len(mine)} resources in {rollout.waves} waves "
                        f"({', '.join(map(str, rollout.sizes))})", None, rollout.desired_commit,
                        {"rollout_id": rollout.rollout_id, "sizes": list(rollout.sizes)}, rollout.actor)
            return [member.resource_id for member in mine]

    def launch(self: _Store, *, rollout: Rollout, launches: Sequence[tuple[Member, JobRequest]], now: str,
               commit: str | None) -> list[Member]:
        """One transaction: the rollout row as given, a job per request, each member with its job id.
        A request the queue refuses (an open job, a changed row) leaves its member as it was."""
        started: list[Member] = []
        with self._write() as conn:
            _update_rollout(conn, rollout=rollout, now=now)
            for member, request in launches:
                queued = self._enqueue_in(conn, requests=[request], now=now, commit=commit, actor=rollout.actor)
                if not queued:
                    continue
                conn.execute("UPDATE rollout_members SET state = ?, job_id = ?, check_failures = 0, updated_at = ?"
                             " WHERE rollout_id = ? AND resource_id = ?",
                             (str(member.state), queued[0], now, member.rollout_id, member.resource_id))
                started.append(member)
        return started

    def save_rollout(self: _Store, *, rollout: Rollout | None = None, members: Sequence[Member] = (), now: str,
                     event: tuple[str, str] | None = None, actor: str | None = None, withdraw: bool = False) -> None:
        """Members and (optionally) the rollout row and a fleet event, in one transaction; `withdraw` (a halt)
        also takes back the wave's jobs no worker has claimed yet (see `_withdraw`)."""
        with self._write() as conn:
            if rollout is not None:
                _update_rollout(conn, rollout=rollout, now=now)
                if withdraw:
                    _withdraw(self, conn, rollout=rollout, now=now, actor=actor)
            conn.executemany(
                "UPDATE rollout_members SET state = ?, succeeded_at = ?, check_failures = ?, error = ?,"
                " updated_at = ? WHERE rollout_id = ? AND resource_id = ?",
                [(str(m.state), m.succeeded_at, m.check_failures, m.error, now, m.rollout_id, m.resource_id)
                 for m in members])
            if event is not None and rollout is not None:
                kind, message = event
                self._event(conn, FLEET_ID, now, kind, message, None, rollout.desired_commit,
                            {"rollout_id": rollout.rollout_id, "wave": rollout.wave, "state": str(rollout.state),
                             "reason": rollout.reason}, actor)

    def transition_rollout(self: _Store, *, rollout_id: str, change: Callable[[Rollout], Rollout], now: str,
                           kind: str, actor: str | None) -> Rollout | None:
        """An operator's verb: read the row, apply `change` (a pure transition; it may raise), write it and
        an event naming the actor, in one transaction. None: no such rollout."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()
            if row is None:
                return None
            before = _rollout(dict(row))
            after = change(before)
            _update_rollout(conn, rollout=after, now=now)
            if after.state is RolloutState.ABORTED and before.state is not RolloutState.ABORTED:
                _withdraw(self, conn, rollout=after, now=now, actor=actor)
            self._event(conn, FLEET_ID, now, kind, f"rollout {rollout_id}: {kind.removeprefix('rollout_')} "
                        f"({before.state} → {after.state}, wave {after.wave} of {after.waves})", None,
                        after.desired_commit, {"rollout_id": rollout_id, "wave": after.wave,
                                               "state": str(after.state), "revert": after.revert}, actor)
            return after


def _holding(row: dict[str, Any]) -> Holding:
    return Holding(_member(row), RolloutState(row["rollout_state"]), int(row["rollout_waves"]))


def _withdraw(store: _Store, conn: Connection, *, rollout: Rollout, now: str, actor: str | None) -> None:
    """A halt or an abort: the rollout's jobs still queued (no worker has them) are cancelled, their rows
    left as they were, and their members are not reached (pending again, no job). Running ones finish
    and settle as usual. Without this a halted wave's queue ran on after the halt, for whoever claimed it."""
    ids = [row["resource_id"] for row in conn.execute(
        "SELECT m.resource_id FROM rollout_members m JOIN jobs j ON j.job_id = m.job_id"
        " WHERE m.rollout_id = ? AND m.state = 'queued' AND j.status = 'queued'", (rollout.rollout_id,)).fetchall()]
    if not ids:
        return
    store._cancel_in(conn, resource_ids=ids, now=now, why=f"rollout {rollout.rollout_id} {rollout.state}",
                     actor=actor)
    conn.executemany("UPDATE rollout_members SET state = 'pending', job_id = NULL, updated_at = ?"
                     " WHERE rollout_id = ? AND resource_id = ?", [(now, rollout.rollout_id, rid) for rid in ids])


def _settings(rollout: Rollout) -> dict[str, Any]:
    s = rollout.settings
    return {"bake": s.bake, "max_failures": s.max_failures, "max_parallel": s.max_parallel,
            "on_failure": str(s.on_failure), "check_interval": s.check_interval, "unhealthy_after": s.unhealthy_after}


def _update_rollout(conn: Connection, *, rollout: Rollout, now: str) -> None:
    conn.execute("UPDATE rollouts SET state = ?, wave = ?, reason = ?, promoted = ?, revert = ?, updated_at = ?"
                 " WHERE rollout_id = ?",
                 (str(rollout.state), rollout.wave, rollout.reason, int(rollout.promoted), int(rollout.revert), now,
                  rollout.rollout_id))
