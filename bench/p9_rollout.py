"""P9: a rollout (issue 17) of a deploy_ref bump across 10,000 resources against a plain apply of it.

Throughput: the converged fleet of P4/P5 (bench/live.py), desired/ copied with every `deploy_ref` bumped,
then `reconciler apply --yes --parallelism 32` of that change, interleaved and each on a fresh copy of
the converged database: once with a `rollout:` section in policy.yaml (5 waves `[1, 1%, 10%, 50%,
100%]`, `bake: 0s`, check every 0.2 s) and once without one (the peer: the same change at once). The
instant script prints a URL on one of the 4 ports of bench/httpd.py (as P4: 2 processes, not 10,000).

Halt latency: 10 resources on an in-process HTTP server whose answers the bench flips; a rollout
`[1, 100%]` with a long bake, `check_interval: 0.5s`, `unhealthy_after: 2`. Once the canary's job
succeeded (its member row) and a random fraction of an interval later, the canary's new deploy_ref
turns unhealthy; the figure is the `rollout_halted` event's time minus the flip. Goal: ≤ check_interval
× unhealthy_after.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import fleet
from .harness import BenchError, Case, Ctx, Row, reconciler_argv, reconciler_env, run_checked, samples_of, time_cases
from .live import PYTHON, converged, median, python_env, stop_all, wait_for

ID = "P9"
TITLE = "rollout of a deploy_ref bump (5 waves, zero bake) vs a plain apply; canary unhealthy → halt"
COUNT, QUICK_COUNT = 10_000, 1_000
PARALLELISM = 32
GOAL_RATIO = 1.2
SERVER_PROCESSES, PORTS_PER_PROCESS = 2, 2
WAVES = "[1, 1%, 10%, 50%, 100%]"
ROLLOUT = f"rollout:\n  waves: {WAVES}\n  bake: 0s\n  min_changes: 2\n  check_interval: 0.2s\n"
# the resource number modulo the ports picks one of bench/httpd.py's ports (PORTS: space-separated)
SCRIPT = """#!/bin/bash
ports=($PORTS)
n=${RESOURCE_ID##*-}
echo "http://127.0.0.1:${ports[$((10#$n % ${#ports[@]}))]}/$RESOURCE_ID/$DEPLOY_REF"
"""

HALT_COUNT, HALT_REPEAT, QUICK_HALT_REPEAT = 10, 7, 3
INTERVAL, UNHEALTHY_AFTER = 0.5, 2
CANARY = fleet.resource_id(1)
HALT_POLICY = (f"rollout:\n  waves: [1, 100%]\n  bake: 10m\n  min_changes: 2\n  check_interval: {INTERVAL}s\n"
               f"  unhealthy_after: {UNHEALTHY_AFTER}\n  canary: {{ids: [{CANARY}]}}\n")
HEALTH_SCRIPT = '#!/bin/sh\necho "http://127.0.0.1:$HEALTH_PORT/$RESOURCE_ID/$DEPLOY_REF"\n'


def run(ctx: Ctx) -> list[Row]:
    count = QUICK_COUNT if ctx.quick else COUNT
    procs, ports = _servers()
    try:
        rows = [_throughput(ctx, count, ports)]
    finally:
        stop_all(procs)
    return [*rows, _halt(ctx, HALT_REPEAT if not ctx.quick else QUICK_HALT_REPEAT)]


def _servers() -> tuple[list[subprocess.Popen], list[int]]:
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for _ in range(SERVER_PROCESSES):
            proc = subprocess.Popen([PYTHON, "-m", "bench.httpd", str(PORTS_PER_PROCESS)], env=python_env(),
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            procs.append(proc)
            ports += json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    except Exception:
        stop_all(procs)
        raise
    return procs, ports


def _bumped(base: Path, target: Path) -> Path:
    """desired/ of the converged fleet with every deploy_ref bumped."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in base.glob("*.yaml"):
        (target / path.name).write_text(path.read_text().replace("deploy_ref: v1.4.2", "deploy_ref: v1.5.0"))
    return target


def _throughput(ctx: Ctx, count: int, ports: list[int]) -> Row:
    base = converged(ctx, count)
    project = ctx.out / "p9"
    shutil.rmtree(project, ignore_errors=True)
    desired = _bumped(base.desired, project / "desired")
    provision = fleet.write_scripts(project / "provision", provision=SCRIPT)
    (provision / "targets.yaml").write_text("pass_env: [PORTS]\n")
    policy = project / "rules" / "policy.yaml"
    policy.parent.mkdir()
    policy.write_text(ROLLOUT)
    db = project / "state.db"
    env = reconciler_env(project, desired=desired, db=db, provision=provision, PORTS=" ".join(map(str, ports)))

    def fresh() -> None:
        for stale in project.glob("state.db*"):
            stale.unlink()
        base.copy_db(db)

    argv = reconciler_argv("apply", "--yes", "--parallelism", str(PARALLELISM))
    cases = [Case("plain", argv, env=env, cwd=project, setup=fresh, timeout=1800),
             Case("rollout", argv, env={**env, "RECONCILER_POLICY": str(policy)}, cwd=project, setup=fresh,
                  timeout=1800)]
    ctx.log(f"P9: apply of a deploy_ref bump over {count:,} resources, with and without a rollout, {ctx.repeat}×")
    timings = time_cases(cases, ctx.repeat)
    _verify(db, count)  # the last run was a rollout: every member succeeded, in 5 waves
    return Row(id=ID, what="apply of a deploy_ref bump as a rollout (5 waves, bake 0s)",
               size=f"{count:,} res, waves {WAVES}, --parallelism {PARALLELISM}",
               seconds=timings["rollout"].median, peer="the same apply without `rollout:`",
               peer_seconds=timings["plain"].median, goal=f"≤ {GOAL_RATIO}× plain", max_ratio=GOAL_RATIO,
               repeats=f"{ctx.repeat}", samples=samples_of(timings))


def _verify(db: Path, count: int) -> None:
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM rollout_members GROUP BY state").fetchall())
        rollouts = conn.execute("SELECT state, waves FROM rollouts").fetchall()
        bumped = conn.execute("SELECT COUNT(*) FROM resources WHERE deploy_ref = 'v1.5.0'").fetchone()[0]
    conn.close()
    if rollouts != [("completed", 5)] or states != {"succeeded": count} or bumped != count:
        raise BenchError(f"P9: rollout not as expected: {rollouts}, members {states}, bumped {bumped}")


# --- canary unhealthy → halt ----------------------------------------------------------------------


class Flip:
    """A health server on 127.0.0.1: 200 for /<id>/<ref>, 503 once `bad` holds the path."""

    def __init__(self) -> None:
        self.bad: set[str] = set()
        flip = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sick = self.path.strip("/") in flip.bad
                self.send_response(503 if sick else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if sick else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _halt(ctx: Ctx, repeat: int) -> Row:
    project = ctx.out / "p9-halt"
    shutil.rmtree(project, ignore_errors=True)
    flip = Flip()
    try:
        provision = fleet.write_scripts(project / "provision", provision=HEALTH_SCRIPT)
        (provision / "targets.yaml").write_text("pass_env: [HEALTH_PORT]\n")
        v1 = fleet.write_desired(project / "desired-v1", HALT_COUNT)
        desired = _bumped(v1, project / "desired")
        policy = project / "rules" / "policy.yaml"
        policy.parent.mkdir()
        policy.write_text(HALT_POLICY)
        db, pristine = project / "state.db", project / "pristine.db"
        env = reconciler_env(project, desired=desired, db=db, provision=provision, HEALTH_PORT=str(flip.port),
                             RECONCILER_POLICY=str(policy))
        run_checked(reconciler_argv("apply", "--yes"), env={**env, "RECONCILER_DESIRED": str(v1)}, cwd=project)
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        shutil.copyfile(db, pristine)
        ctx.log(f"P9: canary unhealthy → halt, {repeat}×")
        samples = [_one_halt(project, env, flip, pristine) for _ in range(repeat)]
    finally:
        flip.server.shutdown()
    bound = INTERVAL * UNHEALTHY_AFTER
    return Row(id=ID, what="canary unhealthy → rollout_halted (median; max in note)",
               size=f"{HALT_COUNT} res, check_interval {INTERVAL}s, unhealthy_after {UNHEALTHY_AFTER}",
               seconds=median(samples), peer="-", peer_seconds=None,
               goal=f"≤ check_interval × unhealthy_after ({bound:.1f} s)", max_seconds=bound,
               repeats=f"{repeat}", samples={"halt": samples},
               note=f"max {max(samples):.3f} s ({'within' if max(samples) <= bound else 'over'} the bound); "
                    "flip at a random point of a check interval after the canary's job succeeded")


def _one_halt(project: Path, env: dict[str, str], flip: Flip, pristine: Path) -> float:
    db = project / "state.db"
    for stale in project.glob("state.db*"):
        stale.unlink()
    shutil.copyfile(pristine, db)
    flip.bad.clear()
    proc = subprocess.Popen(reconciler_argv("apply", "--yes"), env=env, cwd=project, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _query(db, "SELECT 1 FROM rollout_members WHERE resource_id = ? AND state = 'succeeded'",
                                CANARY), timeout=60, what="the canary's job to succeed")
        time.sleep(random.uniform(0, INTERVAL))
        flip.bad.add(f"{CANARY}/v1.5.0")
        flipped = time.time()
        halted = wait_for(lambda: _query(db, "SELECT at FROM events WHERE kind = 'rollout_halted'"), timeout=60,
                          what="the rollout_halted event")
        proc.wait(timeout=60)
    finally:
        stop_all([proc])
    return datetime.fromisoformat(halted[0]).timestamp() - flipped


def _query(db: Path, sql: str, *args: str) -> tuple | None:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute(sql, args).fetchone()
        conn.close()
    except sqlite3.OperationalError:
        return None
    return row
