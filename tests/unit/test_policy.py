"""policy.yaml: the loader (file:line for every problem) and the pure evaluation (issue 15 points 1-3).

Every rule at its limit and one over, through `evaluate` on real plans from `compute_plan`; the CLI
paths (validate, plan, apply as processes) are in tests/e2e/test_policy_cli.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.models import Action, ObservedResource, ResourceSpec, ResourceStatus, canonical_json, spec_hash
from reconciler.plan import Hold, Plan, Reason, compute_plan
from reconciler.policy import (
    Governance,
    Mode,
    Policy,
    Rule,
    evaluate,
    find_policy,
    held_plan,
    load_policy,
    parse_policy,
    refused_plan,
)
from reconciler.spec import Source

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(rid: str, *, owner: str = "acme", region: str = "eu-west-1", target: str = "local",
         ref: str = "v1.0.0", params: dict | None = None) -> ResourceSpec:
    return ResourceSpec(resource_id=rid, owner=owner, region=region, runtime_target=target, deploy_ref=ref,
                        params={"size": "s"} if params is None else params)


def live(item: ResourceSpec) -> ObservedResource:
    """An active row that applied exactly this spec."""
    return ObservedResource(item.resource_id, item.owner, item.region, item.runtime_target, item.deploy_ref,
                            ResourceStatus.ACTIVE, spec_hash=spec_hash(item), target_hash=spec_hash(item),
                            spec_json=canonical_json(item.model_dump()))


def policy(text: str) -> Policy:
    return parse_policy(text=text, name="policy.yaml")


def judge(text: str, desired: list[ResourceSpec], observed: list[ResourceSpec] = (), *, budgets: bool = False,
          overrides: frozenset[Rule] = frozenset(), started: dict[str, int] | None = None,
          rows: list[ObservedResource] = ()):
    wanted = {item.resource_id: item for item in desired}
    seen = {item.resource_id: live(item) for item in observed} | {row.resource_id: row for row in rows}
    plan = compute_plan(wanted, seen, now=NOW)
    verdict = evaluate(policy=policy(text), desired=wanted, observed=seen, plan=plan, budgets=budgets,
                       overrides=overrides, started_last_hour=started or {},
                       sources={rid: Source("desired/f.yaml", n + 1) for n, rid in enumerate(wanted)})
    return plan, verdict


def codes(verdict) -> list[tuple[str, str | None, bool]]:
    return [(str(v.rule), v.resource_id, v.blocking) for v in verdict.violations]


# --- loading --------------------------------------------------------------------------------------

FULL = """\
mode: enforce
quotas:
  total: 10000
  per_owner: {default: 50, acme: 500}
  per_region: {eu-west-1: 5000}
  per_runtime_target: {local: 100}
  per_owner_runtime_target:
    acme: {aws: 20}
allowed:
  regions: [eu-west-1, us-east-1]
  runtime_targets: [local, aws]
  deploy_ref: '^v[0-9]+\\.[0-9]+\\.[0-9]+$'
  owners:
    acme:
      regions: [eu-west-1]
      protected: true
params: {required: [size], forbidden: [password]}
changes:
  max_per_plan: {create: 500, update: 1000, delete: 50}
  max_per_owner_per_hour: 100
  mass_delete: {minimum: 5, fraction: 0.5}
"""


def test_the_issue_example_loads_with_every_place() -> None:
    loaded = policy(FULL)
    assert loaded.quotas.per_owner.get("acme").value == 500
    assert loaded.quotas.per_owner.get("beta").value == 50
    assert str(loaded.quotas.per_owner.get("acme").place) == "policy.yaml:4"
    assert loaded.quotas.pair("acme", "aws").value == 20 and loaded.quotas.pair("beta", "aws") is None
    assert str(loaded.allowed.owners["acme"].regions.place) == "policy.yaml:15"
    assert str(loaded.allowed.owners["acme"].protected) == "policy.yaml:16"
    assert loaded.allowed.deploy_ref.regex.search("v1.2.3")
    assert loaded.changes.max_per_plan["delete"].value == 50
    assert (loaded.changes.mass_delete.minimum, loaded.changes.mass_delete.fraction) == (5, 0.5)
    assert str(loaded.changes.max_per_owner_per_hour.place) == "policy.yaml:20"


@pytest.mark.parametrize(("text", "where"), [
    ("quotas:\n  totl: 5\n", "policy.yaml:2: quotas.totl: unknown key (did you mean 'total'?)"),
    ("qoutas: {}\n", "policy.yaml:1: qoutas: unknown key (did you mean 'quotas'?)"),
    ("allowed:\n  deploy_ref: '^v[0-9'\n", "policy.yaml:2: allowed.deploy_ref: not a valid Python regular expression"),
    ("quotas:\n  per_owner:\n    acme: lots\n", "policy.yaml:3: quotas.per_owner.acme: expected a whole number ≥ 0"),
    ("quotas:\n  total: -1\n", "policy.yaml:2: quotas.total: expected a whole number ≥ 0"),
    ("quotas:\n  total: true\n", "policy.yaml:2: quotas.total: expected a whole number ≥ 0"),
    ("allowed:\n  regions: eu-west-1\n", "policy.yaml:2: allowed.regions: expected a list of names"),
    ("allowed:\n  owners:\n    acme:\n      protected: maybe\n",
     "policy.yaml:4: allowed.owners.acme.protected: expected true or false"),
    ("allowed:\n  owners:\n    acme:\n      region: [x]\n",
     "policy.yaml:4: allowed.owners.acme.region: unknown key (did you mean 'regions'?)"),
    ("mode: strict\n", "policy.yaml:1: mode: expected enforce or warn"),
    ("changes:\n  max_per_plan: {craete: 1}\n", "policy.yaml:2: changes.max_per_plan.craete: unknown key"),
    ("changes:\n  mass_delete: {fraction: 2}\n", "policy.yaml:2: changes.mass_delete.fraction: expected a number"),
    ("quotas: [1]\n", "policy.yaml:1: quotas: expected a mapping"),
    ("quotas:\n  total: 1\n  total: 2\n", "policy.yaml:3: quotas.total: duplicate key (first at line 2)"),
    ("- a\n", "policy.yaml:1: expected one mapping"),
])
def test_a_bad_policy_names_file_line_and_field(text: str, where: str) -> None:
    with pytest.raises(SpecError) as caught:
        policy(text)
    assert where in str(caught.value)


def test_every_problem_is_listed_not_the_first_only() -> None:
    with pytest.raises(SpecError) as caught:
        policy("quotas:\n  total: x\nallowed:\n  deploy_ref: '('\n")
    assert [p.line for p in caught.value.problems] == [2, 4]


def test_an_empty_policy_limits_nothing() -> None:
    assert policy("") == Policy(file="policy.yaml")


def test_the_default_place_is_beside_desired_and_absent_means_none(tmp_path: Path) -> None:
    (tmp_path / "desired").mkdir()
    assert find_policy(given=None, desired=tmp_path / "desired") is None
    (tmp_path / "policy.yaml").write_text("quotas: {total: 3}\n")
    found = find_policy(given=None, desired=tmp_path / "desired")
    assert found is not None and found.quotas.total.value == 3
    with pytest.raises(SpecError, match="no such policy file"):
        find_policy(given=tmp_path / "nope.yaml", desired=tmp_path / "desired")
    assert load_policy(path=tmp_path / "policy.yaml").file == str(tmp_path / "policy.yaml")


# --- quotas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rule", "make"), [
    ("quotas: {total: 2}", Rule.QUOTA_TOTAL, lambda i: spec(f"r{i}", owner=f"o{i}")),
    ("quotas: {per_owner: {acme: 2}}", Rule.QUOTA_PER_OWNER, lambda i: spec(f"r{i}")),
    ("quotas: {per_owner: {default: 2}}", Rule.QUOTA_PER_OWNER, lambda i: spec(f"r{i}")),
    ("quotas: {per_region: {eu-west-1: 2}}", Rule.QUOTA_PER_REGION, lambda i: spec(f"r{i}", owner=f"o{i}")),
    ("quotas: {per_runtime_target: {local: 2}}", Rule.QUOTA_PER_RUNTIME_TARGET,
     lambda i: spec(f"r{i}", owner=f"o{i}")),
    ("quotas: {per_owner_runtime_target: {acme: {local: 2}}}", Rule.QUOTA_PER_OWNER_RUNTIME_TARGET,
     lambda i: spec(f"r{i}")),
])
def test_a_quota_admits_its_limit_and_holds_one_over(text: str, rule: Rule, make) -> None:
    _plan, at_limit = judge(text, [make(1), make(2)])
    assert at_limit.violations == () and not at_limit.held
    plan, over = judge(text, [make(1), make(2), make(3)])
    assert codes(over) == [(str(rule), "r3", True)]
    assert set(over.held) == {"r3"} and over.held["r3"].rule is rule
    assert over.violations[0].where == "desired/f.yaml:3" and str(over.violations[0].place) == "policy.yaml:1"
    assert refused_plan(plan, over).refusal is not None


def test_live_resources_over_a_tightened_quota_are_reported_never_held() -> None:
    old = [spec(f"r{i}") for i in range(1, 4)]
    plan, verdict = judge("quotas:\n  per_owner: {acme: 2}\n", [*old, spec("r0"), spec("r9")], old)
    assert [c.resource_id for c in plan.changes] == ["r0", "r9"]
    assert set(verdict.held) == {"r0", "r9"}  # the new ones, even r0 that sorts before the live ones
    report = [v for v in verdict.violations if v.resource_id is None]
    assert len(report) == 1 and not report[0].blocking and "3 live resources, over its quota of 2" in report[0].message
    assert verdict.usage["acme"].count == 3 and verdict.usage["acme"].limit == 2


def test_admission_is_in_resource_id_order_whatever_the_declaration_order() -> None:
    items = [spec(f"r{i}") for i in (5, 1, 4, 2, 3)]
    _, first = judge("quotas: {per_owner: {acme: 3}}", items)
    _, again = judge("quotas: {per_owner: {acme: 3}}", list(reversed(items)))
    assert set(first.held) == set(again.held) == {"r4", "r5"}


def test_a_held_resource_takes_no_room_from_the_next_one() -> None:
    # r2 is over its owner's quota; r3 (another owner) still fits the total of 2
    items = [spec("r1"), spec("r2"), spec("r3", owner="beta")]
    _, verdict = judge("quotas: {total: 2, per_owner: {acme: 1}}", items)
    assert set(verdict.held) == {"r2"}


def test_a_resource_moving_to_a_full_region_is_admitted_like_a_new_one() -> None:
    old = [spec("r1"), spec("r2", region="us-east-1")]
    plan, verdict = judge("quotas: {per_region: {eu-west-1: 1}}", [spec("r1"), spec("r2")], old)
    assert plan.changes[0].action is Action.REPLACE and set(verdict.held) == {"r2"}


# --- allowed values and params ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "item", "rule"), [
    ("allowed: {regions: [eu-west-1]}", spec("x", region="us-east-1"), Rule.ALLOWED_REGIONS),
    ("allowed: {runtime_targets: [aws]}", spec("x"), Rule.ALLOWED_RUNTIME_TARGETS),
    ("allowed: {deploy_ref: '^v[0-9]+\\.[0-9]+\\.[0-9]+$'}", spec("x", ref="main"), Rule.ALLOWED_DEPLOY_REF),
    ("allowed: {deploy_ref: '^v[0-9]+\\.[0-9]+\\.[0-9]+$'}", spec("x", ref="v1.2.3-rc1"), Rule.ALLOWED_DEPLOY_REF),
    ("allowed: {owners: {acme: {regions: [us-east-1]}}}", spec("x"), Rule.ALLOWED_OWNERS),
    ("allowed: {owners: {acme: {runtime_targets: [aws]}}}", spec("x"), Rule.ALLOWED_OWNERS),
    ("params: {required: [size, tier]}", spec("x"), Rule.PARAMS_REQUIRED),
    ("params: {forbidden: [password]}", spec("x", params={"size": 1, "password": "p"}), Rule.PARAMS_FORBIDDEN),
])
def test_a_value_outside_the_allowed_ones_is_held(text: str, item: ResourceSpec, rule: Rule) -> None:
    _, verdict = judge(text, [item])
    assert codes(verdict) == [(str(rule), "x", True)]


@pytest.mark.parametrize("text", [
    "allowed: {regions: [eu-west-1], runtime_targets: [local], deploy_ref: '^v[0-9.]+$'}",
    "allowed: {owners: {beta: {regions: [us-east-1]}}}",
    "params: {required: [size], forbidden: [password]}",
])
def test_allowed_values_pass(text: str) -> None:
    assert judge(text, [spec("x")])[1].violations == ()


def test_an_unchanged_live_resource_breaking_a_new_rule_is_reported_not_blocking() -> None:
    item = spec("x", region="us-east-1")
    plan, verdict = judge("allowed: {regions: [eu-west-1]}", [item], [item])
    assert not plan.changes and codes(verdict) == [("allowed.regions", "x", False)] and not verdict.held


def test_an_update_breaking_a_rule_is_held_the_live_resource_stays() -> None:
    plan, verdict = judge("allowed: {deploy_ref: '^v'}", [spec("x", ref="main")], [spec("x")])
    assert plan.changes[0].action is Action.UPDATE and set(verdict.held) == {"x"}
    held = held_plan(plan, verdict)
    assert not held.changes and held.waiting[0].reason is Reason.POLICY and held.waiting[0].hold is Hold.POLICY
    assert "allowed.deploy_ref (policy.yaml:1)" in held.waiting[0].message


def test_a_protected_owner_keeps_its_resources() -> None:
    text = "allowed: {owners: {acme: {protected: true}}}"
    plan, verdict = judge(text, [spec("b", owner="beta")], [spec("a"), spec("b", owner="beta")])
    assert codes(verdict) == [("protected", "a", True)]
    plan, verdict = judge(text, [spec("a", region="us-east-1")], [spec("a")])
    assert plan.changes[0].action is Action.REPLACE and codes(verdict) == [("protected", "a", True)]


# --- change limits ----------------------------------------------------------------------------------


def test_a_plan_over_a_change_limit_is_refused_by_the_cli() -> None:
    text = "changes: {max_per_plan: {create: 2}}"
    assert judge(text, [spec("a"), spec("b")])[1].violations == ()
    plan, verdict = judge(text, [spec("a"), spec("b"), spec("c")])
    assert codes(verdict) == [("changes.max_per_plan.create", None, True)] and not verdict.held
    assert "violates the policy in policy.yaml" in (refused_plan(plan, verdict).refusal or "")


def test_budgets_defer_the_excess_in_resource_id_order() -> None:
    text = "changes: {max_per_plan: {create: 2, delete: 1}}"
    kept = [spec("k1"), spec("k2")]
    plan, verdict = judge(text, [spec("c"), spec("a"), spec("b"), *kept], [spec("x"), spec("y"), *kept], budgets=True)
    assert verdict.violations == () and set(verdict.deferred) == {"c", "y"}
    held = held_plan(plan, verdict)
    assert [c.resource_id for c in held.changes] == ["a", "b", "x"]
    assert {(n.resource_id, n.reason) for n in held.waiting} == {("c", Reason.BUDGET), ("y", Reason.BUDGET)}
    assert held.pending  # work still to come: `plan --detailed-exitcode` says 2


def test_a_replace_counts_as_a_create_and_a_delete() -> None:
    _, verdict = judge("changes: {max_per_plan: {delete: 0}}", [spec("a", region="us-east-1")], [spec("a")])
    assert codes(verdict) == [("changes.max_per_plan.delete", None, True)]


def test_the_hourly_budget_counts_what_the_store_saw_start() -> None:
    text = "changes: {max_per_owner_per_hour: 3}"
    items = [spec("a"), spec("b")]
    assert judge(text, items, started={"acme": 1})[1].violations == ()
    _, refused = judge(text, items, started={"acme": 2})
    assert codes(refused) == [("changes.max_per_owner_per_hour", None, True)]
    _, budget = judge(text, items, started={"acme": 2}, budgets=True)
    assert set(budget.deferred) == {"b"}


def test_the_mass_delete_guard_is_a_rule_with_the_policys_settings() -> None:
    old = [spec(f"r{i}") for i in range(10)]
    plan, verdict = judge("changes: {mass_delete: {minimum: 2, fraction: 0}}", old[:7], old)
    assert plan.refusal is None  # compute_plan alone knows only the defaults; plan_fleet feeds it the policy's
    assert codes(verdict) == [("changes.mass_delete", None, True)]
    _, overridden = judge("changes: {mass_delete: {minimum: 2, fraction: 0}}", old[:7], old,
                          overrides=frozenset({Rule.MASS_DELETE}))
    assert set(overridden.overridden) == {"r7", "r8", "r9"} and not overridden.refused


# --- warn mode, overrides, warnings ------------------------------------------------------------------


def test_warn_mode_reports_everything_and_holds_nothing() -> None:
    text = "mode: warn\nquotas: {total: 1}\nallowed: {regions: [us-east-1]}\nchanges: {max_per_plan: {create: 1}}\n"
    plan, verdict = judge(text, [spec("a"), spec("b")], budgets=True)
    assert {v.rule for v in verdict.violations} == {Rule.QUOTA_TOTAL, Rule.ALLOWED_REGIONS, Rule.MAX_CREATES}
    assert not any(v.blocking for v in verdict.violations) and not verdict.held and not verdict.deferred
    assert held_plan(plan, verdict) is plan and refused_plan(plan, verdict) is plan


def test_an_override_lets_its_rule_through_and_names_what_it_touched() -> None:
    text = "quotas: {per_owner: {acme: 1}}\nallowed: {regions: [eu-west-1]}"
    items = [spec("a"), spec("b"), spec("c", region="us-east-1")]
    _, verdict = judge(text, items, overrides=frozenset({Rule.QUOTA_PER_OWNER}))
    assert dict(verdict.overridden) == {"b": {Rule.QUOTA_PER_OWNER}, "c": {Rule.QUOTA_PER_OWNER}}
    assert set(verdict.held) == {"c"}  # the other rule still holds
    assert [v.overridden for v in verdict.violations if v.rule is Rule.QUOTA_PER_OWNER] == [True, True]


def test_a_rule_naming_an_unknown_owner_region_or_target_is_a_warning() -> None:
    text = "quotas: {per_owner: {acmee: 5}, per_runtime_target: {kubernets: 3}}\nallowed: {regions: [eu-west-1]}"
    wanted = {"a": spec("a")}
    verdict = evaluate(policy=policy(text), desired=wanted, observed={}, plan=None,
                       known_targets=frozenset({"local", "aws"}))
    assert [str(w) for w in verdict.warnings] == [
        "policy.yaml:1: names owner 'acmee', which is not declared or live (a typo?)",
        "policy.yaml:1: names runtime_target 'kubernets', which is not provided under provision/ (a typo?)"]


def test_validate_without_a_plan_blocks_every_declared_violation() -> None:
    wanted = {f"r{i}": spec(f"r{i}") for i in range(3)}
    verdict = evaluate(policy=policy("quotas: {total: 2}\nchanges: {max_per_plan: {create: 0}}"), desired=wanted,
                       observed={}, plan=None)
    assert codes(verdict) == [("quotas.total", "r2", True)]  # change limits need a plan


def test_governance_defaults_are_no_overrides_and_the_cli_mode() -> None:
    governance = Governance(policy=None)
    assert governance.overrides == frozenset() and not governance.budgets and dict(governance.started_last_hour) == {}
    assert Mode("warn") is Mode.WARN and isinstance(Plan(()), Plan)


def test_the_store_counts_jobs_per_owner_since_a_moment(tmp_path: Path) -> None:
    from reconciler.engine import Fleet, governance, job_requests, plan_fleet
    from reconciler.models import iso
    from reconciler.plan import PlanPolicy
    from reconciler.spec import DesiredState
    from reconciler.store import open_store

    store = open_store(url=str(tmp_path / "state.db"))
    wanted = {rid: spec(rid, owner=owner) for rid, owner in (("a", "acme"), ("b", "acme"), ("c", "beta"))}
    view = plan_fleet(desired=DesiredState(resources=wanted), fleet=Fleet({}, set(), {}), policy=PlanPolicy())
    store.enqueue(requests=job_requests(view=view), now=iso(NOW), commit=None)
    assert store.jobs_per_owner(since=iso(NOW)) == {"acme": 2, "beta": 1}
    assert store.jobs_per_owner(since="2026-01-01T00:00:00.000001Z") == {}
    hourly = policy("changes: {max_per_owner_per_hour: 2}")
    assert dict(governance(policy=hourly, store=store, now=NOW).started_last_hour) == {"acme": 2, "beta": 1}
    assert dict(governance(policy=policy(""), store=store, now=NOW).started_last_hour) == {}
    store.close()


def test_plan_fleet_refuses_for_the_cli_and_holds_for_the_daemon() -> None:
    from reconciler.engine import Fleet, job_requests, plan_fleet
    from reconciler.plan import PlanPolicy
    from reconciler.spec import DesiredState

    wanted = {rid: spec(rid) for rid in ("a", "b", "c")}
    rules = policy("quotas: {per_owner: {acme: 2}}")
    fleet = Fleet({}, set(), {})
    cli = plan_fleet(desired=DesiredState(resources=wanted), fleet=fleet, policy=PlanPolicy(),
                     governance=Governance(policy=rules))
    assert cli.plan.refusal and job_requests(view=cli) == [] and cli.verdict is not None
    daemon = plan_fleet(desired=DesiredState(resources=wanted), fleet=fleet, policy=PlanPolicy(),
                        governance=Governance(policy=rules, budgets=True))
    assert [r.resource_id for r in job_requests(view=daemon)] == ["a", "b"]
    assert [(n.resource_id, n.reason) for n in daemon.plan.waiting] == [("c", Reason.POLICY)]
    plain = plan_fleet(desired=DesiredState(resources=wanted), fleet=fleet, policy=PlanPolicy())
    assert plain.verdict is None and len(plain.plan.changes) == 3


# --- the committed JSON Schema (policy.schema.json) agrees with the loader ----------------------------

SCHEMA_EXAMPLES = [
    (FULL, True),
    ("", True),
    ("mode: warn\n", True),
    ("quotas: {per_owner_runtime_target: {default: {default: 3, aws: 1}}}\n", True),
    ("allowed: {owners: {acme: {protected: false}}}\n", True),
    ("changes: {mass_delete: {fraction: 1}}\n", True),
    ("mode: strict\n", False),
    ("quotas: {totl: 5}\n", False),
    ("quotas: {total: -1}\n", False),
    ("quotas: {total: 1.5}\n", False),
    ("quotas: {per_owner: {acme: many}}\n", False),
    ("quotas: {per_owner_runtime_target: {acme: 3}}\n", False),
    ("allowed: {regions: eu-west-1}\n", False),
    ("allowed: {regions: ['']}\n", False),
    ("allowed: {deploy_ref: 3}\n", False),
    ("allowed: {owners: {acme: {region: [x]}}}\n", False),
    ("allowed: {owners: {acme: {protected: maybe}}}\n", False),
    ("params: {required: size}\n", False),
    ("changes: {max_per_plan: {replace: 1}}\n", False),
    ("changes: {mass_delete: {fraction: 2}}\n", False),
    ("changes: {max_per_owner_per_hour: true}\n", False),
    ("unknown: 1\n", False),
]


@pytest.mark.parametrize(("text", "valid"), SCHEMA_EXAMPLES)
def test_the_schema_and_the_loader_agree(text: str, valid: bool) -> None:
    import json

    import jsonschema
    import yaml

    from tests.support import ROOT

    schema = json.loads((ROOT / "policy.schema.json").read_text())
    value = yaml.safe_load(text) or {}
    by_schema = not list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    try:
        policy(text)
        by_loader = True
    except SpecError:
        by_loader = False
    assert (by_schema, by_loader) == (valid, valid)


def test_the_readme_lists_every_rule_code_and_the_schema_every_key() -> None:
    import json

    from reconciler.policy.load import ALLOWED_KEYS, CHANGES_KEYS, QUOTA_KEYS, TOP_KEYS
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    assert [rule for rule in Rule if f"`{rule}`" not in readme] == []
    schema = json.loads((ROOT / "policy.schema.json").read_text())
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert (tuple(props), tuple(props["quotas"]["properties"]), tuple(props["allowed"]["properties"]),
            tuple(props["changes"]["properties"])) == (TOP_KEYS, QUOTA_KEYS, ALLOWED_KEYS, CHANGES_KEYS)


def test_the_plan_text_shows_the_verdict_capped_per_rule_and_the_json_every_violation() -> None:
    from reconciler.render import plan_json, render_text

    items = [spec(f"r{i:02d}") for i in range(30)]
    plan, verdict = judge("quotas: {per_owner: {acme: 2}}", items)
    shown = refused_plan(plan, verdict)
    text = render_text(shown, colour=False, verdict=verdict)
    assert "Policy policy.yaml (enforce): 28 blocking, 28 held." in text
    assert text.count("✗ desired/f.yaml:") == 20
    assert "policy.yaml: quotas.per_owner: … and 8 more (-o json lists every one)" in text
    assert "Refused: the plan violates the policy in policy.yaml (28 violations of quotas.per_owner)" in text
    section = plan_json(shown, verdict=verdict)["policy"]
    assert len(section["violations"]) == 28 and section["usage"] == {"acme": {"count": 2, "limit": 2}}
    assert section["violations"][0] | {"message": ""} == {
        "rule": "quotas.per_owner", "resource_id": "r02", "message": "", "blocking": True, "overridden": False,
        "resource_at": "desired/f.yaml:3", "rule_at": "policy.yaml:1"}
    assert "policy" not in plan_json(plan)  # no policy: the JSON is as it was
