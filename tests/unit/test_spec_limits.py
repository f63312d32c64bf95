"""Specs a script could never receive are refused at validation: too big, too deep, or not JSON (NaN/inf).

Scripts get the whole spec in one environment variable (RESOURCE_JSON); Linux refuses an execve whose
single environment string exceeds 128 KiB (E2BIG), so a spec over the stated limit would fail forever.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from reconciler.models import MAX_PARAMS_DEPTH, MAX_SPEC_BYTES, ResourceSpec

BASE = {"resource_id": "a", "owner": "o", "region": "r", "deploy_ref": "v1"}


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def _errors(params: object) -> str:
    with pytest.raises(ValidationError) as caught:
        ResourceSpec.model_validate({**BASE, "params": params})
    return str(caught.value)


def test_the_limits_are_stated():
    assert MAX_SPEC_BYTES == 64 * 1024 and MAX_PARAMS_DEPTH == 64


def test_params_at_the_depth_limit_are_accepted_and_one_deeper_refused():
    assert ResourceSpec.model_validate({**BASE, "params": _nested(MAX_PARAMS_DEPTH)})
    assert f"nest deeper than {MAX_PARAMS_DEPTH} levels" in _errors(_nested(MAX_PARAMS_DEPTH + 1))


@pytest.mark.parametrize("depth", [900, 5000])
def test_very_deep_params_are_a_validation_error_not_a_recursion_error(depth):
    assert "nest deeper than" in _errors(_nested(depth))
    body = json.dumps({**BASE, "params": _nested(depth)}) if depth < 1000 else None
    if body:
        with pytest.raises(ValidationError):
            ResourceSpec.model_validate(json.loads(body))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(value):
    assert "JSON cannot carry" in _errors({"x": [1, {"y": value}]})


def test_a_spec_over_64_kib_as_json_is_refused_and_one_under_accepted():
    assert ResourceSpec.model_validate({**BASE, "params": {"blob": "x" * (MAX_SPEC_BYTES - 200)}})
    assert "64 KiB" in _errors({"blob": "x" * MAX_SPEC_BYTES})
    assert "64 KiB" in _errors({"blob": "é" * (MAX_SPEC_BYTES // 2)})  # bytes count, not characters
