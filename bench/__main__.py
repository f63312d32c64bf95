"""`python -m bench`: run the measurements, print the table, write results.md and results.json.

A measurement is a module with ID, TITLE and `run(ctx) -> list[Row]`; add one to MEASUREMENTS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from . import (
    p1_plan,
    p1p_plan_policy,
    p1t_plan_vs_terraform,
    p2_apply,
    p3_reaction,
    p4_drift,
    p5_idle,
    p6_api,
    p7_postgres,
    p8_adopt,
    p9_rollout,
)
from .harness import OUT, REPO, BenchError, Ctx, Row, compile_checkout
from .machine import machine_info
from .report import render_markdown, render_table

MEASUREMENTS = {m.ID: m for m in (p1_plan, p1p_plan_policy, p1t_plan_vs_terraform, p2_apply, p3_reaction, p4_drift,
                                   p5_idle, p6_api, p7_postgres, p8_adopt,
                                   p9_rollout)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 repetition, no terraform apply")
    parser.add_argument("--only", default="", metavar="P1,P2", help=f"comma-separated ids of {', '.join(MEASUREMENTS)}")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per command (default 3, --quick 1)")
    parser.add_argument("--results", type=Path, default=None,
                        help="directory for results.md/json (default: bench/ for a full run, bench/out/ otherwise)")
    return parser.parse_args(argv)


def _selected(only: str) -> list:
    if not only:
        return list(MEASUREMENTS.values())
    by_lower = {key.lower(): module for key, module in MEASUREMENTS.items()}
    wanted = [name.strip().lower() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_lower]
    if unknown:
        sys.exit(f"unknown measurement(s): {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}")
    return [by_lower[name] for name in wanted]


def _run_one(module, ctx: Ctx) -> list[Row]:
    try:
        return module.run(ctx)
    except (BenchError, OSError, AssertionError) as exc:
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Row(id=module.ID, what=module.TITLE, size="", seconds=None, peer="", peer_seconds=None,
                    goal="", note=f"ERROR: {first}")]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    modules = _selected(args.only)
    repeat = args.repeat or (1 if args.quick else 3)
    ctx = Ctx(quick=args.quick, repeat=repeat)
    ctx.out.mkdir(parents=True, exist_ok=True)
    compile_checkout()
    machine = machine_info()
    ctx.log("machine: " + json.dumps(machine))
    started = time.perf_counter()
    rows = [row for module in modules for row in _run_one(module, ctx)]
    elapsed = time.perf_counter() - started
    machine["load_average_end"] = machine_info(load_only=True)["load_average"]
    run = {"quick": args.quick, "only": [m.ID for m in modules], "repeat": repeat,
           "elapsed_seconds": round(elapsed, 1), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results_dir = args.results or (REPO / "bench" if not args.quick and not args.only else OUT)
    results_dir.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "run": run, "rows": [row.to_json() for row in rows]}
    (results_dir / "results.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    (results_dir / "results.md").write_text(render_markdown(machine=machine, run=run, rows=rows))
    print(render_table(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; written to {results_dir}/results.md and results.json")
    return 1 if any(row.note.startswith("ERROR") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
