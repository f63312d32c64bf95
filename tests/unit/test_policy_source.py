"""The daemon's policy source (issue 15): the last good policy stays in force through a bad save or a
vanished file, a start with a policy that does not load is refused, and a half-written file never counts.

The loader here is a small real one (YAML of `limit: N`); the policy package's loader is used in the
daemon tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from reconciler.errors import SpecError, SpecProblem
from reconciler.policysource import PolicySource


def load(path: Path) -> int:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("limit"), int):
        raise SpecError([SpecProblem(str(path), 1, "limit", "expected an integer")])
    return int(data["limit"])


def aged(path: Path, text: str) -> None:
    """Write, then date the file a minute back: settled as far as the clock can tell."""
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def test_a_policy_that_does_not_load_at_start_refuses_it(tmp_path):
    path = tmp_path / "policy.yaml"
    aged(path, "limit: many\n")
    with pytest.raises(SpecError, match=r"policy\.yaml:1: limit: expected an integer"):
        PolicySource(path=path, load=load).start()


def test_absent_means_no_policy_unless_it_was_named(tmp_path):
    source = PolicySource(path=tmp_path / "policy.yaml", load=load)
    source.start()
    assert source.policy is None and source.error is None and source.refresh() == 0.0
    with pytest.raises(SpecError, match="does not exist"):
        PolicySource(path=tmp_path / "policy.yaml", load=load, required=True).start()


def test_a_bad_save_keeps_the_last_good_policy_and_says_why(tmp_path):
    path = tmp_path / "policy.yaml"
    aged(path, "limit: 5\n")
    source = PolicySource(path=path, load=load, settle=0.0)
    source.start()
    first = source.generation
    aged(path, "limit: [\n")
    assert source.refresh() == 0.0
    assert source.policy == 5 and source.error is not None and source.generation != first
    assert source.problems()[0].startswith(f"{path}:")
    again = source.generation
    assert source.refresh() == 0.0 and source.generation == again  # unchanged file: not read again
    aged(path, "limit: 7\n")
    source.refresh()
    assert source.policy == 7 and source.error is None and source.problems() == []


def test_a_vanished_policy_file_keeps_the_last_good_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    aged(path, "limit: 5\n")
    source = PolicySource(path=path, load=load)
    source.start()
    path.unlink()
    source.refresh()
    assert source.policy == 5 and "gone" in source.problems()[0]


def test_a_file_still_being_written_does_not_count_yet(tmp_path):
    path = tmp_path / "policy.yaml"
    aged(path, "limit: 5\n")
    source = PolicySource(path=path, load=load, settle=5.0)
    source.start()
    path.write_text("limit: 1")  # just written: might be the first slice of a longer save
    assert source.refresh() > 0 and source.policy == 5 and source.error is None
    past = time.time() - 60
    os.utime(path, (past, past))
    assert source.refresh() == 0.0 and source.policy == 1


def test_metrics_show_quota_use_and_limit_per_owner_and_refusals_by_rule():
    from reconciler.metrics import Metrics

    metrics = Metrics()
    metrics.quota(used={"acme": 3, "globex": 1}, limits={"acme": 2, "globex": 50})
    metrics.refused(rules=["quotas.per_owner", "quotas.per_owner", "allowed.regions"])
    metrics.holding(by_rule={"quotas.per_owner": 1})
    metrics.quota(used={"acme": 3}, limits={"acme": 2})  # globex left the fleet
    text = metrics.render(statuses={}, health={}).decode()
    assert 'reconciler_quota_used{owner="acme"} 3.0' in text and 'reconciler_quota_limit{owner="acme"} 2.0' in text
    assert 'owner="globex"' not in text
    assert 'reconciler_policy_refusals_total{rule="quotas.per_owner"} 2.0' in text
    assert 'reconciler_policy_refusals_total{rule="allowed.regions"} 1.0' in text
    assert 'reconciler_policy_held{rule="quotas.per_owner"} 1.0' in text


# --- govern.py's pure part: a verdict as the daemon's holds and the API's refusal ------------------------


def _verdict(text: str, desired: dict, *, started: dict | None = None):
    from reconciler.models import utcnow
    from reconciler.plan import compute_plan
    from reconciler.policy import evaluate, parse_policy

    rules = parse_policy(text=text, name="policy.yaml")
    plan = compute_plan(desired, {}, now=utcnow())
    return evaluate(policy=rules, desired=desired, observed={}, plan=plan, started_last_hour=started or {},
                    budgets=True)


def _spec(rid: str, owner: str = "acme", region: str = "eu-west-1"):
    from reconciler.models import ResourceSpec

    return ResourceSpec(resource_id=rid, owner=owner, region=region, deploy_ref="v1")


def test_holds_name_every_rule_a_resource_breaks_and_where_it_is_written():
    from reconciler.govern import by_rule, holds_of, refusal_of

    desired = {rid: _spec(rid) for rid in ("a1", "a2")} | {"a3": _spec("a3", region="mars-1")}
    verdict = _verdict("quotas:\n  per_owner: {acme: 2}\nallowed:\n  regions: [eu-west-1]\n", desired)
    holds = holds_of(verdict=verdict, desired=desired, observed={})
    assert [(h.resource_id, h.owner, h.rules) for h in holds] == [
        ("a3", "acme", ("allowed.regions", "quotas.per_owner"))]
    assert {v["policy"] for v in holds[0].details["violations"]} == {"policy.yaml:2", "policy.yaml:4"}
    assert by_rule(holds) == {"allowed.regions": 1, "quotas.per_owner": 1}
    refusal = refusal_of(verdict=verdict, resource_id="a3")
    assert refusal is not None and refusal.rules == ("allowed.regions", "quotas.per_owner") and not refusal.budget
    assert refusal.places == ("policy.yaml:2", "policy.yaml:4")
    assert refusal_of(verdict=verdict, resource_id="a1") is None


def test_a_used_up_budget_defers_rather_than_refuses():
    from reconciler.govern import holds_of, refusal_of

    desired = {rid: _spec(rid) for rid in ("a1", "a2", "a3")}
    verdict = _verdict("changes:\n  max_per_owner_per_hour: 3\n", desired, started={"acme": 2})
    holds = holds_of(verdict=verdict, desired=desired, observed={})
    assert [(h.resource_id, h.rules, h.details["budget"]) for h in holds] == [
        ("a2", ("changes.max_per_owner_per_hour",), True), ("a3", ("changes.max_per_owner_per_hour",), True)]
    refusal = refusal_of(verdict=verdict, resource_id="a2")
    assert refusal is not None and refusal.budget and refusal.places == ("policy.yaml:2",)


def test_forget_reads_an_unchanged_file_again(tmp_path):
    path = tmp_path / "policy.yaml"
    aged(path, "limit: 5\n")
    reads = []
    source = PolicySource(path=path, load=lambda p: reads.append(p) or load(p))
    source.start()
    source.refresh()
    assert len(reads) == 1
    source.forget()
    source.refresh()
    assert len(reads) == 2 and source.policy == 5
