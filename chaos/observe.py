"""Reading what happened: the scripts' run records and a snapshot of the store's rows.

The store is read with plain SQL on the tables' documented columns (not through `reconciler.store`),
so the observer stays independent of the code under test. A store that cannot be read right now (a
fault is under way) gives None, and the checks that need it wait for the next step.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Run:
    """One script run, from its start record and (if it got that far) its end record."""

    pid: int
    resource_id: str
    action: str
    deploy_ref: str
    region: str
    job_id: str
    worker: int
    mode: str
    started: float
    ended: float | None = None
    exit: int | None = None
    url: str | None = None

    @property
    def completed(self) -> bool:
        return self.exit == 0

    @property
    def teardown(self) -> bool:
        return self.action == "delete"


@dataclass(frozen=True, slots=True)
class Records:
    runs: list[Run]
    overlaps: list[str]


def read_runs(path: Path) -> Records:
    starts: dict[int, Run] = {}
    overlaps: list[str] = []
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 12:
            continue
        kind, at, rid, action, ref, region, job, pid, worker, mode, code, url = parts
        if kind == "OVERLAP":
            overlaps.append(line)
        elif kind == "start":
            starts[int(pid)] = Run(pid=int(pid), resource_id=rid, action=action, deploy_ref=ref, region=region,
                                   job_id=job, worker=int(worker) if worker.isdigit() else 0, mode=mode,
                                   started=float(at))
        elif kind == "end" and int(pid) in starts:
            run = starts[int(pid)]
            starts[int(pid)] = Run(**{**_fields(run), "ended": float(at), "exit": int(code),
                                      "url": None if url == "-" else url})
    return Records(runs=sorted(starts.values(), key=lambda run: run.started), overlaps=overlaps)


def _fields(run: Run) -> dict[str, Any]:
    return {name: getattr(run, name) for name in Run.__slots__}


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    resources: dict[str, dict[str, Any]]
    jobs: dict[str, dict[str, Any]]
    event_jobs: dict[str, set[str]]  # job_id → kinds of its events
    overridden: frozenset[str] = frozenset()  # jobs whose `queued` event records a policy override


def snapshot(*, db_url: str, at: float) -> Snapshot | None:
    try:
        if db_url.startswith("postgresql://"):
            return _from(_pg_rows(db_url), at=at)
        return _from(_sqlite_rows(Path(db_url)), at=at)
    except Exception:
        return None


def _from(tables: tuple[list[dict[str, Any]], ...], *, at: float) -> Snapshot:
    resources, jobs, events = tables
    event_jobs: dict[str, set[str]] = {}
    overridden = set()
    for event in events:
        if event["job_id"]:
            event_jobs.setdefault(event["job_id"], set()).add(event["kind"])
            if event["kind"] == "queued" and '"override"' in (event["details_json"] or ""):
                overridden.add(event["job_id"])
    return Snapshot(at=at, resources={row["resource_id"]: row for row in resources},
                    jobs={row["job_id"]: row for row in jobs}, event_jobs=event_jobs,
                    overridden=frozenset(overridden))


QUERIES = ("SELECT resource_id, status, url, deploy_ref, region FROM resources",
           "SELECT job_id, resource_id, action, status, created_at, started_at, claims, owner FROM jobs",
           "SELECT job_id, kind, details_json FROM events WHERE job_id IS NOT NULL")


def _sqlite_rows(path: Path) -> tuple[list[dict[str, Any]], ...]:
    if not path.exists():
        return [], [], []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    conn.row_factory = sqlite3.Row
    try:
        return tuple([dict(row) for row in conn.execute(sql)] for sql in QUERIES)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return [], [], []
        raise
    finally:
        conn.close()


def _pg_rows(url: str) -> tuple[list[dict[str, Any]], ...]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, connect_timeout=2, row_factory=dict_row) as conn:
        try:
            return tuple(list(conn.execute(sql)) for sql in QUERIES)
        except psycopg.errors.UndefinedTable:
            return [], [], []


def iso_seconds(value: str | None) -> float | None:
    """The store's ISO timestamps (UTC) as epoch seconds."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class WaveJob:
    """One job a rollout queued for a wave (from its `queued` event's details), and how it ended."""

    rollout_id: str
    wave: int
    queued: float
    finished: float | None
    status: str
    bake: float
    promoted: bool


ROLLOUT_SQL = ("SELECT e.at AS at, e.details_json AS details, j.status AS status, j.finished_at AS finished_at,"
               " r.settings_json AS settings, r.promoted AS promoted, r.rollout_id AS rollout_id"
               " FROM events e JOIN jobs j ON j.job_id = e.job_id JOIN rollouts r"
               " ON e.details_json LIKE '%' || r.rollout_id || '%'"
               " WHERE e.kind = 'queued' AND e.details_json LIKE '%\"rollout\"%'")


def rollout_waves(*, db_url: str) -> list[WaveJob]:
    """Every job rollouts queued (not reverts); [] before the rollouts table exists or while the store is away."""
    import json

    try:
        rows = _pg_rollout_rows(db_url) if db_url.startswith("postgresql://") else _sqlite_rollout_rows(db_url)
    except Exception:
        return []
    found = []
    for row in rows:
        detail = json.loads(row["details"] or "{}").get("rollout") or {}
        if detail.get("revert") or detail.get("id") != row["rollout_id"]:
            continue
        queued = iso_seconds(row["at"])
        if queued is None:
            continue
        found.append(WaveJob(row["rollout_id"], int(detail.get("wave", 0)), queued, iso_seconds(row["finished_at"]),
                             row["status"], float(json.loads(row["settings"] or "{}").get("bake", 0.0)),
                             bool(row["promoted"])))
    return found


def _sqlite_rollout_rows(path: str) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(ROLLOUT_SQL)]
    finally:
        conn.close()


def _pg_rollout_rows(url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, connect_timeout=2, row_factory=dict_row) as conn:
        return list(conn.execute(ROLLOUT_SQL))
