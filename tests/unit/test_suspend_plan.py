"""Issue 16 item 1, the pure part: a suspended resource gets a kept note instead of any change; the
fleet flag covers every resource (also ones declared later); expiry is a comparison with `now`; a
file's `suspend:` is not part of the spec (not hashed, not dumped); `--until` parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.models import Health, ResourceSpec, ResourceStatus, iso, spec_hash
from reconciler.plan import Action, Hold, PlanPolicy, Reason
from reconciler.render import plan_json, render_text
from reconciler.spec import SpecError
from reconciler.suspensions import Suspension, Suspensions, declared_in_files, parse_until
from tests.unit.test_plan import BYSTANDERS, EARLIER, LATER, NOW, plan_for, row, spec

HELD = Suspension("incident 42", "cli:ann@ops", EARLIER, None)


def test_a_suspended_resource_gets_no_change_but_a_kept_note_saying_what_it_would_get():
    old, new = spec(), spec(deploy_ref="v2")
    result = plan_for([new, *BYSTANDERS], [row(old)], suspensions=Suspensions({"acme-prod": HELD}))
    assert not [c for c in result.changes if c.resource_id == "acme-prod"]
    note = result.kept[0]
    assert (note.action, note.reason, note.hold) == (Action.NOOP, Reason.SUSPENDED, Hold.SUSPENDED)
    assert "suspended by cli:ann@ops: incident 42" in note.message and "would otherwise update" in note.message
    assert result.suspended == (note,)
    assert not result.pending  # `plan --detailed-exitcode` does not exit 2 for it


@pytest.mark.parametrize("case", ["delete", "self_heal", "in_flight", "in_sync", "create"])
def test_suspension_holds_every_kind_of_change(case):
    current = spec()
    desired, observed, kwargs = [current], [row(current)], {}
    if case == "delete":
        desired = list(BYSTANDERS)
    elif case == "self_heal":
        observed = [row(current, health=Health.UNHEALTHY, consecutive_failures=3)]
        kwargs["policy"] = PlanPolicy(self_heal=True)
    elif case == "in_flight":
        kwargs["in_flight"] = {"acme-prod"}
    elif case == "create":
        observed = []
    result = plan_for(desired, observed, suspensions=Suspensions({"acme-prod": HELD}), **kwargs)
    assert not [c for c in result.changes if c.resource_id == "acme-prod"]
    assert [c.reason for c in result.kept] == [Reason.SUSPENDED]
    assert not result.waiting


def test_an_expired_suspension_is_ignored_and_the_plan_says_when_the_next_one_lapses():
    lapsed = Suspension("done", "cli:ann@ops", EARLIER, iso(NOW - timedelta(seconds=1)))
    result = plan_for([spec(deploy_ref="v2")], [row(spec())], suspensions=Suspensions({"acme-prod": lapsed}))
    assert [c.action for c in result.changes] == [Action.UPDATE]
    later = Suspension("soon", "cli:ann@ops", EARLIER, LATER)
    assert Suspensions({"a": later, "b": lapsed}, HELD).next_expiry(iso(NOW)) == LATER


def test_the_fleet_flag_holds_every_resource_including_undeclared_ones_and_stays_quiet_when_in_sync():
    fleet = Suspension("outage", "cli:ann@ops", EARLIER, None)
    in_sync = spec("in-sync")
    result = plan_for([in_sync, spec("brand-new")], [row(in_sync), row(spec("gone"))],
                      suspensions=Suspensions({}, fleet), policy=PlanPolicy(allow_mass_delete=True))
    assert not result.changes
    assert {c.resource_id for c in result.kept} == {"brand-new", "gone"}
    assert result.unchanged == 1 and result.fleet_suspension == fleet
    text = render_text(result, colour=False)
    assert "The fleet is suspended by cli:ann@ops: outage" in text
    assert plan_json(result)["fleet_suspension"]["actor"] == "cli:ann@ops"
    assert plan_json(result)["kept"][0]["suspension"]["reason"] == "outage"
    # destroy drops the fleet's suspension, not a resource's own
    both = Suspensions({"gone": HELD}, fleet).without_fleet()
    assert both.fleet is None and both.of("gone") == HELD


def test_the_file_declared_suspend_is_not_part_of_the_spec():
    plain = spec()
    held = ResourceSpec.model_validate({**plain.model_dump(), "suspend": {"reason": "review", "until": LATER}})
    assert spec_hash(held) == spec_hash(plain)
    assert "suspend" not in held.model_dump() and "suspend" not in held.model_dump_json()
    assert held.suspend is not None and held.suspend.until == LATER
    found = declared_in_files(resources={"acme-prod": held, "other": spec("other")},
                              where={"acme-prod": "desired/a.yaml:3"})
    assert list(found) == ["acme-prod"] and found["acme-prod"].file == "desired/a.yaml:3"
    assert "suspended in desired/a.yaml:3: review" in found["acme-prod"].describe()


def test_a_file_suspend_with_a_bad_time_names_the_field(tmp_path):
    from reconciler.spec import load_desired

    (tmp_path / "a.yaml").write_text("resource_id: a\nowner: o\nregion: r\ndeploy_ref: v1\n"
                                     "suspend:\n  reason: x\n  until: tomorrow\n")
    with pytest.raises(SpecError) as caught:
        load_desired(directory=tmp_path, settle=0)
    problem = caught.value.problems[0]
    assert problem.field == "suspend.until" and problem.line == 7 and "not a time" in problem.message


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", NOW + timedelta(seconds=90)), ("1h30m", NOW + timedelta(minutes=90)), ("2d", NOW + timedelta(days=2)),
    ("2024-05-02T00:00:00Z", NOW.replace(day=2, hour=0)),
])
def test_until_takes_a_duration_or_a_time(text, expected):
    assert parse_until(text, now=NOW) == iso(expected)


@pytest.mark.parametrize("text", ["soon", "0s", "2024-05-02T00:00:00", "2020-01-01T00:00:00Z"])
def test_until_refuses_what_it_cannot_use(text):
    with pytest.raises(ValueError, match="--until"):
        parse_until(text, now=NOW)


def test_status_rows_are_untouched_by_a_suspension_the_plan_only_reads():
    current = row(spec(), status=ResourceStatus.ERRORED, error="boom", attempts=1, next_attempt_at=EARLIER)
    result = plan_for([spec()], [current], suspensions=Suspensions({"acme-prod": HELD}))
    assert "would otherwise retry" in result.kept[0].message
