"""The world a campaign runs in: directories, git repositories, the store, and the real processes.

Everything lives under one root directory that is kept when a campaign fails. The database (SQLite)
and the scripts' working directories sit on a small tmpfs when the campaign runs in a private mount
namespace (see `namespace`), so a full or read-only disk is a real one. Options the daemon does not
know yet (settle, busy timeout, leases: added by later changes) are passed only when `--help` lists
them, so the same harness runs on every revision.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .scripts import write_scripts

REPO = Path(__file__).resolve().parent.parent
DEFECT_ENV = "RECONCILER_TEST_DEFECT"
# Small values so that faults resolve within seconds: (option, value), passed when --help lists them.
GLOBAL_SETTINGS = (("--busy-timeout", "0.5"), ("--lease-seconds", "3"), ("--lock-ttl", "3"),
                   ("--leader-ttl", "3"), ("--settle", "0.15"))
RUN_SETTINGS = (("--timeout", "2"), ("--retry-base", "0.2"), ("--retry-cap", "2"), ("--parallelism", "4"))
DAEMON_SETTINGS = (("--resync", "2"), ("--drift-interval", "30"), ("--stop-grace", "1"))


def reconciler_argv() -> list[str]:
    script = Path(sys.executable).parent / "reconciler"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.cli"]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update({"NO_COLOR": "1", "RECONCILER_LOG_FORMAT": "json"})
    if os.environ.get(DEFECT_ENV):
        env[DEFECT_ENV] = os.environ[DEFECT_ENV]
    return env


@cache
def known_options(command: str) -> frozenset[str]:
    """The long options `reconciler [command] --help` lists (empty command: the global ones)."""
    argv = [*reconciler_argv(), *([command] if command else []), "--help"]
    out = subprocess.run(argv, capture_output=True, text=True, env=base_env(), timeout=60).stdout
    return frozenset(word.rstrip(",=") for word in out.split() if word.startswith("--"))


def supported_settings() -> tuple[list[str], list[str]]:
    """(global options, daemon options) among GLOBAL_SETTINGS that this revision knows."""
    glob, daemon = known_options(""), known_options("daemon")
    as_global = [part for opt, value in GLOBAL_SETTINGS if opt in glob for part in (opt, value)]
    as_daemon = [part for opt, value in GLOBAL_SETTINGS if opt not in glob and opt in daemon
                 for part in (opt, value)]
    return as_global, as_daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", *args], cwd=cwd,
                   check=True, capture_output=True, timeout=60)


@dataclass
class Slot:
    """One daemon's place: its API port and log survive restarts."""

    index: int
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class World:
    root: Path
    backend: str
    token: str
    db_url: str = ""
    disk: Path | None = None  # tmpfs holding the SQLite database (the full-disk fault)
    workdisk: Path | None = None  # tmpfs holding the scripts' working directories (the read-only fault)
    pg: Any = None
    slots: list[Slot] = field(default_factory=list)
    applies: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: list[tuple[float, int, str]] = field(default_factory=list)  # (time, pid, what)
    started: list[tuple[float, int, str]] = field(default_factory=list)

    # --- layout -------------------------------------------------------------------------------

    @property
    def desired(self) -> Path:
        return self.root / "desired"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def provision(self) -> Path:
        return self.root / "provision"

    @property
    def policy(self) -> Path:
        """policy.yaml in the directory that holds desired/: where the daemon and apply look by default."""
        return self.root / "policy.yaml"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def work(self) -> Path:
        return self.workdisk or self.root / "work"

    def build(self, *, daemons: int) -> None:
        for name in ("control", "logs"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        write_scripts(provision=self.provision, control=self.control)
        git("init", "--bare", "-q", "-b", "main", str(self.root / "upstream.git"), cwd=self.root)
        git("clone", "-q", str(self.root / "upstream.git"), str(self.dev), cwd=self.root)
        (self.dev / "README").write_text("desired state of the chaos world\n")
        git("add", "-A", cwd=self.dev)
        git("commit", "-q", "-m", "start", cwd=self.dev)
        git("push", "-q", "origin", "HEAD:main", cwd=self.dev)
        git("clone", "-q", str(self.root / "upstream.git"), str(self.desired), cwd=self.root)
        self.slots = [Slot(index=i, port=free_port(), log=self.root / "logs" / f"daemon-{i}.log")
                      for i in range(daemons)]

    # --- the reconciler's processes -------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        glob, _ = supported_settings()
        return [*reconciler_argv(), "--desired", str(self.desired), "--db", self.db_url, "--provision",
                str(self.provision), "--work-dir", str(self.work), *glob, *args]

    def start_daemon(self, slot: Slot) -> None:
        _, extra = supported_settings()
        settings = [part for opt, value in (*RUN_SETTINGS, *DAEMON_SETTINGS) for part in (opt, value)]
        argv = self.command("daemon", *settings, *extra, "--api", f"127.0.0.1:{slot.port}")
        with slot.log.open("ab") as log:
            slot.proc = subprocess.Popen(argv, cwd=self.root, env=base_env(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append((time.time(), slot.proc.pid, f"daemon-{slot.index}"))

    def stop_daemon(self, slot: Slot, *, sig: int, wait: float = 30.0) -> None:
        if not slot.alive():
            return
        assert slot.proc is not None
        self.killed.append((time.time(), slot.proc.pid, f"daemon-{slot.index} {signal.Signals(sig).name}"))
        slot.proc.send_signal(sig)
        try:
            slot.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            slot.proc.kill()
            slot.proc.wait(timeout=30)
        slot.proc = None  # stopped on purpose: not a daemon that exited on its own

    def start_apply(self) -> subprocess.Popen[bytes]:
        settings = [part for opt, value in RUN_SETTINGS for part in (opt, value)]
        log = (self.root / "logs" / "apply.log").open("ab")
        proc = subprocess.Popen(self.command("apply", "--yes", *settings), cwd=self.root, env=base_env(),
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.applies.append(proc)
        self.started.append((time.time(), proc.pid, "apply"))
        return proc

    def run_forget(self, resource_id: str, *, force: bool) -> int:
        argv = self.command("forget", resource_id, "--reason", "chaos", "--yes", *(["--force"] if force else []))
        return subprocess.run(argv, cwd=self.root, env=base_env(), capture_output=True, timeout=120).returncode

    def run_check(self) -> int:
        return subprocess.run(self.command("check", "--timeout", "0.5"), cwd=self.root, env=base_env(),
                              capture_output=True, timeout=120).returncode

    def stop_all(self) -> None:
        for proc in self.applies:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for slot in self.slots:
            self.stop_daemon(slot, sig=signal.SIGTERM, wait=20)
        for pid in script_pids(self.token):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    # --- the API --------------------------------------------------------------------------------

    def http(self, method: str, path: str, *, body: dict[str, Any] | None = None,
             patience: float = 5.0) -> tuple[int, Any]:
        """(status, parsed body) from a live daemon's API, retried for `patience` seconds while none
        answers (one may be restarting); (0, error text) when none did."""
        deadline = time.monotonic() + patience
        answer: Any = "no daemon alive"
        while True:
            for slot in self.slots:
                if slot.alive():
                    status, answer = call(port=slot.port, method=method, path=path, body=body)
                    if status:
                        return status, answer
            if time.monotonic() > deadline:
                return 0, answer
            time.sleep(0.2)

    def wait_api(self, *, limit: float = 60.0) -> None:
        """Until every live daemon's API answers (any status)."""
        deadline = time.monotonic() + limit
        for slot in self.slots:
            while slot.alive() and time.monotonic() < deadline:
                if call(port=slot.port, method="GET", path="/health", timeout=1)[0]:
                    break
                time.sleep(0.1)


def call(*, port: int, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 5.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def script_pids(token: str) -> list[int]:
    """Processes started by this world's scripts (their environment carries the world's token)."""
    needle = token.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
