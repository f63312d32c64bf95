"""The daemon under real faults: a SQLite write lock held by another process past the busy timeout,
a restart with queued jobs that finish at once, and a thread that dies of a bug."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.pgserver import free_port
from tests.support import (
    ROOT,
    db_rows,
    fatal_error,
    hold_write_lock,
    log_events,
    make_project,
    run_cli,
    runs,
    start_daemon,
    statuses,
    wait_for,
    write_resources,
)
from tests.e2e.test_daemon import NotifySocket



@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "p")


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(port: int, spec: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/provisions", data=json.dumps(spec).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def starts(project: Path) -> dict[str, int]:
    counted: dict[str, int] = {}
    for line in runs(project):
        if line[0] == "start":
            counted[line[1]] = counted.get(line[1], 0) + 1
    return counted


def no_tracebacks(project: Path) -> None:
    text = (project / "daemon.log").read_text()
    assert "Traceback" not in text, text[-3000:]


def test_a_restart_with_queued_jobs_that_finish_at_once_keeps_its_workers(project, daemons):
    """Item 5: the first jobs of a start finish within milliseconds; workers must outlive them."""
    write_resources(project, {f"r{i}": {} for i in range(4)})
    first = start_daemon(project, "--stop-grace", "0", SLEEP="30")
    daemons.append(first)
    wait_for(lambda: len(starts(project)) == 4, timeout=30, what="four scripts running")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert {row["status"] for row in db_rows(project, "SELECT status FROM jobs")} == {"queued"}

    port = free_port()
    second = start_daemon(project, "--api", f"127.0.0.1:{port}", SLEEP="0")
    daemons.append(second)
    wait_for(lambda: set(statuses(project).values()) == {"active"}, timeout=30, what="queued jobs done")
    # and the workers are still there for the next change
    write_resources(project, {f"r{i}": {"deploy_ref": "v2"} for i in range(4)})
    wait_for(lambda: {row["deploy_ref"] for row in db_rows(project)} == {"v2"}
             and set(statuses(project).values()) == {"active"}, timeout=30, what="an update after the restart")
    assert wait_for(lambda: health(port)[0] == 200, timeout=20, what="/health ok")
    assert second.poll() is None
    no_tracebacks(project)


def test_a_database_locked_past_the_busy_timeout_degrades_and_recovers(project, daemons, tmp_path):
    """Item 6: an operator's `sqlite3` shell holds the write lock for longer than the busy timeout and
    longer than two thirds of the daemon lock's TTL while scripts run. Workers, renewer and heartbeat
    survive; /health says degraded with the reason; claiming pauses before the lock could lapse; the
    watchdog keeps being fed; no second daemon is admitted; everything completes once afterwards."""
    write_resources(project, {"a": {}, "b": {}})
    port = free_port()
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start_daemon(project, "--api", f"127.0.0.1:{port}", "--busy-timeout", "0.3", "--lock-ttl", "3",
                        "--drift-interval", "1",
                        SLEEP="1.5", NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    daemons.append(proc)
    wait_for(lambda: starts(project) == {"a": 1, "b": 1}, timeout=30, what="both scripts started")
    pings_before = sum("WATCHDOG" in message for message in notify.collect())
    holder = hold_write_lock(project / "state.db", 10)
    try:
        write_resources(project, {"a": {}, "b": {}, "c": {}})  # a change the pass must queue later
        code, report = wait_for(lambda: (lambda answer: answer if answer[0] == 503 else None)(health(port)),
                                timeout=15, what="/health 503 while locked")
        assert report["status"] == "degraded" and "locked" in report["reason"], report
        assert post(port, {"resource_id": "via-api", "owner": "o", "region": "r", "deploy_ref": "v1"}) == 503
        second = run_cli(project, "daemon", "--no-api", "--busy-timeout", "0.3", timeout=60,
                         RECONCILER_LOG_FORMAT="json")
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        assert fatal_error(second.stderr) and ("locked" in second.stderr or "another daemon" in second.stderr)
        wait_for(lambda: any(event["event"].startswith("daemon lock not renewed") for event in log_events(project)),
                 timeout=15, what="claiming paused")
    finally:
        holder.wait(timeout=30)
    pings_during = sum("WATCHDOG" in message for message in notify.collect()) - pings_before
    assert pings_during >= 3  # the loop is alive and retrying: systemd must not kill it

    wait_for(lambda: statuses(project) == {"a": "active", "b": "active", "c": "active"}, timeout=60,
             what="convergence after the lock is released")
    wait_for(lambda: health(port)[0] == 200, timeout=20, what="/health ok again")
    assert proc.poll() is None
    assert "via-api" not in statuses(project)  # the refused call changed nothing
    assert starts(project) == {"a": 1, "b": 1, "c": 1} and not any(line[0] == "OVERLAP" for line in runs(project))
    events = log_events(project)
    loops = {event.get("loop", "") for event in events if event["event"] == "store unavailable; retrying"}
    assert {"heartbeat", "lease-renewer", "pass loop", "drift"} <= loops, loops
    assert any(loop.startswith("worker-") for loop in loops), loops
    assert any(event["event"] == "daemon lock renewed; claiming again" for event in events)
    succeeded = db_rows(project, "SELECT resource_id, count(*) AS n FROM events WHERE kind = 'succeeded'"
                                 " GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in succeeded} == {"a": 1, "b": 1, "c": 1}
    no_tracebacks(project)


# Test-only fault injection (the one fake here): a real bug cannot be summoned on demand, so this
# sitecustomize makes the daemon's job callback raise for resource "boom" inside the real process.
BUGGY_CALLBACK = textwrap.dedent("""\
    import os
    if os.environ.get("INJECT_BUG"):
        import reconciler.daemon as daemon

        original = daemon.Daemon._finished

        def _finished(self, item):
            if item.job.resource_id == "boom":
                raise ZeroDivisionError("injected bug in the job callback")
            return original(self, item)

        daemon.Daemon._finished = _finished
""")


def test_a_thread_that_dies_of_a_bug_ends_the_daemon_non_zero_with_its_traceback(project, daemons, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BUGGY_CALLBACK)
    write_resources(project, {"fine": {}, "boom": {}})
    proc = start_daemon(project, INJECT_BUG="1",
                        PYTHONPATH=os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    daemons.append(proc)
    assert proc.wait(timeout=60) == 1
    died = [event for event in log_events(project) if event["event"].startswith("a daemon loop died")]
    assert died and died[0]["loop"].startswith("worker-"), (project / "daemon.log").read_text()[-3000:]
    assert "Traceback" in died[0]["exception"] and "ZeroDivisionError: injected bug" in died[0]["exception"]
