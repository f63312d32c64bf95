"""Issue 11, item 10: `destroy` and `import --replace` refuse while a daemon holds the database.

Otherwise the daemon undoes them: `destroy --yes` reported 7 deletes and the daemon re-created all 7 a
minute later. Real daemons on a real SQLite file and on the session's real PostgreSQL.
"""

from __future__ import annotations

import json
import signal

import pytest

from reconciler.workers import HOST
from tests.support import make_project, run_cli, runs, start_daemon, wait_for, write_resources


def _statuses(project, **env) -> dict[str, str]:
    done = run_cli(project, "status", "-o", "json", **env)
    return {row["resource_id"]: row["status"] for row in json.loads(done.stdout)} if done.returncode == 0 else {}


def _assert_refused(done, *, daemon_pid: int) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"pid {daemon_pid} on {HOST}" in done.stderr and "stop the daemon" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_destroy_and_import_replace_refuse_while_a_daemon_runs(tmp_path, daemons, backend, request):
    env = {"RECONCILER_DB": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    project = make_project(tmp_path)
    write_resources(project, {"a": {}, "b": {}})
    daemon = start_daemon(project, **env)
    daemons.append(daemon)
    wait_for(lambda: _statuses(project, **env) == {"a": "active", "b": "active"}, timeout=60, what="both active")
    exported = run_cli(project, "export", **env)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "fleet.json").write_text(exported.stdout)

    _assert_refused(run_cli(project, "destroy", "--yes", **env), daemon_pid=daemon.pid)
    _assert_refused(run_cli(project, "destroy", "--yes", "--target", "a", **env), daemon_pid=daemon.pid)
    _assert_refused(run_cli(project, "import", "--replace", str(tmp_path / "fleet.json"), **env),
                    daemon_pid=daemon.pid)
    assert _statuses(project, **env) == {"a": "active", "b": "active"}
    assert not [run for run in runs(project) if run[2] == "delete"]

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    destroyed = run_cli(project, "destroy", "--yes", **env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert _statuses(project, **env) == {"a": "deleted", "b": "deleted"}
    assert run_cli(project, "import", "--replace", str(tmp_path / "fleet.json"), **env).returncode == 0


def test_a_daemon_killed_with_sigkill_does_not_block_destroy(tmp_path, daemons):
    """The lock row outlives a kill -9, but its holder is provably dead on this host: not a live daemon."""
    project = make_project(tmp_path)
    write_resources(project, {"a": {}})
    daemon = start_daemon(project)
    daemons.append(daemon)
    wait_for(lambda: _statuses(project) == {"a": "active"}, what="a active")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)
    destroyed = run_cli(project, "destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
