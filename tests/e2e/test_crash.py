"""Crash safety: `kill -9` the apply process at random moments, then converge.

What must hold afterwards: every resource active, no script run without a row, and never two runs
of the script for one resource overlapping in time (the script takes a non-blocking flock per
resource and logs OVERLAP if it cannot; the kernel drops the lock when a run dies).
"""

from __future__ import annotations

import json
import random
import signal
import time

from tests.support import make_project, run_cli, runs, spawn_cli, wait_for, write_resources

IDS = [f"t{i:02d}" for i in range(15)]


def test_kill_9_at_random_moments_then_converge(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {rid: {} for rid in IDS})
    chance = random.Random(20261122)
    for round_ in range(6):
        if round_ == 3:  # change the spec mid-way so updates are interrupted too
            write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
        started = len(runs(project))
        proc = spawn_cli(project, "apply", "--yes", "--parallelism", "4", SLEEP="0.4")
        if round_ % 2:
            # every other kill lands among running scripts: its moment counts from the first script this
            # apply starts (start-up takes seconds on a loaded machine; counted from the spawn, every kill
            # could land before any run, interrupting none)
            wait_for(lambda: len(runs(project)) > started or proc.poll() is not None, timeout=60,
                     what="the apply to start a script")
        time.sleep(chance.uniform(0.15, 1.2))  # the others count from the spawn: start-up, plan, enqueue too
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    done = run_cli(project, "apply", "--yes", "--parallelism", "4", SLEEP="0.4", timeout=120)
    assert done.returncode == 0, done.stderr

    rows = {r["resource_id"]: r for r in json.loads(run_cli(project, "status", "-o", "json").stdout)}
    assert set(rows) == set(IDS)
    assert {(r["status"], r["deploy_ref"]) for r in rows.values()} == {("active", "v2")}
    log = runs(project)
    assert not [line for line in log if line[0] == "OVERLAP"], log
    assert {line[1] for line in log if line[0] == "start"} <= set(rows)
    assert {line[1] for line in log if line[0] == "end" and line[3] == "v2"} == set(IDS)
    assert len([line for line in log if line[0] == "start"]) > len(IDS)  # the kills really interrupted runs
