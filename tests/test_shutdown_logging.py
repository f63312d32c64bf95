"""Logging never blocks or breaks shutdown: a daemon whose stderr reader went away, or stopped reading.

Real daemon processes with a real pipe as stderr: the parent closes its end (EPIPE on every write), or
never reads it until the kernel's 64 KiB pipe buffer is full (every write blocks). SIGTERM must end the
daemon promptly either way; before the fix it stayed "stopping" until systemd's SIGKILL.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.support import cli_env, make_project, reconciler_argv, statuses, wait_for, write_resources

PIPE_CAPACITY = 65536
EXIT_DEADLINE = 20.0


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def _daemon_on_a_pipe(project: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*reconciler_argv(), "daemon", "--no-api", "--stop-grace", "1", *args], cwd=project,
                            env=cli_env(project, RECONCILER_LOG_FORMAT="json", **env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _pending_bytes(pipe) -> int:
    """Bytes written into the pipe and not yet read (FIONREAD on the read end)."""
    return int.from_bytes(fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")


def _exits_promptly(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the daemon did not exit within {EXIT_DEADLINE}s of SIGTERM") from None


def test_sigterm_ends_a_daemon_whose_stderr_reader_went_away(project, daemons):
    write_resources(project, {"a": {}})
    proc = _daemon_on_a_pipe(project)
    daemons.append(proc)
    wait_for(lambda: statuses(project).get("a") == "active", what="the daemon working")
    proc.stderr.close()  # the reader goes away: every later write to the daemon's stderr fails with EPIPE
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert _exits_promptly(proc) == 0


def test_sigterm_ends_a_daemon_whose_stderr_pipe_is_full(project, daemons):
    write_resources(project, {f"r{i:03d}": {} for i in range(400)})
    proc = _daemon_on_a_pipe(project, "--parallelism", "8", RECONCILER_LOG_LEVEL="debug")
    daemons.append(proc)
    # Nobody reads: the log lines of 400 jobs fill the pipe, and every further write would block.
    wait_for(lambda: _pending_bytes(proc.stderr) > PIPE_CAPACITY - 4096, timeout=120, interval=0.2,
             what="the stderr pipe to fill")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert _exits_promptly(proc) == 0
    lines = proc.stderr.read().decode().splitlines()
    assert all(json.loads(line) for line in lines)  # whole lines only: a dropped line is dropped whole


def test_a_log_call_that_raises_does_not_leave_the_daemon_stopping_forever(project):
    """Daemon.stop() with a logger that raises (as print did on EPIPE): the stop event is set regardless.

    The raising logger is a stand-in for the broken stream; the subprocess tests above use the real one.
    """
    from reconciler.daemon import Daemon, DaemonOptions

    class BrokenLog:
        def info(self, *args, **kwargs):
            raise BrokenPipeError(32, "Broken pipe")

        debug = warning = error = info

    daemon = Daemon(options=DaemonOptions(db=str(project / "state.db"), desired=project / "desired",
                                          provision=project / "provision", work_dir=project / "work"))

    async def stop_once() -> bool:
        daemon._stop, daemon._dirty = asyncio.Event(), asyncio.Event()
        daemon.log = BrokenLog()
        try:
            daemon.stop()
        except BrokenPipeError:
            pass
        return daemon._stop.is_set()

    assert asyncio.run(stop_once())
