"""P1p: what policy.yaml costs a plan: `reconciler plan -o json` with and without a policy of a few dozen rules.

The same fleet as P1 (no database: every resource is a create, the policy's worst case — every one is
new to its quota buckets and admitted in resource_id order), planned with no policy.yaml and with
POLICY below, which every resource passes (so both plans render the same changes). Interleaved in one
run, so machine noise hits both alike.
"""

from __future__ import annotations

import json
import sys

from . import fleet
from .harness import Case, Ctx, Row, reconciler_argv, reconciler_env, run_checked, samples_of, time_cases

ID = "P1p"
TITLE = "plan -o json with a policy of 36 rules vs without"

# 36 rules (limits and lists) over every kind (quotas in each dimension, allowed values, params, change
# limits), all passed by the bench fleet (owners owner-00..96, three regions, target local, v1.4.2)
POLICY = """\
mode: enforce
quotas:
  total: 1000000
  per_owner: {default: 5000, owner-01: 6000, owner-02: 6000, owner-03: 6000, owner-04: 6000, owner-05: 6000,
              owner-06: 6000, owner-07: 6000, owner-08: 6000, owner-09: 6000, owner-10: 6000, owner-11: 6000,
              owner-12: 6000}
  per_region: {eu-west-1: 400000, us-east-1: 400000, ap-south-1: 400000}
  per_runtime_target: {local: 1000000, aws: 1000}
  per_owner_runtime_target:
    default: {local: 5000}
    owner-01: {local: 6000, aws: 10}
allowed:
  regions: [eu-west-1, us-east-1, ap-south-1, eu-central-1]
  runtime_targets: [local, aws]
  deploy_ref: '^v[0-9]+\\.[0-9]+\\.[0-9]+$'
  owners:
    owner-01: {regions: [eu-west-1, us-east-1, ap-south-1]}
    owner-02: {regions: [eu-west-1, us-east-1, ap-south-1], runtime_targets: [local]}
    owner-03: {runtime_targets: [local]}
params: {required: [size], forbidden: [password, secret, token]}
changes:
  max_per_plan: {create: 1000000, update: 100000, delete: 50}
  max_per_owner_per_hour: 100000
  mass_delete: {minimum: 10, fraction: 0.25}
"""
# In-process, the two halves alone (best of 5, interleaved): a plan without a policy, and the evaluation
# the policy adds to it. Less noisy than whole commands on a busy machine; printed as JSON.
IN_PROCESS = """\
import json, sys, time
from pathlib import Path
from reconciler.engine import Fleet, load_files, plan_fleet
from reconciler.plan import PlanPolicy
from reconciler.policy import evaluate, load_policy
desired = load_files(directory=Path(sys.argv[1]), settle=0)
policy = load_policy(path=Path(sys.argv[2]))
fleet = Fleet({}, set(), {})
plans, evaluations = [], []
for _ in range(5):
    started = time.perf_counter()
    view = plan_fleet(desired=desired, fleet=fleet, policy=PlanPolicy())
    plans.append(time.perf_counter() - started)
    started = time.perf_counter()
    verdict = evaluate(policy=policy, desired=desired.resources, observed={}, plan=view.plan, sources=desired.sources)
    evaluations.append(time.perf_counter() - started)
    assert not verdict.violations, verdict.violations[:3]
print(json.dumps({"plan": min(plans), "evaluate": min(evaluations)}))
"""
SIZES = (10_000, 100_000)
QUICK_SIZES = (10_000,)


def run(ctx: Ctx) -> list[Row]:
    rows = []
    project = ctx.out / "p1p"
    project.mkdir(parents=True, exist_ok=True)
    policy = project / "rules" / "policy.yaml"
    policy.parent.mkdir(exist_ok=True)
    policy.write_text(POLICY)
    assert not (project / "policy.yaml").exists(), "the plain case must find no policy beside desired/"
    for count in QUICK_SIZES if ctx.quick else SIZES:
        desired = fleet.write_desired(project / f"desired-{count}", count)
        env = reconciler_env(project, desired=desired, db=project / "absent" / "never.db")
        argv = reconciler_argv("plan", "--output", "json")
        plain = Case("plain", argv, env=env, cwd=project)
        governed = Case("policy", argv, env={**env, "RECONCILER_POLICY": str(policy)}, cwd=project)
        ctx.log(f"P1p: {count} resources, with and without a policy, {ctx.repeat}×")
        timings = time_cases([governed, plain], ctx.repeat)
        rows.append(Row(id=ID, what="plan -o json, policy of 36 rules", size=f"{count:,} res",
                        seconds=timings["policy"].median, peer="same plan, no policy",
                        peer_seconds=timings["plain"].median, repeats=f"{ctx.repeat}",
                        samples=samples_of(timings), goal="≤ 1.1× without", max_ratio=1.1))
        halves = json.loads(run_checked([sys.executable, "-c", IN_PROCESS, str(desired), str(policy)],
                                        env=env, cwd=project).stdout)
        rows.append(Row(id=ID, what="evaluate() alone, in-process (best of 5)", size=f"{count:,} res",
                        seconds=halves["evaluate"], peer="plan_fleet() without policy, in-process",
                        peer_seconds=halves["plan"], repeats="5", goal="(info)"))
    return rows
