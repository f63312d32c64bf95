"""compute_plan as a table: every plan rule of docs/ARCHITECTURE.md, the extra rules, the mass-delete guard."""

from __future__ import annotations

import ast
import inspect
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

import reconciler.plan as plan_module
from reconciler.models import (
    DELETE_TARGET,
    Health,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    canonical_json,
    iso,
    spec_hash,
)
from reconciler.plan import Action, PlanPolicy, Reason, compute_plan

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
LATER = iso(NOW + timedelta(minutes=5))
EARLIER = iso(NOW - timedelta(minutes=5))


def spec(resource_id: str = "acme-prod", **fields) -> ResourceSpec:
    base = dict(resource_id=resource_id, owner="acme", region="eu-west-1", runtime_target="local",
                deploy_ref="v1", params={"size": "small"}, protected=False)
    return ResourceSpec(**{**base, **fields})


def row(applied: ResourceSpec, status: ResourceStatus = ResourceStatus.ACTIVE, **fields) -> ObservedResource:
    """The row a successful run of `applied` leaves behind, then `fields` on top."""
    base = ObservedResource(
        resource_id=applied.resource_id, owner=applied.owner, region=applied.region,
        runtime_target=applied.runtime_target, deploy_ref=applied.deploy_ref, status=status,
        url="http://127.0.0.1:9000/", spec_hash=spec_hash(applied), target_hash=spec_hash(applied),
        spec_json=canonical_json(applied.model_dump()), protected=applied.protected,
    )
    return replace(base, **fields)


def plan_for(desired: list[ResourceSpec], observed: list[ObservedResource], **kwargs):
    return compute_plan({s.resource_id: s for s in desired}, {r.resource_id: r for r in observed}, now=NOW, **kwargs)


def only_change(result):
    assert len(result.changes) == 1, result
    return result.changes[0]


# a few unrelated, unchanged resources so that one delete is not "every live resource"
BYSTANDERS = [spec(f"other-{i}") for i in range(3)]


# --- creates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("observed", "code", "reason"), [
    ([], Reason.NEW, "not yet created"),
    ([row(spec(), ResourceStatus.DELETED, spec_hash=None, target_hash=None)], Reason.DECLARED_AGAIN,
     "declared again after deletion"),
    ([row(spec(), ResourceStatus.ERRORED, spec_hash=None, target_hash="older")], Reason.NOT_CREATED,
     "not yet created (the last attempt did not succeed)"),
    ([row(spec(deploy_ref="v0"), ResourceStatus.DELETING, target_hash=DELETE_TARGET)], Reason.TEARDOWN_INTERRUPTED,
     "teardown was interrupted; declared again"),
], ids=["no-row", "tombstone", "never-succeeded", "interrupted-teardown"])
def test_create(observed, code: Reason, reason: str) -> None:
    change = only_change(plan_for([spec()], observed))
    assert (change.action, change.reason, change.message, change.shown) == (Action.CREATE, code, reason, "create")
    assert (change.applied_hash(), change.attempt) == (spec_hash(spec()), 1)
    assert change.expected_version == (observed[0].version if observed else None)
    assert change.before is None and change.after == spec().model_dump()


# --- updates and replacements --------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("owner", "globex"), ("deploy_ref", "v2"), ("params", {"size": "large"}), ("protected", True),
])
def test_in_place_update(field: str, value) -> None:
    change = only_change(plan_for([spec(**{field: value})], [row(spec())]))
    assert (change.action, change.reason, change.shown) == (Action.UPDATE, Reason.SPEC_CHANGED, "update")
    assert change.changed == (field,)
    assert change.message == f"{field} changed"
    assert change.before[field] == spec().model_dump()[field] and change.after[field] == value


def test_update_lists_every_changed_field() -> None:
    change = only_change(plan_for([spec(owner="globex", deploy_ref="v2")], [row(spec())]))
    assert change.changed == ("owner", "deploy_ref") and change.message == "owner, deploy_ref changed"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"region": "us-east-1"}, "region forces replacement"),
    ({"runtime_target": "docker"}, "runtime_target forces replacement"),
    ({"region": "us-east-1", "runtime_target": "docker", "deploy_ref": "v2"},
     "region and runtime_target force replacement"),
])
def test_replace(fields, reason: str) -> None:
    change = only_change(plan_for([spec(**fields)], [row(spec())]))
    assert (change.action, change.reason, change.message) == (Action.REPLACE, Reason.REPLACE_FORCED, reason)
    assert set(change.changed) == set(fields)


def test_replace_of_a_protected_resource_is_blocked_and_kept() -> None:
    result = plan_for([spec(region="us-east-1", protected=True)], [row(spec(protected=True))])
    assert result.changes == ()
    assert [c.resource_id for c in result.kept] == ["acme-prod"]
    assert result.kept[0].reason is Reason.REPLACE_BLOCKED
    assert result.kept[0].message.startswith("protected: region forces replacement is blocked")


# --- deletes --------------------------------------------------------------------------------------


def test_delete_when_no_longer_declared() -> None:
    result = plan_for(BYSTANDERS, [row(s) for s in BYSTANDERS] + [row(spec())])
    change = only_change(result)
    assert (change.resource_id, change.action, change.reason) == ("acme-prod", Action.DELETE, Reason.REMOVED)
    assert change.message == "no longer declared" and change.after is None
    assert (change.target_hash, change.attempt) == (DELETE_TARGET, 1)
    assert change.before == spec().model_dump()
    assert result.refusal is None and result.unchanged == 3


def test_protected_resource_is_kept_not_deleted() -> None:
    result = plan_for(BYSTANDERS, [row(s) for s in BYSTANDERS] + [row(spec(protected=True))])
    assert result.changes == () and result.deletes == 0
    assert [c.resource_id for c in result.kept] == ["acme-prod"]
    assert result.kept[0].reason is Reason.PROTECTED
    assert result.kept[0].message.startswith("protected: kept although no longer declared")


def test_tombstone_not_declared_is_ignored() -> None:
    result = plan_for(BYSTANDERS, [row(s) for s in BYSTANDERS] + [row(spec(), ResourceStatus.DELETED)])
    assert (result.changes, result.kept, result.waiting, result.unchanged, result.live) == ((), (), (), 3, 3)


@pytest.mark.parametrize(("next_attempt_at", "action"), [(LATER, Action.NOOP), (EARLIER, Action.DELETE)])
def test_failed_teardown_waits_for_its_backoff(next_attempt_at: str, action: Action) -> None:
    failed = row(spec(), ResourceStatus.ERRORED, target_hash=DELETE_TARGET, next_attempt_at=next_attempt_at,
                 attempts=2, error="boom")
    result = plan_for(BYSTANDERS, [row(s) for s in BYSTANDERS] + [failed])
    if action is Action.NOOP:
        assert result.changes == () and result.waiting[0].message == f"teardown retry 3 at {LATER} (last error: boom)"
    else:
        assert only_change(result).action is Action.DELETE


# --- errored rows and retries ------------------------------------------------------------------------


def test_errored_before_backoff_elapsed_waits() -> None:
    errored = row(spec(), ResourceStatus.ERRORED, next_attempt_at=LATER, attempts=1, error="exit 3")
    result = plan_for([spec()], [errored])
    assert result.changes == ()
    assert [(c.resource_id, c.reason, c.message) for c in result.waiting] == [
        ("acme-prod", Reason.BACKOFF, f"retry 2 at {LATER} (last error: exit 3)")]


@pytest.mark.parametrize(("applied", "target", "job_action"), [
    (spec(), spec(), Action.UPDATE),
    (None, spec(), Action.CREATE),
    (spec(region="us-east-1"), spec(), Action.REPLACE),
], ids=["same-spec", "never-applied", "failed-replace"])
def test_errored_after_backoff_elapsed_retries(applied, target, job_action: Action) -> None:
    base = row(applied or target, ResourceStatus.ERRORED, next_attempt_at=EARLIER, attempts=2, error="exit 3",
               target_hash=spec_hash(target))
    if applied is None:
        base = replace(base, spec_hash=None, spec_json=None)
    change = only_change(plan_for([target], [base]))
    assert (change.action, change.reason, change.shown) == (job_action, Reason.RETRY, "retry")
    assert change.message == "attempt 3 after: exit 3" and change.attempt == 3


def test_errored_with_a_changed_spec_updates_at_once() -> None:
    errored = row(spec(), ResourceStatus.ERRORED, target_hash=spec_hash(spec(deploy_ref="v2")),
                  next_attempt_at=LATER, attempts=4, error="exit 1")
    change = only_change(plan_for([spec(deploy_ref="v3")], [errored]))
    assert (change.action, change.reason, change.changed) == (Action.UPDATE, Reason.SPEC_CHANGED, ("deploy_ref",))
    assert change.attempt == 1  # a new spec starts its attempts afresh


@pytest.mark.parametrize("status", [ResourceStatus.PROVISIONING, ResourceStatus.ERRORED])
def test_applied_spec_but_not_active_runs_provision_again(status: ResourceStatus) -> None:
    stuck = row(spec(), status, target_hash="something-else")
    change = only_change(plan_for([spec()], [stuck]))
    assert (change.action, change.reason, change.shown) == (Action.UPDATE, Reason.NOT_SETTLED, "retry")
    assert change.message == f"{status} although its spec is applied; running provision again"
    assert change.attempt == (stuck.attempts + 1 if status is ResourceStatus.ERRORED else 1)


# --- in flight, no-op, targets -----------------------------------------------------------------------


@pytest.mark.parametrize("desired", [[spec(deploy_ref="v2")], []], ids=["would-update", "would-delete"])
def test_in_flight_resources_wait(desired) -> None:
    result = plan_for(desired + BYSTANDERS, [row(spec())] + [row(s) for s in BYSTANDERS], in_flight=["acme-prod"])
    assert result.changes == ()
    assert [(c.resource_id, c.reason, c.message) for c in result.waiting] == [
        ("acme-prod", Reason.IN_FLIGHT, "a job is in progress")]


def test_noop_when_equal() -> None:
    result = plan_for([spec(params={"b": 1, "a": 2})], [row(spec(params={"a": 2, "b": 1}))])
    assert (result.changes, result.kept, result.waiting, result.unchanged, result.live) == ((), (), (), 1, 1)
    assert not result.has_changes


def test_targets_narrow_the_plan() -> None:
    desired = [spec("a", deploy_ref="v2"), spec("b", deploy_ref="v2"), spec("c")]
    observed = [row(spec("a")), row(spec("b"))]
    result = plan_for(desired, observed, targets=["b", "c"])
    assert [(c.resource_id, c.action) for c in result.changes] == [("b", Action.UPDATE), ("c", Action.CREATE)]
    assert plan_for(desired, observed, targets=["zz"]).changes == ()


def test_changes_are_sorted_by_id() -> None:
    result = plan_for([spec(i) for i in ("c", "a", "b")], [])
    assert [c.resource_id for c in result.changes] == ["a", "b", "c"]


# --- mass delete ---------------------------------------------------------------------------------


def fleet(live: int, deleting: int, policy: PlanPolicy = PlanPolicy()):
    specs = [spec(f"r-{i:03d}") for i in range(live)]
    return plan_for(specs[deleting:], [row(s) for s in specs], policy=policy)


@pytest.mark.parametrize(("live", "deleting", "refused"), [
    (1, 1, "delete every live resource (1 of 1)"),
    (3, 3, "delete every live resource (3 of 3)"),
    (20, 10, None),
    (20, 11, "delete 11 of 20 live resources (more than 10)"),
    (100, 25, None),
    (100, 26, "delete 26 of 100 live resources (more than 25)"),
    (100, 30, "delete 30 of 100 live resources (more than 25)"),
    (5, 4, None),
])
def test_mass_delete_threshold(live: int, deleting: int, refused: str | None) -> None:
    result = fleet(live, deleting)
    assert result.deletes == deleting
    if refused is None:
        assert result.refusal is None
    else:
        assert result.refusal == f"the plan would {refused}; pass --allow-mass-delete if that is what you want"


@pytest.mark.parametrize(("live", "deleting"), [(3, 3), (20, 11), (100, 30)])
def test_mass_delete_allowed_with_override(live: int, deleting: int) -> None:
    result = fleet(live, deleting, PlanPolicy(allow_mass_delete=True))
    assert result.refusal is None and result.deletes == deleting


def test_targets_do_not_shrink_the_fleet_the_guard_counts() -> None:
    specs = [spec(f"r-{i:02d}") for i in range(20)]
    result = plan_for([], [row(s) for s in specs], targets=[s.resource_id for s in specs[:5]])
    assert result.deletes == 5 and result.live == 20 and result.refusal is None


# --- purity --------------------------------------------------------------------------------------


def _code_without_docstrings(source: str) -> str:
    """The module's code as the interpreter sees it: no comments, no docstrings (they may say "no logging")."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def test_plan_module_does_no_io() -> None:
    source = inspect.getsource(plan_module)
    code = _code_without_docstrings(source)
    assert "def compute_plan" in code
    for forbidden in ("open(", "datetime.now", "utcnow", "time.", "logging", "structlog", "print(", "os.",
                      "subprocess", "sqlite"):
        assert forbidden not in code, forbidden
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "datetime", "enum", "typing"}, imported


def test_plan_is_deterministic_for_the_same_inputs() -> None:
    desired = [spec("a", deploy_ref="v2"), spec("c")]
    observed = [row(spec("a")), row(spec("b")), row(spec("d"))]
    assert plan_for(desired, observed) == plan_for(list(reversed(desired)), list(reversed(observed)))


# --- holds: why an unsettled resource gets no change now, and whether work is still pending -------------


@pytest.mark.parametrize(("desired", "observed", "kwargs", "hold", "pending"), [
    ([spec()], [row(spec(), ResourceStatus.ERRORED, next_attempt_at=LATER, error="boom")], {}, "retry", True),
    ([], [row(spec(), ResourceStatus.ERRORED, target_hash=DELETE_TARGET, next_attempt_at=LATER, error="boom")], {},
     "retry", True),
    ([spec()], [row(spec())], {"in_flight": ["acme-prod"]}, "in_progress", True),
    ([spec()], [row(spec(), health=Health.UNHEALTHY, consecutive_failures=3)], {}, "unhealthy", False),
    ([], [row(spec(protected=True))], {}, "protected", False),
    ([spec(region="us-east-1", protected=True)], [row(spec(protected=True))], {}, "protected", False),
], ids=["retry", "teardown-retry", "in-progress", "unhealthy", "protected-kept", "protected-blocked"])
def test_holds_say_why_nothing_is_done_now(desired, observed, kwargs, hold, pending) -> None:
    from reconciler.render import summary_line

    result = plan_for([*desired, *BYSTANDERS], [*observed, *map(row, BYSTANDERS)], **kwargs)
    (note,) = result.kept + result.waiting
    assert (str(note.hold), bool(result.pending), result.has_changes) == (hold, pending, False)
    assert note.retry_at == (LATER if hold == "retry" else None)
    assert summary_line(result).startswith("No changes to make now; 1 ")


# --- a job is a projection of its change (issue 14) ------------------------------------------------


@pytest.mark.parametrize(("desired", "observed", "policy", "expected"), [
    ([spec()], [], PlanPolicy(), (Action.CREATE, "spec", None, "hash", 1, None)),
    ([spec(deploy_ref="v2")], [row(spec(), version=4)], PlanPolicy(), (Action.UPDATE, "spec", None, "hash", 1, 4)),
    ([spec(region="us-east-1")], [row(spec(), version=2)], PlanPolicy(), (Action.REPLACE, "spec", "old", "hash", 1, 2)),
    ([], [row(spec(), version=7)], PlanPolicy(allow_mass_delete=True),
     (Action.DELETE, "old", None, DELETE_TARGET, 1, 7)),
    ([spec()], [row(spec(), ResourceStatus.ERRORED, next_attempt_at=EARLIER, attempts=2, error="x", version=9)],
     PlanPolicy(), (Action.UPDATE, "spec", None, "hash", 3, 9)),
    ([spec()], [row(spec(), health=Health.UNHEALTHY, consecutive_failures=3, version=5)],
     PlanPolicy(self_heal=True), (Action.UPDATE, "spec", None, "hash", 1, 5)),
], ids=["create", "update", "replace", "delete", "retry", "self-heal"])
def test_a_job_is_a_projection_of_its_change(desired, observed, policy, expected) -> None:
    from reconciler.engine import job_request

    change = only_change(plan_for(desired, observed, policy=policy))
    request = job_request(change)
    action, spec_of, old_of, target, attempt, version = expected
    named = {"spec": spec().model_dump() if not desired else desired[0].model_dump(),
             "old": spec().model_dump(), None: None}
    assert (request.action, request.spec, request.old_spec, request.attempt, request.expected_version) == (
        action, named[spec_of], named[old_of], attempt, version)
    assert request.target_hash == (spec_hash(desired[0]) if target == "hash" else target)
    assert (request.reason, request.source) == (change.message, "file")


def test_api_declared_changes_carry_their_source() -> None:
    result = compute_plan({"acme-prod": spec()}, {}, now=NOW, api=["acme-prod"])
    assert only_change(result).source == "api"
