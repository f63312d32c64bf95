"""Several daemons on one real PostgreSQL: a shared queue, one leader, hand-over, and moving a fleet there."""

from __future__ import annotations

import getpass
import json
import signal
import socket
import time


from tests.support import log_events, make_project, run_cli, runs, start_daemon, wait_for, write_resources


def statuses(project, url):
    done = run_cli(project, "status", "-o", "json", RECONCILER_DB=url)
    return {row["resource_id"]: row["status"] for row in json.loads(done.stdout)} if done.returncode == 0 else {}


def became_leader(project, log):
    return any(event["event"] == "became leader" for event in log_events(project, log))


def test_two_daemons_share_the_queue_and_run_each_script_once(tmp_path, pg_url, daemons):
    project = make_project(tmp_path)
    ids = [f"w{i:02d}" for i in range(50)]
    write_resources(project, {rid: {} for rid in ids})
    for log in ("a.log", "b.log"):
        daemons.append(start_daemon(project, "--parallelism", "8", log_name=log, RECONCILER_DB=pg_url, SLEEP="0.3"))
    wait_for(lambda: statuses(project, pg_url) == {rid: "active" for rid in ids}, timeout=90, what="50 active")
    starts = [run[1] for run in runs(project) if run[0] == "start"]
    assert sorted(starts) == ids  # each script exactly once
    assert not [run for run in runs(project) if run[0] == "OVERLAP"]
    done = {log: sum(1 for e in log_events(project, log) if e["event"] == "job succeeded") for log in ("a.log", "b.log")}
    assert done["a.log"] > 0 and done["b.log"] > 0 and sum(done.values()) == 50, done
    assert sum(became_leader(project, log) for log in ("a.log", "b.log")) == 1


def test_killing_the_leader_hands_over_within_a_lease(tmp_path, pg_url, daemons):
    project = make_project(tmp_path)
    write_resources(project, {"first": {}})
    leader = start_daemon(project, log_name="a.log", RECONCILER_DB=pg_url)
    daemons.append(leader)
    wait_for(lambda: became_leader(project, "a.log"), what="a leader")
    follower = start_daemon(project, log_name="b.log", RECONCILER_DB=pg_url)
    daemons.append(follower)
    wait_for(lambda: any(e["event"] == "ready as a follower" for e in log_events(project, "b.log")),
             what="a follower")
    assert "leader: pid" in run_cli(project, "status", RECONCILER_DB=pg_url).stdout
    leader.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: became_leader(project, "b.log"), timeout=20, what="the follower to lead")
    assert time.monotonic() - killed < 12  # within one lease (10 s) and a poll
    write_resources(project, {"second": {}}, name="more.yaml")
    wait_for(lambda: statuses(project, pg_url).get("second") == "active", what="the new leader to act")


def test_sqlite_export_import_into_postgres_round_trip(tmp_path, pg_url):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}, "b": {"params": {"size": "large"}}})
    assert run_cli(project, "apply", "--yes").returncode == 0
    exported = run_cli(project, "export")
    assert exported.returncode == 0
    (tmp_path / "fleet.json").write_text(exported.stdout)
    loaded = run_cli(project, "import", str(tmp_path / "fleet.json"), RECONCILER_DB=pg_url)
    assert loaded.returncode == 0 and "2 resources" in loaded.stdout
    again = json.loads(run_cli(project, "export", RECONCILER_DB=pg_url).stdout)
    original = json.loads(exported.stdout)["tables"]
    recorded = again["tables"]["events"].pop()  # the import records itself, with its actor
    assert again["tables"] == original and again["source"] == "postgres"
    me = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    assert (recorded["resource_id"], recorded["kind"], recorded["actor"]) == ("*", "imported", me)
    # the actors travel: outside git a file change is git:unknown, the CLI user who applied it is `by`
    assert {event["actor"] for event in original["events"]} == {"git:unknown"}
    assert {job["actor"] for job in original["jobs"]} == {"git:unknown"}
    assert json.loads(original["events"][0]["details_json"]) == {"by": me}
    assert run_cli(project, "plan", "--detailed-exitcode", RECONCILER_DB=pg_url).returncode == 0
    refused = run_cli(project, "import", str(tmp_path / "fleet.json"), RECONCILER_DB=pg_url)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    assert run_cli(project, "import", "--replace", str(tmp_path / "fleet.json"), RECONCILER_DB=pg_url).returncode == 0
