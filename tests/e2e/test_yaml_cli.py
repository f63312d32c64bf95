"""The YAML edges through the real CLI and daemon: what `validate` accepts, `plan` accepts with the same
params; what it refuses, it refuses with file:line and no traceback; and a file that once gave the
daemon a traceback on every pass is now a load error, counted and shown like any YAML error."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.support import make_project, run_cli, wait_for, write_resources
from tests.e2e.test_api import start_api_daemon
from tests.unit.test_yaml_differential import EDGES

HEAD = "resource_id: web\nowner: acme\nregion: eu-west-1\ndeploy_ref: v1\n"


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def _params_doc(snippet: str) -> str:
    """`snippet` as the value of `params.v` (indented under it)."""
    return HEAD + "params:\n  v:\n" + "".join(f"    {line}\n" for line in snippet.splitlines())


@pytest.mark.parametrize(("text", "message"), [edge for edge in EDGES if not edge[0].startswith(("<<", "- "))])
def test_validate_refuses_each_edge_with_file_line_and_no_traceback(project, text, message):
    (project / "desired" / "fleet.yaml").write_text(_params_doc(text))
    done = run_cli(project, "validate")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "fleet.yaml:" in done.stderr and message.split(" (first at line")[0] in done.stderr


@pytest.mark.parametrize("snippet", ["'=': 1\nplain: =x", "base: &b {x: 1, y: 2}\nm: {<<: *b, y: 3}",
                                     "when: 2001-12-14\nport: 010\nflag: on"])
def test_what_validate_accepts_plan_accepts_with_the_same_params(project, snippet):
    text = _params_doc(snippet)
    (project / "desired" / "fleet.yaml").write_text(text)
    assert run_cli(project, "validate").returncode == 0
    done = run_cli(project, "plan", "-o", "json")
    assert done.returncode == 0, done.stderr
    params = json.loads(done.stdout)["changes"][0]["after"]["params"]
    expected = yaml.load(text, Loader=yaml.CSafeLoader)["params"]  # noqa: S506 - the safe C loader
    assert params == json.loads(json.dumps(_dates_as_text(expected, text)))


def _dates_as_text(value, text):
    import datetime

    if isinstance(value, dict):
        return {str(k): _dates_as_text(v, text) for k, v in value.items()}
    return value.isoformat() if isinstance(value, datetime.date) else value


def test_a_file_that_once_crashed_every_pass_is_a_counted_load_error(tmp_path, daemons):
    project = make_project(tmp_path)
    write_resources(project, {"good": {}})
    _, client = start_api_daemon(project, daemons, "--resync", "0.5")
    (project / "desired" / "bad.yaml").write_text(HEAD.replace("web", "bad") + "params: {k: =}\n")

    def reported():
        status, health = client.call("GET", "/health")
        return health if not health["desired_loads"] else None

    health = wait_for(reported, what="/health to report the load error")
    assert any(error.startswith(os.path.join("desired", "bad.yaml") + ":5") or "bad.yaml:5" in error
               for error in health["desired_errors"]), health
    _, metrics = client.call("GET", "/metrics")
    assert "reconciler_desired_load_errors 1.0" in metrics
    assert "reconciler_desired_load_failures_total" in metrics
    log = (project / "daemon.log").read_text()
    assert "Traceback" not in log and "reconcile pass failed" not in log


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_symlink_leading_outside_desired_is_refused_by_name(project, kind):
    """Issue 12: the watch cannot see an outside target change, and a checkout must describe the fleet."""
    outside = project / "elsewhere"
    outside.mkdir()
    (outside / "x.yaml").write_text(HEAD)
    desired = project / "desired"
    (desired / "inside.yaml").write_text(HEAD.replace("web", "web-2"))
    link = desired / ("x.yaml" if kind == "file" else "more")
    link.symlink_to(outside / "x.yaml" if kind == "file" else outside)
    for command in (["validate"], ["plan"]):
        done = run_cli(project, *command)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{link.name}: a symlink that leads outside" in done.stderr and str(outside) in done.stderr
    link.unlink()
    (desired / "shared").mkdir()
    (desired / "_hidden.yaml").write_text(HEAD)
    (desired / "shared" / "x.yaml").symlink_to(desired / "_hidden.yaml")  # inside the tree: read
    assert run_cli(project, "validate").returncode == 0
