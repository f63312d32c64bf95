"""Issue 11, item 17: exit codes, JSON fatal errors, an absolute work dir, honest plan summaries, and
the `local` target tearing down only its own server. Real CLI processes, real stores, real scripts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.runner import process_alive

from reconciler.models import JobAction, JobRequest, JobResult, ResourceSpec, iso, spec_hash, utcnow
from reconciler.store import open_store
from tests.support import ROOT, cli_env, make_project, reconciler_argv, run_cli, wait_for, write_resources

REPO = ROOT


def _record(project: Path, *, rid: str, ok: bool, url: str | None = None, retry_in: float | None = None,
            protected: bool = False) -> None:
    """One resource through the store's own API: created, then recorded as succeeded or failed."""
    spec = ResourceSpec(resource_id=rid, owner="acme", region="eu-west-1", runtime_target="local",
                        deploy_ref="v1", protected=protected)
    store = open_store(url=str(project / "state.db"))
    now = utcnow()
    store.enqueue(requests=[JobRequest(rid, JobAction.CREATE, "test", spec.model_dump(), target_hash=spec_hash(spec))],
                  now=iso(now), commit=None)
    (job,) = store.claim(worker="t", now=iso(now), lease_until="9999", limit=1)
    later = iso(now + timedelta(seconds=retry_in)) if retry_in is not None else None
    result = JobResult(True, 0, url, None) if ok else JobResult(False, 3, None, "boom", next_attempt_at=later)
    store.finish(job=job, worker="t", result=result, now=iso(now))
    store.close()


# --- usage errors exit 1, not 2 (2 is "changes present" under --detailed-exitcode) ---------------


@pytest.mark.parametrize("args", [("plan", "--no-such-flag"), ("history",), ("nonsense",),
                                  ("plan", "--output", "yaml")])
def test_a_usage_error_exits_1(tmp_path, args):
    make_project(tmp_path)
    done = run_cli(tmp_path, *args)
    assert done.returncode == 1, done.stderr
    assert "Error:" in done.stderr and "Traceback" not in done.stderr


def test_help_and_version_still_exit_0(tmp_path):
    make_project(tmp_path)
    assert run_cli(tmp_path, "--help").returncode == 0
    assert run_cli(tmp_path, "--version").returncode == 0
    assert run_cli(tmp_path, "plan", "--help").returncode == 0


# --- fatal errors are JSON lines when the logs are ------------------------------------------------


def _all_json(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines, "expected some output on stderr"
    return [json.loads(line) for line in lines]


def test_a_daemon_that_cannot_start_says_why_in_json(tmp_path):
    """stderr is a pipe (as under journald): logs are JSON, so the fatal error is a JSON line too."""
    make_project(tmp_path)
    env = cli_env(tmp_path)
    env.pop("RECONCILER_LOG_FORMAT", None)
    done = subprocess.run([*reconciler_argv(), "daemon", "--api", "192.0.2.1:80"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    events = _all_json(done.stderr)
    assert events[-1]["level"] == "error" and "without --api-token-file" in events[-1]["error"]


def test_a_usage_error_is_json_when_the_log_format_is(tmp_path):
    make_project(tmp_path)
    done = run_cli(tmp_path, "daemon", "--resync", "often", RECONCILER_LOG_FORMAT="json")
    assert done.returncode == 1
    assert "--resync" in _all_json(done.stderr)[-1]["error"]


def test_desired_state_problems_are_json_lines_when_the_log_format_is(tmp_path):
    make_project(tmp_path)
    (tmp_path / "desired" / "bad.yaml").write_text("resource_id: x\nowner: [unclosed\n")
    done = run_cli(tmp_path, "validate", RECONCILER_LOG_FORMAT="json")
    assert done.returncode == 1
    events = _all_json(done.stderr)
    assert events[0]["file"].endswith("bad.yaml") and events[0]["line"] == 2  # the unclosed bracket's line, not one past the end
    assert "nothing was changed" in events[-1]["error"]


# --- RECONCILER_WORKDIR is absolute with the default relative --work-dir ----------------------------


WHERE_AM_I = textwrap.dedent("""\
    #!/usr/bin/env bash
    printf '%s\\n' "$RECONCILER_WORKDIR" > "$CONTROL/workdir-$RESOURCE_ID"
    pwd -P > "$CONTROL/pwd-$RESOURCE_ID"
    mkdir -p "$RECONCILER_WORKDIR/state" && touch "$RECONCILER_WORKDIR/state/marker"
    echo "http://127.0.0.1:9/$RESOURCE_ID"
""")


def test_the_default_relative_work_dir_reaches_scripts_as_an_absolute_path(tmp_path):
    project = make_project(tmp_path, provision=WHERE_AM_I)
    write_resources(project, {"a": {}})
    env = cli_env(project)
    env.pop("RECONCILER_WORK_DIR")  # the default, .reconciler/work, relative to the current directory
    done = subprocess.run([*reconciler_argv(), "apply", "--yes"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    expected = (project / ".reconciler" / "work" / "a").resolve()
    workdir = (project / "control" / "workdir-a").read_text().strip()
    assert Path(workdir).is_absolute() and Path(workdir).resolve() == expected
    assert (project / "control" / "pwd-a").read_text().strip() == str(expected)
    assert (expected / "state" / "marker").exists()  # not nested twice under the work dir


# --- check exits 1 when a check of this run failed ---------------------------------------------------


def test_check_exits_1_when_any_check_failed_before_the_resource_turns_unhealthy(tmp_path):
    make_project(tmp_path)
    _record(tmp_path, rid="web", ok=True, url="http://127.0.0.1:1/web")  # port 1: connection refused
    done = run_cli(tmp_path, "check")  # unhealthy after 3 failures: this first one turns nothing unhealthy
    assert done.returncode == 1, done.stdout
    assert "✗ web:" in done.stdout and "0 turned unhealthy" in done.stdout


def test_check_of_nothing_exits_0(tmp_path):
    make_project(tmp_path)
    _record(tmp_path, rid="web", ok=True, url=None)
    done = run_cli(tmp_path, "check")
    assert done.returncode == 0 and "Checked 0" in done.stdout


# --- plan says what is pending instead of "matches" --------------------------------------------------


def test_plan_with_a_retry_pending_says_so_and_detailed_exitcode_is_2(tmp_path):
    make_project(tmp_path)
    write_resources(tmp_path, {"a": {}, "b": {}, "c": {}})
    _record(tmp_path, rid="a", ok=False, retry_in=3600)
    _record(tmp_path, rid="b", ok=False, retry_in=600)
    _record(tmp_path, rid="c", ok=True, url="http://127.0.0.1:9/c")
    done = run_cli(tmp_path, "plan", "--detailed-exitcode")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Observed state matches" not in done.stdout
    assert "No changes to make now; 2 resources wait for a retry (next at " in done.stdout
    data = json.loads(run_cli(tmp_path, "plan", "-o", "json").stdout)
    assert {entry["hold"] for entry in data["waiting"]} == {"retry"}


def test_plan_with_only_a_protected_resource_kept_exits_0_but_says_so(tmp_path):
    make_project(tmp_path)
    _record(tmp_path, rid="keep", ok=True, url="http://127.0.0.1:9/keep", protected=True)  # no longer declared
    done = run_cli(tmp_path, "plan", "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Observed state matches" not in done.stdout
    assert "1 protected resource kept" in done.stdout


def test_plan_of_a_converged_fleet_still_says_it_matches(tmp_path):
    make_project(tmp_path)
    write_resources(tmp_path, {"c": {}})
    _record(tmp_path, rid="c", ok=True, url="http://127.0.0.1:9/c")
    done = run_cli(tmp_path, "plan", "--detailed-exitcode")
    assert done.returncode == 0 and "No changes. Observed state matches desired/." in done.stdout


# --- the local target's teardown stops only its own server ------------------------------------------


def _local_script(name: str, *, workdir: Path, rid: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RESOURCE_ID": rid, "DEPLOY_REF": "v1", "RECONCILER_WORKDIR": str(workdir)}
    return subprocess.run(["bash", str(REPO / "provision" / name)], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _alive(pid: int) -> bool:
    return process_alive(pid=pid)  # the product's own check: exists and is not a zombie


def test_tearing_down_a_never_stops_the_server_of_ab(tmp_path):
    """Resource a's pid file names a pid now reused by ab's server (state dir …/ab, of which …/a is a prefix)."""
    work = tmp_path / "work"
    started = _local_script("provision.sh", workdir=work / "ab", rid="ab")
    assert started.returncode == 0, started.stderr
    ab_pid = int((work / "ab" / "server.pid").read_text())
    try:
        (work / "a").mkdir(parents=True)
        (work / "a" / "server.pid").write_text(f"{ab_pid}\n")
        torn = _local_script("teardown.sh", workdir=work / "a", rid="a")
        assert torn.returncode == 0, torn.stderr
        assert _alive(ab_pid), "tearing down a stopped ab's server"
        assert _local_script("teardown.sh", workdir=work / "ab", rid="ab").returncode == 0
        wait_for(lambda: not _alive(ab_pid), what="ab's own teardown to stop its server")
    finally:
        if _alive(ab_pid):
            os.kill(ab_pid, signal.SIGKILL)
