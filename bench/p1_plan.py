"""P1: `reconciler apply --dry-run --output json` over a large fleet vs parsing the same files bare.

The floor is the least any Python tool must do: start an interpreter, walk desired/, and parse every
file with PyYAML's C loader. What reconciler adds on top (validation, line numbers, the plan, JSON
rendering) should cost at most half as much again.
"""

from __future__ import annotations

import sys

from . import fleet
from .harness import Case, Ctx, Row, reconciler_argv, reconciler_env, samples_of, time_cases

ID = "P1"
TITLE = "plan (apply --dry-run -o json) vs bare CSafeLoader parse"

FLOOR = """\
import os, sys, yaml
count = 0
for root, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '_')))
    for name in sorted(files):
        if name.startswith(('.', '_')) or not name.endswith(('.yaml', '.yml')):
            continue
        with open(os.path.join(root, name), 'rb') as f:
            count += sum(1 for _ in yaml.load_all(f, Loader=yaml.CSafeLoader))
print(count)
"""

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)


def _goal(count: int) -> dict:
    if count == 10_000:
        return {"goal": "≤ 1.5× floor", "max_ratio": 1.5}
    if count == 100_000:
        return {"goal": "≤ 5 s absolute", "max_seconds": 5.0}
    return {"goal": "(info)"}


def run(ctx: Ctx) -> list[Row]:
    rows = []
    for count in QUICK_SIZES if ctx.quick else SIZES:
        project = ctx.out / "p1"
        desired = fleet.write_desired(project / f"desired-{count}", count)
        env = reconciler_env(project, desired=desired, db=project / "absent" / "never.db")
        ours = Case("reconciler", reconciler_argv("apply", "--dry-run", "--output", "json"), env=env, cwd=project,
                    ok_codes=(0,))
        floor = Case("floor", [sys.executable, "-c", FLOOR, str(desired)], env=env, cwd=project)
        ctx.log(f"P1: {count} resources in {count // fleet.PER_FILE} files, {ctx.repeat}×")
        timings = time_cases([ours, floor], ctx.repeat)
        rows.append(Row(id=ID, what="apply --dry-run -o json", size=f"{count:,} res / {count // fleet.PER_FILE} files",
                        seconds=timings["reconciler"].median, peer="python -c CSafeLoader walk",
                        peer_seconds=timings["floor"].median, repeats=f"{ctx.repeat}",
                        samples=samples_of(timings), **_goal(count)))
        assert not (project / "absent").exists(), "dry run created the database directory"
    return rows
