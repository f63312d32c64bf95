"""The HTTP API of a real daemon process, on a free 127.0.0.1 port, with a real HTTP client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.support import make_project, run_cli, runs, start_daemon, wait_for, write_resources

SPEC = {"resource_id": "api-one", "owner": "support", "region": "eu-west-1", "deploy_ref": "v1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: object = None, token: str | None = None) -> tuple[int, object]:
        headers = {"content-type": "application/json"}
        if token or self.token:
            headers["authorization"] = f"Bearer {token or self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()


def start_api_daemon(project, daemons, *args: str, token_file=None):
    port = free_port()
    extra = ["--api-token-file", str(token_file)] if token_file else []
    proc = start_daemon(project, "--api", f"127.0.0.1:{port}", *extra, *args)
    daemons.append(proc)
    client = Client(f"http://127.0.0.1:{port}")
    wait_for(lambda: _up(client), what="the API to answer")
    return proc, client


def _up(client: Client) -> bool:
    try:
        return client.call("GET", "/health")[0] == 200
    except OSError:
        return False


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"from-file": {}})
    return project


def test_create_poll_get_delete_cycle_against_real_scripts(project, daemons):
    _, client = start_api_daemon(project, daemons)
    status, body = client.call("POST", "/provisions", SPEC)
    assert status == 202 and body["resource_id"] == "api-one" and body["job_id"].startswith("job-")
    job_id = body["job_id"]
    assert client.call("POST", "/provisions", SPEC)[1]["job_id"] == job_id  # idempotent: the same job
    job = wait_for(lambda: (lambda j: j if j["status"] == "succeeded" else None)(
        client.call("GET", f"/provisions/jobs/{job_id}")[1]), what="the job to succeed")
    assert job["url"] == "http://127.0.0.1:9/api-one/v1" and job["attempt"] == 1
    status, row = client.call("GET", "/provisions/api-one")
    assert status == 200 and (row["status"], row["source"], row["url"]) == ("active", "api", job["url"])
    assert {c["type"]: c["status"] for c in row["conditions"]}["Ready"] == "True"
    listed = client.call("GET", "/provisions?owner=support")[1]
    assert [r["resource_id"] for r in listed] == ["api-one"]
    kinds = [e["kind"] for e in client.call("GET", "/provisions/api-one/events")[1]]
    assert kinds[:3] == ["queued", "started", "succeeded"]

    status, body = client.call("DELETE", "/provisions/api-one")
    assert status == 202
    wait_for(lambda: client.call("GET", "/provisions/api-one")[1]["status"] == "deleted", what="teardown")
    assert [run[1:3] for run in runs(project) if run[0] == "start"].count(["api-one", "delete"]) == 1
    assert client.call("DELETE", "/provisions/api-one")[0] == 404


def test_errors_422_404_409(project, daemons):
    _, client = start_api_daemon(project, daemons)
    wait_for(lambda: client.call("GET", "/provisions/from-file")[0] == 200, what="the file's resource")
    status, body = client.call("POST", "/provisions", {**SPEC, "deploy_ref": 1.1, "colour": "red"})
    assert status == 422
    fields = {tuple(error["loc"]) for error in body["detail"]}
    assert ("body", "deploy_ref") in fields and ("body", "colour") in fields
    assert client.call("POST", "/provisions", {**SPEC, "resource_id": "Bad_Id"})[0] == 422
    assert client.call("GET", "/provisions/nobody")[0] == 404
    assert client.call("GET", "/provisions/jobs/job-nothing")[0] == 404
    assert client.call("GET", "/provisions/nobody/events")[0] == 404
    status, body = client.call("POST", "/provisions", {**SPEC, "resource_id": "from-file"})
    assert status == 409 and "fleet.yaml" in body["detail"]
    status, body = client.call("DELETE", "/provisions/from-file")
    assert status == 409 and "fleet.yaml" in body["detail"]


def test_token_guards_mutations(project, daemons, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    _, client = start_api_daemon(project, daemons, token_file=token_file)
    assert client.call("POST", "/provisions", SPEC)[0] == 401
    assert client.call("POST", "/provisions", SPEC, token="wrong-token-0123456789")[0] == 401
    assert client.call("DELETE", "/provisions/api-one")[0] == 401
    assert client.call("GET", "/health")[0] == 200  # reads stay open
    assert client.call("POST", "/provisions", SPEC, token="s3cret-token-0123456789")[0] == 202
    assert "s3cret" not in (project / "daemon.log").read_text()


def test_non_loopback_without_token_is_refused(project):
    done = subprocess.run(
        [*__import__("tests.support", fromlist=["reconciler_argv"]).reconciler_argv(), "daemon", "--api",
         f"0.0.0.0:{free_port()}"], cwd=project, capture_output=True, text=True, timeout=30,
        env=__import__("tests.support", fromlist=["cli_env"]).cli_env(project))
    assert done.returncode == 1 and "without --api-token-file" in done.stderr


def test_api_resources_survive_restart_and_show_in_plan_and_status(project, daemons):
    proc, client = start_api_daemon(project, daemons)
    client.call("POST", "/provisions", SPEC)
    wait_for(lambda: client.call("GET", "/provisions/api-one")[1].get("status") == "active", what="active")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    plan = json.loads(run_cli(project, "plan", "-o", "json").stdout)
    assert plan["changes"] == []  # not planned for deletion: the API declares it
    rows = {r["resource_id"]: r for r in json.loads(run_cli(project, "status", "-o", "json").stdout)}
    assert rows["api-one"]["source"] == "api" and rows["from-file"]["source"] == "file"
    _, client = start_api_daemon(project, daemons)
    changed = {**SPEC, "deploy_ref": "v2"}
    assert run_cli(project, "plan").returncode == 0
    assert client.call("POST", "/provisions", changed)[0] == 202
    wait_for(lambda: client.call("GET", "/provisions/api-one")[1]["deploy_ref"] == "v2", what="update via API")


def test_health_and_metrics(project, daemons):
    _, client = start_api_daemon(project, daemons)
    wait_for(lambda: client.call("GET", "/health")[1]["active"] == 1, what="one active")
    status, health = client.call("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["desired_loads"] is True
    assert {"total", "active", "provisioning", "errored", "unhealthy", "deleted", "last_pass_at",
            "desired_commit", "desired_errors"} <= set(health)
    (project / "desired" / "broken.yaml").write_text("resource_id: [\n")
    wait_for(lambda: client.call("GET", "/health")[1]["desired_loads"] is False, what="the load error")
    assert "broken.yaml" in client.call("GET", "/health")[1]["desired_errors"][0]
    status, text = client.call("GET", "/metrics")
    assert status == 200
    for name in ("reconciler_resources{status=\"active\"} 1.0", "reconciler_jobs_total",
                 "reconciler_script_duration_seconds_bucket", "reconciler_last_pass_timestamp_seconds",
                 "reconciler_desired_load_errors 1.0", "reconciler_health_check_latency_seconds"):
        assert name in text, name


# --- schemathesis: generated requests from the OpenAPI document never get a 5xx ---------------------

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def api_base(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("schemathesis"))
    write_resources(project, {"from-file": {}})
    started: list[subprocess.Popen] = []
    _, client = start_api_daemon(project, started)
    yield client.base
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def test_generated_requests_never_get_a_server_error(api_base):
    """A bounded schemathesis run over every operation of /openapi.json (25 cases each)."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(f"{api_base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    failures: list[str] = []
    calls: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def probe(case):
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        probe()
    assert failures == []
    assert len(calls) >= 5 * len(operations) and any(code < 300 for code in calls)
