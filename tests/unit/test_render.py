"""Rendering a Plan: Terraform-style text (colour only when asked) and the stable JSON shape."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from reconciler.models import ObservedResource, ResourceSpec, ResourceStatus, canonical_json, spec_hash
from reconciler.plan import Plan, compute_plan
from reconciler.render import FORMAT_VERSION, render_json, render_text, summary_line


ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)


def spec(resource_id: str, **fields) -> ResourceSpec:
    base = dict(resource_id=resource_id, owner="acme", region="eu-west-1", deploy_ref="v1", params={"size": "small"})
    return ResourceSpec(**{**base, **fields})


def row(applied: ResourceSpec, **fields) -> ObservedResource:
    base = ObservedResource(
        resource_id=applied.resource_id, owner=applied.owner, region=applied.region,
        runtime_target=applied.runtime_target, deploy_ref=applied.deploy_ref, status=ResourceStatus.ACTIVE,
        spec_hash=spec_hash(applied), target_hash=spec_hash(applied), spec_json=canonical_json(applied.model_dump()),
    )
    return replace(base, **fields)


@pytest.fixture(scope="module")
def one_of_each() -> Plan:
    """create c-new, update u-app (deploy_ref v1 → v2), replace r-app (region), delete d-old; two unchanged."""
    desired = [spec("c-new"), spec("u-app", deploy_ref="v2"), spec("r-app", region="us-east-1"),
               spec("keep-1"), spec("keep-2")]
    observed = [spec("u-app"), spec("r-app"), spec("d-old"), spec("keep-1"), spec("keep-2")]
    return compute_plan({s.resource_id: s for s in desired}, {s.resource_id: row(s) for s in observed}, now=NOW)


def block(text: str, resource_id: str) -> str:
    """The lines of one resource's block, from its `# id` headline to its closing brace."""
    match = re.search(rf"  # {resource_id} .*?\n    }}\n", text, re.S)
    assert match, text
    return match.group(0)


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("resource_id", "symbol", "headline"), [
    ("c-new", "+", "will be created"),
    ("u-app", "~", "will be updated in place"),
    ("r-app", "-/+", "must be replaced"),
    ("d-old", "-", "will be destroyed"),
])
def test_each_block_has_its_symbol_and_headline(one_of_each: Plan, resource_id: str, symbol: str,
                                                headline: str) -> None:
    text = block(render_text(one_of_each, colour=False), resource_id)
    assert f"  # {resource_id} {headline}" in text
    assert f"{symbol.rjust(3)} resource \"{resource_id}\" {{" in text


def test_update_shows_before_and_after(one_of_each: Plan) -> None:
    text = block(render_text(one_of_each, colour=False), "u-app")
    assert re.search(r'~ deploy_ref = "v1" -> "v2"\n', text), text
    assert "forces replacement" not in text
    assert "(6 unchanged attributes hidden)" in text


def test_replace_marks_the_forcing_attribute(one_of_each: Plan) -> None:
    text = block(render_text(one_of_each, colour=False), "r-app")
    assert '~ region = "eu-west-1" -> "us-east-1" # forces replacement' in text
    assert "(region forces replacement)" in text


@pytest.mark.parametrize(("resource_id", "symbol", "line"), [
    ("c-new", "+", 'deploy_ref     = "v1"'),
    ("d-old", "-", 'params         = {"size": "small"}'),
])
def test_create_and_delete_list_every_attribute(one_of_each: Plan, resource_id: str, symbol: str, line: str) -> None:
    text = block(render_text(one_of_each, colour=False), resource_id)
    assert f"      {symbol} {line}\n" in text
    assert len(re.findall(rf"^      {re.escape(symbol)} ", text, re.M)) == 7


def test_summary_line(one_of_each: Plan) -> None:
    text = render_text(one_of_each, colour=False)
    assert summary_line(one_of_each) == "Plan: 1 to create, 1 to update, 1 to replace, 1 to delete."
    assert text.rstrip("\n").splitlines()[-1] == "Plan: 1 to create, 1 to update, 1 to replace, 1 to delete."


def test_no_changes() -> None:
    same = spec("same")
    plan = compute_plan({"same": same}, {"same": row(same)}, now=NOW)
    text = render_text(plan, colour=False)
    assert text.startswith("No changes.") and "resource \"" not in text


def test_no_ansi_without_colour_and_ansi_with_it(one_of_each: Plan) -> None:
    plain, coloured = render_text(one_of_each, colour=False), render_text(one_of_each, colour=True)
    assert not ANSI.search(plain) and "\x1b" not in plain
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


def test_refusal_is_shown() -> None:
    gone = spec("gone")
    plan = compute_plan({}, {"gone": row(gone)}, now=NOW)
    assert plan.refusal
    assert f"Refused: {plan.refusal}." in render_text(plan, colour=False)


# --- JSON ----------------------------------------------------------------------------------------


def test_json_shape(one_of_each: Plan) -> None:
    document = json.loads(render_json(one_of_each))
    assert document["format_version"] == FORMAT_VERSION == "1.0"
    assert document["summary"] == {"create": 1, "update": 1, "replace": 1, "delete": 1, "retry": 0, "unchanged": 2}
    assert document["refused"] is None and document["kept"] == [] and document["waiting"] == []
    by_id = {c["resource_id"]: c for c in document["changes"]}
    for change in document["changes"]:
        assert {"resource_id", "action", "before", "after", "reason"} <= change.keys()
    assert {k: v["action"] for k, v in by_id.items()} == {
        "c-new": "create", "u-app": "update", "r-app": "replace", "d-old": "delete"}
    assert by_id["c-new"]["before"] is None and by_id["c-new"]["after"]["resource_id"] == "c-new"
    assert by_id["d-old"]["after"] is None and by_id["d-old"]["before"]["deploy_ref"] == "v1"
    assert (by_id["u-app"]["before"]["deploy_ref"], by_id["u-app"]["after"]["deploy_ref"]) == ("v1", "v2")
    assert by_id["u-app"]["changed"] == ["deploy_ref"]
    assert by_id["r-app"]["reason"] == "region forces replacement"


def test_json_round_trips(one_of_each: Plan) -> None:
    text = render_json(one_of_each)
    assert text.endswith("\n") and "\n" not in text[:-1]
    assert json.loads(json.dumps(json.loads(text))) == json.loads(text)
