"""The fixtures of every tier: daemon processes killed after the test, a real PostgreSQL 15 for the session.

Helpers (running the CLI, writing projects, reading back) are plain functions in tests/support.py."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def daemons():
    """Daemon processes a test starts (append them); any still running afterwards are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# --- bytecode for the processes the tests start --------------------------------------------------------


def pytest_configure(config):
    """Byte-compile the checkout once, as `pip install` would: with PYTHONDONTWRITEBYTECODE set (as on the
    shared machine) every CLI and daemon process the tests start would compile its modules again (20-50 ms
    of CPU each, a thousand times a run). compileall writes the cache whatever that variable says."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller did it
    import compileall

    from tests.support import ROOT

    for package in ("reconciler", "chaos"):
        compileall.compile_dir(str(ROOT / package), quiet=2)


# --- the longest tests first ----------------------------------------------------------------------------

# Under pytest-xdist (`make test` runs `-n 4`) a long test that starts last is the run's tail; started
# first, it runs while the other workers go through the short ones. Node id prefixes; order kept otherwise.
LONGEST_FIRST = (
    "tests/e2e/test_chaos.py::test_short_campaign",
    "tests/unit/test_yaml_differential.py::test_generated_documents_match_csafeloader",
    "tests/e2e/test_daemon_faults.py::test_a_database_locked_past_the_busy_timeout",
    "tests/e2e/test_reclaim.py",
    "tests/e2e/test_postgres_outage.py",
    "tests/e2e/test_crash.py",
    "tests/e2e/test_settle.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        found = [i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)]
        return found[0] if found else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its place


# --- a real PostgreSQL 15 for the session ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throwaway PostgreSQL on a free 127.0.0.1 port for the session; skipped only without its binaries.

    Under pytest-xdist (`-n N`) the workers share one server: the first worker that needs it starts it
    (under a file lock in the run's shared temporary directory) and the controller stops it at the end;
    every test still gets its own database (`pg_url`)."""
    from tests import pgserver

    if not pgserver.available():
        pytest.skip(f"PostgreSQL server binaries not found in {pgserver.PG_BIN}: PostgreSQL tests skipped")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        server = pgserver.start()
        try:
            yield server
        finally:
            server.stop()
        return
    yield _shared_server(tmp_path_factory.getbasetemp().parent / SHARED_PG)


SHARED_PG = "postgres-server.json"


def _shared_server(record: Path):
    """The server of this xdist run: started by the first worker to ask, then read back by the others."""
    from tests import pgserver

    with (record.parent / (record.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            known = json.loads(record.read_text())
            return pgserver.Server(url=known["url"], base=Path(known["base"]), runner=known["runner"])
        server = pgserver.start()
        record.write_text(json.dumps({"url": server.url, "base": str(server.base), "runner": server.runner}))
        return server


def pytest_sessionfinish(session):
    """The xdist controller stops the server its workers shared (after every worker has finished)."""
    from tests import pgserver

    if not session.config.pluginmanager.has_plugin("dsession"):  # not an xdist controller
        return
    record = session.config._tmp_path_factory.getbasetemp() / SHARED_PG
    if record.exists():
        known = json.loads(record.read_text())
        pgserver.Server(url=known["url"], base=Path(known["base"]), runner=known["runner"]).stop()
        record.unlink()


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the session's server."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)
