"""Issue 11 faults of the HTTP plane, against a real daemon process and real HTTP on 127.0.0.1.

Ownership before and after the first good load of desired/, refused calls that must change nothing
(the store is read afterwards), hostile bodies (unauthenticated, oversized, chunked, NaN, deeply
nested) and a health-check target that answers with an endless body.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import cli_env, db_rows, make_project, reconciler_argv, run_cli, wait_for, write_resources
from tests.e2e.test_api import SPEC, start_api_daemon

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"from-file": {}}, name="good.yaml")
    return project


def health(client) -> dict:
    return client.call("GET", "/health")[1]


def api_rows(project: Path) -> dict[str, dict]:
    return {row["resource_id"]: json.loads(row["spec_json"]) for row in db_rows(project, "SELECT * FROM api_desired")}


def wait_loaded(client, *, loads: bool) -> None:
    wait_for(lambda: health(client).get("desired_loads") is loads and health(client).get("last_pass_at"),
             what=f"desired_loads {loads}")


# --- item 3: ownership before the first good load, and of files that fail to load -------------------


def test_mutations_wait_for_the_first_good_load_and_files_keep_their_ids(project, daemons):
    broken = project / "desired" / "broken.yaml"
    broken.write_text("resource_id: owned-later\nowner: [\n")
    proc, client = start_api_daemon_unready(project, daemons)
    wait_for(lambda: health(client).get("desired_errors"), what="the load error to be reported")
    for method, path, body in (("POST", "/provisions", SPEC), ("DELETE", "/provisions/from-file", None),
                               ("POST", "/provisions", {**SPEC, "resource_id": "from-file"})):
        status, answer = client.call(method, path, body)
        assert status == 503, (method, path, answer)
        assert "desired/" in answer["detail"] and "broken.yaml" in answer["detail"]
    assert retry_after(client) == "5"
    assert api_rows(project) == {} and db_rows(project) == []

    write_resources(project, {"owned-later": {}}, name="broken.yaml")
    wait_for(lambda: {r["resource_id"] for r in db_rows(project)} == {"from-file", "owned-later"},
             what="the first good load to be applied")
    status, answer = client.call("POST", "/provisions", {**SPEC, "resource_id": "owned-later"})
    assert status == 409 and "broken.yaml" in answer["detail"]
    assert client.call("DELETE", "/provisions/from-file")[0] == 409

    # a file that breaks later (its text no longer even names the id) still owns its ids
    (project / "desired" / "good.yaml").write_text("{{{ not yaml\n")
    wait_loaded(client, loads=False)
    status, answer = client.call("DELETE", "/provisions/from-file")
    assert status == 409 and "good.yaml" in answer["detail"]
    assert client.call("POST", "/provisions", {**SPEC, "resource_id": "from-file"})[0] == 409

    # a file that has never parsed owns every id on a `resource_id:` line
    (project / "desired" / "new.yaml").write_text("resource_id: brand-new\nowner: [\n---\n  resource_id: 'other-new'\n")
    wait_for(lambda: any("new.yaml" in e for e in health(client)["desired_errors"]), what="new.yaml's error")
    for rid in ("brand-new", "other-new"):
        status, answer = client.call("POST", "/provisions", {**SPEC, "resource_id": rid})
        assert status == 409 and "new.yaml" in answer["detail"], answer
    assert client.call("POST", "/provisions", SPEC)[0] == 202  # ids nobody declares stay open
    assert set(api_rows(project)) == {"api-one"}
    assert statuses_of(project)["from-file"] != "deleting"


def start_api_daemon_unready(project, daemons):
    """start_api_daemon waits for /health 200, which needs a good load: wait for any answer instead."""
    from tests.e2e.test_api import Client, free_port
    from tests.support import start_daemon

    port = free_port()
    proc = start_daemon(project, "--api", f"127.0.0.1:{port}")
    daemons.append(proc)
    client = Client(f"http://127.0.0.1:{port}")

    def answers() -> bool:
        try:
            return client.call("GET", "/health")[0] in (200, 503)
        except OSError:
            return False

    wait_for(answers, what="the API to answer")
    return proc, client


def retry_after(client) -> str | None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(client.base + "/provisions/from-file", method="DELETE")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        return error.headers.get("retry-after")
    return None


def statuses_of(project: Path) -> dict[str, str]:
    return {row["resource_id"]: row["status"] for row in db_rows(project)}


# --- item 4: a refused call changes nothing -----------------------------------------------------------


def test_refused_calls_leave_the_store_as_it_was(project, daemons):
    _, client = start_api_daemon(project, daemons)
    protected = {**SPEC, "resource_id": "api-keep", "protected": True}
    assert client.call("POST", "/provisions", protected)[0] == 202
    wait_for(lambda: statuses_of(project).get("api-keep") == "active", what="api-keep active")
    jobs_before = db_rows(project, "SELECT job_id, status FROM jobs ORDER BY job_id")

    status, answer = client.call("DELETE", "/provisions/api-keep")
    assert status == 409 and "protected" in answer["detail"]
    assert api_rows(project)["api-keep"]["protected"] is True  # the declaration is still there

    moved = {**protected, "region": "us-east-1"}  # a replacement of a protected resource is held
    status, answer = client.call("POST", "/provisions", moved)
    assert status == 409 and "protected" in answer["detail"]
    assert api_rows(project)["api-keep"]["region"] == "eu-west-1"  # the refused spec was not stored

    assert client.call("POST", "/provisions", {**SPEC, "resource_id": "from-file"})[0] == 409
    assert "from-file" not in api_rows(project)
    assert db_rows(project, "SELECT job_id, status FROM jobs ORDER BY job_id") == jobs_before
    # a pass after the refusals must not act on them either
    last = health(client)["last_pass_at"]
    write_resources(project, {"from-file": {}}, name="good.yaml")
    wait_for(lambda: health(client)["last_pass_at"] != last, what="a pass after the refusals")
    assert statuses_of(project)["api-keep"] == "active"
    assert db_rows(project, "SELECT job_id, status FROM jobs ORDER BY job_id") == jobs_before


# --- item 12: hostile bodies ---------------------------------------------------------------------------


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def post_raw(port: int, *, size: int, chunked: bool = False, token: str | None = None,
             path: str = "/provisions") -> tuple[int, bytes]:
    """POST `size` body bytes, reading the answer while sending; stops sending once it has arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    if token:
        head.append(f"Authorization: Bearer {token}")
    answer: dict[str, bytes] = {}

    def read() -> None:
        data = b""
        try:
            while not _complete(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        answer["data"] = data

    reader = threading.Thread(target=read)
    reader.start()
    piece = b'{"x":"' + b"x" * (256 * 1024)
    sent = 0
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while sent < size and reader.is_alive():
            part = piece[: size - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
        if chunked and reader.is_alive():
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed while we were still sending
    reader.join(60)
    sock.close()
    data = answer.get("data", b"")
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1]), data


def _complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    length = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(found) and len(body) >= int(length[0]) if length else bool(found)


def test_unauthenticated_huge_post_is_refused_before_its_body_is_read(project, daemons, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc, client = start_api_daemon(project, daemons, token_file=token_file)
    port = int(client.base.rsplit(":", 1)[1])
    before = peak_rss_kib(proc.pid)
    for chunked in (False, True):
        status, _ = post_raw(port, size=50 * 1024 * 1024, chunked=chunked)
        assert status == 401
    grown = peak_rss_kib(proc.pid) - before
    assert grown < 8 * 1024, f"daemon peak RSS grew by {grown} KiB"
    for chunked in (False, True):  # with the token: capped at 1 MiB, counted while reading when chunked
        status, data = post_raw(port, size=2 * 1024 * 1024, chunked=chunked, token=TOKEN)
        assert status == 413 and b"1 MiB" in data, data[:300]
    grown = peak_rss_kib(proc.pid) - before
    assert grown < 8 * 1024, f"daemon peak RSS grew by {grown} KiB"
    assert client.call("POST", "/provisions", SPEC, token=TOKEN)[0] == 202  # the daemon still serves


class EndlessBody(BaseHTTPRequestHandler):
    """Answers 200 with a generated 600 MB body, streamed (never held in memory here)."""

    size = 600 * 1024 * 1024

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        block, left = b"y" * (1024 * 1024), self.size
        try:
            while left > 0:
                self.wfile.write(block[:left])
                left -= len(block)
        except OSError:
            pass  # the checker hung up: what a bounded read does

    def log_message(self, *args) -> None:
        pass


def check_peak_rss(project: Path) -> tuple[int, int, str]:
    """`reconciler check` as a real process; its peak RSS (KiB) from the kernel's rusage."""
    proc = subprocess.Popen([*reconciler_argv(), "check", "--timeout", "60"], cwd=project, env=cli_env(project),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().decode()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss, output


def test_health_check_reads_a_bounded_part_of_a_huge_answer(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        project = make_project(tmp_path, provision=f"#!/bin/sh\necho {url}\n")
        write_resources(project, {"big": {}})
        assert run_cli(project, "apply", "--yes").returncode == 0
        EndlessBody.size = 1024
        code, small_peak, output = check_peak_rss(project)
        assert code == 0 and "1 healthy" in output, output
        EndlessBody.size = 600 * 1024 * 1024
        code, big_peak, output = check_peak_rss(project)
        assert code == 0 and "1 healthy" in output, output
        assert big_peak - small_peak < 32 * 1024, f"peak RSS {small_peak} KiB -> {big_peak} KiB"
    finally:
        server.shutdown()
        server.server_close()


# --- item 16: numbers JSON cannot carry, deep nesting, oversized params ----------------------------------


def post_text(client, text: str) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(client.base + "/provisions", data=text.encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


BASE = '{"resource_id": "api-edge", "owner": "o", "region": "r", "deploy_ref": "v", "params": {"a": %s}}'


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "[1, NaN]", "{\"b\": Infinity}", "1e999",
                                   "-1E400", "1" * 5000,
                                   "[" * 900 + "]" * 900, "{\"k\": " * 900 + "1" + "}" * 900,
                                   "[" * 100_000 + "]" * 100_000])
def test_unrepresentable_or_deep_params_answer_422(value, edge_client):
    client = edge_client
    status, answer = post_text(client, BASE % value)
    assert status == 422, (status, answer)
    assert isinstance(answer["detail"], list) and answer["detail"][0]["msg"]
    assert "api-edge" not in api_rows(client.project)


@pytest.fixture(scope="module")
def edge_client(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("edges"))
    write_resources(project, {"from-file": {}})
    started: list[subprocess.Popen] = []
    _, client = start_api_daemon(project, started)
    client.project = project
    yield client
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def test_a_body_over_the_cap_answers_413_and_valid_edges_still_pass(edge_client):
    status, answer = post_text(edge_client, BASE % json.dumps("x" * (1024 * 1024)))
    assert status == 413 and "1 MiB" in answer["detail"]
    nested = "[" * 40 + "1" + "]" * 40
    assert post_text(edge_client, BASE % nested)[0] == 202


def test_params_over_the_spec_limit_answer_422(edge_client):
    status, answer = post_text(edge_client, BASE % json.dumps("x" * (100 * 1024)))
    assert status == 422, answer


# --- the ownership scan of files that do not load (pure, on real files) ----------------------------------


def test_owners_of_broken_files_come_from_their_last_parse_and_a_scan_of_the_text(tmp_path):
    from reconciler.owners import FileOwners
    from reconciler.spec import Source

    broken = tmp_path / "broken.yaml"
    broken.write_text("# resource_id: in-a-comment\n- resource_id: \"listed\"\n{resource_id: 'flow', owner: [\n"
                      '"resource_id": "quoted-key"\nresource_id:    spaced\nresource_id: Not_An_Id\n')
    os.mkfifo(tmp_path / "fifo.yaml")
    owners = FileOwners()
    owners.observe([(broken, {"kept": Source("broken.yaml", 9)}, True)])
    assert owners.owner("kept") == "broken.yaml:9"
    owners.observe([(broken, {}, False), (tmp_path / "fifo.yaml", {}, False)])  # the FIFO must not block
    for rid, line in (("kept", 9), ("in-a-comment", 1), ("listed", 2), ("flow", 3), ("quoted-key", 4),
                      ("spaced", 5)):
        owner = owners.owner(rid)
        assert owner is not None and owner.endswith(f".yaml:{line} (the file does not load now)"), (rid, owner)
    assert owners.owner("not_an_id") is None
    owners.observe([])  # the file is gone: it owns nothing any more
    assert owners.owner("kept") is None


def test_a_followers_api_knows_the_files_ids_too(tmp_path, pg_url, daemons):
    """On PostgreSQL only the leader plans; a follower's API must still refuse file-owned ids."""
    from tests.support import log_events, start_daemon
    from tests.e2e.test_api import Client, free_port

    project = make_project(tmp_path)
    write_resources(project, {"from-file": {}})
    daemons.append(start_daemon(project, log_name="a.log", RECONCILER_DB=pg_url))
    wait_for(lambda: any(e["event"] == "became leader" for e in log_events(project, "a.log")), what="a leader")
    port = free_port()
    daemons.append(start_daemon(project, "--api", f"127.0.0.1:{port}", log_name="b.log", RECONCILER_DB=pg_url))
    wait_for(lambda: any(e["event"] == "ready as a follower" for e in log_events(project, "b.log")),
             what="a follower")
    follower = Client(f"http://127.0.0.1:{port}")
    status, answer = wait_for(lambda: (lambda r: r if r[0] != 503 else None)(
        follower.call("DELETE", "/provisions/from-file")), what="the follower to read desired/")
    assert status == 409 and "fleet.yaml" in answer["detail"], answer
    assert follower.call("POST", "/provisions", {**SPEC, "resource_id": "from-file"})[0] == 409
