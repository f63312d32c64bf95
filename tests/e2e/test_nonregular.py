"""A FIFO, a symlink to one, or a device named *.yaml in desired/ is refused by name; nothing blocks on it.

Real FIFOs (os.mkfifo) and real processes with a timeout: a hang fails the test instead of the run.
"""

from __future__ import annotations

import os
import stat
import signal
from pathlib import Path

import pytest

from tests.support import log_events, make_project, run_cli, start_daemon, wait_for, write_resources


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}})
    return project


def _fifo(project: Path, kind: str) -> str:
    desired = project / "desired"
    if kind == "fifo":
        os.mkfifo(desired / "pipe.yaml")
        return "pipe.yaml"
    if kind == "symlink-to-fifo":  # targets stay inside the tree ('_' names are not read themselves):
        os.mkfifo(desired / "_elsewhere")  # a link that leaves the tree is refused for that reason alone
        (desired / "link.yaml").symlink_to(desired / "_elsewhere")
        return "link.yaml"
    os.mknod(desired / "_zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's twin
    (desired / "zero.yaml").symlink_to(desired / "_zero")
    return "zero.yaml"


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo", "device"])
@pytest.mark.parametrize("command", [["validate"], ["plan"], ["apply", "--yes"]])
def test_one_shot_commands_refuse_a_non_regular_yaml_file(project, kind, command):
    name = _fifo(project, kind)
    done = run_cli(project, *command, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert name in done.stderr and "not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_daemon_reports_a_fifo_and_still_stops_on_sigterm(project, daemons):
    name = _fifo(project, "fifo")
    proc = start_daemon(project, "--resync", "0.5")
    daemons.append(proc)
    wait_for(lambda: any(name in str(e.get("file", "")) and "not a regular file" in str(e.get("problem", ""))
                         for e in log_events(project)), what="the FIFO named in the log")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_a_fifo_or_symlink_created_while_the_daemon_runs_is_judged_at_once(project, daemons):
    from tests.support import statuses

    proc = start_daemon(project, "--resync", "30", RECONCILER_SETTLE="0.1")
    daemons.append(proc)
    wait_for(lambda: statuses(project).get("a") == "active", what="a active")
    shared = project / "desired" / "_shared.yaml"
    shared.write_text("resource_id: b\nowner: o\nregion: r\ndeploy_ref: v1\n")
    (project / "desired" / "b.yaml").symlink_to(shared)  # IN_CREATE with no write to follow
    wait_for(lambda: statuses(project).get("b") == "active", what="b (a symlink) active")
    os.mkfifo(project / "desired" / "late.yaml")
    wait_for(lambda: any("late.yaml" in str(e.get("file", "")) for e in log_events(project)),
             what="the FIFO reported (not held as a file being written)")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
