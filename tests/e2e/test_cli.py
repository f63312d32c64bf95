"""The command line through real subprocesses: messages, exit codes, and files it must not create."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler.cli as cli
from reconciler.models import JobAction, JobRequest, JobResult, ResourceSpec, iso, spec_hash, utcnow
from reconciler.store import open_store
from tests.support import ROOT, cli_env, run_cli

FLEET = {
    "a.yaml": "resource_id: alpha\nowner: acme\nregion: eu-west-1\ndeploy_ref: v1\nparams: {size: small}\n",
    "b.yaml": "resource_id: beta\nowner: globex\nregion: us-east-1\ndeploy_ref: '2.0'\n",
}
SEED_FIELDS = ["resource_id", "owner", "region", "runtime_target", "deploy_ref", "status", "url", "created_at",
               "last_seen"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    desired.mkdir()
    for name, text in FLEET.items():
        (desired / name).write_text(text)
    return tmp_path


def apply_all(project: Path) -> None:
    """Record every desired resource as successfully created, through the store's own API."""
    from reconciler.spec import load_desired

    store = open_store(url=str(project / "reconciler.db"))
    specs = load_desired(directory=project / "desired").resources.values()
    now = iso(utcnow())
    store.enqueue(requests=[JobRequest(s.resource_id, JobAction.CREATE, "test", s.model_dump(),
                                       target_hash=spec_hash(s)) for s in specs], now=now, commit=None)
    for job in store.claim(worker="t", now=now, lease_until="9999", limit=100):
        store.finish(job=job, worker="t", result=JobResult(True, 0, f"http://127.0.0.1:1/{job.resource_id}", None),
                     now=now)
    store.close()


# --- validate ------------------------------------------------------------------------------------


def test_validate_ok_and_creates_no_database(project: Path) -> None:
    done = run_cli(project, "validate", bare=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "desired: 2 resources, valid.\n"
    assert not (project / "reconciler.db").exists()


def test_validate_bad_file(project: Path) -> None:
    (project / "desired" / "c.yaml").write_text("resource_id: gamma\nowner: o\nregion: r\ndeploy_ref: 1.10\n")
    done = run_cli(project, "validate", bare=True)
    assert done.returncode == 1
    assert 'error: desired/c.yaml:4: deploy_ref: expected a string, got float 1.10; quote it: deploy_ref: "1.10"' \
        in done.stderr
    assert "Error: 1 problem in the desired state; nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (project / "reconciler.db").exists()


def test_validate_missing_directory(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--desired", "nowhere", "validate", bare=True)
    assert done.returncode == 1 and "nowhere: desired directory does not exist" in done.stderr
    assert "Traceback" not in done.stderr


# --- plan and apply --dry-run ----------------------------------------------------------------------


def test_plan_and_apply_dry_run_print_the_same(project: Path) -> None:
    plan, dry = run_cli(project, "plan", bare=True), run_cli(project, "apply", "--dry-run", bare=True)
    assert plan.returncode == dry.returncode == 0
    assert plan.stdout == dry.stdout
    assert "Plan: 2 to create, 0 to update, 0 to replace, 0 to delete." in plan.stdout


def test_plan_on_a_missing_database_does_not_create_it(project: Path) -> None:
    done = run_cli(project, "--db", "sub/state.db", "plan", bare=True)
    assert done.returncode == 0, done.stderr
    assert not (project / "sub").exists() and not (project / "reconciler.db").exists()


def test_detailed_exitcode(project: Path) -> None:
    changes = run_cli(project, "plan", "--detailed-exitcode", bare=True)
    assert changes.returncode == 2 and "2 to create" in changes.stdout
    apply_all(project)
    for args in (["plan"], ["apply", "--dry-run"]):
        done = run_cli(project, *args, "--detailed-exitcode", bare=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("No changes.")
    (project / "desired" / "b.yaml").write_text(FLEET["b.yaml"].replace("'2.0'", "'2.1'"))
    done = run_cli(project, "apply", "--dry-run", "--detailed-exitcode", bare=True)
    assert done.returncode == 2 and '~ deploy_ref = "2.0" -> "2.1"' in done.stdout


def test_refused_plan_exits_1(project: Path) -> None:
    apply_all(project)
    for name in FLEET:
        (project / "desired" / name).unlink()
    refused = run_cli(project, "plan", bare=True)
    assert refused.returncode == 1 and "Refused: the plan would delete every live resource (2 of 2)" in refused.stdout
    allowed = run_cli(project, "plan", "--allow-mass-delete", bare=True)
    assert allowed.returncode == 0 and "0 to create, 0 to update, 0 to replace, 2 to delete." in allowed.stdout


def test_plan_json_parses(project: Path) -> None:
    done = run_cli(project, "plan", "--output", "json", bare=True)
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["summary"]["create"] == 2
    assert sorted(c["resource_id"] for c in document["changes"]) == ["alpha", "beta"]


def test_target_narrows_the_plan(project: Path) -> None:
    document = json.loads(run_cli(project, "plan", "-o", "json", "--target", "beta", bare=True).stdout)
    assert [c["resource_id"] for c in document["changes"]] == ["beta"]


def test_environment_variables_pick_directory_and_database(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "desired").rename(elsewhere / "fleet")
    apply_all_db = elsewhere / "state.db"
    store = open_store(url=str(apply_all_db))
    spec = ResourceSpec(resource_id="alpha", owner="acme", region="eu-west-1", deploy_ref="v1", params={"size": "small"})
    store.enqueue(requests=[JobRequest("alpha", JobAction.CREATE, "t", spec.model_dump(), target_hash=spec_hash(spec))],
                  now=iso(utcnow()), commit=None)
    store.close()
    env = {"RECONCILER_DESIRED": str(elsewhere / "fleet"), "RECONCILER_DB": f"sqlite:///{apply_all_db}"}
    valid = run_cli(project, "validate", bare=True, **env)
    assert valid.returncode == 0 and "2 resources, valid." in valid.stdout
    document = json.loads(run_cli(project, "plan", "-o", "json", bare=True, **env).stdout)
    assert document["waiting"] == [{"resource_id": "alpha", "reason": "a job is in progress", "reason_code": "in_flight",
                                  "hold": "in_progress"}]
    status = json.loads(run_cli(project, "status", "-o", "json", bare=True, **env).stdout)
    assert [r["resource_id"] for r in status] == ["alpha"]


# --- status, history, schema ---------------------------------------------------------------------------


def test_status_json_has_the_seed_fields(project: Path) -> None:
    apply_all(project)
    done = run_cli(project, "status", "--output", "json", bare=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and [r["resource_id"] for r in rows] == ["alpha", "beta"]
    for row in rows:
        assert set(SEED_FIELDS) <= row.keys()
        assert row["status"] == "active" and row["url"].startswith("http://127.0.0.1:1/")
    assert rows[1]["deploy_ref"] == "2.0" and rows[1]["runtime_target"] == "local"


def test_status_of_an_empty_fleet(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "status", "-o", "json", bare=True)
    assert (done.returncode, json.loads(done.stdout)) == (0, [])
    assert not (tmp_path / "reconciler.db").exists()


def test_status_and_history_of_one_resource(project: Path) -> None:
    apply_all(project)
    one = json.loads(run_cli(project, "status", "alpha", "-o", "json", bare=True).stdout)
    assert one["resource_id"] == "alpha" and [e["kind"] for e in one["events"]] == ["queued", "succeeded", "url_changed"]
    history = run_cli(project, "history", "alpha", bare=True)
    assert history.returncode == 0 and "succeeded" in history.stdout


@pytest.mark.parametrize("command", ["status", "history"])
def test_unknown_resource_exits_1(project: Path, command: str) -> None:
    apply_all(project)
    done = run_cli(project, command, "nope", bare=True)
    assert done.returncode == 1
    assert "Error: no resource 'nope' in the observed state" in done.stderr and "Traceback" not in done.stderr


def test_schema(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "schema", bare=True)
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["$schema"].startswith("https://json-schema.org/")
    assert document["additionalProperties"] is False
    assert {"resource_id", "owner", "region", "runtime_target", "deploy_ref", "params", "protected"} <= set(
        document["properties"])
    assert {"resource_id", "owner", "region", "deploy_ref"} <= set(document["required"])


def test_bad_database_url_is_a_message(project: Path) -> None:
    done = run_cli(project, "--db", "mysql://localhost/x", "plan", bare=True)
    assert done.returncode == 1 and "unsupported database URL scheme" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_postgres_is_a_message_without_the_password(project: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_cli(project, "--db", f"postgresql://app:hunter2@127.0.0.1:{port}/x", "plan", bare=True)
    assert done.returncode == 1 and "cannot use database postgresql://app:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


# --- help ----------------------------------------------------------------------------------------


def test_every_command_has_help_text() -> None:
    assert set(cli.main.commands) >= {"validate", "plan", "apply", "status", "history", "schema"}
    for name, command in cli.main.commands.items():
        assert (command.help or "").strip(), name


@pytest.mark.parametrize("command", sorted(cli.main.commands))
def test_help_for_every_command(tmp_path: Path, command: str) -> None:
    done = run_cli(tmp_path, command, "--help", bare=True)
    assert done.returncode == 0, done.stderr
    assert f"Usage: reconciler {command}" in done.stdout
    assert cli.main.commands[command].help.splitlines()[0][:30] in done.stdout
    # every command shows an example of itself, and the settings it also takes after its name
    assert f"Example:\n    reconciler {command}" in done.stdout
    # policy, rollout: groups, its subcommands take the settings; token: makes a token, reads no settings
    if command not in ("schema", "version", "policy", "token", "rollout"):
        assert "--desired" in done.stdout and "--db" in done.stdout


@pytest.mark.parametrize("verb", ["status", "pause", "resume", "abort", "promote"])
def test_help_for_the_rollout_verbs(tmp_path: Path, verb: str) -> None:
    done = run_cli(tmp_path, "rollout", verb, "--help", bare=True)
    assert done.returncode == 0 and f"Example:\n    reconciler rollout {verb}" in done.stdout
    assert "--desired" in done.stdout and "--db" in done.stdout


def test_help_for_policy_check(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "policy", "check", "--help", bare=True)
    assert done.returncode == 0 and "Example:\n    reconciler policy check" in done.stdout
    assert "--policy" in done.stdout and "--desired" in done.stdout


# --- settings before or after the subcommand, version, check's spellings (issue 14) ---------------


def test_settings_after_the_subcommand(project: Path, tmp_path: Path) -> None:
    """`reconciler plan --desired ./desired`, as kubectl and helm users type it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli(elsewhere, "validate", "--desired", str(project / "desired"), bare=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{project / 'desired'}: 2 resources, valid.\n"
    db = tmp_path / "after.db"
    plan = run_cli(elsewhere, "plan", "-o", "json", "--desired", str(project / "desired"), "--db", str(db), bare=True)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["summary"]["create"] == 2 and not db.exists()


@pytest.mark.parametrize("where", ["flag", "env"])
def test_the_setting_after_the_subcommand_wins(project: Path, where: str) -> None:
    before = ["--desired", "nowhere"] if where == "flag" else []
    env = {"RECONCILER_DESIRED": "nowhere"} if where == "env" else {}
    done = run_cli(project, *before, "validate", "--desired", "desired", bare=True, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "desired: 2 resources, valid.\n"
    # and without the one after, the one before (or the environment) is used
    assert "nowhere" in run_cli(project, *before, "validate", bare=True, **env).stderr


def test_the_database_after_the_subcommand(project: Path) -> None:
    apply_all(project)
    moved = project / "moved.db"
    (project / "reconciler.db").rename(moved)
    done = run_cli(project, "--db", "missing.db", "status", "-o", "json", "--db", str(moved), bare=True)
    assert done.returncode == 0, done.stderr
    assert [row["resource_id"] for row in json.loads(done.stdout)] == ["alpha", "beta"]


def test_work_dir_given_after_the_subcommand_is_absolute_too(tmp_path: Path) -> None:
    settings = cli.Settings(desired=Path("d"), db="x.db", provision=Path("p"), work_dir=(tmp_path / "w"))
    given = settings.given(desired=None, db="y.db", provision=None, work_dir=Path("rel"))
    assert (given.desired, given.db, given.work_dir) == (Path("d"), "y.db", Path("rel").absolute())


def test_version_command_matches_the_flag(tmp_path: Path) -> None:
    flag, command = run_cli(tmp_path, "--version", bare=True), run_cli(tmp_path, "version", bare=True)
    assert flag.returncode == command.returncode == 0
    assert command.stdout == flag.stdout and command.stdout.startswith("reconciler, version ")


def test_check_spells_its_options_as_the_daemon_does(tmp_path: Path) -> None:
    shown = run_cli(tmp_path, "check", "--help", bare=True).stdout
    assert "--check-timeout" in shown and "--check-concurrency" in shown
    assert "--timeout" not in shown.replace("--check-timeout", "")  # the old spelling works, hidden
    daemon = run_cli(tmp_path, "daemon", "--help", bare=True).stdout
    assert "--check-timeout" in daemon and "--check-concurrency" in daemon


@pytest.fixture
def slow_url():
    """A real HTTP server on 127.0.0.1 that answers 200 after 1.5 s."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            time.sleep(1.5)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.parametrize(("flags", "healthy"), [
    ((), True),  # 5 s by default: the slow answer counts
    (("--check-timeout", "0.3"), False),
    (("--timeout", "0.3"), False),  # the hidden alias of check's first spelling
    (("--timeout", "0.3", "--check-timeout", "30"), True),  # given both, the new spelling wins
])
def test_check_timeout_and_its_hidden_alias(project: Path, slow_url: str, flags, healthy: bool) -> None:
    store = open_store(url=str(project / "reconciler.db"))
    spec = ResourceSpec(resource_id="alpha", owner="acme", region="eu-west-1", deploy_ref="v1")
    now = iso(utcnow())
    store.enqueue(requests=[JobRequest("alpha", JobAction.CREATE, "t", spec.model_dump(), target_hash=spec_hash(spec))],
                  now=now, commit=None)
    (job,) = store.claim(worker="t", now=now, lease_until="9999", limit=1)
    store.finish(job=job, worker="t", result=JobResult(True, 0, slow_url, None), now=now)
    store.close()
    done = run_cli(project, "check", *flags, bare=True)
    assert (done.returncode, "1 healthy" in done.stdout) == ((0, True) if healthy else (1, False)), done.stdout
    if not healthy:
        assert "timed out" in done.stdout


def test_top_level_help(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--help", bare=True)
    assert done.returncode == 0 and "RECONCILER_DESIRED" in done.stdout
    assert all(name in done.stdout for name in cli.main.commands)


def test_committed_schema_file_matches_the_model() -> None:
    """desired/*.yaml's modeline points editors at reconciler.schema.json: it must not go stale."""
    import json
    import subprocess

    from tests.support import reconciler_argv

    repo = ROOT
    printed = subprocess.run([*reconciler_argv(), "schema"], capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == json.loads((repo / "reconciler.schema.json").read_text())


# --- colour (from test_render.py, whose other tests are in the unit tier: this one runs the CLI) ----------


def _cli_on_a_tty(cwd: Path, *args: str, env: dict[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal (where colour would be on) and return what it wrote."""
    main, secondary = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args], cwd=cwd, env=cli_env(**env),
                              stdout=secondary, stderr=subprocess.PIPE, timeout=60, check=False)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
    assert done.returncode == 0, done.stderr
    return b"".join(chunks).decode()


def test_cli_colours_a_tty_unless_no_color(tmp_path: Path) -> None:
    (tmp_path / "desired").mkdir()
    (tmp_path / "desired" / "a.yaml").write_text("resource_id: a\nowner: o\nregion: r\ndeploy_ref: v1\n")
    coloured = _cli_on_a_tty(tmp_path, "plan", env={})
    plain = _cli_on_a_tty(tmp_path, "plan", env={"NO_COLOR": "1"})
    assert "\x1b[" in coloured
    assert "\x1b" not in plain and "Plan: 1 to create" in plain
