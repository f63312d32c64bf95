"""`reconciler daemon` as systemd runs it: real processes, a real NOTIFY_SOCKET, real scripts and servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.runner import process_alive

from tests.support import (
    ROOT,
    db_rows,
    log_events,
    make_project,
    run_cli,
    runs,
    start_daemon,
    statuses,
    wait_for,
    write_resources,
)

REPO = ROOT


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


class NotifySocket:
    """The systemd side of sd_notify: a unix datagram socket the daemon writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def collect(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536).decode()
            except (TimeoutError, socket.timeout):
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines()))

    def wait(self, key: str, *, after: int = 0, timeout: float = 20.0) -> int:
        """Index of the first message at or after `after` carrying `key`."""
        def found():
            for index, message in enumerate(self.collect()[after:], start=after):
                if key in message:
                    return index + 1
            return None
        return wait_for(found, timeout=timeout, what=f"{key} on NOTIFY_SOCKET") - 1


def test_systemd_notify_ready_watchdog_reload_stopping(project, daemons, tmp_path):
    write_resources(project, {"a": {}})
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start_daemon(project, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="400000")
    daemons.append(proc)
    ready = notify.wait("READY")
    assert notify.messages[ready]["READY"] == "1" and "resources" in notify.messages[ready]["STATUS"]
    first_ping = notify.wait("WATCHDOG", after=ready)
    notify.wait("WATCHDOG", after=first_ping + 1)  # pings keep coming (every 0.2 s)
    mark = len(notify.collect())
    proc.send_signal(signal.SIGHUP)
    reloading = notify.wait("RELOADING", after=mark)
    assert int(notify.messages[reloading]["MONOTONIC_USEC"]) > 0
    assert notify.wait("READY", after=reloading) > reloading
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert any(message.get("STOPPING") == "1" for message in notify.collect())


def test_a_saved_file_starts_its_script_within_a_second(project, daemons):
    write_resources(project, {"a": {}})
    daemons.append(start_daemon(project, "--resync", "600"))
    wait_for(lambda: statuses(project).get("a") == "active", what="a active")
    saved = time.monotonic()
    write_resources(project, {"b": {}}, name="second.yaml")
    wait_for(lambda: any(run[:2] == ["start", "b"] for run in runs(project)), timeout=10, what="b's script")
    assert time.monotonic() - saved < 3.0  # the goal is < 1 s (measured in make bench); slack for a busy CI
    wait_for(lambda: statuses(project).get("b") == "active", what="b active")


def test_jobs_queued_by_apply_elsewhere_are_worked_by_the_daemon(project, daemons):
    write_resources(project, {"a": {}})
    daemons.append(start_daemon(project, "--resync", "600", "--parallelism", "2"))
    wait_for(lambda: statuses(project).get("a") == "active", what="a active")
    write_resources(project, {"a": {}, "c": {}})
    done = run_cli(project, "apply", "--yes", "--target", "c")
    assert done.returncode == 0, done.stderr
    assert [run[1] for run in runs(project) if run[0] == "start"].count("c") == 1


def test_a_broken_file_changes_nothing_and_the_daemon_recovers(project, daemons):
    write_resources(project, {"a": {}})
    write_resources(project, {"b": {}}, name="b.yaml")
    daemons.append(start_daemon(project, "--resync", "0.5"))
    wait_for(lambda: statuses(project) == {"a": "active", "b": "active"}, what="both active")
    (project / "desired" / "b.yaml").write_text("resource_id: b\nowner: [unclosed\n")
    wait_for(lambda: any(e["event"].startswith("desired state does not load") for e in log_events(project)),
             what="the load error in the log")
    time.sleep(1.5)  # several resyncs with the broken file in place
    assert statuses(project) == {"a": "active", "b": "active"}
    assert not [run for run in runs(project) if run[2] == "delete"]
    error = next(e for e in log_events(project) if e["event"].startswith("desired state does not load"))
    # the unclosed flow sequence is reported where it is, not on a line past the end of the file
    assert (error["file"].endswith("b.yaml"), error["line"]) == (True, 2)
    assert "did not find expected ',' or ']'" in error["problem"]
    write_resources(project, {"b": {"deploy_ref": "v2"}}, name="b.yaml")
    wait_for(lambda: db_rows(project, "SELECT deploy_ref FROM resources WHERE resource_id = 'b'") == [
        {"deploy_ref": "v2"}], what="b updated after the fix")


def test_sigterm_with_a_script_running_exits_cleanly_and_the_job_runs_on_next_start(project, daemons):
    write_resources(project, {"slow": {}})
    proc = start_daemon(project, "--stop-grace", "0.5", SLEEP="60")
    daemons.append(proc)
    wait_for(lambda: any(run[:2] == ["start", "slow"] for run in runs(project)), what="the slow script")
    script_pid = int(next(run for run in runs(project) if run[0] == "start")[4])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not _alive(script_pid)
    assert db_rows(project, "SELECT status, lease_owner FROM jobs") == [{"status": "queued", "lease_owner": None}]
    daemons.append(start_daemon(project, SLEEP="0"))
    wait_for(lambda: statuses(project).get("slow") == "active", what="the job completed after restart")
    assert db_rows(project, "SELECT count(*) AS n FROM jobs")[0]["n"] == 1  # the same job, run again


def _alive(pid: int) -> bool:
    return process_alive(pid=pid)  # the product's own check: exists and is not a zombie


def test_second_daemon_on_the_same_database_is_refused_and_kill_9_needs_no_unlock(project, daemons):
    write_resources(project, {"a": {}})
    first = start_daemon(project)
    daemons.append(first)
    wait_for(lambda: statuses(project).get("a") == "active", what="first daemon working")
    second = start_daemon(project, log_name="second.log")
    daemons.append(second)
    assert second.wait(timeout=20) == 1
    message = (project / "second.log").read_text()
    assert f"pid {first.pid}" in message and "another daemon already runs" in message
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    third = start_daemon(project, log_name="third.log")
    daemons.append(third)
    wait_for(lambda: any(e["event"] == "daemon started" for e in log_events(project, "third.log")),
             what="the third daemon to start")
    time.sleep(0.5)
    assert third.poll() is None


@pytest.fixture
def local_project(tmp_path):
    """A project on the shipped `local` target: every resource is a real HTTP server."""
    shutil.copytree(REPO / "provision", tmp_path / "provision")
    (tmp_path / "desired").mkdir()
    (tmp_path / "control").mkdir()
    yield tmp_path
    for pid_file in (tmp_path / "work").rglob("*.pid"):
        _kill_pid_file(pid_file)


def _kill_pid_file(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _server_pid(project: Path, resource_id: str) -> int:
    return int(next((project / "work" / resource_id).rglob("*.pid")).read_text().strip())


@pytest.mark.parametrize("self_heal", [False, True], ids=["observe-only", "self-heal"])
def test_a_killed_server_turns_unhealthy_and_self_heal_brings_it_back(local_project, daemons, self_heal):
    project = local_project
    write_resources(project, {"web": {}})
    args = ["--drift-interval", "0.5", "--unhealthy-after", "2", "--check-timeout", "1"]
    daemons.append(start_daemon(project, *args, *(["--self-heal"] if self_heal else [])))
    row = lambda: (db_rows(project, "SELECT * FROM resources") or [{}])[0]  # noqa: E731
    wait_for(lambda: row().get("health") == "healthy", what="web healthy")
    first_url = row()["url"]
    os.kill(_server_pid(project, "web"), signal.SIGKILL)
    wait_for(lambda: any(e["kind"] == "unhealthy" for e in _events(project)), what="unhealthy event")
    if not self_heal:
        time.sleep(1.5)
        assert row()["health"] == "unhealthy" and row()["url"] == first_url
        return
    wait_for(lambda: row().get("health") == "healthy" and row()["url"] != first_url, timeout=30,
             what="re-provisioned and healthy")


def _events(project: Path) -> list[dict]:
    return db_rows(project, "SELECT kind, message FROM events ORDER BY id")


def test_check_command_reports_a_dead_url(local_project):
    project = local_project
    write_resources(project, {"web": {}})
    assert run_cli(project, "apply", "--yes").returncode == 0
    healthy = run_cli(project, "check")
    assert healthy.returncode == 0 and "Checked 1: 1 healthy, 0 failed" in healthy.stdout
    os.kill(_server_pid(project, "web"), signal.SIGKILL)
    time.sleep(0.2)
    for _ in range(2):
        broken = run_cli(project, "check", "--unhealthy-after", "2")
    assert "✗ web:" in broken.stdout and "web is now unhealthy" in broken.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_example_unit_passes_systemd_analyze_verify(tmp_path):
    unit = (REPO / "examples/systemd/reconciler.service").read_text()
    executable = shutil.which("reconciler") or str(Path(os.sys.executable).parent / "reconciler")
    unit = unit.replace("/opt/reconciler/.venv/bin/reconciler", executable).replace("User=reconciler\n", "")
    unit = unit.replace("Group=reconciler\n", "")
    path = tmp_path / "reconciler.service"
    path.write_text(unit)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ExecReload=" in unit
