"""P4: one drift pass (health check of every active URL, results recorded) over 10,000 URLs.

The URLs point at minimal keep-alive HTTP servers (bench/httpd.py) on 127.0.0.1, in processes of
their own. Measured, interleaved, each run on a fresh copy of the same database:

- `reconciler check --concurrency 100 --timeout 5`: the whole command (start-up, load, check, record);
- `run_drift_pass` timed inside a process, i.e. the pass alone (load rows, check, record in one
  transaction), as a running daemon runs it (modules already imported);
- `health.check_all` alone (no SQLite), to split the pass between HTTP and the database;
- the floor: a bare aiohttp loop over the same URLs, same concurrency (one ClientSession,
  TCPConnector(limit=100), gather + semaphore, body read), timed the same way.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time

from .harness import BenchError, Ctx, Row, reconciler_argv, reconciler_env, run_checked
from .live import PYTHON, converged, median, profile, python_env, run_json, stop_all

ID = "P4"
TITLE = "drift pass (health check) over 10,000 URLs vs bare aiohttp loop"
COUNT, QUICK_COUNT = 10_000, 1_000
CONCURRENCY, TIMEOUT = 100, 5
GOAL_RATIO, GOAL_SECONDS = 2.0, 2.0
SERVER_PROCESSES, PORTS_PER_PROCESS = 2, 2  # 4 ports; 2 cores

# Both import aiohttp before the clock starts: reconciler.health imports it lazily, on first use, which a
# running daemon pays once, not every pass; `reconciler check` pays it, and its row shows it.
PASS = """\
import asyncio, json, sys, time
import aiohttp
from reconciler.drift import run_drift_pass
from reconciler.store import open_store
store = open_store(url=sys.argv[1], create=False)
started = time.perf_counter()
report = asyncio.run(run_drift_pass(store=store, concurrency=int(sys.argv[2]), timeout=float(sys.argv[3]),
                                    unhealthy_after=3))
print(json.dumps({"seconds": time.perf_counter() - started, "checked": report.checked,
                  "failed": len(report.failures)}))
"""

CHECK_ALL = """\
import asyncio, json, sys, time
import aiohttp
from reconciler.health import check_all
from reconciler.store import open_store
rows = open_store(url=sys.argv[1], create=False).load_observed()
targets = [(rid, row.url) for rid, row in rows.items() if row.url]
started = time.perf_counter()
results = asyncio.run(check_all(targets, concurrency=int(sys.argv[2]), timeout=float(sys.argv[3])))
print(json.dumps({"seconds": time.perf_counter() - started, "checked": len(results),
                  "failed": sum(not r.ok for r in results)}))
"""

FLOOR = """\
import asyncio, json, sqlite3, sys, time
import aiohttp
urls = [row[0] for row in sqlite3.connect(sys.argv[1]).execute(
    "SELECT url FROM resources WHERE status = 'active' AND url IS NOT NULL")]
concurrency = int(sys.argv[2])

async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=float(sys.argv[3]))) as session:
        gate = asyncio.Semaphore(concurrency)
        async def one(url):
            async with gate:
                async with session.get(url) as response:
                    await response.read()
                    return response.status
        return await asyncio.gather(*(one(url) for url in urls))

started = time.perf_counter()
statuses = asyncio.run(main())
print(json.dumps({"seconds": time.perf_counter() - started, "checked": len(statuses),
                  "failed": sum(status != 200 for status in statuses)}))
"""


def _servers() -> tuple[list[subprocess.Popen], list[int]]:
    procs, ports = [], []
    try:
        for _ in range(SERVER_PROCESSES):
            proc = subprocess.Popen([PYTHON, "-m", "bench.httpd", str(PORTS_PER_PROCESS)], env=python_env(),
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            procs.append(proc)
            ports += json.loads(proc.stdout.readline())
    except Exception:
        stop_all(procs)
        raise
    return procs, ports


def _database(ctx: Ctx, count: int, ports: list[int]):
    """The converged fleet of `count`, its URLs spread over `ports`, health 'unknown'."""
    base = converged(ctx, count)
    project = ctx.out / "p4"
    shutil.rmtree(project, ignore_errors=True)
    pristine = base.copy_db(project / "pristine.db")
    with sqlite3.connect(pristine) as conn:
        conn.create_function("port", 1, lambda rowid: ports[rowid % len(ports)], deterministic=True)
        conn.execute("UPDATE resources SET url = 'http://127.0.0.1:' || port(rowid) || '/r/' || resource_id, "
                     "health = 'unknown', consecutive_failures = 0, last_check_at = NULL")
    conn.close()
    return base, project, pristine


def run(ctx: Ctx) -> list[Row]:
    count = QUICK_COUNT if ctx.quick else COUNT
    procs, ports = _servers()
    try:
        return _measure(ctx, count, ports)
    finally:
        stop_all(procs)


def _measure(ctx: Ctx, count: int, ports: list[int]) -> list[Row]:
    base, project, pristine = _database(ctx, count, ports)
    db = project / "state.db"
    env = reconciler_env(project, desired=base.desired, db=db, provision=base.provision)
    args = [str(db), str(CONCURRENCY), str(TIMEOUT)]
    samples: dict[str, list[float]] = {"check": [], "pass": [], "check_all": [], "floor": []}

    def fresh() -> None:
        for stale in project.glob("state.db*"):
            stale.unlink()
        shutil.copyfile(pristine, db)

    def verify(name: str, checked: int, failed: int) -> None:
        if checked != count or failed:
            raise BenchError(f"P4 {name}: checked {checked} of {count}, {failed} failed")

    ctx.log(f"P4: {count:,} URLs over {len(ports)} ports, concurrency {CONCURRENCY}, {ctx.repeat}×")
    for _ in range(ctx.repeat):
        fresh()
        started = time.perf_counter()
        done = run_checked(reconciler_argv("check", "--concurrency", str(CONCURRENCY), "--timeout", str(TIMEOUT)),
                           env=env, cwd=project, timeout=300)
        samples["check"].append(time.perf_counter() - started)
        if f"Checked {count}: {count} healthy, 0 failed" not in done.stdout:
            raise BenchError(f"P4 check: {done.stdout[-500:]}")
        for name, script in (("pass", PASS), ("check_all", CHECK_ALL), ("floor", FLOOR)):
            fresh()
            result = run_json([PYTHON, "-c", script, *args], env=env, cwd=project)
            verify(name, result["checked"], result["failed"])
            samples[name].append(result["seconds"])
    check, drift, alone, floor = (median(samples[key]) for key in ("check", "pass", "check_all", "floor"))
    where = ""
    if drift > GOAL_SECONDS or drift > GOAL_RATIO * floor:  # a miss: say where the time goes
        fresh()
        ctx.log("P4: profiling one in-process pass with py-spy")
        found = profile(["--", PYTHON, "-c", PASS, *args], ctx.out / "p4-profile",
                        title=f"one drift pass, {count:,} URLs")
        where = f"; {found}" if found else ""
    size = f"{count:,} URLs, {len(ports)} ports, c={CONCURRENCY}"
    peer = f"bare aiohttp loop, c={CONCURRENCY}"
    runs = f"{ctx.repeat}"
    return [
        Row(id=ID, what="drift pass in-process (run_drift_pass)", size=size, seconds=drift, peer=peer,
            peer_seconds=floor, goal=f"≤ {GOAL_RATIO:.0f}× floor and ≤ {GOAL_SECONDS:.0f} s", max_ratio=GOAL_RATIO,
            max_seconds=GOAL_SECONDS, repeats=runs,
            samples={"pass": samples["pass"], "floor": samples["floor"]},
            note=(f"HTTP alone (health.check_all) {alone:.3f} s; SQLite load + record ≈ {drift - alone:.3f} s"
                  if drift - alone > 0.05 else
                  f"HTTP alone (health.check_all) {alone:.3f} s; SQLite load + record within the noise") + where),
        Row(id=ID, what="reconciler check (whole command)", size=size, seconds=check, peer=peer,
            peer_seconds=floor, goal="(info)", repeats=runs,
            samples={"check": samples["check"], "floor": samples["floor"]},
            note=f"start-up and imports ≈ {check - drift:.3f} s over the in-process pass"),
        Row(id=ID, what="health.check_all alone (no SQLite)", size=size, seconds=alone, peer=peer,
            peer_seconds=floor, goal="(info)", repeats=runs,
            samples={"check_all": samples["check_all"], "floor": samples["floor"]}),
    ]
