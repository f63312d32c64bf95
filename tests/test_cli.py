"""The command line through real subprocesses: messages, exit codes, and files it must not create."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reconciler.cli as cli
from reconciler.models import JobAction, JobRequest, JobResult, ResourceSpec, iso, spec_hash, utcnow
from reconciler.store import open_store

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


def test_validate_ok_and_creates_no_database(project: Path, run_cli) -> None:
    done = run_cli("validate", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "desired: 2 resources, valid.\n"
    assert not (project / "reconciler.db").exists()


def test_validate_bad_file(project: Path, run_cli) -> None:
    (project / "desired" / "c.yaml").write_text("resource_id: gamma\nowner: o\nregion: r\ndeploy_ref: 1.10\n")
    done = run_cli("validate", cwd=project)
    assert done.returncode == 1
    assert 'error: desired/c.yaml:4: deploy_ref: expected a string, got float 1.10; quote it: deploy_ref: "1.10"' \
        in done.stderr
    assert "Error: 1 problem in the desired state; nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (project / "reconciler.db").exists()


def test_validate_missing_directory(tmp_path: Path, run_cli) -> None:
    done = run_cli("--desired", "nowhere", "validate", cwd=tmp_path)
    assert done.returncode == 1 and "nowhere: desired directory does not exist" in done.stderr
    assert "Traceback" not in done.stderr


# --- plan and apply --dry-run ----------------------------------------------------------------------


def test_plan_and_apply_dry_run_print_the_same(project: Path, run_cli) -> None:
    plan, dry = run_cli("plan", cwd=project), run_cli("apply", "--dry-run", cwd=project)
    assert plan.returncode == dry.returncode == 0
    assert plan.stdout == dry.stdout
    assert "Plan: 2 to create, 0 to update, 0 to replace, 0 to delete." in plan.stdout


def test_plan_on_a_missing_database_does_not_create_it(project: Path, run_cli) -> None:
    done = run_cli("--db", "sub/state.db", "plan", cwd=project)
    assert done.returncode == 0, done.stderr
    assert not (project / "sub").exists() and not (project / "reconciler.db").exists()


def test_detailed_exitcode(project: Path, run_cli) -> None:
    changes = run_cli("plan", "--detailed-exitcode", cwd=project)
    assert changes.returncode == 2 and "2 to create" in changes.stdout
    apply_all(project)
    for args in (["plan"], ["apply", "--dry-run"]):
        done = run_cli(*args, "--detailed-exitcode", cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("No changes.")
    (project / "desired" / "b.yaml").write_text(FLEET["b.yaml"].replace("'2.0'", "'2.1'"))
    done = run_cli("apply", "--dry-run", "--detailed-exitcode", cwd=project)
    assert done.returncode == 2 and '~ deploy_ref = "2.0" -> "2.1"' in done.stdout


def test_refused_plan_exits_1(project: Path, run_cli) -> None:
    apply_all(project)
    for name in FLEET:
        (project / "desired" / name).unlink()
    refused = run_cli("plan", cwd=project)
    assert refused.returncode == 1 and "Refused: the plan would delete every live resource (2 of 2)" in refused.stdout
    allowed = run_cli("plan", "--allow-mass-delete", cwd=project)
    assert allowed.returncode == 0 and "0 to create, 0 to update, 0 to replace, 2 to delete." in allowed.stdout


def test_plan_json_parses(project: Path, run_cli) -> None:
    done = run_cli("plan", "--output", "json", cwd=project)
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["summary"]["create"] == 2
    assert sorted(c["resource_id"] for c in document["changes"]) == ["alpha", "beta"]


def test_target_narrows_the_plan(project: Path, run_cli) -> None:
    document = json.loads(run_cli("plan", "-o", "json", "--target", "beta", cwd=project).stdout)
    assert [c["resource_id"] for c in document["changes"]] == ["beta"]


def test_environment_variables_pick_directory_and_database(project: Path, run_cli, tmp_path: Path) -> None:
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
    valid = run_cli("validate", cwd=project, env=env)
    assert valid.returncode == 0 and "2 resources, valid." in valid.stdout
    document = json.loads(run_cli("plan", "-o", "json", cwd=project, env=env).stdout)
    assert document["waiting"] == [{"resource_id": "alpha", "reason": "a job is in progress", "hold": "in_progress"}]
    status = json.loads(run_cli("status", "-o", "json", cwd=project, env=env).stdout)
    assert [r["resource_id"] for r in status] == ["alpha"]


# --- status, history, schema ---------------------------------------------------------------------------


def test_status_json_has_the_seed_fields(project: Path, run_cli) -> None:
    apply_all(project)
    done = run_cli("status", "--output", "json", cwd=project)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and [r["resource_id"] for r in rows] == ["alpha", "beta"]
    for row in rows:
        assert set(SEED_FIELDS) <= row.keys()
        assert row["status"] == "active" and row["url"].startswith("http://127.0.0.1:1/")
    assert rows[1]["deploy_ref"] == "2.0" and rows[1]["runtime_target"] == "local"


def test_status_of_an_empty_fleet(tmp_path: Path, run_cli) -> None:
    done = run_cli("status", "-o", "json", cwd=tmp_path)
    assert (done.returncode, json.loads(done.stdout)) == (0, [])
    assert not (tmp_path / "reconciler.db").exists()


def test_status_and_history_of_one_resource(project: Path, run_cli) -> None:
    apply_all(project)
    one = json.loads(run_cli("status", "alpha", "-o", "json", cwd=project).stdout)
    assert one["resource_id"] == "alpha" and [e["kind"] for e in one["events"]] == ["queued", "succeeded", "url_changed"]
    history = run_cli("history", "alpha", cwd=project)
    assert history.returncode == 0 and "succeeded" in history.stdout


@pytest.mark.parametrize("command", ["status", "history"])
def test_unknown_resource_exits_1(project: Path, run_cli, command: str) -> None:
    apply_all(project)
    done = run_cli(command, "nope", cwd=project)
    assert done.returncode == 1
    assert "Error: no resource 'nope' in the observed state" in done.stderr and "Traceback" not in done.stderr


def test_schema(tmp_path: Path, run_cli) -> None:
    done = run_cli("schema", cwd=tmp_path)
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["$schema"].startswith("https://json-schema.org/")
    assert document["additionalProperties"] is False
    assert {"resource_id", "owner", "region", "runtime_target", "deploy_ref", "params", "protected"} <= set(
        document["properties"])
    assert {"resource_id", "owner", "region", "deploy_ref"} <= set(document["required"])


def test_bad_database_url_is_a_message(project: Path, run_cli) -> None:
    done = run_cli("--db", "mysql://localhost/x", "plan", cwd=project)
    assert done.returncode == 1 and "unsupported database URL scheme" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_postgres_is_a_message_without_the_password(project: Path, run_cli) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_cli("--db", f"postgresql://app:hunter2@127.0.0.1:{port}/x", "plan", cwd=project)
    assert done.returncode == 1 and "cannot use database postgresql://app:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


# --- help ----------------------------------------------------------------------------------------


def test_every_command_has_help_text() -> None:
    assert set(cli.main.commands) >= {"validate", "plan", "apply", "status", "history", "schema"}
    for name, command in cli.main.commands.items():
        assert (command.help or "").strip(), name


@pytest.mark.parametrize("command", sorted(cli.main.commands))
def test_help_for_every_command(tmp_path: Path, run_cli, command: str) -> None:
    done = run_cli(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Usage: reconciler {command}" in done.stdout
    assert cli.main.commands[command].help.splitlines()[0][:30] in done.stdout


def test_top_level_help(tmp_path: Path, run_cli) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0 and "RECONCILER_DESIRED" in done.stdout
    assert all(name in done.stdout for name in cli.main.commands)


def test_committed_schema_file_matches_the_model() -> None:
    """desired/*.yaml's modeline points editors at reconciler.schema.json: it must not go stale."""
    import json
    import subprocess
    from pathlib import Path

    from tests.support import reconciler_argv

    repo = Path(__file__).resolve().parents[1]
    printed = subprocess.run([*reconciler_argv(), "schema"], capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == json.loads((repo / "reconciler.schema.json").read_text())
