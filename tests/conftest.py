"""Shared fixtures: running the real CLI as a subprocess against the code in this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
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


# --- a real PostgreSQL 15 for the session ------------------------------------------------------------

PG_BIN = Path(os.environ.get("RECONCILER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres() -> list[str]:
    """The server refuses to run as root: run its tools as the `postgres` user (created if missing)."""
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """Start a throwaway PostgreSQL on a free 127.0.0.1 port; stop and remove it after the session."""
    import shutil
    import tempfile

    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}: PostgreSQL tests skipped")
    base = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
    runner = _as_postgres()
    if runner:
        shutil.chown(base, user="postgres")
    data, port = base / "data", _free_port()
    subprocess.run([*runner, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
               " -c full_page_writes=off -c max_connections=400")
    subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the session's server."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
