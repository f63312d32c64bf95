"""Shared fixtures: running the real CLI as a subprocess against the code in this checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.support import reconciler_argv

ROOT = Path(__file__).resolve().parents[1]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI run: this checkout first on the path, no inherited RECONCILER_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") and k != "NO_COLOR"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    base.update(env or {})
    return base


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`run_cli("plan", "--desired", "d", cwd=tmp_path)`: `python -m reconciler.cli ...` in a real process."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*reconciler_argv(), *map(str, args)],
            cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=60, check=False,
        )

    return run


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
