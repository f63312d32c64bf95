"""The spec limits through the real CLI: `validate` names the file and line of an oversized, too deep or NaN
spec (the limits themselves are in unit/test_spec_limits.py).
"""

from __future__ import annotations

from reconciler.models import MAX_PARAMS_DEPTH
from tests.support import make_project, run_cli


def test_validate_names_file_and_line_of_an_oversized_deep_or_nan_spec(tmp_path):
    project = make_project(tmp_path)
    desired = project / "desired"
    deep = "{k: " * (MAX_PARAMS_DEPTH + 1) + "1" + "}" * (MAX_PARAMS_DEPTH + 1)  # the YAML reader stops it
    head = "owner: o\nregion: r\ndeploy_ref: v1\n"
    (desired / "big.yaml").write_text(f"resource_id: big\n{head}params: {{blob: {'x' * 70000}}}\n")
    (desired / "deep.yaml").write_text(f"resource_id: deep\n{head}params: {deep}\n")
    (desired / "nan.yaml").write_text(f"resource_id: nan\n{head}params: {{x: [1, {{y: .nan}}]}}\n")
    done = run_cli(project, "validate")
    assert done.returncode == 1
    assert "desired/big.yaml:1: the spec is 70,128 bytes as JSON" in done.stderr and "64 KiB" in done.stderr
    assert "desired/deep.yaml:5: nesting deeper than 64 levels" in done.stderr
    assert "desired/nan.yaml:5: params: params.x[1].y is nan, which JSON cannot carry" in done.stderr
    assert "Traceback" not in done.stderr
