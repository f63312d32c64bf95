"""Issue 15, point 4: every event says who caused it, through the real CLI and a real daemon with its API.

The CLI test works in a real git checkout (commit and author, an uncommitted edit, a destroy, `audit`
with its filters, `audit prune` with its archive and refusals, a restore recording itself); the daemon
tests see the API's actor (token-less and with the single token) and the daemon's own (retry, drift)."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess

import pytest

from tests.e2e.test_api import start_api_daemon
from tests.support import make_project, run_cli, wait_for, write_resources

ME = f"cli:{getpass.getuser()}@{socket.gethostname()}"
DAEMON = f"daemon:{socket.gethostname()}"


def git(project, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="Ada Lovelace", GIT_AUTHOR_EMAIL="ada@example.com", GIT_COMMITTER_NAME="ci",
               GIT_COMMITTER_EMAIL="ci@example.com", HOME=str(project))
    return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def audit(project, *args: str) -> list[dict]:
    done = run_cli(project, "audit", "-o", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_cli_runs_record_the_commit_author_dirty_edits_the_user_and_prune_to_an_archive(tmp_path):
    project = make_project(tmp_path / "p")
    write_resources(project, {"a": {}, "b": {"owner": "beta"}})
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "desired")
    git(project, "commit", "-q", "-m", "fleet")
    head = f"git:{git(project, 'rev-parse', '--short=12', 'HEAD')} Ada Lovelace <ada@example.com>"

    assert run_cli(project, "apply", "--yes").returncode == 0
    queued = [e for e in audit(project, "--owner", "acme") if e["kind"] == "queued"]
    assert [(e["resource_id"], e["actor"], e["details"]) for e in queued] == [("a", head, {"by": ME})]
    assert f"queued       {head}  create queued" in run_cli(project, "history", "a").stdout

    write_resources(project, {"a": {"deploy_ref": "v2"}, "b": {"owner": "beta"}})  # not committed
    assert run_cli(project, "apply", "--yes").returncode == 0
    assert {e["actor"] for e in audit(project, "--actor", "(DIRTY)")} == {head + " (dirty)"}
    assert run_cli(project, "destroy", "--yes").returncode == 0
    deletes = [e for e in audit(project, "--actor", ME) if e["kind"] == "queued"]
    assert sorted(e["resource_id"] for e in deletes) == ["a", "b"]
    # destroy is the CLI user's own change (no `by`); deleting everything overrides the mass-delete guard,
    # and that override is recorded with the same actor (issue 15 point 3)
    assert deletes[0]["details"] == {"override": {"rules": ["changes.mass_delete"], "reason": "destroy", "actor": ME}}
    assert [e["kind"] for e in audit(project, "--limit", "1")] == ["succeeded"]  # the newest, last

    for args, option in ((("audit", "--since", "last week"), "--since"),
                         (("audit", "prune", "--before", "2026-02-30", "--archive", "x.json"), "--before")):
        bad = run_cli(project, *args)
        assert bad.returncode == 1 and bad.stderr.startswith(f"Error: {option} ") and "Traceback" not in bad.stderr
    assert not (project / "x.json").exists()

    before = len(audit(project))
    archive = tmp_path / "archive.json"
    pruned = run_cli(project, "audit", "prune", "--before", "2999-01-01", "--archive", str(archive))
    assert pruned.returncode == 1 and "--before" in pruned.stderr and "future" in pruned.stderr
    pruned = run_cli(project, "audit", "prune", "--before", "0s", "--archive", str(archive))
    assert pruned.returncode == 0, pruned.stderr
    document = json.loads(archive.read_text())
    assert document["format"] == "reconciler-audit-archive" and len(document["events"]) == before
    assert {e["actor"] for e in document["events"]} == {head, head + " (dirty)", ME}
    [recorded] = audit(project)
    assert (recorded["kind"], recorded["actor"], recorded["details"]["count"]) == ("audit_pruned", ME, before)
    again = run_cli(project, "audit", "prune", "--before", "0s", "--archive", str(archive))
    assert again.returncode == 1 and f"--archive {archive}: already exists" in again.stderr
    assert json.loads(archive.read_text()) == document  # untouched

    exported = run_cli(project, "export")
    (tmp_path / "backup.json").write_text(exported.stdout)
    assert run_cli(project, "import", "--replace", str(tmp_path / "backup.json")).returncode == 0
    assert [(e["kind"], e["actor"]) for e in audit(project)] == [("audit_pruned", ME), ("restored", ME)]


def _actors(client, resource_id: str) -> list[tuple[str, str]]:
    status, events = client.call("GET", f"/provisions/{resource_id}/events")
    assert status == 200, events
    return [(event["kind"], event["actor"]) for event in events]


HEALTH_KINDS = {"unhealthy", "recovered"}
SPEC = {"resource_id": "api-one", "owner": "support", "region": "eu-west-1", "deploy_ref": "v1"}


def test_the_api_token_less_is_local_and_the_daemons_own_retries_and_drift_are_the_daemons(tmp_path, daemons):
    project = make_project(tmp_path / "p")
    write_resources(project, {"flaky": {}, "steady": {}})
    (project / "control" / "fail-flaky").write_text("")
    _, client = start_api_daemon(project, daemons, "--retry-base", "0.2", "--retry-cap", "0.5",
                                 "--drift-interval", "0.5", "--unhealthy-after", "1")
    assert client.call("POST", "/provisions", SPEC)[0] == 202
    wait_for(lambda: ("succeeded", "api:local") in _actors(client, "api-one"), what="the API's job")
    # the job's events are the caller's; a health verdict (the check right after provision, the drift
    # loop: its URL on port 9 refuses) is the daemon's own
    actors = _actors(client, "api-one")
    assert {actor for kind, actor in actors if kind not in HEALTH_KINDS} == {"api:local"}
    assert {actor for kind, actor in actors if kind in HEALTH_KINDS} <= {DAEMON}
    # the first attempt came from the file (outside git: git:unknown); the retries are the daemon's
    wait_for(lambda: ("queued", DAEMON) in _actors(client, "flaky"), what="a retry by the daemon")
    assert _actors(client, "flaky")[0] == ("queued", "git:unknown")
    # steady's URL (port 9) refuses: the drift loop's verdict is the daemon's
    wait_for(lambda: ("unhealthy", DAEMON) in _actors(client, "steady"), what="the drift loop's event")


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_the_single_token_is_api_admin(tmp_path, daemons, method):
    project = make_project(tmp_path / "p")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    _, client = start_api_daemon(project, daemons, token_file=token_file)
    client.token = "s3cret-token-0123456789"
    assert client.call("POST", "/provisions", SPEC)[0] == 202
    if method == "DELETE":
        wait_for(lambda: ("succeeded", "api:admin") in _actors(client, "api-one"), what="the create")
        assert client.call("DELETE", "/provisions/api-one")[0] == 202
        wait_for(lambda: _actors(client, "api-one")[-1] == ("succeeded", "api:admin")
                 and len(_actors(client, "api-one")) > 4, what="the teardown")
    assert {actor for _kind, actor in _actors(client, "api-one")} == {"api:admin"}
    assert "s3cret" not in json.dumps(client.call("GET", "/provisions/api-one/events")[1])
