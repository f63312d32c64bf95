"""`status` tells the truth (issue 16): READY, AGE and a MESSAGE for every way a row is out of sync, the
filters, the formats, the header (desired/ and the daemon's view), the API's Ready condition, and HEALTH
known right after a provision. Real CLI and daemon processes, real scripts, a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from reconciler.health import CheckResult
from reconciler.models import DELETE_TARGET, JobRequest, JobResult, ResourceSpec, spec_hash
from reconciler.store import open_store
from tests.e2e.test_api import start_api_daemon
from tests.support import db_rows, make_project, run_cli, wait_for, write_resources

T0, LATER, EARLIER = "2024-05-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z", "2000-01-01T00:00:00.000000Z"


def _spec(resource_id: str, **fields) -> ResourceSpec:
    return ResourceSpec(**{**dict(resource_id=resource_id, owner="acme", region="eu-west-1", deploy_ref="v1"),
                           **fields})


def _run(store, spec: ResourceSpec, *, ok: bool = True, retry_at: str | None = None, delete: bool = False) -> None:
    """One job for `spec` queued, claimed and finished through the store's own API."""
    row = store.get_resource(spec.resource_id)
    action = "delete" if delete else "create" if row is None else "update"
    request = JobRequest(spec.resource_id, action, "test", spec.model_dump(),
                         target_hash=DELETE_TARGET if delete else spec_hash(spec),
                         expected_version=row.version if row else None)
    store.enqueue(requests=[request], now=T0, commit=None)
    (job,) = store.claim(worker="w", now=T0, lease_until=LATER, resource_ids=[spec.resource_id])
    url = None if delete or not ok else f"http://127.0.0.1:9/{spec.resource_id}"
    store.finish(job=job, worker="w", now=T0, result=JobResult(ok, 0 if ok else 3, url,
                 None if ok else "exit status 3: boom\x1b[31m", "", 0.1, retry_at))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """One row for every way of being out of sync today, one in sync, one tombstone."""
    project = make_project(tmp_path_factory.mktemp("status") / "p")
    write_resources(project, {
        "in-sync": {}, "errored": {}, "waiting": {}, "sick": {}, "busy": {"deploy_ref": "v2"},
        "changed": {"deploy_ref": "v2"}, "blocked": {"region": "us-east-1", "protected": True}, "again": {},
        "not-yet": {},
    })
    store = open_store(url=str(project / "state.db"))
    for spec in (_spec("in-sync"), _spec("sick"), _spec("busy"), _spec("changed"), _spec("blocked", protected=True),
                 _spec("kept", protected=True), _spec("gone"), _spec("again")):
        _run(store, spec)
    _run(store, _spec("gone"), delete=True)
    _run(store, _spec("again"), delete=True)
    _run(store, _spec("errored"), ok=False, retry_at=EARLIER)
    _run(store, _spec("waiting"), ok=False, retry_at=LATER)
    busy = store.get_resource("busy")
    store.enqueue(requests=[JobRequest("busy", "update", "test", _spec("busy", deploy_ref="v2").model_dump(),
                                       target_hash="x", expected_version=busy.version)], now=T0, commit=None)
    for _ in range(3):
        store.record_health(results=[CheckResult("sick", "http://127.0.0.1:9/sick", False, None, 0.0, "refused")],
                            now=T0, unhealthy_after=3)
    store.close()
    return project


def _json(project: Path, *args: str) -> list[dict]:
    done = run_cli(project, "status", "-o", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_out_of_sync_kind_has_its_message(fleet: Path) -> None:
    rows = {row["resource_id"]: row for row in _json(fleet, "--out-of-sync")}
    kinds = {rid: row["out_of_sync"] for rid, row in rows.items()}
    assert kinds == {"errored": "errored", "waiting": "retry_waiting", "sick": "unhealthy", "busy": "in_progress",
                     "changed": "pending", "blocked": "replace_blocked", "kept": "protected", "again": "pending"}
    assert {row["ready"] for row in rows.values()} == {"False"}
    assert rows["errored"]["message"] == "errored: exit status 3: boom\x1b[31m; retry 2 pending"
    assert rows["waiting"]["message"].startswith(f"retry 2 at {LATER} (in ")
    assert rows["waiting"]["message"].endswith("; last error: exit status 3: boom\x1b[31m")
    assert rows["sick"]["message"] == "unhealthy: 3 failed checks in a row"
    assert rows["busy"]["message"] == "update queued"
    assert rows["changed"]["message"] == "update pending: deploy_ref changed"
    assert rows["blocked"]["message"].startswith("protected: region forces replacement is blocked")
    assert rows["kept"]["message"].startswith("protected: kept although no longer declared")
    assert rows["again"]["message"] == "create pending: declared again after deletion"


def test_the_table_hides_tombstones_unless_all_and_escapes_the_message(fleet: Path) -> None:
    done = run_cli(fleet, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "desired/: 9 resources from 1 file; 1 not created yet (reconciler plan shows them)"
    assert lines[1] == "daemon: none running"
    assert lines[2].split() == ["RESOURCE", "READY", "STATUS", "HEALTH", "OWNER", "DEPLOY_REF", "AGE", "MESSAGE"]
    table = {line.split()[0]: line for line in lines[3:-1]}
    assert table["in-sync"].split()[1:3] == ["True", "active"] and "gone" not in table
    assert "errored: exit status 3: boom\\x1b[31m; retry 2 pending" in table["errored"]
    assert "\x1b" not in done.stdout
    assert lines[-1] == "(1 deleted resource hidden; --all shows them)"
    everything = run_cli(fleet, "status", "--all").stdout
    assert "gone" in everything and "hidden" not in everything
    # JSON keeps every row, as it always did: its rows and fields are only ever added to
    gone = {row["resource_id"]: row for row in _json(fleet)}["gone"]
    assert (gone["status"], gone["ready"], gone["out_of_sync"]) == ("deleted", "True", None)


def test_out_of_sync_leaves_in_sync_rows_out(fleet: Path) -> None:
    done = run_cli(fleet, "status", "--out-of-sync")
    assert done.returncode == 0 and "in-sync" not in done.stdout and "sick" in done.stdout


def test_wide_yaml_and_one_resource(fleet: Path) -> None:
    wide = run_cli(fleet, "status", "-o", "wide").stdout.splitlines()
    assert wide[2].split() == ["RESOURCE", "READY", "STATUS", "HEALTH", "OWNER", "DEPLOY_REF", "TARGET", "REGION",
                               "URL", "LAST_CHECK", "ATTEMPTS", "AGE", "MESSAGE"]
    sick = next(line for line in wide if line.startswith("sick ")).split()
    assert sick[6:9] == ["local", "eu-west-1", "http://127.0.0.1:9/sick"]
    assert yaml.safe_load(run_cli(fleet, "status", "-o", "yaml").stdout) == _json(fleet)
    one = yaml.safe_load(run_cli(fleet, "status", "changed", "-o", "yaml").stdout)
    assert (one["out_of_sync"], one["message"]) == ("pending", "update pending: deploy_ref changed")
    assert [event["kind"] for event in one["events"]][:2] == ["queued", "succeeded"]


def test_a_broken_desired_dir_is_named_in_the_header_and_rows_speak_alone(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    write_resources(project, {"fine": {}, "failing": {}})
    store = open_store(url=str(project / "state.db"))
    _run(store, _spec("fine"))
    _run(store, _spec("failing"), ok=False, retry_at=LATER)
    store.close()
    (project / "desired" / "fleet.yaml").write_text("resource_id: fine\nowner: acme\nregion: [unclosed\n")
    done = run_cli(project, "status")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert header.startswith("desired/: does not load: desired/fleet.yaml:3:")
    assert header.endswith("; messages come from the rows alone")
    rows = {row["resource_id"]: row for row in _json(project)}
    assert (rows["fine"]["ready"], rows["fine"]["message"]) == ("Unknown", "")
    assert rows["failing"]["out_of_sync"] == "retry_waiting"


# --- a live URL: HEALTH right after a provision, the daemon's view, the API -------------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering 200: the resources' URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _live_project(root: Path, base: str) -> Path:
    """Provision prints `base`/<id> (a live URL), except for ids with a fail-<id> file in control/."""
    provision = f"""#!/usr/bin/env bash
if [ -f "$CONTROL/fail-$RESOURCE_ID" ]; then echo "boom for $RESOURCE_ID" >&2; exit 3; fi
echo "ready at {base}/$RESOURCE_ID"
"""
    return make_project(root, provision=provision, teardown="#!/usr/bin/env bash\nexit 0\n")


def test_health_is_known_right_after_apply(tmp_path: Path, server: str) -> None:
    project = _live_project(tmp_path / "p", server)
    write_resources(project, {"web": {}, "dead": {}})
    provision = project / "provision" / "provision.sh"
    live = f'$([ "$RESOURCE_ID" = dead ] && echo http://127.0.0.1:9 || echo {server})'
    text = provision.read_text().replace(f'"ready at {server}/$RESOURCE_ID"', f'"ready at {live}/$RESOURCE_ID"')
    provision.write_text(text)
    done = run_cli(project, "apply", "-y")
    assert done.returncode == 0, done.stderr
    rows = {row["resource_id"]: row for row in db_rows(project)}
    assert (rows["web"]["health"], rows["web"]["consecutive_failures"]) == ("healthy", 0)
    assert rows["web"]["last_check_at"] is not None
    # a failing first check counts like a drift check (1 of 3) and never fails the job
    assert (rows["dead"]["status"], rows["dead"]["health"], rows["dead"]["consecutive_failures"]) == (
        "active", "unknown", 1)


def test_the_daemon_view_and_the_api_tell_the_same_truth(tmp_path: Path, server: str, daemons) -> None:
    project = _live_project(tmp_path / "p", server)
    (project / "control" / "fail-bad").touch()
    write_resources(project, {"web": {}, "bad": {}})
    _, client = start_api_daemon(project, daemons, "--drift-interval", "3600")
    wait_for(lambda: {r["resource_id"]: r["health"] for r in db_rows(project)}.get("web") == "healthy",
             what="web healthy without a drift pass")
    wait_for(lambda: {r["resource_id"]: r["status"] for r in db_rows(project)}.get("bad") == "errored",
             what="bad errored")
    ready = wait_for(lambda: _ready(client, "bad") if _ready(client, "bad")["status"] == "False" else None,
                     what="Ready=False for bad")
    assert ready["reason"] in ("retry_waiting", "errored") and "last error: exited 3" in ready["message"]
    assert _ready(client, "web") == {"type": "Ready", "status": "True", "reason": "active", "message": ""}
    header = wait_for(lambda: _daemon_header(project, "its desired/ loads"), what="the daemon's view")
    assert header.startswith("daemon: pid ") and "; last pass " in header
    assert header.endswith("its desired/ loads (2 resources from 1 file)")

    (project / "desired" / "fleet.yaml").write_text("resource_id: web\nowner: [unclosed\n")
    broken = wait_for(lambda: _daemon_header(project, "does not load"), what="the daemon's view of a broken file")
    assert "its desired/ does not load: desired/fleet.yaml:2" in broken
    assert broken.endswith("it plans from the last good state (2 resources)")


def _ready(client, resource_id: str) -> dict:
    status, body = client.call("GET", f"/provisions/{resource_id}")
    assert status == 200, body
    return next(c for c in body["conditions"] if c["type"] == "Ready")


def _daemon_header(project: Path, wanted: str) -> str | None:
    line = run_cli(project, "status").stdout.splitlines()[1]
    return line if wanted in line else None
