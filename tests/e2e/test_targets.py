"""Unknown runtime targets and unknown --target ids are refused, via the real CLI and the real API."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.targets import known_targets, read_targets_file
from tests.support import make_project, run_cli, runs, write_resources
from tests.e2e.test_api import start_api_daemon


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    kubernetes = project / "provision" / "kubernetes"
    kubernetes.mkdir()
    (kubernetes / "provision.sh").write_text((project / "provision" / "provision.sh").read_text())
    (kubernetes / "provision.sh").chmod(0o755)
    (project / "provision" / "lib").mkdir()  # a helper directory, not a target
    (project / "provision" / "lib" / "common.sh").write_text("true\n")
    return project


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["apply", "--yes"]])
def test_a_typo_in_runtime_target_is_refused_with_a_did_you_mean(project, command):
    write_resources(project, {"ok": {}, "typo": {"runtime_target": "kubernets"}})
    done = run_cli(project, *command)
    assert done.returncode == 1, done.stdout
    assert "desired/fleet.yaml:10: runtime_target: unknown runtime_target 'kubernets' (did you mean 'kubernetes'?)" \
        in done.stderr
    assert runs(project) == []  # nothing ran, not even for the good resource


@pytest.mark.parametrize("target", ["lib", "docker"])
def test_a_helper_directory_or_an_unlisted_name_is_not_a_target(project, target):
    write_resources(project, {"a": {"runtime_target": target}})
    done = run_cli(project, "validate")
    assert done.returncode == 1 and f"unknown runtime_target '{target}'" in done.stderr


def test_targets_yaml_lists_the_targets_the_default_scripts_handle(project):
    (project / "provision" / "targets.yaml").write_text("targets: [docker]\npass_env: [AWS_*, HTTPS_PROXY]\n")
    write_resources(project, {"a": {"runtime_target": "docker"}, "b": {"runtime_target": "kubernetes"}})
    assert run_cli(project, "validate").returncode == 0
    write_resources(project, {"a": {"runtime_target": "local"}})  # no longer known: not listed
    assert "unknown runtime_target 'local'" in run_cli(project, "validate").stderr


def test_without_targets_yaml_local_and_script_directories_are_known(project):
    (project / "provision" / "targets.yaml").unlink(missing_ok=True)
    assert known_targets(provision_dir=project / "provision").names == {"local", "kubernetes"}
    (project / "provision" / "targets.yaml").write_text("pass_env: [CONTROL]\n")  # no targets: key
    assert known_targets(provision_dir=project / "provision").names == {"local", "kubernetes"}
    (project / "provision" / "targets.yaml").write_text("targets: []\n")
    assert known_targets(provision_dir=project / "provision").names == {"kubernetes"}


def test_validate_without_a_provision_directory_does_not_check_targets(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"a": {"runtime_target": "anything"}})
    done = run_cli(project, "validate", RECONCILER_PROVISION=str(tmp_path / "missing"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("text, expected", [
    ("targets: [local]\npass_evn: [X]\n", "targets.yaml:2: pass_evn: unknown key (did you mean 'pass_env'?)"),
    ("targets: local\n", "targets.yaml:1: targets: expected a list of strings"),
    ("pass_env: [1, 2]\n", "targets.yaml:1: pass_env: expected a list of strings"),
    ("targets: [Bad/Name]\n", "targets.yaml:1: targets: 'Bad/Name' is not a valid name"),
    ("targets: [local\n", "targets.yaml:1:16"),
])
def test_a_bad_targets_yaml_names_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "targets.yaml").write_text(text)
    with pytest.raises(SpecError) as caught:
        read_targets_file(path=tmp_path / "targets.yaml")
    assert expected in str(caught.value)


def test_the_cli_reports_a_bad_targets_yaml(project):
    (project / "provision" / "targets.yaml").write_text("targets: [local]\ntargetz: [x]\n")
    write_resources(project, {"a": {}})
    done = run_cli(project, "plan")
    assert done.returncode == 1 and "targets.yaml:2: targetz: unknown key (did you mean 'targets'?)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["plan"], ["apply", "--yes"], ["destroy", "--yes"]])
def test_a_target_id_naming_no_resource_is_an_error(project, command):
    write_resources(project, {"web-one": {}})
    assert run_cli(project, "apply", "--yes").returncode == 0
    done = run_cli(project, *command, "--target", "web-on")
    assert done.returncode == 1, done.stdout
    assert "--target web-on: no such resource in desired/ or the database (did you mean 'web-one'?)" in done.stderr
    assert "No changes" not in done.stdout


def test_the_api_refuses_an_unknown_target_with_422_naming_the_field(project, daemons):
    write_resources(project, {"from-file": {}})
    _, client = start_api_daemon(project, daemons)
    spec = {"resource_id": "api-one", "owner": "o", "region": "r", "deploy_ref": "v1", "runtime_target": "kubernets"}
    status, body = client.call("POST", "/provisions", spec)
    assert status == 422, body
    assert body["detail"][0]["loc"] == ["body", "runtime_target"]
    assert "did you mean 'kubernetes'?" in body["detail"][0]["msg"]
    assert client.call("GET", "/provisions/api-one")[0] == 404  # nothing stored
    status, _ = client.call("POST", "/provisions", {**spec, "runtime_target": "kubernetes"})
    assert status == 202


def test_the_daemon_refuses_an_unknown_target_in_a_file(project, daemons):
    from tests.support import log_events, start_daemon, wait_for

    write_resources(project, {"a": {"runtime_target": "kubernets"}})
    daemons.append(start_daemon(project, "--resync", "0.5"))
    wait_for(lambda: any("did you mean 'kubernetes'" in str(e.get("problem")) for e in log_events(project)),
             what="the unknown target in the log")
    assert runs(project) == []


def test_a_fifo_named_targets_yaml_is_refused_not_waited_on(project):
    import os

    (project / "provision" / "targets.yaml").unlink(missing_ok=True)
    os.mkfifo(project / "provision" / "targets.yaml")
    write_resources(project, {"a": {}})
    done = run_cli(project, "plan", timeout=30)
    assert done.returncode == 1 and "targets.yaml: not a regular file (a FIFO)" in done.stderr
