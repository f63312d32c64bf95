"""Issue 11 item 1: a reclaimer killed while it ends the previous run must not cost that run its record.

The first run ignores SIGTERM, so the process that reclaims its job spends the whole grace period
waiting for it to go; we kill -9 that reclaimer in the middle of it. A third apply must then still know
about the first run and end it before starting the script again: the script takes a non-blocking
flock per resource and logs OVERLAP when a run of the same resource is already going.
"""

from __future__ import annotations

import json
import os
import signal

from tests.support import RECORDING_PROVISION, make_project, run_cli, runs, spawn_cli, wait_for, write_resources

# Steered by $CONTROL/stubborn: the run logs each SIGTERM it receives and keeps going (its fd 9 keeps
# the flock) for a minute, so only SIGKILL ends it. Its output goes nowhere: bash reports a child
# killed by a signal on stderr, and that pipe's reader is the apply we kill -9 (SIGPIPE would end it).
STUBBORN_PROVISION = RECORDING_PROVISION.replace('sleep "${SLEEP:-0}"', """\
if [ -f "$CONTROL/stubborn" ]; then
    exec >/dev/null 2>&1
    trap 'echo "TERM $RESOURCE_ID $$" >> "$log"' TERM
    end=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
fi
sleep "${SLEEP:-0}"
""")


def _lines(project, kind: str) -> list[list[str]]:
    return [line for line in runs(project) if line[0] == kind]


def test_kill_9_of_the_reclaimer_during_its_grace_does_not_start_a_second_run(tmp_path):
    project = make_project(tmp_path, provision=STUBBORN_PROVISION)
    write_resources(project, {"r1": {}})
    (project / "control" / "stubborn").touch()
    first_pid = None
    try:
        owner = spawn_cli(project, "apply", "--yes")
        first_pid = int(wait_for(lambda: _lines(project, "start"), what="the first run")[0][-1])
        owner.send_signal(signal.SIGKILL)  # SQLite: no pdeathsig guard, the run outlives its apply
        owner.communicate(timeout=30)
        (project / "control" / "stubborn").unlink()  # runs started from now on finish at once

        reclaimer = spawn_cli(project, "apply", "--yes")
        wait_for(lambda: _lines(project, "TERM"), timeout=60, what="the reclaimer to TERM the first run")
        reclaimer.send_signal(signal.SIGKILL)  # in the middle of its grace
        reclaimer.communicate(timeout=30)
        assert _alive(first_pid), "the first run must still be going for this test to mean anything"

        third = run_cli(project, "apply", "--yes", timeout=120)
        assert third.returncode == 0, third.stdout + third.stderr
        log = runs(project)
        assert not _lines(project, "OVERLAP"), log
        assert not _alive(first_pid)
        assert [line[:2] for line in _lines(project, "end")] == [["end", "r1"]]
        rows = json.loads(run_cli(project, "status", "-o", "json").stdout)
        assert [(row["resource_id"], row["status"]) for row in rows] == [("r1", "active")]
    finally:
        if first_pid and _alive(first_pid):
            os.killpg(first_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
