"""Rollouts, pure parts (issue 17): wave sizes, the stable assignment, the plan's holds, the state machine,
and policy.yaml's `rollout:` section (file:line for every problem)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.errors import SpecError
from reconciler.models import Action, ObservedResource, ResourceSpec, ResourceStatus, canonical_json, spec_hash
from reconciler.plan import Hold, Reason, compute_plan
from reconciler.policy import parse_policy
from reconciler.rollout.machine import (
    Refused,
    Step,
    abort,
    apply_decision,
    baking,
    decide,
    pause,
    promote,
    record_check,
    resume,
    settle_job,
)
from reconciler.rollout.model import (
    Canary,
    Member,
    MemberState,
    OnFailure,
    Rollout,
    RolloutPolicy,
    RolloutState,
    Settings,
    WaveTarget,
)
from reconciler.rollout.plan import Holding, gate, propose, wave_sizes

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = NOW.isoformat()


def waves(*items: int | str) -> tuple[WaveTarget, ...]:
    return tuple(WaveTarget(count=i) if isinstance(i, int) else WaveTarget(percent=float(i[:-1])) for i in items)


@pytest.mark.parametrize(("total", "targets", "sizes"), [
    (1000, waves(1, "5%", "25%", "100%"), (1, 49, 200, 750)),
    (20, waves(1, "25%", "100%"), (1, 4, 15)),
    (20, waves(1, "25%"), (1, 4, 15)),  # the last wave is 100% whatever is written
    (3, waves(1, "5%", "25%"), (1, 2)),  # 5% of 3 rounds up to 1: an empty wave is dropped
    (10, waves(50, "100%"), (10,)),
    (7, waves("33.3%"), (3, 4)),
])
def test_wave_sizes_are_cumulative_rounded_up_and_end_at_everything(total, targets, sizes):
    assert wave_sizes(total=total, waves=targets) == sizes


def item(rid: str, ref: str, *, owner: str = "acme") -> ResourceSpec:
    return ResourceSpec(resource_id=rid, owner=owner, region="eu", runtime_target="local", deploy_ref=ref)


def row(spec: ResourceSpec) -> ObservedResource:
    return ObservedResource(spec.resource_id, spec.owner, spec.region, spec.runtime_target, spec.deploy_ref,
                            ResourceStatus.ACTIVE, spec_hash=spec_hash(spec), target_hash=spec_hash(spec),
                            spec_json=canonical_json(spec.model_dump()), version=1)


def bump(count: int, *, canary_owner: str | None = None):
    old = {f"r{i:02}": item(f"r{i:02}", "v1", owner=canary_owner if i == 7 and canary_owner else "acme")
           for i in range(count)}
    new = {rid: spec.model_copy(update={"deploy_ref": "v2"}) for rid, spec in old.items()}
    return compute_plan(new, {rid: row(spec) for rid, spec in old.items()}, now=NOW)


def test_a_proposal_orders_canaries_first_then_by_hash_and_is_stable():
    policy = RolloutPolicy(waves=waves(1, "25%"), bake=2, min_changes=5, canary=Canary(owners=frozenset({"internal"})))
    plan = bump(20, canary_owner="internal")
    one = propose(plan=plan, policy=policy, rollout_id="ro-1")
    assert one is not None and one.sizes == (1, 4, 15)
    assert [m.resource_id for m in one.members if m.wave == 1] == ["r07"]
    assert propose(plan=plan, policy=policy, rollout_id="ro-1") == one
    other = propose(plan=plan, policy=replace(policy, canary=Canary()), rollout_id="ro-2")
    assert other is not None and {m.resource_id for m in other.members} == {f"r{i:02}" for i in range(20)}
    first = one.members[1]
    assert first.from_spec["deploy_ref"] == "v1" and first.to_spec["deploy_ref"] == "v2" and first.to_hash
    assert one.summary() == "Rollout: 3 waves — 1, 4, 15 resources; bake 2s; halt at the first failure"


def test_too_few_changes_or_creates_make_no_rollout():
    policy = RolloutPolicy(min_changes=21)
    assert propose(plan=bump(20), policy=policy, rollout_id="x") is None
    created = compute_plan({f"n{i}": item(f"n{i}", "v1") for i in range(30)}, {}, now=NOW)
    assert propose(plan=created, policy=RolloutPolicy(min_changes=2), rollout_id="x") is None


def member(rid: str, wave: int, state: MemberState = MemberState.PENDING, **kw) -> Member:
    fields = {"to_hash": "h2"} | kw
    return Member("ro", rid, wave, state, Action.UPDATE, {"deploy_ref": "v1"}, {"deploy_ref": "v2"}, **fields)


def rollout(**kw) -> Rollout:
    fields = {"rollout_id": "ro", "state": RolloutState.RUNNING, "waves": 3, "wave": 0,
              "settings": Settings(bake=2.0), "created_at": STAMP, "updated_at": STAMP} | kw
    return Rollout(**fields)


def test_while_a_waves_jobs_run_each_success_is_checked_during_its_own_bake_and_none_without_bake():
    ro = rollout(wave=1)
    early = member("a", 1, MemberState.SUCCEEDED, succeeded_at=NOW.isoformat())
    late = member("b", 1, MemberState.SUCCEEDED, succeeded_at=(NOW + timedelta(seconds=3)).isoformat())
    running = member("c", 1, MemberState.QUEUED, job_id="j")
    members = [early, late, running]
    at = NOW + timedelta(seconds=4)  # a's bake (2 s) is over, b's is not: only b is checked while c runs
    assert baking(rollout=ro, members=members, now=at) == (late,)
    ended = [early, late, replace(running, state=MemberState.SUCCEEDED, succeeded_at=at.isoformat())]
    assert baking(rollout=ro, members=ended, now=at) == tuple(ended)  # the wave's bake: every success
    unbaked = rollout(wave=1, settings=Settings(bake=0.0))
    assert baking(rollout=unbaked, members=members, now=at) == ()
    assert baking(rollout=unbaked, members=ended, now=at) == ()


def test_gate_holds_a_rollouts_changes_and_lets_a_newer_spec_supersede():
    plan = bump(3)
    changes = {c.resource_id: c for c in plan.changes}
    holdings = {
        "r00": Holding(replace(member("r00", 2), to_hash=changes["r00"].applied_hash()), RolloutState.RUNNING, 3),
        "r01": Holding(member("r01", 1, to_hash="older"), RolloutState.HALTED, 3),
    }
    gated = gate(plan=plan, holdings=holdings)
    assert [c.resource_id for c in gated.plan.changes] == ["r01", "r02"]
    (note,) = gated.plan.waiting
    assert note.reason is Reason.ROLLOUT and note.hold is Hold.ROLLOUT and note.message == "rollout: wave 2 of 3"
    assert [m.resource_id for m in gated.superseded] == ["r01"]


def test_a_reverted_member_is_held_until_the_desired_state_changes_again():
    plan = bump(1)
    wanted = plan.changes[0].applied_hash()
    reverted = Holding(member("r00", 1, MemberState.REVERTED, to_hash=wanted), RolloutState.COMPLETED, 3)
    assert gate(plan=plan, holdings={"r00": reverted}).plan.waiting[0].message == "rollout: reverted"
    changed = Holding(member("r00", 1, MemberState.REVERTED, to_hash="other"), RolloutState.COMPLETED, 3)
    assert gate(plan=plan, holdings={"r00": changed}).plan.changes == plan.changes


def test_waves_start_in_order_only_after_every_member_succeeded_and_baked():
    ro = rollout()
    members = [member("a", 1), member("b", 2), member("c", 2), member("d", 3)]
    first = decide(rollout=ro, members=members, now=NOW)
    assert first.step is Step.START and first.wave == 1 and [m.resource_id for m in first.start] == ["a"]
    ro = apply_decision(ro, first, now=STAMP)
    members[0] = replace(members[0], state=MemberState.QUEUED)
    assert decide(rollout=ro, members=members, now=NOW).step is Step.WAIT
    done_at = NOW + timedelta(seconds=5)
    members[0] = settle_job(members[0], ok=True, finished_at=done_at.isoformat())
    baking_now = decide(rollout=ro, members=members, now=done_at + timedelta(seconds=1))
    assert baking_now.step is Step.WAIT and baking_now.bake_until == done_at + timedelta(seconds=2)
    assert baking(rollout=ro, members=members, now=done_at + timedelta(seconds=1)) == (members[0],)
    later = decide(rollout=ro, members=members, now=done_at + timedelta(seconds=2))
    assert later.step is Step.START and later.wave == 2 and len(later.start) == 2
    assert decide(rollout=promote(ro), members=members, now=done_at).step is Step.START  # promote skips the bake


def test_a_failure_over_budget_halts_and_revert_reverts_the_reached_members():
    ro = rollout(wave=1, settings=Settings(bake=2.0, on_failure=OnFailure.REVERT))
    canary = member("a", 1, MemberState.SUCCEEDED, succeeded_at=STAMP)
    for _ in range(3):
        canary = record_check(canary, ok=False, unhealthy_after=3, now=STAMP)
    assert canary.state is MemberState.UNHEALTHY
    halt = decide(rollout=ro, members=[canary, member("b", 2)], now=NOW)
    assert halt.step is Step.HALT and "a unhealthy" in (halt.reason or "")
    halted = apply_decision(ro, halt, now=STAMP)
    assert halted.state is RolloutState.HALTED and halted.revert
    back = decide(rollout=halted, members=[canary, member("b", 2)], now=NOW)
    assert back.step is Step.REVERT and [m.resource_id for m in back.revert] == ["a"]
    reverting = replace(canary, state=MemberState.REVERTING)
    assert settle_job(reverting, ok=True, finished_at=STAMP).state is MemberState.REVERTED
    closed = decide(rollout=halted, members=[replace(canary, state=MemberState.REVERTED)], now=NOW)
    assert closed.step is Step.CLOSE and not apply_decision(halted, closed, now=STAMP).revert


def test_failures_within_budget_and_max_parallel():
    ro = rollout(wave=1, settings=Settings(bake=0.0, max_failures=1, max_parallel=2))
    members = [member("a", 1, MemberState.FAILED), member("b", 1), member("c", 1), member("d", 1, MemberState.QUEUED)]
    step = decide(rollout=ro, members=members, now=NOW)
    assert step.step is Step.START and [m.resource_id for m in step.start] == ["b"]


def test_the_operators_verbs_are_transitions():
    ro = rollout(wave=1)
    assert resume(pause(ro)).state is RolloutState.RUNNING
    with pytest.raises(Refused):
        resume(ro)
    assert abort(ro, revert=True).state is RolloutState.ABORTED
    with pytest.raises(Refused):
        abort(abort(ro))
    paused = pause(ro)
    done = [member("a", 1, MemberState.SUCCEEDED, succeeded_at=STAMP)]
    assert decide(rollout=paused, members=[*done, member("b", 2)], now=NOW + timedelta(hours=1)).step is Step.WAIT


def test_the_rollout_section_loads():
    policy = parse_policy(name="policy.yaml", text=(
        "rollout:\n  waves: [1, 5%, 25%, 100%]\n  bake: 10m\n  max_failures: 0\n  max_parallel: 20\n"
        "  min_changes: 10\n  on_failure: revert\n  canary: {owners: [internal]}\n"))
    assert policy.rollout is not None
    assert policy.rollout.waves == waves(1, "5%", "25%", "100%")
    assert policy.rollout.bake == 600 and policy.rollout.on_failure is OnFailure.REVERT
    assert policy.rollout.canary.owners == {"internal"} and policy.rollout.max_parallel == 20
    assert parse_policy(name="p.yaml", text="mode: warn\n").rollout is None


@pytest.mark.parametrize(("body", "line", "field", "words"), [
    ("  waves: [1, 0%]\n", 2, "rollout.waves", "percentage"),
    ("  waves: [10, 5]\n", 2, "rollout.waves", "must grow"),
    ("  bake: soon\n", 2, "rollout.bake", "duration"),
    ("  waves: [1]\n  on_failure: panic\n", 3, "rollout.on_failure", "halt or revert"),
    ("  waves: [1]\n  max_failure: 1\n", 3, "rollout.max_failure", "max_failures"),
    ("  canary: {teams: [a]}\n", 2, "rollout.canary.teams", "unknown key"),
])
def test_a_bad_rollout_section_names_file_line_and_field(body, line, field, words):
    with pytest.raises(SpecError) as caught:
        parse_policy(name="policy.yaml", text="rollout:\n" + body)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("policy.yaml", line, field)
    assert words in problem.message


def test_a_proposal_reports_the_changes_the_policy_holds_as_skipped():
    plan = bump(12)
    held = replace(plan.changes[0], action=Action.NOOP, reason=Reason.POLICY, message="over quota")
    plan = replace(plan, changes=plan.changes[1:], waiting=(held,))
    proposal = propose(plan=plan, policy=RolloutPolicy(min_changes=5), rollout_id="x")
    assert proposal is not None and proposal.ids == {c.resource_id for c in plan.changes}
    assert proposal.skipped == (held,) and "1 skipped (held or suspended): r00" in proposal.summary()


def test_the_metrics_name_a_halts_failures():
    from reconciler.metrics import Metrics

    metrics = Metrics()
    metrics.rollouts_seen(states={"halted": 1}, failures=[("ro-1", "r07", "unhealthy")])
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'reconciler_rollouts{state="halted"} 1.0' in text
    assert 'reconciler_rollout_halt_failures{kind="unhealthy",resource_id="r07",rollout_id="ro-1"} 1.0' in text


def test_the_schema_file_knows_every_rollout_key():
    import json

    from reconciler.policy.rollout import CANARY_KEYS, ROLLOUT_KEYS
    from tests.support import ROOT

    rollout = json.loads((ROOT / "policy.schema.json").read_text())["properties"]["rollout"]["properties"]
    assert tuple(rollout) == ROLLOUT_KEYS and tuple(rollout["canary"]["properties"]) == CANARY_KEYS


def test_a_canary_unhealthy_within_the_budget_still_bakes_its_wave():
    """Found by the chaos campaign: wave 2 started at once when wave 1's only success had turned unhealthy."""
    ro = rollout(wave=1, settings=Settings(bake=2.0, max_failures=5))
    sick = member("a", 1, MemberState.UNHEALTHY, succeeded_at=STAMP)
    gone = member("b", 1, MemberState.SUPERSEDED, succeeded_at=(NOW + timedelta(seconds=1)).isoformat())
    waiting = decide(rollout=ro, members=[sick, gone, member("c", 2)], now=NOW + timedelta(seconds=2.5))
    assert waiting.step is Step.WAIT and waiting.bake_until == NOW + timedelta(seconds=3)
    assert decide(rollout=ro, members=[sick, gone, member("c", 2)], now=NOW + timedelta(seconds=3)).step is Step.START


def test_pace_waits_for_quiet_workers_while_jobs_run_and_for_the_bake_end_while_baking():
    from reconciler.models import utcnow
    from reconciler.rollout.machine import Decision
    from reconciler.rollouts import Driver

    driver = Driver(store=None)  # pace reads no rows: the results of the last tick (and its open jobs)
    running = rollout(wave=1, settings=Settings(bake=0.0))
    assert not driver.pace([(running, Decision(Step.WAIT, 1))], longest=2.0).jobs  # no job open after it
    driver._open.add("ro")
    jobs = driver.pace([(running, Decision(Step.WAIT, 1))], longest=2.0)
    assert (jobs.jobs, jobs.seconds) == (True, 2.0)
    checked = driver.pace([(rollout(wave=1), Decision(Step.WAIT, 1))], longest=2.0)  # bake 2 s, checks 2 s
    assert checked.jobs and checked.seconds == Settings(bake=2.0).check_interval
    paused = rollout(state=RolloutState.PAUSED, wave=1)
    assert driver.moving(paused) and driver.pace([(paused, Decision(Step.WAIT, 1))], longest=2.0).jobs
    driver._open.clear()
    running = rollout(wave=1)
    until = utcnow() + timedelta(seconds=0.5)
    baking_now = driver.pace([(running, Decision(Step.WAIT, 1, bake_until=until))], longest=2.0)
    assert not baking_now.jobs and 0.0 < baking_now.seconds <= 0.5
    halted = driver.pace([(rollout(state=RolloutState.HALTED, wave=1), Decision(Step.WAIT, 1))], longest=2.0)
    assert (halted.jobs, halted.seconds) == (False, 2.0)  # nothing of it moves: no jobs to wait for


def test_a_member_superseded_while_its_waves_job_runs_holds_the_wave_until_that_job_ends():
    """Chaos seed 28 (short campaign) found wave 2 queued while wave 1's only job, whose member a new commit
    had superseded, still ran: the rollout's change was still reaching the resource."""
    ro = rollout(wave=1)
    superseded = member("a", 1, MemberState.SUPERSEDED, job_id="j1")
    members = [superseded, member("b", 2)]
    assert decide(rollout=ro, members=members, now=NOW).step is Step.WAIT
    done = NOW + timedelta(seconds=1)
    succeeded = settle_job(superseded, ok=True, finished_at=done.isoformat())
    assert succeeded.state is MemberState.SUPERSEDED and succeeded.succeeded_at == done.isoformat()
    baking_now = decide(rollout=ro, members=[succeeded, members[1]], now=done)
    assert baking_now.step is Step.WAIT and baking_now.bake_until == done + timedelta(seconds=2)  # it bakes
    later = decide(rollout=ro, members=[succeeded, members[1]], now=done + timedelta(seconds=2))
    assert later.step is Step.START and later.wave == 2
    failed = settle_job(superseded, ok=False, finished_at=done.isoformat(), error="exit 3")
    assert failed.state is MemberState.SUPERSEDED and "exit 3" in (failed.error or "")
    assert decide(rollout=ro, members=[failed, members[1]], now=done).step is Step.START  # not its failure


def test_a_waves_job_cancelled_by_a_suspension_skips_its_member_instead_of_holding_the_wave():
    queued = member("a", 1, MemberState.QUEUED, job_id="j1")
    skipped = settle_job(queued, ok=False, finished_at=STAMP, error="cancelled before it ran: suspended",
                         cancelled=True)
    assert skipped.state is MemberState.SKIPPED
    assert decide(rollout=rollout(wave=1), members=[skipped, member("b", 2)], now=NOW).step is Step.START
