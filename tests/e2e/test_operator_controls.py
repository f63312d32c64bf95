"""Issue 16 items 1 and 6 through the CLI against real daemons, real scripts and their ledger
(control/runs.log): suspend stops apply and the daemon touching a resource while others proceed; its
queued job is cancelled; expiry resumes it; a file's `suspend:` is not hashed, never reaches the
script and is not lifted by `resume`; `suspend --all` stops the daemon starting anything, and allows
`destroy` beside it; `reconcile` gets a pass from a daemon whose resync is an hour away."""

from __future__ import annotations

import json
import sqlite3

from reconciler.models import ResourceSpec, spec_hash
from tests.support import (
    RECORDING_PROVISION,
    db_rows,
    make_project,
    run_cli,
    runs,
    start_daemon,
    wait_for,
    write_resources,
)

# the recording script, held at its start while control/hold exists, and writing its environment out
HELD_PROVISION = RECORDING_PROVISION.replace(
    'sleep "${SLEEP:-0}"',
    'env > "$CONTROL/env-$RESOURCE_ID"\nwhile [ -f "$CONTROL/hold" ]; do sleep 0.05; done')
QUIET = ("--resync", "3600", "--drift-interval", "3600")


def ran(project, resource_id: str, action: str, ref: str) -> bool:
    return ["end", resource_id, action, ref] in runs(project)


def started(project, resource_id: str, ref: str) -> list[list[str]]:
    return [run for run in runs(project) if run[:2] == ["start", resource_id] and run[3] == ref]


def kept(project) -> dict[str, dict]:
    done = run_cli(project, "plan", "-o", "json")
    assert done.returncode == 0, done.stderr
    return {entry["resource_id"]: entry for entry in json.loads(done.stdout)["kept"]}


def test_suspend_holds_one_resource_against_apply_and_the_daemon_cancels_its_queued_job_and_lapses(
        tmp_path, daemons):
    project = make_project(tmp_path, provision=HELD_PROVISION)
    write_resources(project, {"a": {}, "b": {}})
    daemons.append(start_daemon(project, *QUIET, "--parallelism", "1"))
    wait_for(lambda: ran(project, "a", "create", "v1") and ran(project, "b", "create", "v1"), timeout=60,
             what="both created")

    done = run_cli(project, "suspend", "a", "--reason", "INC-1: tenant migrating")
    assert done.returncode == 0, done.stderr
    write_resources(project, {"a": {"deploy_ref": "v2"}, "b": {"deploy_ref": "v2"}})
    wait_for(lambda: ran(project, "b", "update", "v2"), timeout=60, what="b updated by the daemon")
    note = kept(project)["a"]
    assert note["reason_code"] == "suspended" and note["suspension"]["reason"] == "INC-1: tenant migrating"
    assert note["suspension"]["actor"].startswith("cli:") and "would otherwise update" in note["reason"]
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert started(project, "a", "v2") == []  # neither the daemon nor apply touched it

    assert run_cli(project, "resume", "a", "--reason", "INC-1 over").returncode == 0
    wait_for(lambda: ran(project, "a", "update", "v2"), timeout=30, what="a updated once resumed")
    actors = {event["kind"]: event["actor"] for event in
              db_rows(project, "SELECT kind, actor FROM events WHERE resource_id = 'a'")}
    assert actors["suspended"].startswith("cli:") and actors["resumed"].startswith("cli:")

    # a queued job is cancelled, a running one finishes, and a short --until lapses by itself
    (project / "control" / "hold").touch()
    write_resources(project, {"a": {"deploy_ref": "v3"}, "b": {"deploy_ref": "v3"}})
    queued = wait_for(lambda: db_rows(project, "SELECT * FROM jobs WHERE status = 'queued'")
                      if db_rows(project, "SELECT * FROM jobs WHERE status = 'running'") else None,
                      timeout=30, what="one job running, one queued")[0]
    waiting = queued["resource_id"]
    done = run_cli(project, "suspend", waiting, "--reason", "hold on", "--until", "6s")
    assert done.returncode == 0 and "Cancelled 1 queued job" in done.stdout, done.stdout + done.stderr
    assert db_rows(project, "SELECT status FROM jobs WHERE job_id = ?", queued["job_id"])[0]["status"] == "cancelled"
    (project / "control" / "hold").unlink()
    other = "b" if waiting == "a" else "a"
    wait_for(lambda: ran(project, other, "update", "v3"), timeout=30, what="the running job finished")
    if waiting in kept(project):  # still suspended now: then nothing of it can have started
        assert started(project, waiting, "v3") == []
    wait_for(lambda: ran(project, waiting, "update", "v3"), timeout=60, what="the suspension lapsed by itself")

    # a pass on demand: a retry made due behind the daemon's back (no file, no resync for an hour)
    with sqlite3.connect(project / "state.db", timeout=30) as conn:
        conn.execute("UPDATE resources SET status = 'errored', error = 'poked', target_hash = spec_hash"
                     " WHERE resource_id = 'b'")
    before = len(started(project, "b", "v3"))
    done = run_cli(project, "reconcile", "b", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ b: update succeeded" in done.stdout and len(started(project, "b", "v3")) == before + 1
    unknown = run_cli(project, "reconcile", "nope", "--timeout", "60")
    assert unknown.returncode == 1 and "nope: no such resource" in unknown.stderr


def test_suspend_all_stops_the_daemon_starting_anything_and_lets_destroy_run_beside_it(tmp_path, daemons):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}, "b": {}})
    daemon = start_daemon(project, *QUIET)
    daemons.append(daemon)
    wait_for(lambda: ran(project, "a", "create", "v1") and ran(project, "b", "create", "v1"), timeout=60,
             what="both created")

    assert run_cli(project, "suspend", "--all", "--reason", "INC-2: provider outage").returncode == 0
    write_resources(project, {"a": {"deploy_ref": "v2"}, "b": {}, "later": {}})
    asked = run_cli(project, "reconcile", "--wait", "--timeout", "60")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "0 job(s)" in asked.stdout and "the fleet is suspended by cli:" in asked.stdout
    assert started(project, "later", "v1") == [] and started(project, "a", "v2") == []
    plan = json.loads(run_cli(project, "plan", "-o", "json").stdout)
    assert plan["fleet_suspension"]["reason"] == "INC-2: provider outage" and not plan["changes"]

    destroyed = run_cli(project, "destroy", "--target", "b", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert ran(project, "b", "delete", "v1") and daemon.poll() is None

    assert run_cli(project, "resume", "--all").returncode == 0
    wait_for(lambda: ran(project, "later", "create", "v1") and ran(project, "a", "update", "v2"), timeout=60,
             what="the daemon acting again once resumed")


def test_a_files_suspend_is_not_the_specs_and_only_editing_the_file_lifts_it(tmp_path):
    project = make_project(tmp_path, provision=HELD_PROVISION)
    write_resources(project, {
        "held": {"suspend": {"reason": "needs review", "until": "2099-01-01T00:00:00Z"}},
        "lapsed": {"suspend": {"reason": "secret-looking reason", "until": "2020-01-01T00:00:00Z"}},
    })
    applied = run_cli(project, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "held: suspended in " in applied.stdout and "fleet.yaml" in applied.stdout
    assert started(project, "held", "v1") == [] and ran(project, "lapsed", "create", "v1")
    env = (project / "control" / "env-lapsed").read_text()
    resource_json = next(line for line in env.splitlines() if line.startswith("RESOURCE_JSON="))
    assert "suspend" not in resource_json and "secret-looking" not in env and "2020-01-01" not in env
    plain = ResourceSpec(resource_id="lapsed", owner="acme", region="eu-west-1", deploy_ref="v1")
    assert db_rows(project, "SELECT spec_hash FROM resources WHERE resource_id = 'lapsed'")[0]["spec_hash"] == \
        spec_hash(plain)

    refused = run_cli(project, "resume", "held")
    assert refused.returncode == 1 and "only removing `suspend:` from" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    write_resources(project, {"held": {}, "lapsed": {}})
    assert run_cli(project, "plan", "--detailed-exitcode").returncode == 2  # held: now to be created
    assert run_cli(project, "apply", "--yes").returncode == 0 and ran(project, "held", "create", "v1")
    assert not started(project, "lapsed", "v1")[1:]  # removing the block changed nothing of `lapsed`


def test_bad_operator_input_is_an_error_and_changes_nothing(tmp_path):
    project = make_project(tmp_path)
    write_resources(project, {"a": {}})
    cases = [
        (("suspend", "a"), "Missing option '--reason'"),
        (("suspend", "--reason", "x"), "or pass --all"),
        (("suspend", "a", "--all", "--reason", "x"), "not both"),
        (("suspend", "ab", "--reason", "x"), "did you mean 'a'"),
        (("suspend", "a", "--reason", "x", "--until", "soon"), "--until soon"),
        (("suspend", "a", "--reason", "  "), "--reason must say why"),
        (("reconcile",), "no daemon holds this database"),
    ]
    for args, expected in cases:
        done = run_cli(project, *args)
        assert done.returncode == 1 and expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert db_rows(project, "SELECT * FROM suspensions") == []
    for command in ("suspend", "resume", "reconcile"):
        helped = run_cli(project, command, "--help")
        assert helped.returncode == 0 and "Example" in helped.stdout
