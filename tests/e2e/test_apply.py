"""`reconciler apply` end to end: the real CLI, real scripts in tmp_path, a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import make_project, run_cli, runs, spawn_cli, write_resources


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def rows(project):
    return {row["resource_id"]: row for row in json.loads(run_cli(project, "status", "-o", "json").stdout)}


def test_create_update_replace_delete_lifecycle(project):
    subprocess.run(["git", "init", "-q", str(project / "desired")], check=True)
    write_resources(project, {"a": {}, "b": {}, "c": {}})
    subprocess.run(["git", "-C", str(project / "desired"), "add", "."], check=True)
    subprocess.run(["git", "-C", str(project / "desired"), "-c", "user.email=t@t", "-c", "user.name=t",
                    "commit", "-qm", "fleet"], check=True)
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Plan: 3 to create, 0 to update, 0 to replace, 0 to delete." in done.stdout
    assert {r: row["status"] for r, row in rows(project).items()} == {"a": "active", "b": "active", "c": "active"}
    assert rows(project)["a"]["url"] == "http://127.0.0.1:9/a/v1"

    write_resources(project, {"a": {"deploy_ref": "v2"}, "b": {"region": "us-east-1"}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Plan: 0 to create, 1 to update, 1 to replace, 1 to delete." in done.stdout
    after = rows(project)
    assert (after["a"]["deploy_ref"], after["a"]["url"]) == ("v2", "http://127.0.0.1:9/a/v2")
    assert (after["b"]["region"], after["b"]["status"]) == ("us-east-1", "active")
    assert after["c"]["status"] == "deleted"
    actions = [(run[1], run[2]) for run in runs(project) if run[0] == "start"]
    assert actions.count(("b", "delete")) == 1 and actions.count(("b", "create")) == 2  # replace = teardown, create
    assert ("c", "delete") in actions and ("a", "update") in actions

    history = json.loads(run_cli(project, "history", "c", "-o", "json").stdout)
    kinds = [event["kind"] for event in history]
    assert kinds[:3] == ["queued", "started", "succeeded"] and kinds[-3:] == ["queued", "started", "succeeded"]
    assert history[0]["desired_commit"] and all(len(e["desired_commit"]) == 12 for e in history)
    assert run_cli(project, "apply", "--yes").stdout.startswith("No changes.")


def test_failure_is_reported_recorded_and_retried_later(project):
    write_resources(project, {"good": {}, "bad": {}})
    (project / "control" / "fail-bad").touch()
    done = run_cli(project, "apply", "--yes", "--retry-base", "3600")
    assert done.returncode == 1
    assert "bad: create failed: exited 3" in done.stderr and "boom for bad" in done.stderr
    assert "Apply complete: 1 succeeded, 1 failed." in done.stderr
    bad = json.loads(run_cli(project, "status", "bad", "-o", "json").stdout)
    assert (bad["status"], bad["attempts"], bad["error"]) == ("errored", 1, "exited 3")
    assert bad["next_attempt_at"] > bad["created_at"]
    plan = json.loads(run_cli(project, "plan", "-o", "json").stdout)
    assert plan["changes"] == [] and plan["waiting"][0]["resource_id"] == "bad"
    assert plan["waiting"][0]["reason"].startswith("retry 2 at")


def test_fixing_the_spec_of_an_errored_resource_retries_at_once(project):
    write_resources(project, {"bad": {}})
    (project / "control" / "fail-bad").touch()
    assert run_cli(project, "apply", "--yes").returncode == 1
    (project / "control" / "fail-bad").unlink()
    write_resources(project, {"bad": {"deploy_ref": "v2"}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert rows(project)["bad"]["status"] == "active"


SCRIPTS = {
    "hangs": ("sleep 300 & wait", "timed out after 1s"),
    "no-url": ("echo done", "exit 0 but printed no http(s):// URL"),
    "nonzero": ("echo oops >&2; exit 7", "exited 7"),
    "signal": ("kill -9 $$", "killed by signal SIGKILL"),
    "floods": ("head -c 10000000 /dev/zero | tr '\\0' x; echo; exit 4", "exited 4"),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_misbehaving_script_errors_the_resource_and_leaves_no_process(tmp_path, name):
    body, reason = SCRIPTS[name]
    project = make_project(tmp_path, provision=f"#!/usr/bin/env bash\necho marker-$RESOURCE_ID-{name}\n{body}\n")
    write_resources(project, {"r1": {}})
    started = time.monotonic()
    done = run_cli(project, "apply", "--yes", "--timeout", "1")
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    row = rows(project)["r1"]
    assert row["status"] == "errored" and reason in row["error"]
    assert _processes_of(project) == []


def _processes_of(project: Path) -> list[int]:
    """Pids whose environment names this project (every script and its children carry its work dir):
    this test's leftovers only, not those of tests running beside it on the same machine."""
    mark = str(project).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or a kernel thread
                continue
    return found


@pytest.mark.parametrize("problem", ["missing", "not-executable"])
def test_unrunnable_script_is_a_permanent_error_naming_the_path(project, problem):
    script = project / "provision" / "provision.sh"
    script.unlink() if problem == "missing" else script.chmod(0o644)
    write_resources(project, {"r1": {}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 1
    row = json.loads(run_cli(project, "status", "r1", "-o", "json").stdout)
    assert str(script) in row["error"]
    assert row["next_attempt_at"] > row["created_at"]


def test_without_terminal_and_without_yes_nothing_is_done(project):
    write_resources(project, {"a": {}})
    done = run_cli(project, "apply")
    assert done.returncode == 1 and "--yes" in done.stderr
    with sqlite3.connect(project / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert runs(project) == []


def test_mass_delete_is_refused_unless_allowed(project):
    write_resources(project, {"a": {}, "b": {}, "c": {}})
    assert run_cli(project, "apply", "--yes").returncode == 0
    write_resources(project, {})
    refused = run_cli(project, "apply", "--yes")
    assert refused.returncode == 1 and "delete every live resource" in refused.stdout
    assert {row["status"] for row in rows(project).values()} == {"active"}
    allowed = run_cli(project, "apply", "--yes", "--allow-mass-delete")
    assert allowed.returncode == 0, allowed.stderr
    assert {row["status"] for row in rows(project).values()} == {"deleted"}


def test_protected_resource_survives_removal_from_desired(project):
    write_resources(project, {"keep": {"protected": True}, "other": {}})
    assert run_cli(project, "apply", "--yes").returncode == 0
    write_resources(project, {"other": {}})
    plan = json.loads(run_cli(project, "plan", "-o", "json").stdout)
    assert plan["changes"] == [] and plan["kept"][0]["resource_id"] == "keep"
    assert run_cli(project, "apply", "--yes").returncode == 0
    assert rows(project)["keep"]["status"] == "active"
    assert not [run for run in runs(project) if run[1:3] == ["keep", "delete"]]


def test_target_limits_the_run(project):
    write_resources(project, {"a": {}, "b": {}})
    done = run_cli(project, "apply", "--yes", "--target", "b")
    assert done.returncode == 0, done.stderr
    assert set(rows(project)) == {"b"}


def test_two_applies_at_once_run_each_change_once(project):
    write_resources(project, {f"r{i:02d}": {} for i in range(20)})
    first = spawn_cli(project, "apply", "--yes", "--parallelism", "4", SLEEP="0.3")
    second = spawn_cli(project, "apply", "--yes", "--parallelism", "4", SLEEP="0.3")
    outputs = [proc.communicate(timeout=60) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    starts = [run[1] for run in runs(project) if run[0] == "start"]
    assert sorted(starts) == [f"r{i:02d}" for i in range(20)]
    assert not [run for run in runs(project) if run[0] == "OVERLAP"]
    assert {row["status"] for row in rows(project).values()} == {"active"}
