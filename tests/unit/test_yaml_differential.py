"""The YAML builder against PyYAML's CSafeLoader, on generated documents (hypothesis) and on every edge
the yaml-test-suite run found: the builder returns what CSafeLoader returns (dates kept as text), or it
refuses with a `YamlProblem` — and it refuses only where CSafeLoader fails too or where the documented
differences say so (duplicate keys, `!!binary`, the non-specific tag `!` on a scalar). Never another
exception, never different data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.yamlfast import YamlProblem, load_documents

MERGE_TAG = "tag:yaml.org,2002:merge"
VALUE_TAG = "tag:yaml.org,2002:value"


class DuplicateKey(Exception):
    """Raised by the reference where the builder refuses by design: a key (or `<<`) given twice."""


class Reference(yaml.CSafeLoader):
    """CSafeLoader, with the builder's two documented differences: dates stay text; duplicate keys raise."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        if isinstance(node, yaml.MappingNode):
            _explicit_keys_unique(self, node)
        return super().construct_mapping(node, deep=deep)


def _explicit_keys_unique(loader: Reference, node: yaml.MappingNode) -> None:
    seen: list[object] = []
    merges = 0
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            merges += 1
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            continue  # PyYAML refuses collection keys itself
        key = "=" if key_node.tag == VALUE_TAG else loader.construct_object(key_node)
        if any(key == other for other in seen):
            raise DuplicateKey(key)
        seen.append(key)
    if merges > 1:
        raise DuplicateKey("<<")


def _timestamp_as_text(loader: Reference, node: yaml.ScalarNode) -> str:
    yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)  # raises where PyYAML does
    return node.value


Reference.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def norm(value: object) -> object:
    """Type-exact, NaN-aware form for comparison (True != 1, 1.0 != 1, nan == nan)."""
    if isinstance(value, dict):
        return ("map", sorted(((norm(k), norm(v)) for k, v in value.items()), key=repr))
    if isinstance(value, list):
        return ("seq", [norm(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


@dataclass
class Outcome:
    value: object = None
    error: Exception | None = None


def reference(text: str) -> Outcome:
    try:
        return Outcome(value=list(yaml.load_all(text, Loader=Reference)))
    except Exception as exc:  # noqa: BLE001 - any failure of the reference is a refusal to match
        return Outcome(error=exc)


def builder(text: str) -> Outcome:
    try:
        return Outcome(value=[doc.value for doc in load_documents(text)])
    except YamlProblem as exc:
        return Outcome(error=exc)


DOCUMENTED = {"binary": "!!binary", "bang": "non-specific tag", "dup": "merge key"}


def check_agrees(text: str, *, documented: set[str]) -> None:
    """The contract, for one text; `documented` names the documented refusals the text may trigger."""
    ref, got = reference(text), builder(text)  # builder() lets any other exception fail the test
    if got.error is None:
        assert ref.error is None, f"builder accepted what CSafeLoader refuses ({ref.error!r}):\n{text}"
        assert norm(got.value) == norm(ref.value), f"different data:\n{text}"
        return
    assert isinstance(got.error, YamlProblem) and got.error.line >= 0
    if ref.error is not None:
        return  # both refuse
    message = got.error.message
    allowed = ("duplicate key" in message or "merge key" in message) and isinstance(ref.error, DuplicateKey) or any(
        DOCUMENTED[name] in message for name in documented if name != "dup")
    assert allowed, f"builder refused ({message}) what CSafeLoader reads as {ref.value!r}:\n{text}"


# --- generated documents -------------------------------------------------------------------------

PLAIN = [
    # ints (YAML 1.1): decimal, signed, hex, binary, old octal, underscores, sexagesimal, broken prefixes
    "0", "-12", "+5", "0x1F", "-0x1f", "0b101", "010", "0o10", "1_000", "1:30", "-1:30:00", "0x_", "0b_", "-0x_",
    # floats: dots, exponents (PyYAML needs a dot), specials, sexagesimal
    "1.5", "1.10", "-.5", "1e3", "1.0e+3", "6.8523015e+5", "1_0.5", "190:20:30.15", ".inf", "-.Inf", ".NaN", "._",
    # bools and nulls of YAML 1.1, and near misses
    "yes", "No", "on", "OFF", "true", "False", "y", "n", "~", "null", "NULL", "Null", "nil",
    # timestamps, valid and not
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "2020-13-45", "2001-1-1",
    # text, and the two plain scalars YAML 1.1 reads as keys only
    "abc", "hello world", "v1.4.2", "eu-west-1", "-", "=", "<<",
]
QUOTED = ['"12"', "'yes'", '"<<"', "'='", '""', '"a\\tb"', "'2001-12-14'"]
TAGGED = [
    "!!str 12", "!!str yes", "!!int 12", "!!int 0x1F", "!!int abc", "!!int ''", "!!int 1.5", "!!float 1",
    "!!float ''", "!!float .nan", "!!bool yes", "!!bool maybe", "!!null ''", "!!null abc", "!!timestamp 2001-12-14",
    "!!timestamp not-a-date", "!!binary aGVsbG8=", "!!binary //79", "! 12", '! "12"', "! yes",
]
KEYS = ["a", "b", "c", "name", "1", "1.0", "yes", "true", "~", "=", "0x1F", "'quoted'"]


@dataclass
class World:
    """What one generated text used, so the check knows which documented refusals it may see."""

    anchors: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


@st.composite
def scalar(draw: st.DrawFn, world: World) -> str:
    text = draw(st.sampled_from(PLAIN + QUOTED + TAGGED))
    if text.startswith("!!binary"):
        world.used.add("binary")
    if text.startswith("! "):
        world.used.add("bang")
    return text


@st.composite
def node(draw: st.DrawFn, world: World, depth: int = 0) -> str:
    choice = draw(st.integers(0, 9 if depth < 3 else 5))
    if choice <= 4:
        text = draw(scalar(world))
    elif choice == 5 and world.anchors:
        return "*" + draw(st.sampled_from(tuple(world.anchors)))
    elif choice <= 7:
        text = "[" + ", ".join(draw(st.lists(node(world, depth + 1), max_size=3))) + "]"
    else:
        text = draw(mapping(world, depth + 1))
    if draw(st.integers(0, 5)) == 0:
        anchor = draw(st.sampled_from(["x", "y", "z"]))
        world.anchors.append(anchor)
        text = f"&{anchor} {text}"
    return text


@st.composite
def mapping(draw: st.DrawFn, world: World, depth: int) -> str:
    pairs = [f"{draw(st.sampled_from(KEYS))}: {draw(node(world, depth))}" for _ in range(draw(st.integers(0, 3)))]
    if world.anchors and draw(st.integers(0, 2)) == 0:
        merged = draw(st.lists(st.sampled_from(tuple(world.anchors)), min_size=1, max_size=2))
        pairs.insert(draw(st.integers(0, len(pairs))),
                     "<<: " + ("*" + merged[0] if len(merged) == 1 else "[" + ", ".join("*" + a for a in merged) + "]"))
    return "{" + ", ".join(pairs) + "}"


@st.composite
def stream(draw: st.DrawFn) -> tuple[str, set[str]]:
    world = World()
    docs = []
    for _ in range(draw(st.integers(1, 3))):
        world.anchors = []
        lines = [f"{draw(st.sampled_from(KEYS))}: {draw(node(world))}" for _ in range(draw(st.integers(1, 4)))]
        docs.append("\n".join(lines))
    return "\n---\n".join(docs) + "\n", world.used


GENERATED = {"count": 0}


# 1500 examples are ~10 s of CPU alone; beside the other workers of `pytest -n 4` on a busy machine, 100 s
@pytest.mark.timeout(600)
@settings(max_examples=int(os.environ.get("YAML_EXAMPLES", "1500")), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(stream())
def test_generated_documents_match_csafeloader_or_are_refused_with_a_line(case: tuple[str, set[str]]) -> None:
    text, used = case
    GENERATED["count"] += 1
    check_agrees(text, documented=used)


# --- every edge found by the yaml-test-suite run and the issue, as explicit cases ------------------

EDGES = [
    ("key: =", "only as a mapping key"),
    ("a: 0x_", "not a valid !!int"),
    ("a: 0b_", "not a valid !!int"),
    ("a: -0x_", "not a valid !!int"),
    ("a: !!int abc", "not a valid !!int"),
    ("a: !!int ''", "not a valid !!int"),
    ("a: !!float ''", "not a valid !!float"),
    ("a: !!bool maybe", "not a valid !!bool"),
    ("key: <<", "only as a mapping key"),
    ("- <<", "only as a mapping key"),
    ("<<", "only as a mapping key"),
    ("params: {k: <<}", "only as a mapping key"),
    ("a: &a {x: 1}\nb: &b {x: 2}\nc:\n  <<: *a\n  <<: *b\n", "second '<<' merge key"),
    ("a: &x 1\nb: &x 2\nc: *x", "duplicate anchor &x (first at line 1)"),
    ("a: !!seq {a: 1}", "!!seq does not fit a mapping"),
    ("a: !!map [a]", "!!map does not fit a sequence"),
    ("a: !!timestamp not-a-date", "not a valid !!timestamp"),
    ("a: 2020-13-45", "not a valid !!timestamp"),
    ("a: !!binary aGVsbG8=", "JSON, which cannot carry bytes"),
    ("a: !!binary //79", "JSON, which cannot carry bytes"),
    ("- ! 12", "non-specific tag '!'"),
    ("a: &a [*a]", "recursive alias"),
]


@pytest.mark.parametrize(("text", "message"), EDGES)
def test_each_edge_is_refused_with_a_line(text: str, message: str) -> None:
    with pytest.raises(YamlProblem) as caught:
        load_documents(text)
    assert message in caught.value.message
    assert caught.value.line >= 1


@pytest.mark.parametrize("text", ["=: 1", "<<: {a: 1}\nb: 2", "a: 1:30", "a: 0o10", "a: 1e3", "a: 010",
                                  "- ! {a: 1}", "a: {a: 0, 1: &x {1.0: 0}, <<: *x}", "a: !!timestamp 2001-12-14", "a: 2001-12-14", "a: &a [1]\nb: *a"])
def test_edges_that_match_csafeloader(text: str) -> None:
    check_agrees(text, documented=set())
    assert builder(text).error is None
