"""P8: `reconciler adopt --from FILE` of a brownfield fleet (issue 16): 10k, 50k and 100k rows of CSV.

What is measured is the adopt itself beyond loading desired/ (which `plan` pays too and P1 measures):
reading the file, checking every row (declared, not managed, spec fields equal, the URL rules),
and writing every row and its event in one transaction; no URL is checked (no `--check`). It runs in
a child process that times its phases with the product's own functions (the path `adopt` takes),
on a fresh SQLite database each repetition, and reads its peak RSS (VmHWM) after loading desired/
and at the end. The end-to-end command is timed as well, next to `reconciler validate` of the same
desired/ (loading alone), for information.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import fleet
from .harness import BenchError, Case, Ctx, Row, reconciler_argv, reconciler_env, samples_of, time_cases

ID = "P8"
TITLE = "adopt --from FILE (bulk adopt) beyond loading desired/"
SIZES = (10_000, 50_000, 100_000)
QUICK_SIZES = (10_000,)
GOAL_SECONDS = 10.0

PHASES = """\
import json, sys, time
from pathlib import Path
from types import SimpleNamespace
from reconciler.lifecycle import check_adoptions, load_declared, read_adoption_file
from reconciler.models import iso, utcnow
from reconciler.store import open_store

def status(name):
    for line in open('/proc/self/status'):
        if line.startswith(name):
            return int(line.split()[1]) / 1024
desired, provision, db, path = map(Path, sys.argv[1:5])
settings = SimpleNamespace(desired=desired, provision=provision, settle=0.15)
store = open_store(url=str(db))
t0 = time.perf_counter()
declared = load_declared(settings=settings, store=store)
t1 = time.perf_counter()
rss_loaded, hwm_loaded = status('VmRSS'), status('VmHWM')
rows = read_adoption_file(path=path)
t2 = time.perf_counter()
checked = check_adoptions(declared=declared, store=store, rows=rows, name=str(path))
assert not checked.problems, checked.problems[:3]
t3 = time.perf_counter()
count = store.adopt(adoptions=checked.adoptions, actor='cli:bench@host', reason='P8', now=iso(utcnow()))
t4 = time.perf_counter()
assert count == len(rows), count
print(json.dumps({"load": t1 - t0, "read": t2 - t1, "check": t3 - t2, "write": t4 - t3, "adopt": t4 - t1,
                  "rss_loaded_mb": rss_loaded, "hwm_loaded_mb": hwm_loaded, "hwm_end_mb": status('VmHWM')}))
"""


def write_file(path: Path, count: int) -> Path:
    """CSV of the fleet: id, URL, created_at and two spec fields (checked against desired/)."""
    if path.exists() and path.stat().st_size and path.read_text().count("\n") == count + 1:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["resource_id,url,created_at,owner,deploy_ref"]
    for index in range(1, count + 1):
        spec = fleet.spec(index)
        lines.append(f"{spec['resource_id']},http://10.{index >> 16}.{(index >> 8) & 255}.{index & 255}:8080/,"
                     f"2024-01-01T00:00:00Z,{spec['owner']},{spec['deploy_ref']}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _phases(*, desired: Path, provision: Path, db: Path, path: Path, env: dict[str, str]) -> dict[str, float]:
    db.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-c", PHASES, str(desired), str(provision), str(db), str(path)],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"P8 phases: exit {done.returncode}\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Ctx) -> list[Row]:
    rows = []
    project = ctx.out / "p9"
    provision = fleet.write_scripts(project / "provision", provision=fleet.INSTANT_SCRIPT)
    for count in QUICK_SIZES if ctx.quick else SIZES:
        desired = fleet.write_desired(project / f"desired-{count}", count)
        path = write_file(project / f"adopt-{count}.csv", count)
        env = reconciler_env(project, desired=desired, db=project / "state.db", provision=provision)
        ctx.log(f"P8: adopt {count} rows, {ctx.repeat}×")
        runs = [_phases(desired=desired, provision=provision, db=project / "state.db", path=path, env=env)
                for _ in range(ctx.repeat)]
        adopt = sorted(r["adopt"] for r in runs)[len(runs) // 2]
        load = sorted(r["load"] for r in runs)[len(runs) // 2]
        mid = sorted(runs, key=lambda r: r["adopt"])[len(runs) // 2]
        beyond = max(r["hwm_end_mb"] - r["rss_loaded_mb"] for r in runs)
        note = (f"read {mid['read']:.2f} s, check {mid['check']:.2f} s, write {mid['write']:.2f} s; "
                f"{adopt / count * 1e6:.0f} µs/row; peak RSS {mid['hwm_end_mb']:.0f} MB, "
                f"{beyond:.0f} MB beyond the {mid['rss_loaded_mb']:.0f} MB after loading desired/")
        rows.append(Row(id=ID, what="adopt --from (in-process phases)", size=f"{count:,} rows",
                        seconds=adopt, peer="loading desired/ (same process)", peer_seconds=load,
                        goal=f"≤ {GOAL_SECONDS:g} s beyond loading" if count == 100_000 else "(info: linear)",
                        max_seconds=GOAL_SECONDS if count == 100_000 else None, repeats=f"{ctx.repeat}",
                        note=note, samples={"adopt": [r["adopt"] for r in runs], "load": [r["load"] for r in runs]}))
        rows.append(_end_to_end(ctx=ctx, count=count, project=project, path=path, env=env))
    return rows


def _end_to_end(*, ctx: Ctx, count: int, project: Path, path: Path, env: dict[str, str]) -> Row:
    db = project / "state.db"
    ours = Case("adopt", reconciler_argv("adopt", "--from", str(path)), env=env, cwd=project,
                setup=lambda: db.unlink(missing_ok=True))
    floor = Case("validate", reconciler_argv("validate"), env=env, cwd=project)
    timings = time_cases([ours, floor], ctx.repeat)
    return Row(id=ID, what="reconciler adopt --from FILE (whole command)", size=f"{count:,} rows",
               seconds=timings["adopt"].median, peer="reconciler validate (loading alone)",
               peer_seconds=timings["validate"].median, goal="(info)", repeats=f"{ctx.repeat}",
               samples=samples_of(timings))
