"""P2: `reconciler apply` of 1,000 new resources whose script takes 0.2 s, vs xargs -P and terraform.

`xargs -P 32` running the same script for the same ids is the floor: pure fan-out with nothing
recorded. Terraform applying the same fleet as `terraform_data` + `local-exec` is the peer.
Every repetition starts from nothing: fresh database and work directory, fresh Terraform state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import fleet, terraform
from .harness import Case, Ctx, Row, reconciler_argv, reconciler_env, samples_of, time_cases

ID = "P2"
TITLE = "apply of new resources (0.2 s script) vs xargs -P 32 and terraform apply"
SLEEP = 0.2
PARALLELISM = 32
COUNT, QUICK_COUNT = 1_000, 100
TERRAFORM_REPEAT = 1  # one terraform apply of 1,000 resources takes about a minute here


def _fresh_reconciler(project: Path) -> None:
    for stale in project.glob("state.db*"):
        stale.unlink()
    shutil.rmtree(project / "work", ignore_errors=True)


def _cases(ctx: Ctx, count: int) -> tuple[Case, Case]:
    project = ctx.out / "p2"
    desired = fleet.write_desired(project / f"desired-{count}", count)
    provision = fleet.write_scripts(project / "provision", provision=fleet.sleeping_script(SLEEP))
    env = reconciler_env(project, desired=desired, provision=provision)
    ours = Case("reconciler", reconciler_argv("apply", "--yes", "--parallelism", str(PARALLELISM)), env=env,
                cwd=project, setup=lambda: _fresh_reconciler(project))
    ids = fleet.write_ids(project / f"ids-{count}.txt", count)
    xargs = Case("xargs", ["xargs", "-P", str(PARALLELISM), "-I{}", "env", "RESOURCE_ID={}",
                           str(provision / "provision.sh")], env=env, cwd=project, stdin=ids)
    return ours, xargs


def _terraform_case(ctx: Ctx, count: int) -> Case:
    directory = ctx.out / "p2" / "terraform"
    fleet.write_terraform_fleet(directory / "fleet", count)
    fleet.write_scripts(directory, provision=fleet.sleeping_script(SLEEP))
    terraform.prepare(directory)
    return Case("terraform", terraform.apply_argv(), env=terraform.env(ctx.out), cwd=directory,
                setup=lambda: terraform.reset_state(directory), timeout=1800)


def run(ctx: Ctx) -> list[Row]:
    count = QUICK_COUNT if ctx.quick else COUNT
    size = f"{count:,} res, {SLEEP} s script, -p {PARALLELISM}"
    ours, xargs = _cases(ctx, count)
    ctx.log(f"P2: reconciler apply vs xargs at {count} resources, {ctx.repeat}×")
    timings = time_cases([ours, xargs], ctx.repeat)
    ideal = count * SLEEP / PARALLELISM
    rows = [Row(id=ID, what="apply --yes (new)", size=size, seconds=timings["reconciler"].median,
                peer="xargs -P 32 same script", peer_seconds=timings["xargs"].median, goal="≤ 1.2× xargs",
                max_ratio=1.2, repeats=f"{ctx.repeat}", samples=samples_of(timings),
                note=f"ideal {ideal:.2f} s ({count} × {SLEEP} s / {PARALLELISM})")]
    rows.append(_versus_terraform(ctx, count, size, timings))
    return rows


def _versus_terraform(ctx: Ctx, count: int, size: str, timings: dict) -> Row:
    row = Row(id=ID, what="apply --yes (new)", size=size, seconds=timings["reconciler"].median,
              peer="terraform apply -parallelism=32", peer_seconds=None, goal="faster than terraform (< 1×)",
              max_ratio=1.0, repeats=f"{ctx.repeat} / terraform {TERRAFORM_REPEAT}",
              note="terraform apply " + " ".join(terraform.APPLY_FLAGS) + "; fresh state each run")
    if ctx.quick:
        row.peer, row.note, row.repeats = "terraform apply: skipped (--quick)", "", f"{ctx.repeat}"
        return row
    if not terraform.binary():
        row.peer, row.note, row.repeats = "terraform apply: not installed", "", f"{ctx.repeat}"
        return row
    case = _terraform_case(ctx, count)
    ctx.log(f"P2: terraform apply at {count} resources, {TERRAFORM_REPEAT}×")
    peer = time_cases([case], TERRAFORM_REPEAT)
    row.peer_seconds = peer["terraform"].median
    row.samples = {"reconciler": list(timings["reconciler"].samples), **samples_of(peer)}
    return row
