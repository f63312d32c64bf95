"""P6: the daemon's HTTP API under load: requests/s and latency of GET /provisions/{id} and GET /health.

A daemon serves `--api 127.0.0.1:<free port>` on a converged fleet of 10,000 resources (resync 600 s,
so nothing else happens meanwhile). The load generator (bench/loadgen.py) runs in its own process:
32 keep-alive connections, 200 untimed warm-up requests, then a bounded number of requests with a
time cap; ids are random among the fleet. The same load generator against bench/httpd.py (a
trivial server) is the ceiling of the generator itself on this machine: the daemon cannot be shown
faster than that. No goal: the figures are for information. The machine has 2 cores, shared by the
generator and the daemon.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from .harness import Ctx, Row
from .live import PYTHON, Daemon, converged, free_port, median, python_env, run_json

ID = "P6"
TITLE = "HTTP API throughput and latency (daemon)"
COUNT, QUICK_COUNT = 10_000, 1_000
REQUESTS, QUICK_REQUESTS = 5_000, 500
CONCURRENCY, WARMUP, CAP_SECONDS = 32, 200, 30.0


def _load(base: str, requests: int, **what) -> dict:
    config = {"base": base, "requests": requests, "concurrency": CONCURRENCY, "warmup": WARMUP,
              "cap_seconds": CAP_SECONDS, **what}
    return run_json([PYTHON, "-m", "bench.loadgen", json.dumps(config)], env=python_env(), timeout=CAP_SECONDS + 60)


def _ceiling(requests: int) -> dict:
    server = subprocess.Popen([PYTHON, "-m", "bench.httpd", "1"], env=python_env(), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(server.stdout.readline())[0]
        return _load(f"http://127.0.0.1:{port}", requests, path="/health")
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(ctx: Ctx) -> list[Row]:
    count, requests = (QUICK_COUNT, QUICK_REQUESTS) if ctx.quick else (COUNT, REQUESTS)
    base = converged(ctx, count)
    project = ctx.out / "p6"
    shutil.rmtree(project, ignore_errors=True)
    db = base.copy_db(project / "state.db")
    port = free_port()
    args = ["--api", f"127.0.0.1:{port}", "--resync", "600", "--drift-interval", "3600"]
    endpoints = {"GET /provisions/{id}": {"ids": count}, "GET /health": {"path": "/health"}}
    results: dict[str, list[dict]] = {name: [] for name in endpoints}
    ceiling: list[dict] = []
    ctx.log(f"P6: API on {count:,} resources, {requests} requests × {len(endpoints)} endpoints, "
            f"{CONCURRENCY} connections, {ctx.repeat}×")
    with Daemon(project, desired=base.desired, db=db, provision=base.provision, args=args) as daemon:
        daemon.wait_ready(timeout=300)
        for repetition in range(ctx.repeat):
            for name, what in endpoints.items():
                results[name].append(_load(f"http://127.0.0.1:{port}", requests, seed=repetition + 1, **what))
            ceiling.append(_ceiling(requests))
    size = f"{count:,} res, {CONCURRENCY} conns, {requests} req"
    floor_rps = median([r["rps"] for r in ceiling])
    rows = []
    for name, runs in results.items():
        rps, p50, p99 = (median([r[key] for r in runs]) for key in ("rps", "p50_ms", "p99_ms"))
        errors = {k: v for r in runs for k, v in r["errors"].items()}
        capped = sum(r["capped"] for r in runs)
        note = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        note += f"; non-200: {errors}" if errors else "; all 200"
        note += f"; {capped} run(s) hit the {CAP_SECONDS:.0f} s cap" if capped else ""
        rows.append(Row(id=ID, what=f"{name}: throughput", size=size, seconds=rps, unit="req/s",
                        peer="same generator vs bench.httpd (ceiling)", peer_seconds=floor_rps, goal="(info)",
                        repeats=f"{len(runs)}", note=note,
                        samples={"rps": [r["rps"] for r in runs], "ceiling_rps": [r["rps"] for r in ceiling]}))
        rows.append(Row(id=ID, what=f"{name}: latency p50", size=size, seconds=p50, unit="ms", peer="—",
                        peer_seconds=None, goal="(info)", repeats=f"{len(runs)}",
                        samples={"p50_ms": [r["p50_ms"] for r in runs]}))
        rows.append(Row(id=ID, what=f"{name}: latency p99", size=size, seconds=p99, unit="ms", peer="—",
                        peer_seconds=None, goal="(info)", repeats=f"{len(runs)}",
                        samples={"p99_ms": [r["p99_ms"] for r in runs]}))
    return rows
