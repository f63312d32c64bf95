"""The plan's operator rules of issue 16: replace requested, forgotten rows, creates that may adopt."""

from __future__ import annotations

from dataclasses import replace

from reconciler.engine import job_request
from reconciler.models import ResourceStatus
from reconciler.plan import Action, Reason, compute_plan
from reconciler.render import plan_json, render_text

from .test_plan import BYSTANDERS, NOW, only_change, plan_for, row, spec


def test_a_requested_replace_tears_down_and_provisions_the_unchanged_spec() -> None:
    result = plan_for([spec()], [row(spec(), version=3)], replace=["acme-prod"])
    change = only_change(result)
    assert (change.action, change.reason, change.message) == (Action.REPLACE, Reason.REPLACE_REQUESTED,
                                                              "replace requested")
    request = job_request(change)
    assert (request.spec, request.old_spec, request.expected_version) == (
        spec().model_dump(), spec().model_dump(), 3)
    text = render_text(result, colour=False)
    assert "-/+ resource \"acme-prod\"" in text and "(replace requested)" in text
    assert plan_json(result)["changes"][0]["reason_code"] == "replace_requested"


def test_a_requested_replace_with_a_changed_spec_applies_the_new_spec() -> None:
    change = only_change(plan_for([spec(deploy_ref="v2")], [row(spec())], replace=["acme-prod"]))
    assert (change.action, change.reason, change.changed) == (Action.REPLACE, Reason.REPLACE_REQUESTED,
                                                              ("deploy_ref",))
    assert "deploy_ref changed" in change.message
    assert job_request(change).spec == spec(deploy_ref="v2").model_dump()


def test_a_requested_replace_of_an_errored_resource_does_not_wait_for_its_backoff() -> None:
    errored = row(spec(), ResourceStatus.ERRORED, next_attempt_at="2999-01-01T00:00:00.000000Z", error="x")
    change = only_change(plan_for([spec()], [errored], replace=["acme-prod"]))
    assert change.reason is Reason.REPLACE_REQUESTED


def test_a_requested_replace_of_a_protected_resource_is_blocked() -> None:
    result = plan_for([spec(protected=True)], [row(spec(protected=True))], replace=["acme-prod"])
    assert result.changes == ()
    assert [(c.reason, c.message.split(";")[0]) for c in result.kept] == [
        (Reason.REPLACE_BLOCKED, "protected: replace requested is blocked")]


def test_a_requested_replace_waits_for_an_open_job_and_leaves_others_alone() -> None:
    result = plan_for([spec(), *BYSTANDERS], [row(spec()), *map(row, BYSTANDERS)], replace=["acme-prod"],
                      in_flight=["acme-prod"])
    assert result.changes == () and [c.reason for c in result.waiting] == [Reason.IN_FLIGHT]


def test_a_forgotten_row_still_declared_is_kept_unmanaged_and_never_created() -> None:
    forgotten = row(spec(), ResourceStatus.FORGOTTEN, unmanaged=True)
    result = plan_for([spec(), *BYSTANDERS], [forgotten, *map(row, BYSTANDERS)])
    assert result.changes == ()
    assert [(c.resource_id, c.action, c.reason) for c in result.kept] == [
        ("acme-prod", Action.NOOP, Reason.UNMANAGED)]
    assert (result.live, result.released) == (3, ())
    assert plan_json(result)["kept"][0]["hold"] == "unmanaged"
    assert "acme-prod: kept, forgotten" in render_text(result, colour=False)


def test_a_forgotten_row_no_longer_declared_is_released_and_never_torn_down() -> None:
    forgotten = row(spec(), ResourceStatus.FORGOTTEN, unmanaged=True)
    result = plan_for(BYSTANDERS, [forgotten, *map(row, BYSTANDERS)])
    assert (result.changes, result.kept, result.released) == ((), (), ("acme-prod",))
    released = replace(forgotten, unmanaged=False)
    assert plan_for(BYSTANDERS, [released, *map(row, BYSTANDERS)]).released == ()


def test_a_released_forgotten_row_declared_again_is_a_normal_create() -> None:
    released = row(spec(), ResourceStatus.FORGOTTEN, unmanaged=False, version=6)
    change = only_change(plan_for([spec()], [released]))
    assert (change.action, change.reason, change.expected_version) == (Action.CREATE, Reason.DECLARED_AGAIN, 6)


def test_creates_of_a_target_that_offers_observe_sh_show_as_create_or_adopt() -> None:
    desired = {"a": spec("a"), "b": spec("b", runtime_target="docker")}
    result = compute_plan(desired, {}, now=NOW, observable=["docker"])
    assert [(c.resource_id, c.or_adopt) for c in result.changes] == [("a", False), ("b", True)]
    assert "b will be created (or adopted)" in render_text(result, colour=False)
    assert [c.get("or_adopt") for c in plan_json(result)["changes"]] == [None, True]
