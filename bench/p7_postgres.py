"""P7: several daemons on PostgreSQL: claim throughput with 1, 2 and 4 daemons, and leader hand-over.

Throughput: N daemons (8 workers each) on one fresh database converge a fleet whose script is
instant, so what is measured is claim → spawn → record per job. jobs/s = jobs ÷ (last finish −
first start), read from the jobs table. Hand-over: the leader is killed with SIGKILL and the time
until the follower logs "became leader" is measured, once with both daemons on one host (the dead
pid is seen at once) and once as if on two hosts (RECONCILER_HOST differs: the lease must expire).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from pathlib import Path

from . import fleet, live
from .harness import Ctx, Row, reconciler_argv, reconciler_env

ID = "P7"
TITLE = "PostgreSQL: claims/s with 1, 2, 4 daemons; leader hand-over after kill -9"
COUNT, QUICK_COUNT = 2_000, 300
WORKERS = 8
LEASE = 10.0  # reconciler.daemon.LEADER_TTL


def _daemon(project: Path, env: dict[str, str], log: Path, **extra: str) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(reconciler_argv("daemon", "--no-api", "--parallelism", str(WORKERS), "--resync", "600",
                                            "--drift-interval", "3600"),
                            env={**env, **extra}, cwd=project, stdout=handle, stderr=handle,
                            stdin=subprocess.DEVNULL)


def _active(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return conn.execute("SELECT count(*) FROM resources WHERE status = 'active'").fetchone()[0]
        except psycopg.errors.UndefinedTable:  # the first daemon has not migrated yet
            return 0


def _span(url: str) -> float:
    import psycopg

    from reconciler.models import parse_iso

    with psycopg.connect(url) as conn:
        first, last = conn.execute("SELECT min(started_at), max(finished_at) FROM jobs").fetchone()
    return (parse_iso(last) - parse_iso(first)).total_seconds()


def _throughput(ctx: Ctx, server, daemons: int, count: int) -> float:
    url = server.new_database()
    project = ctx.out / "p7" / f"n{daemons}"
    desired = fleet.write_desired(ctx.out / "p7" / f"desired-{count}", count)
    provision = fleet.write_scripts(project / "provision", provision=fleet.sleeping_script(0))
    env = {**reconciler_env(project, desired=desired, provision=provision), "RECONCILER_DB": url}
    procs = [_daemon(project, env, project / f"d{i}.log") for i in range(daemons)]
    try:
        live.wait_for(lambda: _active(url) >= count, timeout=600, what=f"{count} active with {daemons} daemons")
        return count / _span(url)
    finally:
        live.stop_all(procs)
        server.drop_database(url)


def _became_leader(log: Path) -> bool:
    text = log.read_text() if log.exists() else ""
    return any(json.loads(line).get("event") == "became leader" for line in text.splitlines() if line.startswith("{"))


def _follower_ready(log: Path) -> bool:
    return log.exists() and "ready as a follower" in log.read_text()


def _handover(ctx: Ctx, server, *, same_host: bool) -> float:
    url = server.new_database()
    project = ctx.out / "p7" / ("same-host" if same_host else "two-hosts")
    desired = fleet.write_desired(project / "desired", 3)
    provision = fleet.write_scripts(project / "provision", provision=fleet.sleeping_script(0))
    env = {**reconciler_env(project, desired=desired, provision=provision), "RECONCILER_DB": url}
    leader = _daemon(project, env, project / "a.log", RECONCILER_HOST="bench-a")
    procs = [leader]
    try:
        live.wait_for(lambda: _became_leader(project / "a.log"), timeout=60, what="a leader")
        procs.append(_daemon(project, env, project / "b.log", RECONCILER_HOST="bench-a" if same_host else "bench-b"))
        live.wait_for(lambda: _follower_ready(project / "b.log"), timeout=60, what="a follower")
        leader.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.wait()
        live.wait_for(lambda: _became_leader(project / "b.log"), timeout=60, what="the hand-over")
        return time.monotonic() - killed
    finally:
        live.stop_all(procs)
        server.drop_database(url)


def run(ctx: Ctx) -> list[Row]:
    from tests import pgserver

    if not pgserver.available():
        return [Row(id=ID, what="PostgreSQL scale-out", size="-", seconds=None, peer="-", peer_seconds=None,
                    note=f"PostgreSQL binaries not installed in {pgserver.PG_BIN}")]
    count = QUICK_COUNT if ctx.quick else COUNT
    repeat = 1 if ctx.quick else 2
    server = pgserver.start()
    try:
        rates = {n: [_throughput(ctx, server, n, count) for _ in range(repeat)] for n in (1, 2, 4)}
        handovers = {same: [_handover(ctx, server, same_host=same) for _ in range(repeat)] for same in (True, False)}
    finally:
        server.stop()
    return _rows(rates, handovers, count, repeat)


def _rows(rates: dict[int, list[float]], handovers: dict[bool, list[float]], count: int, repeat: int) -> list[Row]:
    base = statistics.median(rates[1])
    rows = []
    for n, samples in rates.items():
        rate = statistics.median(samples)
        rows.append(Row(id=ID, what=f"claims/s, {n} daemon{'s' if n > 1 else ''} × {WORKERS} workers",
                        size=f"{count:,} jobs, instant script", seconds=count / rate, peer="1 daemon",
                        peer_seconds=count / base, repeats=f"{repeat}",
                        note=f"{rate:,.0f} jobs/s (median of {', '.join(f'{s:,.0f}' for s in samples)})"))
    for same, samples in handovers.items():
        rows.append(Row(id=ID, what="leader hand-over after kill -9", size="same host" if same else "two hosts",
                        seconds=statistics.median(samples), peer="-", peer_seconds=None,
                        goal=f"≤ one lease ({LEASE:.0f} s) + poll", max_seconds=LEASE + 1.5, repeats=f"{repeat}",
                        note="dead pid seen at once" if same else "waits for the lease to expire"))
    return rows
