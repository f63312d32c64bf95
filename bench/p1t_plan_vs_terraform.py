"""P1t: a no-change `reconciler plan` at 1,000 resources vs `terraform plan` of the same fleet.

Both sides are first brought to the converged state with an instant provision script, so the timed
plan has nothing to do but read desired state, read observed state and compare. `--detailed-exitcode`
on both sides proves, on every repetition, that the plan really found no changes.
"""

from __future__ import annotations

from . import fleet, terraform
from .harness import Case, Ctx, Row, reconciler_argv, reconciler_env, run_checked, samples_of, time_cases

ID = "P1t"
TITLE = "no-change plan vs terraform plan"
COUNT, QUICK_COUNT = 1_000, 100  # --quick: terraform apply of 1,000 alone takes about a minute


def _reconciler_case(ctx: Ctx, count: int) -> Case:
    project = ctx.out / "p1t"
    desired = fleet.write_desired(project / f"desired-{count}", count)
    provision = fleet.write_scripts(project / "provision", provision=fleet.INSTANT_SCRIPT)
    for stale in project.glob("state.db*"):
        stale.unlink()
    env = reconciler_env(project, desired=desired, provision=provision)
    ctx.log(f"P1t: converging reconciler at {count} resources")
    run_checked(reconciler_argv("apply", "--yes", "--parallelism", "32"), env=env, cwd=project)
    return Case("reconciler", reconciler_argv("plan", "--detailed-exitcode"), env=env, cwd=project)


def _terraform_case(ctx: Ctx, count: int) -> Case:
    directory = ctx.out / "p1t" / "terraform"
    fleet.write_terraform_fleet(directory / "fleet", count)
    fleet.write_scripts(directory, provision=fleet.INSTANT_SCRIPT)
    terraform.prepare(directory)
    terraform.reset_state(directory)
    env = terraform.env(ctx.out)
    ctx.log(f"P1t: converging terraform at {count} resources")
    run_checked(terraform.apply_argv(), env=env, cwd=directory)
    return Case("terraform", terraform.plan_argv(), env=env, cwd=directory)


def run(ctx: Ctx) -> list[Row]:
    count = QUICK_COUNT if ctx.quick else COUNT
    ours = _reconciler_case(ctx, count)
    goal = {"goal": "(info: goal is at 1,000)"} if ctx.quick else {"goal": "≥ 20× faster (≤ 0.05×)", "max_ratio": 0.05}
    row = Row(id=ID, what="plan (no changes)", size=f"{count:,} res / {max(1, count // fleet.PER_FILE)} files",
              seconds=None, peer="terraform plan", peer_seconds=None, repeats=f"{ctx.repeat}", **goal,
              note="terraform plan " + " ".join(terraform.PLAN_FLAGS) + "; terraform_data + local-exec")
    if not terraform.binary():
        timings = time_cases([ours], ctx.repeat)
        row.seconds, row.peer, row.note = timings["reconciler"].median, "terraform plan: not installed", ""
    else:
        peer = _terraform_case(ctx, count)
        ctx.log(f"P1t: timing both plans, {ctx.repeat}×")
        timings = time_cases([ours, peer], ctx.repeat)
        row.seconds, row.peer_seconds = timings["reconciler"].median, timings["terraform"].median
    row.samples = samples_of(timings)
    return [row]
