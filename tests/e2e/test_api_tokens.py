"""Scoped API tokens (issue 15 point 5) against a real daemon process and real HTTP.

The daemon listens on 0.0.0.0 (beyond loopback: 127.0.0.2 would not do, every 127/8 address is
loopback) and is reached on 127.0.0.1. Its tokens come from a real tokens file written from what
`reconciler token create` prints, plus --api-token-file's admin token; SIGHUP re-reads the file.
"""

from __future__ import annotations

import hashlib
import json
import signal

import pytest

from tests.e2e.test_api import SPEC, Client, free_port
from tests.support import db_rows, log_events, make_project, run_cli, start_daemon, wait_for, write_resources

ADMIN = "admin-token-0123456789abcdef"


def create_token(project, name: str, *scopes: str) -> tuple[str, str]:
    """(token, entry) as `reconciler token create` prints them for a person to copy."""
    done = run_cli(project, "token", "create", name, *[arg for scope in scopes for arg in ("--scope", scope)])
    assert done.returncode == 0, done.stderr
    token = done.stdout.splitlines()[2].strip()
    return token, done.stdout[done.stdout.index("- name:"):]


def api_owners(project) -> dict[str, str]:
    rows = db_rows(project, "SELECT * FROM api_desired")
    return {row["resource_id"]: json.loads(row["spec_json"])["owner"] for row in rows}


@pytest.fixture
def fleet(tmp_path, daemons):
    project = make_project(tmp_path)
    write_resources(project, {"from-file": {}})  # owner acme
    tokens = {name: create_token(project, name, *scopes) for name, scopes in
              {"team-acme": ["write:owner=acme"], "reader": ["read"], "beta-reader": ["read:owner=beta"]}.items()}
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text("".join(entry for _, entry in tokens.values()))
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(ADMIN + "\n")
    port = free_port()
    proc = start_daemon(project, "--api", f"0.0.0.0:{port}", "--api-token-file", str(admin_file),
                        "--api-tokens", str(tokens_file))
    daemons.append(proc)
    client = Client(f"http://127.0.0.1:{port}")
    wait_for(lambda: _answers(client), what="the API to answer")
    return project, proc, client, {name: token for name, (token, _) in tokens.items()}, tokens_file


def _answers(client: Client) -> bool:
    try:
        return client.call("GET", "/health")[0] == 200
    except OSError:
        return False


def test_scoped_tokens_beyond_loopback_with_reload(fleet):
    project, proc, client, tokens, tokens_file = fleet
    acme, reader, beta = tokens["team-acme"], tokens["reader"], tokens["beta-reader"]
    call = client.call
    wait_for(lambda: "from-file" in {r["resource_id"] for r in db_rows(project)}, what="the file's row")

    # beyond loopback every read needs a token; /health and /metrics stay open and carry none
    for path in ("/provisions", "/provisions/from-file", "/provisions/from-file/events", "/provisions/jobs/job-x"):
        assert call("GET", path)[0] == 401, path
    assert call("GET", "/provisions", token="not-a-token-0123456789")[0] == 401
    for path in ("/health", "/metrics"):
        status, body = call("GET", path)
        assert status == 200 and not leaks(json.dumps(body), tokens), path

    # writes: own owner 202, another owner 403 (nothing changed), read-only 403, no takeover by re-declaring
    status, body = call("POST", "/provisions", {**SPEC, "resource_id": "acme-one", "owner": "acme"}, token=acme)
    assert status == 202, body
    acme_job = body["job_id"]
    status, body = call("POST", "/provisions", {**SPEC, "resource_id": "beta-x", "owner": "beta"}, token=acme)
    assert status == 403 and "write:owner=beta" in body["detail"] and "team-acme" in body["detail"]
    status, body = call("POST", "/provisions", {**SPEC, "resource_id": "ro-x", "owner": "acme"}, token=reader)
    assert status == 403 and "write" in body["detail"]
    assert call("POST", "/provisions", {**SPEC, "resource_id": "beta-one", "owner": "beta"}, token=ADMIN)[0] == 202
    status, body = call("POST", "/provisions", {**SPEC, "resource_id": "beta-one", "owner": "acme"}, token=acme)
    assert status == 403 and "owner 'beta'" in body["detail"]
    assert call("DELETE", "/provisions/beta-one", token=acme)[0] == 403
    assert call("DELETE", "/provisions/from-file", token=reader)[0] == 403
    assert call("POST", "/provisions", {**SPEC, "resource_id": "anon"})[0] == 401
    assert api_owners(project) == {"acme-one": "acme", "beta-one": "beta"}

    # reads: filtered to the owners a token may read; another owner's resource, events, job: 403
    wait_for(lambda: {"from-file", "acme-one", "beta-one"} <= {r["resource_id"] for r in db_rows(project)},
             what="the rows")
    assert ids(call("GET", "/provisions", token=beta)[1]) == ["beta-one"]
    assert ids(call("GET", "/provisions?owner=beta", token=beta)[1]) == ["beta-one"]
    assert call("GET", "/provisions?owner=acme", token=beta)[0] == 403
    assert ids(call("GET", "/provisions", token=acme)[1]) == ["acme-one", "from-file"]
    assert ids(call("GET", "/provisions", token=reader)[1]) == ["acme-one", "beta-one", "from-file"]
    for path in ("/provisions/from-file", "/provisions/from-file/events", f"/provisions/jobs/{acme_job}"):
        assert call("GET", path, token=beta)[0] == 403, path
        assert call("GET", path, token=acme)[0] == 200, path
    assert call("GET", "/provisions/beta-one/events", token=beta)[0] == 200
    assert call("DELETE", "/provisions/acme-one", token=acme)[0] == 202
    # the audit actor is the token's name
    assert actors(project, "acme-one") == {"api:team-acme"} and actors(project, "beta-one") == {"api:admin"}

    # SIGHUP: a token added to the file counts after the reload
    late, entry = create_token(project, "late", "read:owner=acme")
    tokens["late"] = late
    assert call("GET", "/provisions/from-file", token=late)[0] == 401
    good = tokens_file.read_text() + entry
    tokens_file.write_text(good)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: call("GET", "/provisions/from-file", token=late)[0] == 200, what="the new token to count")

    # a bad file keeps the last good set in force, and says so (log and /health), naming file:line
    tokens_file.write_text(good.replace("scopes: [read]", "scopes: [reed]"))
    proc.send_signal(signal.SIGHUP)
    said = wait_for(lambda: call("GET", "/health")[1]["api"]["tokens_file_error"], what="the reload error")
    assert f"{tokens_file}:" in said and "'reed' is not a scope" in said
    assert call("GET", "/provisions/from-file", token=late)[0] == 200
    assert call("GET", "/provisions", token=reader)[0] == 200
    errors = [e for e in log_events(project) if e.get("event", "").startswith("api tokens file does not load")]
    assert errors and f"{tokens_file}:" in errors[0]["problem"]
    tokens_file.write_text(good)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: call("GET", "/health")[1]["api"]["tokens_file_error"] is None, what="the good file again")

    # no token and no hash ever in the daemon's log
    assert not leaks((project / "daemon.log").read_text(), {**tokens, "admin": ADMIN})


def actors(project, resource_id: str) -> set[str]:
    return {row["actor"] for row in db_rows(project, "SELECT actor FROM events WHERE resource_id = ? AND kind = "
                                                     "'queued'", resource_id)}


def ids(rows: list[dict]) -> list[str]:
    return [row["resource_id"] for row in rows]


def leaks(text: str, tokens: dict[str, str]) -> list[str]:
    digests = [hashlib.sha256(token.encode()).hexdigest() for token in tokens.values()]
    return [secret for secret in [*tokens.values(), *digests] if secret in text or secret.upper() in text]


def test_a_bad_tokens_file_refuses_the_start(tmp_path):
    project = make_project(tmp_path)
    token, entry = create_token(project, "ci", "read")
    bad = tmp_path / "tokens.yaml"
    bad.write_text(entry + entry.replace("name: ci", "name: cd"))  # the same token twice
    done = run_cli(project, "daemon", "--no-api", "--api-tokens", str(bad), timeout=30)
    assert done.returncode == 1, done.stderr
    assert f"{bad}:5: sha256: the same token as 'ci'" in done.stderr
    assert not leaks(done.stderr + done.stdout, {"ci": token})


def test_token_create_has_help_and_refuses_bad_input(tmp_path):
    done = run_cli(tmp_path, "token", "create", "--help", bare=True)
    assert done.returncode == 0 and "Example:\n    reconciler token create" in done.stdout and "--scope" in done.stdout
    done = run_cli(tmp_path, "token", "create", "ci", "--scope", "reed", bare=True)
    assert done.returncode == 1 and "'reed' is not a scope" in done.stderr and not done.stdout
    assert run_cli(tmp_path, "token", "create", "ci", bare=True).returncode == 1  # --scope is required
