"""policy.yaml through the command line as users run it (issue 15 points 1-3): `validate`, `plan`, `apply`,
`destroy` and `policy check` as processes against a real SQLite file and real scripts in tmp_path.

The rules' semantics are held one by one in tests/unit/test_policy.py; here each path is shown to use
them: at the limit it goes ahead, one over it refuses with the resource's file:line and the rule's place
in policy.yaml (exit 1, nothing changed), an override goes through and is recorded with actor and reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import db_rows, make_project, run_cli, runs, statuses, write_resources

QUOTAS = {
    "quotas.total": ("quotas:\n  total: 2\n", {"owner": "acme"}, {"owner": "beta"}),
    "quotas.per_owner": ("quotas:\n  per_owner: {default: 5, acme: 2}\n", {"owner": "acme"}, {"owner": "acme"}),
    "quotas.per_region": ("quotas:\n  per_region: {eu-west-1: 2}\n", {}, {"owner": "beta"}),
    "quotas.per_runtime_target": ("quotas:\n  per_runtime_target: {local: 2}\n", {}, {"owner": "beta"}),
    "quotas.per_owner_runtime_target": ("quotas:\n  per_owner_runtime_target: {acme: {local: 2}}\n", {},
                                        {"owner": "acme"}),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "p")


def _policy(project: Path, text: str) -> None:
    (project / "policy.yaml").write_text(text)


def _fleet(project: Path, count: int, first: dict, rest: dict) -> None:
    write_resources(project, {f"r{i}": first if i == 1 else rest for i in range(1, count + 1)})


@pytest.mark.parametrize("rule", sorted(QUOTAS))
def test_validate_a_quota_at_its_limit_and_one_over(project: Path, rule: str) -> None:
    text, first, rest = QUOTAS[rule]
    _policy(project, text)
    _fleet(project, 2, first, rest)
    ok = run_cli(project, "validate")
    assert ok.returncode == 0, ok.stderr
    assert "2 resources, valid; policy policy.yaml (enforce)" in ok.stdout
    _fleet(project, 3, first, rest)
    over = run_cli(project, "validate")
    assert over.returncode == 1
    # the resource's declaration and the rule's line in policy.yaml
    assert f"error: desired/fleet.yaml:13: {rule}: r3: " in over.stderr
    assert "(rule at policy.yaml:2)" in over.stderr
    assert "Error: 1 violation of the policy in policy.yaml" in over.stderr and "Traceback" not in over.stderr


@pytest.mark.parametrize("rule", ["quotas.per_owner", "quotas.per_region"])
def test_plan_and_apply_refuse_one_over_and_change_nothing(project: Path, rule: str) -> None:
    text, first, rest = QUOTAS[rule]
    _policy(project, text)
    _fleet(project, 3, first, rest)
    plan = run_cli(project, "plan", "-o", "json")
    assert plan.returncode == 1
    shown = json.loads(plan.stdout)
    assert shown["refused"].startswith("the plan violates the policy in policy.yaml (1 violation of " + rule)
    violation = shown["policy"]["violations"][0]
    assert (violation["rule"], violation["resource_id"], violation["blocking"]) == (rule, "r3", True)
    assert (violation["resource_at"], violation["rule_at"]) == ("desired/fleet.yaml:13", "policy.yaml:2")
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 1 and "Refused: the plan violates the policy" in applied.stdout
    assert f"{rule}: r3:" in applied.stdout
    assert db_rows(project, "SELECT * FROM jobs") == [] and statuses(project) == {} and runs(project) == []


def test_apply_at_the_limit_goes_ahead(project: Path) -> None:
    _policy(project, QUOTAS["quotas.per_owner"][0])
    _fleet(project, 2, {}, {})
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert statuses(project) == {"r1": "active", "r2": "active"}


def test_a_tightened_policy_reports_live_resources_and_holds_only_new_ones(project: Path) -> None:
    _fleet(project, 3, {}, {})
    assert run_cli(project, "apply", "--yes").returncode == 0
    _policy(project, "quotas:\n  per_owner: {acme: 2}\n")
    # nothing changes: the three live ones are over quota, reported, and the plan goes ahead
    plan = run_cli(project, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "owner 'acme' has 3 live resources, over its quota of 2" in plan.stdout
    check = run_cli(project, "policy", "check")
    assert check.returncode == 1 and "over quota (live resources are never torn down" in check.stdout
    assert "acme: 3 of 2" in check.stdout
    # a fourth is refused; the live ones are not touched
    write_resources(project, {"r0": {}}, name="more.yaml")
    refused = run_cli(project, "apply", "--yes")
    assert refused.returncode == 1 and "quotas.per_owner: r0:" in refused.stdout
    assert set(statuses(project)) == {"r1", "r2", "r3"} and len(runs(project)) == 6


def test_an_override_goes_through_and_is_recorded_with_actor_and_reason(project: Path) -> None:
    _policy(project, "quotas:\n  per_owner: {acme: 1}\nchanges:\n  max_per_plan: {create: 1}\n")
    _fleet(project, 2, {}, {})
    one = run_cli(project, "apply", "--yes", "--override", "quotas.per_owner", "--reason", "launch day")
    assert one.returncode == 1 and "changes.max_per_plan.create" in one.stdout  # the other rule still holds
    done = run_cli(project, "apply", "--yes", "--override", "quotas.per_owner", "--override",
                   "changes.max_per_plan.create", "--reason", "launch day")
    assert done.returncode == 0, done.stdout + done.stderr
    queued = {row["resource_id"]: row for row in db_rows(project, "SELECT * FROM events WHERE kind = 'queued'")}
    first, second = (json.loads(queued[rid]["details_json"] or "{}").get("override") for rid in ("r1", "r2"))
    assert first == {"rules": ["changes.max_per_plan.create"], "reason": "launch day", "actor": first["actor"]}
    assert second["rules"] == ["changes.max_per_plan.create", "quotas.per_owner"]
    assert second["reason"] == "launch day" and second["actor"].startswith("cli:") and "@" in second["actor"]
    history = run_cli(project, "history", "r2")
    assert "[override of changes.max_per_plan.create, quotas.per_owner by cli:" in history.stdout
    assert "launch day" in history.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--override", "quotas.per_ownr", "--reason", "x"), "--override quotas.per_ownr: no such policy rule; the "
                                                         "rule codes are: quotas.total, quotas.per_owner"),
    (("--override", "quotas.per_owner"), "--override needs --reason TEXT"),
    (("--reason", "x"), "--reason goes with --override RULE"),
])
def test_override_flags_are_checked(project: Path, args: tuple[str, ...], message: str) -> None:
    done = run_cli(project, "apply", "--yes", *args)
    assert done.returncode == 1 and message in done.stderr and not (project / "state.db").exists()


@pytest.mark.parametrize(("text", "where"), [
    ("quotas:\n  per_ownr: {acme: 1}\n", "policy.yaml:2: quotas.per_ownr: unknown key (did you mean 'per_owner'?)"),
    ("allowed:\n  deploy_ref: '^v(['\n", "policy.yaml:2: allowed.deploy_ref: not a valid Python regular expression"),
    ("changes:\n  max_per_plan:\n    delete: many\n", "policy.yaml:3: changes.max_per_plan.delete: expected a whole"),
])
def test_a_bad_policy_file_stops_every_command_with_file_line(project: Path, text: str, where: str) -> None:
    _policy(project, text)
    _fleet(project, 1, {}, {})
    for command in (("validate",), ("plan",), ("apply", "--yes"), ("policy", "check")):
        done = run_cli(project, *command)
        assert done.returncode == 1, command
        assert f"error: {where}" in done.stderr and "problem in the policy file" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (project / "state.db").exists()


def test_warn_mode_reports_and_holds_nothing(project: Path) -> None:
    _policy(project, "mode: warn\nquotas:\n  total: 1\nallowed:\n  deploy_ref: '^v[0-9]+\\.[0-9]+\\.[0-9]+$'\n")
    _fleet(project, 2, {}, {})
    valid = run_cli(project, "validate")
    assert valid.returncode == 0 and "warning: desired/fleet.yaml:7: quotas.total: r2:" in valid.stderr
    assert "allowed.deploy_ref: r1: deploy_ref 'v1' does not match" in valid.stderr
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 0 and "Policy policy.yaml (warn): 3 reported." in applied.stdout
    assert statuses(project) == {"r1": "active", "r2": "active"}
    check = run_cli(project, "policy", "check")  # what enforcing it would do: the live ones break a rule
    assert check.returncode == 1 and "the file says warn" in check.stdout


def test_allowed_values_and_params_through_validate(project: Path) -> None:
    _policy(project, "allowed:\n  regions: [eu-west-1]\n  runtime_targets: [local]\n  owners:\n"
                     "    beta: {regions: [us-east-1]}\nparams: {required: [size], forbidden: [password]}\n")
    write_resources(project, {"a": {"params": {"size": 1}}, "b": {"region": "us-east-1", "params": {"size": 1}},
                              "c": {"owner": "beta", "params": {"size": 1}}, "d": {"params": {"password": "x"}}})
    done = run_cli(project, "validate")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert [line.split(": ")[2] for line in errors] == ["allowed.regions", "allowed.owners", "params.required",
                                                        "params.forbidden"]


def test_validate_warns_about_a_rule_naming_an_unknown_owner(project: Path) -> None:
    _policy(project, "quotas:\n  per_owner: {acme: 5, acmee: 3}\n  per_runtime_target: {kubernets: 1}\n")
    _fleet(project, 1, {}, {})
    done = run_cli(project, "validate")
    assert done.returncode == 0, done.stderr
    assert "warning: policy.yaml:2: names owner 'acmee', which is not declared or live (a typo?)" in done.stderr
    assert "names runtime_target 'kubernets', which is not provided under provision/" in done.stderr


def test_the_policy_file_is_found_beside_desired_or_named(project: Path, tmp_path: Path) -> None:
    _fleet(project, 2, {}, {})
    other = tmp_path / "elsewhere.yaml"
    other.write_text("quotas: {total: 1}\n")
    assert run_cli(project, "validate").returncode == 0  # no policy.yaml beside desired/
    assert run_cli(project, "validate", "--policy", str(other)).returncode == 1
    assert run_cli(project, "validate", RECONCILER_POLICY=str(other)).returncode == 1
    missing = run_cli(project, "validate", "--policy", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "nope.yaml: no such policy file" in missing.stderr
    # the default place does not depend on the working directory
    _policy(project, "quotas: {total: 1}\n")
    elsewhere = run_cli(tmp_path, "validate", "--desired", str(project / "desired"), bare=True)
    assert elsewhere.returncode == 1 and "quotas.total: r2:" in elsewhere.stderr


def test_delete_limits_and_the_hourly_budget_count_the_database(project: Path) -> None:
    _fleet(project, 3, {}, {})
    assert run_cli(project, "apply", "--yes").returncode == 0
    _policy(project, "changes:\n  max_per_owner_per_hour: 4\n  max_per_plan: {delete: 1}\n")
    _fleet(project, 1, {}, {})  # r2 and r3 removed
    refused = run_cli(project, "plan")
    assert refused.returncode == 1 and "the plan would delete 2 resources; at most 1 per plan" in refused.stdout
    # three creates were queued in the last hour: two more would make five
    assert "owner 'acme' would start 2 changes after 3 in the last hour; at most 4" in refused.stdout
    destroyed = run_cli(project, "destroy", "--yes", "--override", "changes.max_per_plan.delete", "--override",
                        "changes.max_per_owner_per_hour", "--reason", "decommission")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert statuses(project) == {"r1": "deleted", "r2": "deleted", "r3": "deleted"}


def test_without_a_policy_a_mass_delete_override_is_recorded_too(project: Path) -> None:
    _fleet(project, 12, {}, {})
    assert run_cli(project, "apply", "--yes").returncode == 0
    _fleet(project, 1, {}, {})
    refused = run_cli(project, "apply", "--yes")
    assert refused.returncode == 1 and "pass --allow-mass-delete" in refused.stdout
    done = run_cli(project, "apply", "--yes", "--allow-mass-delete")
    assert done.returncode == 0, done.stdout + done.stderr
    queued = db_rows(project, "SELECT details_json FROM events WHERE kind = 'queued' AND resource_id = 'r12'")
    override = json.loads(queued[-1]["details_json"])["override"]
    assert override["rules"] == ["changes.mass_delete"] and override["reason"] == "--allow-mass-delete"
