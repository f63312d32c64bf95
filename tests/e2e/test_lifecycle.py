"""Issue 16's operator commands through the real CLI, real scripts and a real daemon: replace, forget,
adopt (one, a fleet from a file, bad files), and observe.sh's adopt-or-create. The script ledger
(control/runs.log) shows which scripts ran."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import pytest

from tests.e2e.test_api import start_api_daemon
from tests.support import db_rows, make_project, run_cli, runs, start_daemon, statuses, wait_for, write_resources


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"acme": {}, "beta": {}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    (project / "control" / "runs.log").unlink()
    return project


def ledger(project) -> list[tuple[str, str]]:
    return [(line[1], line[2]) for line in runs(project) if line[0] == "start"]


def kinds(project, resource_id: str) -> list[str]:
    return [row["kind"] for row in db_rows(project, "SELECT kind FROM events WHERE resource_id = ? ORDER BY id",
                                           resource_id)]


def test_replace_runs_teardown_then_provision_once_and_plan_shows_it(project) -> None:
    shown = run_cli(project, "plan", "--replace", "acme")
    assert shown.returncode == 0 and "-/+ resource \"acme\"" in shown.stdout and "(replace requested)" in shown.stdout
    assert ledger(project) == []  # plan runs nothing
    done = run_cli(project, "replace", "acme", "--reason", "rotated its credential", "--yes")
    assert done.returncode == 0, done.stderr
    assert "(replace requested: rotated its credential)" in done.stdout
    assert ledger(project) == [("acme", "delete"), ("acme", "create")]
    assert statuses(project) == {"acme": "active", "beta": "active"}
    (job,) = db_rows(project, "SELECT action, actor FROM jobs WHERE resource_id = 'acme' AND action = 'replace'")
    assert job["actor"].startswith("cli:")  # the operator who asked, not the files' git actor
    (queued,) = db_rows(project, "SELECT message FROM events WHERE kind = 'queued' AND message LIKE 'replace%'")
    assert queued["message"] == "replace queued: replace requested: rotated its credential"
    again = run_cli(project, "apply", "--yes", "--replace", "beta", "--replace", "acme")
    assert again.returncode == 0, again.stderr
    assert sorted(ledger(project)[2:]) == [("acme", "create"), ("acme", "delete"), ("beta", "create"),
                                           ("beta", "delete")]


def test_replace_of_an_unknown_or_undeclared_id_is_an_error(project) -> None:
    unknown = run_cli(project, "replace", "nope", "--yes")
    assert unknown.returncode == 1 and "Error: --replace nope: not declared" in unknown.stderr
    assert ledger(project) == []


def test_forget_leaves_the_resource_running_and_the_row_forgotten_with_history(project) -> None:
    write_resources(project, {"beta": {}})  # acme undeclared
    refused = run_cli(project, "forget", "acme", "--reason", "to team X")  # no terminal, no --yes
    assert refused.returncode == 1 and "without confirmation" in refused.stderr
    assert statuses(project)["acme"] == "active"
    done = run_cli(project, "forget", "acme", "--reason", "to team X", "--yes")
    assert done.returncode == 0, done.stderr
    assert statuses(project)["acme"] == "forgotten"
    assert kinds(project, "acme")[-1] == "forgotten" and "queued" in kinds(project, "acme")
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert ledger(project) == []  # never torn down
    history = run_cli(project, "history", "acme")
    assert "forgotten by cli:" in history.stdout and "to team X" in history.stdout
    (event,) = db_rows(project, "SELECT actor, details_json FROM events WHERE kind = 'forgotten'")
    assert event["actor"].startswith("cli:") and json.loads(event["details_json"]) == {"reason": "to team X"}


def test_forget_of_a_declared_id_needs_force_then_stays_unmanaged_until_undeclared(project) -> None:
    refused = run_cli(project, "forget", "beta", "--reason", "r", "--yes")
    assert refused.returncode == 1 and "still declared" in refused.stderr and "--force" in refused.stderr
    done = run_cli(project, "forget", "beta", "--reason", "r", "--yes", "--force")
    assert done.returncode == 0, done.stderr
    shown = run_cli(project, "plan", "-o", "json")
    kept = json.loads(shown.stdout)["kept"]
    assert [(k["resource_id"], k["reason_code"], k["hold"]) for k in kept] == [("beta", "unmanaged", "unmanaged")]
    assert run_cli(project, "apply", "--yes").returncode == 0
    assert ledger(project) == [] and statuses(project)["beta"] == "forgotten"
    write_resources(project, {"acme": {}})  # undeclared: released
    assert run_cli(project, "apply", "--yes").returncode == 0
    write_resources(project, {"acme": {}, "beta": {}})  # declared again: a normal create
    assert run_cli(project, "apply", "--yes").returncode == 0
    assert ledger(project) == [("beta", "create")] and statuses(project)["beta"] == "active"


def test_forget_is_refused_while_a_job_is_open(project) -> None:
    with sqlite3.connect(project / "state.db") as conn:
        conn.execute("INSERT INTO jobs (job_id, resource_id, action, status, created_at) VALUES"
                     " ('job-x', 'acme', 'update', 'queued', '2026-01-01T00:00:00.000000Z')")
    write_resources(project, {"beta": {}})
    refused = run_cli(project, "forget", "acme", "--reason", "r", "--yes")
    assert refused.returncode == 1 and "a job is open" in refused.stderr
    assert statuses(project)["acme"] == "active"


def test_adopt_one_records_it_active_without_running_provision(tmp_path) -> None:
    project = make_project(tmp_path)
    write_resources(project, {"gamma": {}})
    done = run_cli(project, "adopt", "gamma", "--url", "http://127.0.0.1:9/gamma", "--reason", "hand-made")
    assert done.returncode == 0, done.stderr
    (row,) = db_rows(project)
    assert (row["status"], row["url"], row["health"], row["generation"]) == (
        "active", "http://127.0.0.1:9/gamma", "unknown", 1)
    assert ledger(project) == []
    assert "No changes." in run_cli(project, "plan").stdout
    again = run_cli(project, "adopt", "gamma", "--url", "http://127.0.0.1:9/gamma")
    assert again.returncode == 1 and "already managed" in again.stderr


def test_adopt_a_fleet_of_1000_from_csv_in_one_transaction_with_dry_run_first(tmp_path) -> None:
    project = make_project(tmp_path)
    write_resources(project, {f"t-{i:04d}": {} for i in range(1000)})
    rows = "".join(f"t-{i:04d},http://10.1.{i // 250}.{i % 250}/,2020-01-01T00:00:00Z,acme\n" for i in range(1000))
    (project / "fleet.csv").write_text("resource_id,url,created_at,owner\n" + rows)
    dry = run_cli(project, "adopt", "--from", "fleet.csv", "--dry-run")
    assert dry.returncode == 0 and "Would adopt 1000 resources" in dry.stdout
    assert not (project / "state.db").exists()  # a dry run does not even create the database
    done = run_cli(project, "adopt", "--from", "fleet.csv")
    assert done.returncode == 0 and "Adopted 1000 resources" in done.stdout
    assert set(statuses(project).values()) == {"active"} and len(statuses(project)) == 1000
    assert {row["at"] for row in db_rows(project, "SELECT at FROM events WHERE kind = 'adopted'")}.__len__() == 1
    assert "No changes." in run_cli(project, "plan").stdout and ledger(project) == []


def test_a_file_with_bad_rows_adopts_nothing_and_lists_every_bad_row(project) -> None:
    write_resources(project, {"acme": {}, "beta": {}, **{f"n-{i}": {} for i in range(5)}})
    (project / "fleet.csv").write_text(
        "resource_id,url,deploy_ref\n"
        "n-0,http://n0/,v1\n"          # 2 good
        "ghost,http://g/,v1\n"         # 3 not declared
        "acme,http://a/,v1\n"          # 4 already managed
        "n-1,http://n1/,v9\n"          # 5 differs
        "n-2,not-a-url,v1\n"           # 6 bad url
        "n-3,http://n3/\x07,v1\n")     # 7 control character
    done = run_cli(project, "adopt", "--from", "fleet.csv")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[1] for line in errors] == [f"fleet.csv:{n}" for n in range(3, 8)]
    assert "Error: 5 bad rows; nothing was adopted" in done.stderr
    assert "n-0" not in statuses(project)
    before = db_rows(project, "SELECT count(*) AS n FROM events")
    (project / "good.csv").write_text("resource_id,url\nn-0,http://n0/\n")
    dry = run_cli(project, "adopt", "--from", "good.csv", "--dry-run")
    assert dry.returncode == 0 and "+ n-0 http://n0/" in dry.stdout and "Would adopt 1 resource " in dry.stdout
    assert "n-0" not in statuses(project) and db_rows(project, "SELECT count(*) AS n FROM events") == before


OBSERVE = textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "observe $RESOURCE_ID $RECONCILER_ACTION" >> "$CONTROL/runs.log"
    if [ -f "$CONTROL/broken-$RESOURCE_ID" ]; then echo "cannot ask the cloud" >&2; exit 7; fi
    if [ -f "$CONTROL/exists-$RESOURCE_ID" ]; then echo "found at http://127.0.0.1:9/found/$RESOURCE_ID"; exit 0; fi
    exit 3
""")


def test_observe_sh_adopts_an_existing_resource_creates_a_missing_one_and_fails_otherwise(tmp_path) -> None:
    project = make_project(tmp_path)
    target = project / "provision" / "cloud"
    target.mkdir()
    (target / "observe.sh").write_text(OBSERVE)
    (target / "observe.sh").chmod(0o755)
    (target / "provision.sh").symlink_to(project / "provision" / "provision.sh")
    write_resources(project, {"there": {"runtime_target": "cloud"}, "absent": {"runtime_target": "cloud"},
                              "broken": {"runtime_target": "cloud"}, "plain": {}})
    (project / "control" / "exists-there").touch()
    (project / "control" / "broken-broken").touch()
    shown = run_cli(project, "plan")
    assert shown.stdout.count("will be created (or adopted)") == 3 and "plain will be created (" in shown.stdout
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 1  # the broken observe fails its job
    assert sorted(line[:2] for line in runs(project) if line[0] in ("observe", "start")) == [
        ["observe", "absent"], ["observe", "broken"], ["observe", "there"],
        ["start", "absent"], ["start", "plain"]]
    assert {line[2] for line in runs(project) if line[0] == "observe"} == {"observe"}
    rows = {row["resource_id"]: row for row in db_rows(project)}
    assert (rows["there"]["status"], rows["there"]["url"]) == ("active", "http://127.0.0.1:9/found/there")
    assert "adopted" in kinds(project, "there") and "succeeded" not in kinds(project, "there")
    assert (rows["absent"]["status"], rows["plain"]["status"]) == ("active", "active")
    assert rows["broken"]["status"] == "errored" and "observe.sh: exited 7" in rows["broken"]["error"]


def test_api_replace(project, daemons) -> None:
    _, client = start_api_daemon(project, daemons)
    assert client.call("POST", "/provisions/nope/replace")[0] == 404
    status, body = client.call("POST", "/provisions/acme/replace")
    assert status == 202 and body["job_id"].startswith("job-"), body
    job = wait_for(lambda: (lambda j: j if j["status"] == "succeeded" else None)(
        client.call("GET", f"/provisions/jobs/{body['job_id']}")[1]), what="the replace to succeed")
    assert job["action"] == "replace"
    assert ledger(project) == [("acme", "delete"), ("acme", "create")]
    queued = db_rows(project, "SELECT actor FROM events WHERE job_id = ? AND kind = 'queued'", body["job_id"])
    assert queued == [{"actor": "api:local"}]


def test_adopt_check_health_checks_the_adopted_url_once(tmp_path) -> None:
    project = make_project(tmp_path)
    write_resources(project, {"gamma": {}})
    done = run_cli(project, "adopt", "gamma", "--url", "http://127.0.0.1:9/gamma", "--check", "--check-timeout", "1")
    assert done.returncode == 1 and "Checked 1: 0 healthy, 1 failed." in done.stdout, done.stdout + done.stderr
    (row,) = db_rows(project)
    assert (row["status"], row["consecutive_failures"]) == ("active", 1) and row["last_check_at"]


def test_api_replace_needs_a_write_scope_for_the_resources_owner(project, daemons) -> None:
    from tests.e2e.test_api import Client, free_port
    from tests.e2e.test_api_tokens import create_token

    tokens = {name: create_token(project, name, scope) for name, scope in
              (("team-acme", "write:owner=acme"), ("team-beta", "write:owner=beta"))}
    (project / "tokens.yaml").write_text("".join(entry for _, entry in tokens.values()))
    port = free_port()
    daemons.append(start_daemon(project, "--api", f"127.0.0.1:{port}", "--api-tokens", str(project / "tokens.yaml")))
    client = Client(f"http://127.0.0.1:{port}")
    wait_for(lambda: _answers(client), what="the API to answer")
    status, body = client.call("POST", "/provisions/acme/replace", token=tokens["team-beta"][0])
    assert status == 403 and "write:owner=acme" in body["detail"], body
    status, body = client.call("POST", "/provisions/acme/replace", token=tokens["team-acme"][0])
    assert status == 202, body
    wait_for(lambda: ("acme", "create") in ledger(project), what="the replace to provision again")
    (job,) = db_rows(project, "SELECT actor FROM jobs WHERE job_id = ?", body["job_id"])
    assert job["actor"] == "api:team-acme"


def _answers(client) -> bool:
    try:
        return client.call("GET", "/health")[0] == 200
    except OSError:
        return False
