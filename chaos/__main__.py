"""`python -m chaos`: run seeded campaigns, print each seed's result, replay and shrink failures.

    python -m chaos --seed 7 --steps 60 --backend sqlite        # one campaign
    python -m chaos --seeds 1-20 --steps 40 --backend postgres   # many
    python -m chaos --seed 7 --confirm 3 --shrink                # replay a failure, then shrink it
    python -m chaos --seed 7 --schedule /tmp/chaos-…/shrunk.json # run a saved (shrunk) schedule

Runs as root re-exec themselves in a private mount namespace (`unshare -m`) so that a full or
read-only disk is a real tmpfs; without it those faults are skipped and the reason is printed.
Exit 0 when every campaign held every invariant and converged, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .campaign import Campaign, Result, Settings, report, shrink
from .schedule import dumps, generate, loads
from .world import DEFECT_ENV


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, action="append", default=[], help="a seed (repeatable)")
    parser.add_argument("--seeds", default="", metavar="A-B|A,B,…", help="a range or list of seeds")
    parser.add_argument("--steps", type=int, default=40, help="steps per campaign (default 40)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--converge-limit", type=float, default=120.0,
                        help="seconds the system gets to converge once the faults stop (default 120)")
    parser.add_argument("--confirm", type=int, default=0, metavar="N", help="replay a failing seed N times")
    parser.add_argument("--shrink", action="store_true", help="shrink a failing schedule (drop steps)")
    parser.add_argument("--shrink-kind", action="append", default=[], metavar="KIND",
                        help="shrink while a replay shows this violation kind (repeatable; default: any of the "
                             "failure's kinds), e.g. overlap, 'unwarranted teardown', 'no convergence'")
    parser.add_argument("--shrink-budget", type=float, default=900.0, help="seconds for shrinking (default 900)")
    parser.add_argument("--schedule", type=Path, help="run this saved schedule (JSON) instead of generating")
    parser.add_argument("--defect", default="", help="test only: re-introduce a known past defect (see "
                        "reconciler/defects.py), to show the campaign finds it")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out the operator controls (suspend, resume, suspend --all): the schedules of "
                             "seeds chosen before they existed, as the self-test's")
    parser.add_argument("--keep", action="store_true", help="keep every world directory, not only failing ones")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--workdir", type=Path, help="where world directories go (default: the temp dir)")
    return parser.parse_args(argv)


def _seeds(args: argparse.Namespace) -> list[int]:
    seeds = list(args.seed)
    for part in filter(None, args.seeds.split(",")):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds or [1]


def _in_namespace(argv: list[str]) -> None:
    """Re-exec in a private mount namespace (root only); return when that is not possible."""
    if os.environ.get("CHAOS_NAMESPACE") or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode:
        print(f"chaos: unshare -m unavailable ({probe.stderr.decode().strip()}): disk faults skipped", flush=True)
        os.environ["CHAOS_NAMESPACE"] = "0"
        return
    os.environ["CHAOS_NAMESPACE"] = "1"
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "chaos", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _in_namespace(argv)
    args = _parse(argv)
    if args.defect:
        os.environ[DEFECT_ENV] = args.defect
    pg = _postgres() if args.backend == "postgres" else None
    results: list[dict] = []
    started = time.monotonic()
    try:
        for seed in _seeds(args):
            results.append(_one(seed, args, pg))
    finally:
        if pg is not None:
            pg.stop()
    elapsed = time.monotonic() - started
    steps = sum(item["steps"] for item in results)
    failed = [item["seed"] for item in results if not item["ok"]]
    campaigns = sum(item["seconds"] for item in results)  # without replays and shrinking
    print(f"chaos: {len(results)} campaign(s) on {args.backend}, seeds {[item['seed'] for item in results]}, "
          f"{steps} steps in {campaigns:.0f} s ({60 * steps / max(campaigns, 1):.0f} steps/min; {elapsed:.0f} s "
          f"in all); failing seeds: {failed or 'none'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "seconds": round(elapsed, 1)}, indent=2))
    return 1 if failed else 0


def _one(seed: int, args: argparse.Namespace, pg: object) -> dict:
    steps = read_schedule(args.schedule) if args.schedule else generate(
        seed=seed, steps=args.steps, backend=args.backend, controls=not args.no_controls)
    settings = Settings(backend=args.backend, converge_limit=args.converge_limit, keep=args.keep,
                        workdir=args.workdir, echo=lambda text: print(text, flush=True))
    result = Campaign(seed=seed, steps=steps, settings=settings, pg=pg).run()
    print(result.summary(), flush=True)
    item = report(result)
    if result.ok:
        return item
    print(f"  seed {seed} FAILED; world kept in {result.root}", flush=True)
    if args.confirm:
        replays = [Campaign(seed=seed, steps=steps, settings=settings, pg=pg).run() for _ in range(args.confirm)]
        again = sum(1 for other in replays if other.kinds() & result.kinds())
        print(f"  confirmed: {again}/{args.confirm} replays of seed {seed} failed the same way", flush=True)
        item["confirmed"] = f"{again}/{args.confirm}"
    if args.shrink:
        _shrink(seed, steps, result, settings, pg, args, item)
    return item


def _shrink(seed: int, steps: list, result: Result, settings: Settings, pg: object, args: argparse.Namespace,
            item: dict) -> None:
    kinds = set(args.shrink_kind) or result.kinds()
    if not kinds & result.kinds():
        print(f"  not shrinking: the failure shows {sorted(result.kinds())}, not {sorted(kinds)}", flush=True)
        return
    print(f"  shrinking {len(steps)} steps while a replay shows {sorted(kinds)} …", flush=True)
    small = shrink(seed=seed, steps=steps, settings=settings, pg=pg, kinds=kinds, budget=args.shrink_budget)
    path = result.root / "shrunk.json"
    path.write_text(dumps(small))
    print(f"  shrunk schedule of seed {seed}: {len(small)} step(s), saved in {path}:", flush=True)
    for step in small:
        print(f"    {step.text()}", flush=True)
    print(f"  replay: python -m chaos --seed {seed} --backend {args.backend} --schedule {path}", flush=True)
    item["shrunk"] = [step.text() for step in small]


def read_schedule(path: Path) -> list:
    """A saved schedule: a list of steps (shrunk.json), or a regression {"seed", "found", "steps": […]}."""
    text = path.read_text()
    data = json.loads(text)
    return loads(json.dumps(data["steps"])) if isinstance(data, dict) else loads(text)


def _postgres() -> object:
    from tests import pgserver

    if not pgserver.available():
        raise SystemExit(f"chaos: PostgreSQL binaries not found in {pgserver.PG_BIN}")
    return pgserver.start()


if __name__ == "__main__":
    sys.exit(main())
