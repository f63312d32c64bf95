"""The fixtures of every tier: daemon processes killed after the test, a real PostgreSQL 15 for the session.

Helpers (running the CLI, writing projects, reading back) are plain functions in tests/support.py."""

from __future__ import annotations

import subprocess

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


# --- a real PostgreSQL 15 for the session ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL on a free 127.0.0.1 port for the session; skipped only without its binaries."""
    from tests import pgserver

    if not pgserver.available():
        pytest.skip(f"PostgreSQL server binaries not found in {pgserver.PG_BIN}: PostgreSQL tests skipped")
    server = pgserver.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the session's server."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)
