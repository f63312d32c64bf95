"""The schedule: a pure function of (seed, steps, backend) to a list of steps, and their text form.

A step names what to do and carries its own random draws (`pick` chooses among the resources that
exist when it runs), so any subset of a schedule is still a valid schedule: that is what lets a
failure be shrunk by dropping steps.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

# The operations and faults, with their weights. Faults that need a backend are filtered by `allowed`.
WEIGHTS: dict[str, int] = {
    # operations on the desired state (each written atomically, in slices, or committed and pulled)
    "add": 8, "change_inplace": 8, "change_replace": 4, "remove": 5, "rename": 2, "move": 3, "burst": 2,
    # other operations
    "api_post": 3, "api_delete": 2, "api_delete_file_owned": 1, "apply": 4, "check": 1, "pause": 4,
    # faults
    "kill_daemon": 3, "term_daemon": 2, "kill_apply": 2, "kill_script": 3, "script_misbehaves": 6,
    "hold_write_lock": 2, "restart_postgres": 2, "yaml_error": 2, "provision_away": 2, "disk_full": 1,
    "disk_readonly": 1,
}
# issue 15: policy operations, drawn from a stream of their own and inserted into the schedule, so the
# schedules of earlier seeds keep their other steps (and the regressions recorded with them stay valid)
POLICY_KINDS = ("policy_tighten", "policy_break", "policy_loosen")
POLICY_FROM = 20
# issue 17: one rollout (policy.yaml gains rollout:, every file resource's deploy_ref bumped) per schedule of
# POLICY_FROM steps or more, from a stream of its own (earlier seeds keep their other steps)
ROLLOUT_KIND = "rollout_bump"

# Issue 16's operator controls, inserted from a stream of their own (see `generate`), so adding them
# left every schedule drawn before them, and the seeds chosen for it, as they were.
CONTROLS = ("suspend", "resume", "suspend", "suspend_all", "suspend", "resume")  # taken in turn: 3:2:1
CONTROL_RATE = 0.15  # the chance that a control step comes before a step of the main stream

# Operator controls (issue 16), drawn from a stream of their own and inserted between the steps above,
# so that the schedule of every seed found before keeps its steps (the self-test's seeds find their
# defects from them): replace through the API, forget through the CLI.
OPERATOR_WEIGHTS: dict[str, int] = {"replace": 1, "forget": 1}
OPERATOR_SHARE = 0.1  # about one inserted step per ten
SQLITE_ONLY = {"hold_write_lock"}
POSTGRES_ONLY = {"restart_postgres"}
WRITE_MODES = ("atomic", "atomic", "slices", "pull")
MISBEHAVIOURS = ("fail", "hang", "slowterm", "junk")
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
# forget: undeclare first, then forget (a race with the daemon's teardown), or forget while declared (--force)
FORGET_MODES = ("undeclare", "force")
OWNERS = ("acme", "globex", "initech")


@dataclass(frozen=True, slots=True)
class Step:
    """One operation or fault; `args` holds its own random draws, so it means the same in any subset."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in sorted(self.args.items()))
        return f"{self.kind}({inner})"


def allowed(*, backend: str) -> list[str]:
    excluded = SQLITE_ONLY if backend == "postgres" else POSTGRES_ONLY
    return [kind for kind in WEIGHTS if kind not in excluded] + sorted(set(CONTROLS)) + list(OPERATOR_WEIGHTS)


def generate(*, seed: int, steps: int, backend: str, controls: bool = True) -> list[Step]:
    """The schedule for this seed: the same list on every machine and every run.

    `steps` steps of the main stream, which draws what it always drew. With `controls`, two more
    streams (each its own seed) insert operator steps before some of them: suspend, resume and
    suspend --all (issue 16 point 1), and replace through the API or forget through the CLI (points
    2-3). Then policy steps are inserted (issue 15, schedules of POLICY_FROM steps or more). So the
    schedules and seeds chosen before each addition keep their main steps; `controls=False` gives the
    schedules drawn before the operator controls existed.
    """
    rand = random.Random(f"chaos:{seed}:{backend}")
    extra = random.Random(f"chaos-controls:{seed}:{backend}")
    other = random.Random(f"chaos-operator:{seed}:{backend}")
    kinds = [kind for kind in allowed(backend=backend) if kind in WEIGHTS]
    weights = [WEIGHTS[kind] for kind in kinds]
    operators = list(OPERATOR_WEIGHTS)
    drawn: list[Step] = []
    turn = extra.randrange(len(CONTROLS))
    for _ in range(steps):
        if controls and extra.random() < CONTROL_RATE:
            drawn.append(_step(extra, kind=CONTROLS[turn % len(CONTROLS)], index=len(drawn)))
            turn += 1
        if controls and other.random() < OPERATOR_SHARE:
            kind = other.choices(operators, [OPERATOR_WEIGHTS[k] for k in operators])[0]
            drawn.append(_step(other, kind=kind, index=len(drawn)))
        drawn.append(_step(rand, kind=rand.choices(kinds, weights)[0], index=len(drawn)))
    with_policy = _with_policy_steps(drawn, rand=random.Random(f"chaos-policy:{seed}:{backend}"))
    if not controls:  # drawn as before the operator controls (and the rollouts, issue 17) existed
        return with_policy
    return _with_rollout_step(with_policy, rand=random.Random(f"chaos-rollout:{seed}:{backend}"))


def _with_rollout_step(base: list[Step], *, rand: random.Random) -> list[Step]:
    """One rollout step at a drawn position in the first half (its waves then run during the later faults)."""
    if len(base) < POLICY_FROM:
        return base
    steps = list(base)
    steps.insert(rand.randrange(len(steps) // 2 + 1), _step(rand, kind=ROLLOUT_KIND, index=2000))
    return steps


def _with_policy_steps(base: list[Step], *, rand: random.Random) -> list[Step]:
    """About one policy step in seven more, kinds in turn from a drawn start, at positions of their own draw.

    Schedules shorter than POLICY_FROM stay as they were (the self-test's seeds find their defects in them).
    """
    if len(base) < POLICY_FROM:
        return base
    steps, first = list(base), rand.randrange(len(POLICY_KINDS))
    for number in range(len(base) // 7):
        kind = POLICY_KINDS[(first + number) % len(POLICY_KINDS)]
        steps.insert(rand.randrange(len(steps) + 1), _step(rand, kind=kind, index=1000 + number))
    return steps


def _step(rand: random.Random, *, kind: str, index: int) -> Step:
    args: dict[str, Any] = {"pick": round(rand.random(), 4), "pause": round(rand.uniform(0.0, 0.4), 2)}
    args.update(_ARGS.get(kind, lambda r, i: {})(rand, index))
    return Step(kind=kind, args=args)


def _edit(rand: random.Random, index: int) -> dict[str, Any]:
    return {"write": rand.choice(WRITE_MODES), "n": index, "value": rand.randrange(1000)}


_ARGS = {
    "add": _edit, "change_inplace": lambda r, i: {**_edit(r, i), "field": r.choice(("deploy_ref", "owner", "params"))},
    "change_replace": _edit, "remove": _edit, "rename": _edit, "move": _edit,
    "burst": lambda r, i: {"n": i, "edits": r.randint(3, 6), "gap": round(r.uniform(0.01, 0.06), 3)},
    "api_post": lambda r, i: {"n": i, "value": r.randrange(1000)},
    "apply": lambda r, i: {"wait": r.random() < 0.4},
    "kill_apply": lambda r, i: {"after": round(r.uniform(0.2, 1.5), 2)},
    "pause": lambda r, i: {"seconds": round(r.uniform(0.5, 2.0), 2)},
    "kill_daemon": lambda r, i: {"down": round(r.uniform(0.0, 1.5), 2), "again": r.random() < 0.4},
    "term_daemon": lambda r, i: {"down": round(r.uniform(0.0, 1.0), 2)},
    "script_misbehaves": lambda r, i: {"mode": r.choice(MISBEHAVIOURS)},
    "forget": lambda r, i: {"first": r.choice(FORGET_MODES), "n": i},
    "hold_write_lock": lambda r, i: {"seconds": r.choice((1.0, 2.0, 7.0))},
    "restart_postgres": lambda r, i: {"down": r.choice((0.5, 2.0, 7.0))},
    "yaml_error": lambda r, i: {"steps": r.randint(1, 4)},
    "provision_away": lambda r, i: {"steps": r.randint(1, 3)},
    "disk_full": lambda r, i: {"steps": r.randint(1, 3)},
    "disk_readonly": lambda r, i: {"steps": r.randint(1, 3)},
    "policy_tighten": lambda r, i: {"limit": r.randint(2, 5)},
    "policy_break": lambda r, i: {"steps": r.randint(1, 3)},
    # a resource suspended for a few seconds (--until) or until resumed some steps later
    "suspend": lambda r, i: {"until": r.choice((None, 3, 8)), "steps": r.randint(2, 5)},
    "suspend_all": lambda r, i: {"steps": r.randint(2, 4)},
    "rollout_bump": lambda r, i: {"n": i, "value": r.randrange(1000)},
}


def dumps(steps: list[Step]) -> str:
    return json.dumps([asdict(step) for step in steps], indent=None)


def loads(text: str) -> list[Step]:
    return [Step(kind=item["kind"], args=item["args"]) for item in json.loads(text)]
