"""The shipped `local` target, run through the real runner: real servers on 127.0.0.1, real URLs."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from reconciler.runner import ScriptOutcome, resolve_script, run_script
from tests.support import ROOT

PROVISION = ROOT / "provision"


def spec_for(resource_id: str, deploy_ref: str) -> dict:
    return {"resource_id": resource_id, "owner": "acme", "region": "local", "runtime_target": "local",
            "deploy_ref": deploy_ref, "params": {}, "protected": False}


@pytest.fixture
def apply(tmp_path: Path) -> Iterator[Callable[..., ScriptOutcome]]:
    """Runs the local target's scripts; afterwards tears down every workdir it touched."""
    workdirs: set[Path] = set()

    def run(action: str, spec: dict) -> ScriptOutcome:
        workdir = tmp_path / "work" / spec["resource_id"]
        workdirs.add(workdir)
        script = resolve_script(provision_dir=PROVISION, runtime_target="local", action=action)
        return run_script(script=script, spec=spec, action=action, workdir=workdir, timeout=20.0,
                          grace=1.0, needs_url=action != "delete")

    yield run
    for workdir in workdirs:
        _stop_for_sure(run, workdir)


def _stop_for_sure(run: Callable[..., ScriptOutcome], workdir: Path) -> None:
    pid_file = workdir / "server.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    run("delete", spec_for(workdir.name, "cleanup"))
    if pid is not None and b"local_server.py" in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)  # teardown failed; do not leak a server past the test


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def fetch(url: str, *, method: str = "GET") -> tuple[int, dict]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
        body = response.read()
        return response.status, json.loads(body) if body else {}


def port_closed(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def server_pid(tmp_path: Path, resource_id: str) -> int:
    return int((tmp_path / "work" / resource_id / "server.pid").read_text())


def test_provision_serves_the_resource(apply, tmp_path: Path) -> None:
    outcome = apply("create", spec_for("web-1", "v1"))
    assert outcome.ok, (outcome.error, outcome.output_tail)
    assert outcome.url.startswith("http://127.0.0.1:")
    assert fetch(outcome.url) == (200, {"resource_id": "web-1", "deploy_ref": "v1"})
    assert fetch(outcome.url, method="HEAD")[0] == 200


def test_same_deploy_ref_keeps_the_same_server(apply, tmp_path: Path) -> None:
    first = apply("create", spec_for("web-1", "v1"))
    pid = server_pid(tmp_path, "web-1")
    again = apply("update", spec_for("web-1", "v1"))
    assert again.ok and again.url == first.url
    assert server_pid(tmp_path, "web-1") == pid


def test_new_deploy_ref_replaces_the_server(apply, tmp_path: Path) -> None:
    first = apply("create", spec_for("web-1", "v1"))
    second = apply("update", spec_for("web-1", "v2"))
    assert second.ok, (second.error, second.output_tail)
    assert fetch(second.url)[1]["deploy_ref"] == "v2"
    assert second.url == first.url or port_closed(first.url)


def test_teardown_closes_the_port_and_is_idempotent(apply, tmp_path: Path) -> None:
    url = apply("create", spec_for("web-1", "v1")).url
    first = apply("delete", spec_for("web-1", "v1"))
    assert first.ok and first.exit_code == 0, first.output_tail
    assert port_closed(url)
    assert not list((tmp_path / "work" / "web-1").glob("server.*"))
    again = apply("delete", spec_for("web-1", "v1"))
    assert again.ok and again.exit_code == 0, again.output_tail


def test_teardown_of_a_resource_never_created_succeeds(apply) -> None:
    assert apply("delete", spec_for("ghost", "v1")).ok


def test_hostile_deploy_ref_is_data_not_code(apply, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    ref = f"v1$(touch {pwned}); rm -rf {tmp_path}/work `touch {pwned}`"
    outcome = apply("create", spec_for("web-1", ref))
    assert outcome.ok, outcome.output_tail
    assert fetch(outcome.url)[1]["deploy_ref"] == ref
    assert not pwned.exists()


def test_two_resources_get_two_servers(apply) -> None:
    one = apply("create", spec_for("web-1", "v1"))
    two = apply("create", spec_for("web-2", "v1"))
    assert one.url != two.url
    assert fetch(one.url)[1]["resource_id"] == "web-1"
    assert fetch(two.url)[1]["resource_id"] == "web-2"
