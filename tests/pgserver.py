"""Start and stop a throwaway PostgreSQL 15 on 127.0.0.1 (used by the test session and by `make bench`).

The server refuses to run as root, so as root its tools run as the `postgres` user (created when
missing); the data directory lives in a fresh temporary directory owned by that user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("RECONCILER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    base: Path
    runner: list[str]

    def stop(self) -> None:
        subprocess.run([*self.runner, str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.url}/{name}"

    def drop_database(self, url: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def start() -> Server:
    """initdb + pg_ctl start on a free port; durability is off, as befits a server that lives minutes."""
    base = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
    runner = _as_postgres()
    if runner:
        shutil.chown(base, user="postgres")
    data, port = base / "data", free_port()
    subprocess.run([*runner, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
               " -c full_page_writes=off -c max_connections=400")
    subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    return Server(url=f"postgresql://postgres@127.0.0.1:{port}", base=base, runner=runner)
