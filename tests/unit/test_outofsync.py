"""status_message: one line for every way a row is out of sync today, fed by the real plan's notes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.models import (
    DELETE_TARGET,
    Action,
    Health,
    Job,
    JobStatus,
    ObservedResource,
    ResourceSpec,
    ResourceStatus,
    canonical_json,
    iso,
    spec_hash,
)
from reconciler.outofsync import OutOfSync, Ready, age, humanise, ready, status_message
from reconciler.plan import Change, Reason, compute_plan

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = iso(NOW + timedelta(minutes=4))
EARLIER = iso(NOW - timedelta(minutes=5))


def spec(resource_id: str = "acme", **fields) -> ResourceSpec:
    base = dict(resource_id=resource_id, owner="acme", region="eu-west-1", deploy_ref="v1")
    return ResourceSpec(**{**base, **fields})


def row(applied: ResourceSpec, **fields) -> ObservedResource:
    base = ObservedResource(
        resource_id=applied.resource_id, owner=applied.owner, region=applied.region,
        runtime_target=applied.runtime_target, deploy_ref=applied.deploy_ref, status=ResourceStatus.ACTIVE,
        url="http://127.0.0.1:9/", spec_hash=spec_hash(applied), target_hash=spec_hash(applied),
        spec_json=canonical_json(applied.model_dump()), protected=applied.protected, created_at=EARLIER,
    )
    return replace(base, **fields)


def note_for(desired: list[ResourceSpec], observed: ObservedResource, **kwargs) -> Change | None:
    """The real plan's change or note about `observed` (None: the plan leaves it alone)."""
    plan = compute_plan({s.resource_id: s for s in desired}, {observed.resource_id: observed}, now=NOW, **kwargs)
    notes = [c for c in plan.changes + plan.kept + plan.waiting if c.resource_id == observed.resource_id]
    return notes[0] if notes else None


def message_for(desired: list[ResourceSpec], observed: ObservedResource, *, job: Job | None = None, **kwargs):
    return status_message(observed, job=job, plan_note=note_for(desired, observed, **kwargs), now=NOW)


def test_an_applied_active_row_is_in_sync_and_ready() -> None:
    assert message_for([spec()], row(spec())) is None
    assert ready(None, planned=True) is Ready.TRUE


def test_errored_with_its_retry_due_names_the_error_and_the_pending_retry() -> None:
    failed = row(spec(), status=ResourceStatus.ERRORED, spec_hash=None, error="exit status 3: boom", attempts=1,
                 next_attempt_at=EARLIER)
    message = message_for([spec()], failed)
    assert message is not None and message.kind is OutOfSync.ERRORED
    assert message.text == "errored: exit status 3: boom; retry 2 pending"
    assert ready(message, planned=True) is Ready.FALSE


def test_a_retry_not_yet_due_says_when_and_why() -> None:
    failed = row(spec(), status=ResourceStatus.ERRORED, error="exit status 3: boom", attempts=2, next_attempt_at=LATER)
    message = message_for([spec()], failed)
    assert message is not None and message.kind is OutOfSync.RETRY_WAITING
    assert message.text == f"retry 3 at {LATER} (in 4m); last error: exit status 3: boom"


def test_a_failed_teardown_waiting_for_its_retry_says_teardown() -> None:
    failed = row(spec(), status=ResourceStatus.ERRORED, target_hash=DELETE_TARGET, error="exit 1", attempts=1,
                 next_attempt_at=LATER)
    message = message_for([], failed)
    assert message is not None and message.kind is OutOfSync.RETRY_WAITING
    assert message.text.startswith("teardown retry 2 at ")


def test_unhealthy_counts_the_failed_checks() -> None:
    sick = row(spec(), health=Health.UNHEALTHY, consecutive_failures=4)
    message = message_for([spec()], sick)
    assert message is not None and message.kind is OutOfSync.UNHEALTHY
    assert message.text == "unhealthy: 4 failed checks in a row"


def test_a_running_job_is_in_progress_and_says_since_when() -> None:
    job = Job("job-1", "acme", Action.UPDATE, JobStatus.RUNNING, 2, {}, started_at=iso(NOW - timedelta(seconds=90)))
    message = message_for([spec(deploy_ref="v2")], row(spec()), job=job, in_flight=["acme"])
    assert message is not None and message.kind is OutOfSync.IN_PROGRESS
    assert message.text == "update running (attempt 2), started 1m ago"


def test_a_queued_job_is_in_progress_too() -> None:
    job = Job("job-1", "acme", Action.CREATE, JobStatus.QUEUED, 1, {})
    message = message_for([spec()], row(spec(), status=ResourceStatus.PROVISIONING), job=job, in_flight=["acme"])
    assert message == status_message(row(spec()), job=job, plan_note=None, now=NOW)
    assert message is not None and message.text == "create queued"


def test_a_protected_row_no_longer_declared_is_kept() -> None:
    kept = row(spec(protected=True))
    message = message_for([], kept)
    assert message is not None and message.kind is OutOfSync.PROTECTED
    assert "kept although no longer declared" in message.text


def test_a_replacement_blocked_by_protection() -> None:
    message = message_for([spec(region="us-east-1", protected=True)], row(spec(protected=True)))
    assert message is not None and message.kind is OutOfSync.REPLACE_BLOCKED
    assert "region forces replacement is blocked" in message.text


@pytest.mark.parametrize(("desired", "text"), [
    ([spec(deploy_ref="v2")], "update pending: deploy_ref changed"),
    ([spec(region="us-east-1")], "replace pending: region forces replacement"),
    ([], "delete pending: no longer declared"),
], ids=["update", "replace", "delete"])
def test_a_difference_not_yet_queued_is_pending(desired, text) -> None:
    message = message_for(desired, row(spec()))
    assert message is not None and message.kind is OutOfSync.PENDING
    assert message.text == text


def test_a_tombstone_is_in_sync_until_declared_again() -> None:
    tombstone = row(spec(), status=ResourceStatus.DELETED, spec_hash=None, target_hash=DELETE_TARGET)
    assert message_for([], tombstone) is None
    again = message_for([spec()], tombstone)
    assert again is not None and again.text == "create pending: declared again after deletion"


def test_without_a_plan_the_row_alone_still_speaks_and_silence_is_unknown() -> None:
    failed = row(spec(), status=ResourceStatus.ERRORED, error="boom", attempts=1, next_attempt_at=LATER)
    waiting = status_message(failed, job=None, plan_note=None, now=NOW, planned=False)
    assert waiting is not None and waiting.kind is OutOfSync.RETRY_WAITING
    stuck = status_message(row(spec(), status=ResourceStatus.PROVISIONING), job=None, plan_note=None, now=NOW,
                           planned=False)
    assert stuck is not None and stuck.text == "provisioning with no job open; the next pass plans it"
    quiet = status_message(row(spec()), job=None, plan_note=None, now=NOW, planned=False)
    assert quiet is None and ready(quiet, planned=False) is Ready.UNKNOWN


def test_a_plan_note_no_rule_knows_is_still_shown_as_held() -> None:
    note = Change("acme", Action.NOOP, Reason.NOT_SETTLED, "some later reason")
    message = status_message(row(spec()), job=None, plan_note=note, now=NOW)
    assert message is not None and (message.kind, message.text) == (OutOfSync.HELD, "some later reason")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (5, "5s"), (59, "59s"), (60, "1m"), (3 * 60 + 59, "3m"), (2 * 3600, "2h"), (4 * 86400 + 5, "4d"),
    (400 * 86400, "400d"), (3 * 365 * 86400, "3y"), (-5, "0s"),
])
def test_ages_are_humanised_like_kubectl(seconds, text) -> None:
    assert humanise(seconds) == text


def test_age_of_a_missing_stamp_is_a_dash() -> None:
    assert age(None, now=NOW) == "-"
    assert age(EARLIER, now=NOW) == "5m"


# --- the API's Ready condition tells the same truth ------------------------------------------------


def _ready_condition(observed: ObservedResource, **kwargs) -> dict:
    from reconciler.api import conditions

    return next(c.model_dump() for c in conditions(observed, **kwargs) if c.type == "Ready")


def test_api_ready_is_false_with_the_status_reason_and_message() -> None:
    failed = row(spec(), status=ResourceStatus.ERRORED, error="exited 3", attempts=1, next_attempt_at=EARLIER)
    assert _ready_condition(failed, job=None) == {"type": "Ready", "status": "False", "reason": "errored",
                                                  "message": "errored: exited 3"}
    pending = note_for([spec(deploy_ref="v2")], row(spec()))
    assert _ready_condition(row(spec()), job=None, note=pending, planned=True) == {
        "type": "Ready", "status": "False", "reason": "pending", "message": "update pending: deploy_ref changed"}
    job = Job("job-1", "acme", Action.UPDATE, JobStatus.QUEUED, 1, {})
    assert _ready_condition(row(spec()), job=job)["reason"] == "in_progress"
    sick = row(spec(), health=Health.UNHEALTHY, consecutive_failures=3)
    assert _ready_condition(sick, job=None)["reason"] == "unhealthy"
    assert _ready_condition(row(spec()), job=None, planned=True) == {"type": "Ready", "status": "True",
                                                                    "reason": "active", "message": ""}


def test_api_drops_a_note_planned_against_an_older_row() -> None:
    from reconciler.api import _resource_view

    pending = note_for([spec(deploy_ref="v2")], row(spec()))
    assert pending is not None and pending.expected_version == 0
    moved_on = row(spec(), version=1)  # a job finished since the pass planned it
    view = _resource_view(moved_on, job=None, notes={"acme": pending})
    assert [c.status for c in view.conditions if c.type == "Ready"] == ["True"]


@pytest.mark.parametrize(("reason", "kind"), [
    (Reason.SUSPENDED, OutOfSync.SUSPENDED), (Reason.POLICY, OutOfSync.POLICY), (Reason.BUDGET, OutOfSync.BUDGET),
    (Reason.UNMANAGED, OutOfSync.UNMANAGED),
])
def test_suspended_policy_held_and_forgotten_rows_say_so_with_the_plans_words(reason, kind) -> None:
    """Issues 15 and 16: each out-of-sync kind the later issues added has its own code, not the catch-all."""
    note = Change("acme", Action.NOOP, reason, f"because {reason}")
    message = status_message(row(spec()), job=None, plan_note=note, now=NOW)
    assert message is not None and (message.kind, message.text) == (kind, f"because {reason}")
    assert ready(message, planned=True) is Ready.FALSE
