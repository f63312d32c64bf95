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


# --- the sink itself, on a real pipe --------------------------------------------------------------


def _pipe(*, size: int = 4096) -> tuple[int, object]:
    import os

    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, size)
    return read_fd, os.fdopen(write_fd, "w")


def test_the_sink_drops_and_counts_what_a_full_pipe_cannot_take_then_reports_it():
    import os
    import select

    from reconciler.logs import _Sink

    read_fd, stream = _pipe()
    sink = _Sink(stream=stream, capacity=50)
    for i in range(2000):  # nobody reads: these calls must return at once all the same
        sink.write(f"line {i:04d} " + "x" * 200)
    assert sink.dropped > 0
    assert not sink.flush(timeout=0.5)  # the writer waits on the full pipe; the flush gives up in time
    seen = ""
    deadline = time.monotonic() + EXIT_DEADLINE
    while "log lines dropped" not in seen and time.monotonic() < deadline:
        if select.select([read_fd], [], [], 0.2)[0]:
            seen += os.read(read_fd, 65536).decode()
        else:
            sink.write("nudge")  # a line after the drops carries the count
    assert "log lines dropped" in seen
    lines = seen.splitlines()
    assert all(line.startswith(("line ", "nudge", "[warning]")) for line in lines[:-1])  # whole lines only
    os.close(read_fd)


def test_the_sink_survives_a_pipe_whose_reader_went_away():
    import os

    from reconciler.logs import _Sink

    read_fd, stream = _pipe()
    os.close(read_fd)
    sink = _Sink(stream=stream)
    for i in range(10):
        sink.write(f"line {i}")  # EPIPE inside the writer: never raised here
    assert sink.flush(timeout=EXIT_DEADLINE)
    assert sink.dropped == 10
