"""Issue 11 item 14 (part): scripts get a clean environment, not the daemon's or the operator's.

The contract's variables, the usual system ones and what `provision/targets.yaml` lists under
`pass_env` arrive; database passwords, RECONCILER_* settings and API tokens do not, unless named.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import (
    log_events,
    make_project,
    run_cli,
    start_daemon,
    statuses,
    wait_for,
    write_resources,
)

DUMP_ENV = """#!/bin/sh
env -0 > "$RECONCILER_WORKDIR/env.bin"
echo "http://127.0.0.1:9/$RESOURCE_ID"
"""


def _dumped(project: Path, rid: str) -> dict[str, str]:
    raw = (project / "work" / rid / "env.bin").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if item)


def test_scripts_run_via_the_cli_get_only_the_allowed_variables(tmp_path):
    project = make_project(tmp_path, provision=DUMP_ENV)
    (project / "provision" / "targets.yaml").write_text("pass_env: [AWS_*, CONTROL, PGHOST]\n")
    write_resources(project, {"r1": {}})
    secrets = {"PGPASSWORD": "pg-secret-1", "PGUSER": "fleet", "PGHOST": "db.internal",
               "RECONCILER_API_TOKEN": "api-secret-2", "RECONCILER_HOST": "h1", "GITHUB_TOKEN": "gh-secret-3",
               "AWS_X": "aws-value", "AWS_PROFILE": "prod", "LC_TIME": "C", "https_proxy": "http://proxy:3128",
               "NO_PROXY": "localhost", "TZ": "UTC", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    done = run_cli(project, "apply", "--yes", **secrets)
    assert done.returncode == 0, done.stdout + done.stderr
    env = _dumped(project, "r1")
    for name in ("PGPASSWORD", "PGUSER", "RECONCILER_API_TOKEN", "RECONCILER_HOST", "GITHUB_TOKEN",
                 "RECONCILER_DB", "RECONCILER_DESIRED", "PYTHONPATH"):
        assert name not in env, name
    expected = {"AWS_X": "aws-value", "AWS_PROFILE": "prod", "PGHOST": "db.internal", "LC_TIME": "C",
                "https_proxy": "http://proxy:3128", "NO_PROXY": "localhost", "TZ": "UTC", "LANG": "C.UTF-8",
                "HOME": str(tmp_path), "CONTROL": str(project / "control")}
    assert {name: env.get(name) for name in expected} == expected
    assert "PATH" in env and env["RESOURCE_ID"] == "r1" and env["RECONCILER_ACTION"] == "create"
    assert env["RECONCILER_JOB_ID"].startswith("job-")
    # apply says once which variables it held back, by name only
    assert "PGPASSWORD" in done.stderr and "RECONCILER_API_TOKEN" in done.stderr
    assert not [value for value in ("pg-secret-1", "api-secret-2", "gh-secret-3") if value in done.stderr]


def test_the_daemon_logs_the_dropped_names_once_and_its_scripts_do_not_get_them(tmp_path, daemons):
    project = make_project(tmp_path, provision=DUMP_ENV)
    write_resources(project, {"r1": {}})
    daemons.append(start_daemon(project, PGPASSWORD="pg-secret-1", RECONCILER_API_TOKEN="api-secret-2"))
    wait_for(lambda: statuses(project) == {"r1": "active"}, what="r1 active")
    env = _dumped(project, "r1")
    assert "PGPASSWORD" not in env and "RECONCILER_API_TOKEN" not in env and "RECONCILER_DB" not in env
    notes = [event for event in log_events(project) if "dropped" in event]
    assert len(notes) == 1 and {"PGPASSWORD", "RECONCILER_API_TOKEN"} <= set(notes[0]["dropped"])
    text = (project / "daemon.log").read_text()
    assert "pg-secret-1" not in text and "api-secret-2" not in text


def test_bad_targets_yaml_stops_apply_before_anything_is_queued(tmp_path):
    project = make_project(tmp_path)
    (project / "provision" / "targets.yaml").write_text("pass_env: AWS_*\n")
    write_resources(project, {"r1": {}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 1
    assert "targets.yaml:1:" in done.stderr and "Traceback" not in done.stderr
    assert run_cli(project, "status", "-o", "json").stdout.strip() in ("[]", "")
