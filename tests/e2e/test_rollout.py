"""Rollouts end to end (issue 17): `apply` rolling a deploy_ref bump across 20 resources in waves [1, 25%, 100%]
with a 2 s bake, real provision scripts keeping a ledger of start/end timestamps, and real health endpoints
on 127.0.0.1 (one in-process HTTP server; a test flips a deploy_ref to unhealthy)."""

from __future__ import annotations

import json
import signal
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import (
    db_rows,
    log_events,
    make_project,
    run_cli,
    spawn_cli,
    start_daemon,
    wait_for,
    write_resources,
)

IDS = [f"r{i:02d}" for i in range(20)]
BAKE = 2.0

# start/end lines with the resource, its deploy_ref and a timestamp; overlapping runs are logged as OVERLAP
LEDGER_PROVISION = textwrap.dedent("""\
    #!/usr/bin/env bash
    set -u
    log="$CONTROL/ledger.log"
    exec 9>"$CONTROL/$RESOURCE_ID.lock"
    if ! flock -n 9; then echo "OVERLAP $RESOURCE_ID $DEPLOY_REF $(date +%s.%N)" >> "$log"; exit 99; fi
    echo "start $RESOURCE_ID $DEPLOY_REF $(date +%s.%N)" >> "$log"
    sleep "${SLEEP:-0}"
    if [ -f "$CONTROL/fail-$RESOURCE_ID" ]; then echo "boom for $RESOURCE_ID" >&2; exit 3; fi
    echo "end $RESOURCE_ID $DEPLOY_REF $(date +%s.%N)" >> "$log"
    echo "ready at http://127.0.0.1:$HEALTH_PORT/$RESOURCE_ID/$DEPLOY_REF"
""")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(port: int, method: str, path: str) -> tuple[int, object]:
    """A call to the daemon's API on 127.0.0.1 (token-less loopback); (status, JSON body), (0, None) when down."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


class Health:
    """Answers 200 for /<id>/<ref>, 503 when the ref (or the id) is in `bad`."""

    def __init__(self) -> None:
        self.bad: set[str] = set()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                sick = bool(set(parts) & health.bad)
                self.send_response(503 if sick else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if sick else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def health():
    server = Health()
    yield server
    server.server.shutdown()


def project_with(tmp_path: Path, health: Health, rollout: str) -> Path:
    project = make_project(tmp_path, provision=LEDGER_PROVISION)
    (project / "provision" / "targets.yaml").write_text("pass_env: [CONTROL, SLEEP, HEALTH_PORT]\n")
    write_resources(project, {rid: {} for rid in IDS})
    done = cli(project, health, "apply", "--yes")  # the fleet at v1: creates go at once
    assert done.returncode == 0, done.stderr
    (project / "policy.yaml").write_text(rollout)
    (project / "control" / "ledger.log").unlink()
    return project


POLICY = ("rollout:\n  waves: [1, 25%, 100%]\n  bake: 2s\n  check_interval: 0.3s\n  unhealthy_after: 2\n"
          "  min_changes: 10\n  canary: {ids: [r07]}\n")


def cli(project: Path, health: Health, *args: str, **env: str):
    return run_cli(project, *args, timeout=120, HEALTH_PORT=str(health.port), **env)


def ledger(project: Path) -> list[tuple[str, str, str, float]]:
    path = project / "control" / "ledger.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(kind, rid, ref, float(at)) for kind, rid, ref, at in (line.split() for line in lines)]


def waves_of(project: Path) -> dict[str, int]:
    return {row["resource_id"]: row["wave"] for row in db_rows(project, "SELECT * FROM rollout_members")}


def refs(project: Path) -> dict[str, str]:
    return {row["resource_id"]: row["deploy_ref"] for row in db_rows(project)}


def assert_wave_order(project: Path, waves: dict[str, int], ref: str) -> None:
    """No wave's first start before the previous wave's last end + bake (the bake runs from the last success,
    which the store records after the script's end)."""
    entries = [entry for entry in ledger(project) if entry[2] == ref]
    for wave in range(2, max(waves.values()) + 1):
        ended = max(at for kind, rid, _, at in entries if kind == "end" and waves[rid] == wave - 1)
        started = min(at for kind, rid, _, at in entries if kind == "start" and waves[rid] == wave)
        assert started >= ended + BAKE, (wave, started - ended)


def test_a_healthy_rollout_goes_wave_by_wave_and_plan_shows_it_first(tmp_path, health):
    project = project_with(tmp_path, health, POLICY)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    shown = cli(project, health, "plan")
    assert "Rollout: 3 waves — 1, 4, 15 resources; bake 2s; halt at the first failure" in shown.stdout, shown.stdout
    planned = json.loads(cli(project, health, "plan", "-o", "json").stdout)
    assert [wave["size"] for wave in planned["rollout"]["waves"]] == [1, 4, 15]
    assert planned["rollout"]["waves"][0]["resources"] == ["r07"]  # the canary first

    done = cli(project, health, "apply", "--yes", "--parallelism", "10", SLEEP="0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wave 1 of 3 baking until" in done.stdout and "completed" in done.stdout, done.stdout
    waves = waves_of(project)
    assert waves["r07"] == 1 and sorted(waves.values()).count(2) == 4
    assert set(refs(project).values()) == {"v2"}
    assert_wave_order(project, waves, "v2")
    ends = [rid for kind, rid, ref, _ in ledger(project) if kind == "end" and ref == "v2"]
    assert sorted(ends) == IDS  # each update once
    status = json.loads(cli(project, health, "rollout", "status", "-o", "json").stdout)
    assert status[0]["state"] == "completed"
    assert [w["state"] for w in status[0]["waves_detail"]] == ["done", "done", "done"]
    again = cli(project, health, "plan")
    assert "No changes" in again.stdout, again.stdout


def test_an_unhealthy_canary_halts_with_one_resource_changed_and_a_new_commit_supersedes(tmp_path, health):
    project = project_with(tmp_path, health, POLICY)
    health.bad.add("v2")
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    done = cli(project, health, "apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "halted at wave 1 of 3: wave 1: r07 unhealthy" in done.stdout, done.stdout
    assert [rid for rid, ref in refs(project).items() if ref == "v2"] == ["r07"]
    shown = cli(project, health, "plan")
    assert "rollout: halted (wave 2 of 3)" in shown.stdout, shown.stdout
    events = db_rows(project, "SELECT * FROM events WHERE kind = 'rollout_halted'")
    assert len(events) == 1 and "r07 unhealthy" in events[0]["message"]

    write_resources(project, {rid: {"deploy_ref": "v3"} for rid in IDS})  # the fix: a new commit
    fixed = cli(project, health, "apply", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert set(refs(project).values()) == {"v3"}
    states = db_rows(project, "SELECT r.state AS rollout, m.state AS member FROM rollout_members m JOIN rollouts r"
                              " ON r.rollout_id = m.rollout_id ORDER BY r.created_at")
    assert {(s["rollout"], s["member"]) for s in states[:20]} == {("halted", "superseded")}
    assert {(s["rollout"], s["member"]) for s in states[20:]} == {("completed", "succeeded")}


def test_on_failure_revert_puts_the_canary_back_and_holds_it(tmp_path, health):
    project = project_with(tmp_path, health, POLICY + "  on_failure: revert\n")
    health.bad.add("v2")
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    done = cli(project, health, "apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert set(refs(project).values()) == {"v1"}
    assert [(k, rid, ref) for k, rid, ref, _ in ledger(project) if k == "end"] == [("end", "r07", "v2"),
                                                                                    ("end", "r07", "v1")]
    shown = cli(project, health, "plan", "-o", "json")
    notes = {note["resource_id"]: note["reason"] for note in json.loads(shown.stdout)["waiting"]}
    assert notes["r07"] == "rollout: reverted" and notes["r00"].startswith("rollout: halted")


def test_kill_9_of_apply_mid_wave_resumes_at_the_right_wave(tmp_path, health):
    project = project_with(tmp_path, health, POLICY)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    proc = spawn_cli(project, "apply", "--yes", "--parallelism", "2", SLEEP="0.5", HEALTH_PORT=str(health.port))
    wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 3, timeout=60,
             what="wave 2 running")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    done = cli(project, health, "apply", "--yes", "--parallelism", "2", SLEEP="0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(refs(project).values()) == {"v2"}
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    # A script orphaned by the kill may finish unrecorded and its job run again (at least once, never
    # overlapping); the rollout records each resource's update exactly once and started no wave early.
    assert {rid for kind, rid, _, _ in entries if kind == "end"} == set(IDS)
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)
    assert_wave_order(project, waves_of(project), "v2")


@pytest.mark.parametrize("interrupts", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_of_apply_mid_wave_starts_no_further_wave_and_the_next_apply_completes(tmp_path, health, interrupts):
    """One Ctrl-C: the running scripts finish and are recorded; twice: they are stopped and handed back. Either
    way no later wave starts, the rollout stays running, and the next apply finishes it: each update once."""
    project = project_with(tmp_path, health, POLICY)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    proc = spawn_cli(project, "apply", "--yes", "--parallelism", "2", SLEEP="3", HEALTH_PORT=str(health.port))
    wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 2, timeout=60,
             what="wave 2 running")
    waves = waves_of(project)
    for _ in range(interrupts):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # two signals before the handler runs are one (CPython coalesces them)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    entries = ledger(project)
    started = {rid for kind, rid, _, _ in entries if kind == "start"}
    assert started and all(waves[rid] <= 2 for rid in started), entries  # no wave 3 start
    ended = {rid for kind, rid, _, _ in entries if kind == "end"}
    assert (ended == started) if interrupts == 1 else (ended < started), entries
    assert [row["state"] for row in db_rows(project, "SELECT state FROM rollouts")] == ["running"]

    done = cli(project, health, "apply", "--yes", "--parallelism", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(refs(project).values()) == {"v2"}
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)
    assert not [e for e in ledger(project) if e[0] == "OVERLAP"]
    assert_wave_order(project, waves, "v2")


def test_a_bad_rollout_policy_is_a_policy_error_with_file_and_line(tmp_path, health):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}})
    (project / "policy.yaml").write_text("rollout:\n  waves: [1, 25%]\n  bake: soon\n")
    shown = run_cli(project, "plan")
    assert shown.returncode == 1
    assert "policy.yaml:3" in shown.stderr and "rollout.bake" in shown.stderr, shown.stderr
    assert "Traceback" not in shown.stderr


def test_without_a_rollout_section_changes_go_at_once(tmp_path, health):
    project = project_with(tmp_path, health, "mode: enforce\n")
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    done = cli(project, health, "apply", "--yes")
    assert done.returncode == 0 and "Rollout" not in done.stdout, done.stdout
    assert set(refs(project).values()) == {"v2"} and not db_rows(project, "SELECT * FROM rollouts")


def test_the_daemon_rolls_out_and_resumes_after_kill_9_mid_wave(tmp_path, health):
    project = project_with(tmp_path, health, POLICY)
    port = str(health.port)
    daemon = start_daemon(project, SLEEP="0.5", HEALTH_PORT=port)
    try:
        wait_for(lambda: db_rows(project, "SELECT * FROM locks"), timeout=30, what="the daemon's lock")
        write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
        wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 3, timeout=60,
                 what="wave 2 running")
        watched = cli(project, health, "apply", "--yes", "--no-wait")  # a daemon advances it: apply leaves it
        assert watched.returncode == 0 and "left to the daemon" in watched.stdout, watched.stdout + watched.stderr
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        api = free_port()
        daemon = start_daemon(project, "--api", f"127.0.0.1:{api}", SLEEP="0.5", HEALTH_PORT=port)
        wait_for(lambda: db_rows(project, "SELECT * FROM rollouts WHERE state = 'completed'"), timeout=90,
                 what="the rollout to complete")
        (listed,) = wait_for(lambda: http(api, "GET", "/rollouts")[1], timeout=30, what="GET /rollouts")
        assert listed["state"] == "completed" and [w["state"] for w in listed["waves_detail"]] == ["done"] * 3
        code, body = http(api, "POST", f"/rollouts/{listed['rollout_id']}/pause")
        assert code == 409 and "only a running rollout can be paused" in body["detail"]
        assert http(api, "POST", "/rollouts/ro-nope/promote")[0] == 404
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert set(refs(project).values()) == {"v2"}
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)
    assert_wave_order(project, waves_of(project), "v2")


def pg_rows(url: str, sql: str) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return list(conn.execute(sql))


def test_two_daemons_on_postgresql_only_the_leader_advances_and_the_other_takes_over(tmp_path, health, pg_url,
                                                                                     daemons):
    """Two daemons (hosts `a` and `b`, so their actors differ) on the real PostgreSQL: the rollout's every
    transition (its wave jobs, its fleet events) is the leader's; kill -9 of the leader mid-rollout, and the
    other one becomes leader and completes it, running no finished wave again."""
    project = make_project(tmp_path, provision=LEDGER_PROVISION)
    (project / "provision" / "targets.yaml").write_text("pass_env: [CONTROL, SLEEP, HEALTH_PORT]\n")
    write_resources(project, {rid: {} for rid in IDS})
    env = {"RECONCILER_DB": pg_url, "HEALTH_PORT": str(health.port), "SLEEP": "0.3"}
    done = run_cli(project, "apply", "--yes", timeout=120, **env)  # the fleet at v1: creates go at once
    assert done.returncode == 0, done.stderr
    (project / "policy.yaml").write_text(POLICY)
    (project / "control" / "ledger.log").unlink()
    leader = start_daemon(project, log_name="a.log", RECONCILER_HOST="a", **env)
    daemons.append(leader)
    wait_for(lambda: any(e["event"] == "became leader" for e in log_events(project, "a.log")), timeout=30,
             what="a to lead")
    daemons.append(start_daemon(project, log_name="b.log", RECONCILER_HOST="b", **env))
    wait_for(lambda: log_events(project, "b.log"), timeout=30, what="b to start")
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    waves = wait_for(lambda: {r["resource_id"]: r["wave"] for r in pg_rows(pg_url, "SELECT * FROM rollout_members")},
                     timeout=60, what="the rollout")
    wait_for(lambda: any(rid for kind, rid, _, _ in ledger(project) if kind == "start" and waves[rid] == 2),
             timeout=60, what="wave 2 running")
    assert not [e for e in log_events(project, "b.log") if e["event"].startswith("rollout")]  # b only follows
    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=30)
    killed = pg_rows(pg_url, "SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    wait_for(lambda: pg_rows(pg_url, "SELECT * FROM rollouts WHERE state = 'completed'"), timeout=90,
             what="b to complete the rollout")
    assert any(e["event"] == "became leader" for e in log_events(project, "b.log"))

    jobs = pg_rows(pg_url, "SELECT * FROM jobs WHERE spec_json LIKE '%\"v2\"%' ORDER BY created_at")
    before, after = jobs[:killed - 20], jobs[killed - 20:]  # the first 20 jobs are the v1 creates
    assert before and {job["actor"] for job in before} == {"daemon:a"}, [j["actor"] for j in before]
    assert after and {job["actor"] for job in after} == {"daemon:b"}, [j["actor"] for j in after]
    assert {waves[job["resource_id"]] for job in after} <= {2, 3}  # wave 1 (finished) never again
    succeeded = [job["resource_id"] for job in jobs if job["status"] == "succeeded"]
    assert sorted(succeeded) == IDS  # each resource's update completed once
    # its transitions after the start (which carries the change's author, git:…): the wave jobs' `queued`
    # events and the rollout's own fleet events
    events = pg_rows(pg_url, "SELECT kind, actor FROM events WHERE (kind LIKE 'rollout%' AND kind <> "
                             "'rollout_started') OR (kind = 'queued' AND details_json LIKE '%rollout%')")
    assert events and {e["actor"] for e in events} <= {"daemon:a", "daemon:b"}, events
    assert ("rollout_completed", "daemon:b") in {(e["kind"], e["actor"]) for e in events}
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    assert_wave_order(project, waves, "v2")
