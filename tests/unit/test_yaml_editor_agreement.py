"""The editor and the tool agree: every document `reconciler` accepts, an editor (a YAML 1.2 reader plus
the committed JSON Schema) accepts with the same values; every document the schema refuses, the tool
refuses. ruamel.yaml (typ='safe', YAML 1.2) stands in for the YAML language server's reader.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.errors import SpecProblem
from reconciler.spec import validate_document
from reconciler.yamlcompat import disagreements, kind_11, kind_12
from reconciler.yamlfast import YamlProblem, load_documents
from tests.support import ROOT

SCHEMA = json.loads((ROOT / "reconciler.schema.json").read_text())
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)  # the draft its $schema names

BASE = {"resource_id": "web-1", "owner": "acme", "region": "eu-west-1", "runtime_target": "local",
        "deploy_ref": "v1.4.2", "params": "{size: small, replicas: 2}", "protected": "false"}
AMBIGUOUS = ["no", "off", "yes", "on", "y", "n", "1:30", "0o10", "010", "1e3", "1.10", "1_000", "0x1F", "0b101",
             "2024-01-15", "~", "null", "=", "<<", "12", "-1", ".inf", "true", "False"]
TEXT_VALUES = AMBIGUOUS + ["v1.4.2", "eu-west-1", "acme", "web-2"] + [f'"{value}"' for value in AMBIGUOUS]
BOOL_VALUES = ["true", "True", "TRUE", "false", "False", "FALSE", "yes", "no", "on", "off", "y", "n", "1", "0",
               "~", '"true"', "'false'"]
TABLE = ([(name, value) for name in ("resource_id", "owner", "region", "deploy_ref", "runtime_target")
          for value in TEXT_VALUES]
         + [("protected", value) for value in BOOL_VALUES])


def document(name: str, value: str) -> str:
    fields = {**BASE, name: value}
    return "".join(f"{key}: {text}\n" for key, text in fields.items())


def tool_reads(text: str) -> dict | None:
    """The spec `reconciler validate` accepts, or None when it refuses."""
    try:
        docs = load_documents(text)
    except YamlProblem:
        return None
    problems: list[SpecProblem] = []
    spec = validate_document(doc=docs[0], name="t.yaml", problems=problems)
    assert (spec is None) == bool(problems)
    return spec.model_dump() if spec is not None else None


def editor_reads(text: str) -> dict | None:
    """What the editor sees: the YAML 1.2 value when it loads and the schema holds, else None."""
    reader = YAML(typ="safe", pure=True)
    reader.version = (1, 2)
    try:
        value = reader.load(text)
    except Exception:  # noqa: BLE001 - any load failure is the editor refusing
        return None
    return value if VALIDATOR.is_valid(value) else None


@pytest.mark.parametrize(("name", "value"), TABLE)
def test_tool_accepts_only_what_the_editor_accepts_with_the_same_values(name: str, value: str) -> None:
    text = document(name, value)
    tool, editor = tool_reads(text), editor_reads(text)
    if tool is not None:
        assert editor is not None, f"the tool accepts what the editor refuses:\n{text}"
        assert {key: tool[key] for key in editor} == editor, f"tool and editor read different values:\n{text}"
    if editor is None:
        assert tool is None, f"the schema refuses what the tool accepts:\n{text}"


@pytest.mark.parametrize(("text", "fix"), [
    ("protected: yes", "protected: yes is read differently by YAML 1.1 (a boolean) and 1.2 (text); write true"),
    ("protected: off", "write false"),
    ("region: no", 'region: no is read differently by YAML 1.1 (a boolean) and 1.2 (text); quote it: region: "no"'),
    ("owner: 0o10", 'owner: 0o10 is read differently by YAML 1.1 (text) and 1.2 (a number); quote it: owner: "0o10"'),
    ("deploy_ref: 1e3", "YAML 1.1 (text) and 1.2 (a number)"),
    ("deploy_ref: 1:30", "YAML 1.1 (a number) and 1.2 (text)"),
    ("deploy_ref: 2024-01-15", 'deploy_ref: 2024-01-15 is a date to YAML; quote it: deploy_ref: "2024-01-15"'),
])
def test_ambiguous_typed_scalars_are_refused_with_the_fix(text: str, fix: str) -> None:
    name = text.split(":")[0]
    lines = [line for line in document(name, "x").splitlines() if not line.startswith(name + ":")]
    doc = load_documents("\n".join([*lines, text]) + "\n")[0]
    problems: list[SpecProblem] = []
    assert validate_document(doc=doc, name="t.yaml", problems=problems) is None
    assert [problem.field for problem in problems] == [name]
    assert fix in problems[0].message
    assert problems[0].line == len(lines) + 1


def test_params_keep_the_yaml_1_1_reading() -> None:
    """Free-form params are PyYAML's (documented): `on` stays true there, as it always has."""
    text = document("params", "{debug: on, port: 010, when: 2024-01-15}")
    assert tool_reads(text)["params"] == {"debug": True, "port": 8, "when": "2024-01-15"}


@given(st.sampled_from("yYnNtTfFoO"), st.text(min_size=5, max_size=40).filter(lambda t: "\n" not in t))
@settings(max_examples=400, deadline=None, database=None)
def test_long_text_starting_with_a_word_letter_is_text_to_both_readers(first: str, rest: str) -> None:
    """What yamlcompat's shortcut rests on: the only typed words starting with y/n/t/f/o are at most five
    letters (yes, no, true, false, on, off, null), so longer text so started is text to YAML 1.1 and 1.2."""
    text = first + rest
    assert (kind_11(text), kind_12(text)) == ("str", "str")
    assert disagreements(plain={"owner": text}, text_fields=["owner"], bool_fields=[]) == []


@pytest.mark.parametrize("text", ["yes", "Yes", "YES", "no", "NO", "true", "True", "false", "FALSE", "on", "off",
                                  "Off", "null", "Null", "NULL", "n", "y"])
def test_the_typed_words_are_not_taken_for_long_text(text: str) -> None:
    """The shortcut's boundary: every word with a typed reading is short enough to be looked at."""
    assert len(text) <= 5
    assert (kind_11(text) != "str") == (text not in ("n", "y"))
