"""policy.yaml in a real daemon (issue 15): only the violating resources are held (the scripts' run log
proves the others ran), a held event is written once across passes and a restart, the API refuses a
violating POST with 403 naming the rule and writes nothing, the policy reloads on save (tighten: new
creates held; loosen: they proceed), a broken save keeps the last good policy in force and says so, a
broken policy at start refuses the start, budgets defer work to later passes, and on PostgreSQL two
daemons share the hourly window because it is counted from the shared queue.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.e2e.test_api import Client, _up, free_port
from tests.support import (
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


def start_api_daemon(project: Path, daemons: list, log_name: str = "daemon.log", **env: str):
    port = free_port()
    proc = start_daemon(project, "--api", f"127.0.0.1:{port}", log_name=log_name, **env)
    daemons.append(proc)
    client = Client(f"http://127.0.0.1:{port}")
    wait_for(lambda: _up(client), what="the API to answer")
    return proc, client


def write_policy(project: Path, text: str) -> None:
    """Saved atomically (as an editor or git would), so the daemon may count it at once."""
    tmp = project / ".policy.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(project / "policy.yaml")


def ran(project: Path) -> set[str]:
    return {line[1] for line in runs(project) if line[0] == "end"}


def held_events(project: Path, rid: str) -> list[dict]:
    return db_rows(project, "SELECT * FROM events WHERE resource_id = ? AND kind = 'held'", rid)


def holds(project: Path) -> dict[str, str]:
    return {row["resource_id"]: row["rules"] for row in db_rows(project, "SELECT * FROM holds")}


def passes(client) -> str | None:
    return client.call("GET", "/health")[1].get("last_pass_at")


def another_pass(project: Path, proc, client) -> None:
    """SIGHUP forces a full pass; wait until one has run after it."""
    before = passes(client)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: passes(client) not in (None, before), what="a pass after SIGHUP")


QUOTA = "quotas:\n  total: 10\n  per_owner:\n    default: 10\n    acme: 2\n"


def test_the_daemon_holds_only_what_breaks_the_policy_and_reloads_it_on_save(tmp_path, daemons):
    project = make_project(tmp_path)
    write_policy(project, QUOTA)
    # acme at its limit (a1, a2) and one over (a3, last in resource_id order); globex free
    write_resources(project, {"a1": {}, "a2": {}, "a3": {}, "g1": {"owner": "globex"}})
    proc, client = start_api_daemon(project, daemons)
    wait_for(lambda: ran(project) >= {"a1", "a2", "g1"}, what="the compliant resources to be provisioned")
    wait_for(lambda: holds(project).get("a3") == "quotas.per_owner", what="a3 held for quotas.per_owner")
    another_pass(project, proc, client)
    another_pass(project, proc, client)
    assert "a3" not in ran(project) and "a3" not in statuses(project)
    assert len(held_events(project, "a3")) == 1
    event = held_events(project, "a3")[0]
    assert "quotas.per_owner" in event["message"] and "policy.yaml:" in event["details_json"]

    # the CLI and the API say why
    shown = run_cli(project, "status")
    assert "held back by policy (1):" in shown.stdout and "a3  quotas.per_owner" in shown.stdout
    status, body = client.call("POST", "/provisions", {"resource_id": "api-acme", "owner": "acme",
                                                        "region": "eu-west-1", "deploy_ref": "v1"})
    assert status == 403 and body["detail"]["rules"] == ["quotas.per_owner"], body
    assert "policy.yaml:" in body["detail"]["message"] and body["detail"]["places"]
    assert db_rows(project, "SELECT * FROM api_desired") == [] and "api-acme" not in statuses(project)
    assert client.call("POST", "/provisions", {"resource_id": "api-globex", "owner": "globex",
                                               "region": "eu-west-1", "deploy_ref": "v1"})[0] == 202
    metrics = client.call("GET", "/metrics")[1]
    assert 'reconciler_quota_limit{owner="acme"} 2.0' in metrics and 'reconciler_quota_used{owner="acme"}' in metrics
    assert 'reconciler_policy_refusals_total{rule="quotas.per_owner"} 2.0' in metrics  # the hold and the 403
    assert 'reconciler_policy_held{rule="quotas.per_owner"} 1.0' in metrics

    # tighten on save: a new create over the total is held; what is live stays
    write_policy(project, QUOTA.replace("total: 10", "total: 4"))
    write_resources(project, {"a1": {}, "a2": {}, "a3": {}, "g1": {"owner": "globex"}, "g2": {"owner": "globex"}})
    wait_for(lambda: holds(project).get("g2") == "quotas.total", what="g2 held for quotas.total")
    # loosen: it proceeds
    write_policy(project, QUOTA)
    wait_for(lambda: "g2" in ran(project), what="g2 provisioned once the policy allows it")
    wait_for(lambda: set(holds(project)) == {"a3"}, what="only a3 still held")

    # a broken save: the last good policy stays in force, /health and the log say so
    write_policy(project, "quotas:\n  per_owner: [\n")
    wait_for(lambda: not client.call("GET", "/health")[1].get("policy_loads", True), what="/health to say so")
    health = client.call("GET", "/health")[1]
    assert "policy.yaml:2:" in health["policy_errors"][0]  # file:line (shown relative to the daemon's directory)
    assert any(e["event"] == "policy does not load; keeping the last good one in force" for e in log_events(project))
    write_resources(project, {"a1": {}, "a2": {}, "a3": {}, "a4": {}, "g1": {"owner": "globex"},
                              "g2": {"owner": "globex"}})
    wait_for(lambda: holds(project).get("a4") == "quotas.per_owner", what="a4 held by the last good policy")

    # a restart: the same holds write no second event (a3 had one per change of its rules: +total, -total)
    before = {rid: len(held_events(project, rid)) for rid in ("a3", "a4")}
    assert before == {"a3": 3, "a4": 1}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    write_policy(project, QUOTA)
    proc, client = start_api_daemon(project, daemons)
    another_pass(project, proc, client)
    another_pass(project, proc, client)
    assert {rid: len(held_events(project, rid)) for rid in ("a3", "a4")} == before
    assert set(holds(project)) == {"a3", "a4"} and not ran(project) & {"a3", "a4"}


def test_a_policy_that_does_not_load_refuses_the_start(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"a1": {}})
    (project / "policy.yaml").write_text("quotas:\n  totl: 5\n")
    done = run_cli(project, "daemon", "--no-api", timeout=60)
    assert done.returncode == 1
    assert "policy.yaml:2" in done.stderr and "totl" in done.stderr and "does not start" in done.stderr
    assert not (project / "state.db").exists() or statuses(project) == {}


def test_max_per_plan_defers_the_rest_to_later_passes(tmp_path, daemons):
    project = make_project(tmp_path)
    write_policy(project, "changes:\n  max_per_plan: {create: 2}\n")
    write_resources(project, {f"r{i}": {} for i in range(5)})
    daemons.append(start_daemon(project, SLEEP="0.3"))
    wait_for(lambda: ran(project) == {f"r{i}" for i in range(5)}, timeout=60, what="every create, pass by pass")
    jobs = db_rows(project, "SELECT created_at, count(*) AS n FROM jobs GROUP BY created_at")
    assert len(jobs) >= 3 and max(row["n"] for row in jobs) == 2, jobs
    deferred = db_rows(project, "SELECT * FROM events WHERE kind = 'held'")
    assert deferred and all("changes.max_per_plan.create" in row["message"] for row in deferred)
    wait_for(lambda: holds(project) == {}, what="no hold left once all were started")


def test_two_daemons_on_postgresql_share_the_hourly_window(tmp_path, pg_url, daemons):
    from tests.e2e.test_postgres import became_leader

    project = make_project(tmp_path)
    write_policy(project, "changes:\n  max_per_owner_per_hour: 3\n")
    write_resources(project, {f"a{i}": {} for i in range(5)})
    first = start_daemon(project, log_name="a.log", RECONCILER_DB=pg_url)
    daemons.append(first)
    wait_for(lambda: became_leader(project, "a.log"), what="a leader")
    wait_for(lambda: len(ran(project)) == 3, what="three changes started")
    _second, client = start_api_daemon(project, daemons, log_name="b.log", RECONCILER_DB=pg_url)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    wait_for(lambda: client.call("GET", "/health")[1].get("daemon", {}).get("leading"), timeout=30,
             what="the second daemon to lead")
    wait_for(lambda: client.call("GET", "/health")[1].get("policy_held") == 2, what="its pass to defer two")
    assert len(ran(project)) == 3  # the window is the queue's: the new leader starts nothing more for acme
    status, body = client.call("POST", "/provisions", {"resource_id": "api-acme", "owner": "acme",
                                                        "region": "eu-west-1", "deploy_ref": "v1"})
    assert status == 429 and body["detail"]["rules"] == ["changes.max_per_owner_per_hour"], body
    shown = json.loads(run_cli(project, "status", "-o", "json", RECONCILER_DB=pg_url).stdout)
    assert sum(1 for row in shown if row["status"] == "active") == 3
