"""Issue 11 items 7 and 8: `apply` tells the truth when its own workers die, and handles interrupts.

Real `reconciler apply` processes, real signals, real scripts that take flocks (see tests/support.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.support import (
    cli_env,
    db_rows,
    make_project,
    reconciler_argv,
    run_cli,
    runs,
    wait_for,
    write_resources,
)

IDS = ["r1", "r2", "r3"]


def _apply(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """apply with stderr in a file the test can read while it runs."""
    return subprocess.Popen([*reconciler_argv(), "apply", "--yes", *args], cwd=project,
                            env=cli_env(project, **env), text=True, stdin=subprocess.DEVNULL,
                            stdout=(project / "stdout.txt").open("w"), stderr=(project / "stderr.txt").open("w"))


def _stderr(project: Path) -> str:
    return (project / "stderr.txt").read_text()


def _lines(project: Path, kind: str) -> list[list[str]]:
    return [line for line in runs(project) if line[0] == kind]


def _jobs(project: Path) -> dict[str, str]:
    return {row["resource_id"]: row["status"] for row in db_rows(project, "SELECT * FROM jobs")}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _finish_later(project: Path) -> None:
    """What was handed back runs to the end in the next apply, each script once at a time."""
    again = run_cli(project, "apply", "--yes", "--parallelism", "3", SLEEP="0", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = json.loads(run_cli(project, "status", "-o", "json").stdout)
    assert {(row["resource_id"], row["status"]) for row in rows} == {(rid, "active") for rid in IDS}
    assert not _lines(project, "OVERLAP"), runs(project)


# --- item 7 ------------------------------------------------------------------------------------------


def test_apply_whose_worker_died_says_so_and_exits_1(tmp_path):
    """A real death: stdout's reader goes away (`apply --yes | head -n 5`), so the worker thread that
    prints the first finished job gets EPIPE. It used to count the rest as "finished by another
    worker" and exit 0 with rows still provisioning."""
    project = make_project(tmp_path)
    write_resources(project, {rid: {} for rid in IDS})
    proc = subprocess.Popen([*reconciler_argv(), "apply", "--yes", "--parallelism", "1"], cwd=project,
                            env=cli_env(project, SLEEP="1"), text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("Plan:"):
            break
    proc.stdout.close()  # the reader is gone before the first job finishes
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1, err
    assert "BrokenPipeError" in err and "worker" in err
    assert "finished by another worker" not in err
    assert "Traceback" not in err
    jobs = _jobs(project)
    queued = sorted(rid for rid, status in jobs.items() if status == "queued")  # handed back, not stuck
    assert queued and sorted(set(jobs.values())) == ["queued", "succeeded"], jobs
    assert f"{len(queued)} not finished" in err, err
    _finish_later(project)


# --- item 8 ------------------------------------------------------------------------------------------


def test_first_interrupt_stops_claiming_and_waits_for_running_scripts(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {rid: {} for rid in IDS})
    proc = _apply(project, "--parallelism", "2", SLEEP="2")
    wait_for(lambda: len(_lines(project, "start")) == 2, what="two scripts running")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "waiting for" in _stderr(project), what="the waiting notice")
    assert proc.wait(timeout=60) == 130, _stderr(project)
    started = {line[1] for line in _lines(project, "start")}
    assert len(started) == 2 and {line[1] for line in _lines(project, "end")} == started
    jobs = _jobs(project)
    assert {rid: jobs[rid] for rid in started} == {rid: "succeeded" for rid in started}  # recorded
    assert [jobs[rid] for rid in IDS if rid not in started] == ["queued"]  # never claimed
    assert "interrupted" in _stderr(project).lower()
    _finish_later(project)


def test_second_interrupt_stops_the_scripts_and_hands_their_jobs_back(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {rid: {} for rid in IDS})
    proc = _apply(project, "--parallelism", "2", SLEEP="120")
    wait_for(lambda: len(_lines(project, "start")) == 2, what="two scripts running")
    pids = [int(line[-1]) for line in _lines(project, "start")]
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "waiting for" in _stderr(project), what="the waiting notice")
    assert all(_alive(pid) for pid in pids)  # the first interrupt lets them run
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, _stderr(project)
    assert not [pid for pid in pids if _alive(pid)]
    assert set(_jobs(project).values()) == {"queued"}
    assert not [row for row in db_rows(project, "SELECT * FROM jobs") if row["lease_owner"]]
    assert "stopping" in _stderr(project).lower()
    _finish_later(project)
