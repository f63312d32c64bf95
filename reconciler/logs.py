"""Logging set-up in one place: JSON lines on stderr for journald and CI, a readable console on a TTY.

Configured on first use, so commands that never log (`plan`, `validate`) never import structlog.

A log call never blocks and never raises: lines go into a bounded queue that one writer thread
drains to stderr. When stderr is a pipe whose reader went away (EPIPE) or stopped reading (a full
pipe blocks writes), lines are dropped and counted instead of wedging the caller, which may be the
daemon's event loop handling SIGTERM. At exit the queue gets a short, bounded flush.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

QUEUE_LINES = 10_000
# At exit, how long the writer may take to drain what is queued before the rest is given up.
FLUSH_SECONDS = 2.0
_WAIT_WRITABLE = 0.5

_configured = False
_json_lines = False
_sink: _Sink | None = None


class _Sink:
    """Whole lines for one stream, written by a dedicated thread from a bounded queue."""

    def __init__(self, *, stream: TextIO, capacity: int = QUEUE_LINES) -> None:
        self._stream = stream
        self._fd = _fileno(stream)
        self._queue: queue.Queue[str] = queue.Queue(maxsize=capacity)
        self._count_lock = threading.Lock()
        self.dropped = 0
        self._unreported = 0
        self._broken = False
        self.note: Callable[[int], str] = lambda count: f"[warning] {count} log lines dropped"
        threading.Thread(target=self._drain, name="log-writer", daemon=True).start()

    def write(self, line: str) -> None:
        """Queue one line; drop (and count) it when the queue is full. Never blocks, never raises."""
        try:
            self._queue.put_nowait(line if line.endswith("\n") else line + "\n")
        except queue.Full:
            self._drop()

    def flush(self, *, timeout: float) -> bool:
        """Wait up to `timeout` seconds for queued lines to be written; True when all were."""
        done = self._queue.all_tasks_done
        deadline = time.monotonic() + timeout
        with done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                done.wait(left)
        return True

    def _drop(self, count: int = 1) -> None:
        with self._count_lock:
            self.dropped += count
            self._unreported += count

    def _drain(self) -> None:
        while True:
            line = self._queue.get()
            try:
                self._report_drops()
                if not self._emit(line):
                    self._drop()
            finally:
                self._queue.task_done()

    def _report_drops(self) -> None:
        with self._count_lock:
            count, self._unreported = self._unreported, 0
        if count and not self._emit(self.note(count) + "\n"):
            with self._count_lock:  # still unreported; already counted as dropped
                self._unreported += count

    def _emit(self, line: str) -> bool:
        if self._broken:
            return False
        try:
            if self._fd is None:
                self._stream.write(line)
                self._stream.flush()
            else:
                _write_all(self._fd, line.encode("utf-8", "replace"))
            return True
        except (OSError, ValueError) as exc:  # EPIPE: the reader is gone for good; so is a closed stream
            self._broken = isinstance(exc, ValueError) or exc.errno in (errno.EPIPE, errno.EBADF)
            return False


def _write_all(fd: int, data: bytes) -> None:
    """os.write until done; on a non-blocking descriptor (EAGAIN) wait for room instead of spinning."""
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], _WAIT_WRITABLE)
            continue
        data = data[written:]


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (a test's capture)
        return None


def json_wanted() -> bool:
    """JSON unless stderr is a terminal; RECONCILER_LOG_FORMAT=json|console overrides."""
    wanted = os.environ.get("RECONCILER_LOG_FORMAT", "")
    return wanted == "json" or (wanted != "console" and not _isatty(sys.stderr))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def configure(*, level: str | None = None, json_lines: bool | None = None) -> None:
    """Route structlog (and stdlib logging) to stderr through the non-blocking sink."""
    global _configured, _json_lines, _sink
    import structlog

    level_name = (level or os.environ.get("RECONCILER_LOG_LEVEL", "info")).upper()
    _json_lines = json_wanted() if json_lines is None else json_lines
    renderer = structlog.processors.JSONRenderer() if _json_lines else structlog.dev.ConsoleRenderer(
        colors=_isatty(sys.stderr) and not os.environ.get("NO_COLOR"))
    if _sink is None:
        _sink = _Sink(stream=sys.stderr)
        atexit.register(flush)
    _sink.note = lambda count: _render(level="warning", event="log lines dropped", count=count)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=_SinkLogger,
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging()
    _configured = True


class _SinkLogger:
    """What structlog calls with a rendered line, at every level: hand it to the sink."""

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        if _sink is not None:
            _sink.write(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class _StdlibHandler(logging.Handler):
    """Warnings of libraries (uvicorn, apscheduler, asyncio) as lines of the same format, through the sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            line = _render(level=record.levelname.lower(), event=record.getMessage(), **fields)
        except Exception:  # a record that cannot be formatted is not worth a crash
            return
        if _sink is not None:
            _sink.write(line)


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, _StdlibHandler) for handler in root.handlers):
        handler = _StdlibHandler(level=logging.WARNING)
        root.addHandler(handler)


def _render(*, level: str, event: str, **fields: Any) -> str:
    """One line in the configured format, for the lines that do not come through structlog."""
    if _json_lines:
        return _json_line(level=level, event=event, **fields)
    extra = "".join(f" {key}={value}" for key, value in fields.items())
    return f"{_now()} [{level:<9}] {event}{extra}"


def _json_line(*, level: str, event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields, "level": level, "timestamp": _now()}, default=str)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def logs_are_json() -> bool:
    """Whether stderr carries JSON lines: logging is configured so, or RECONCILER_LOG_FORMAT=json asks."""
    return _json_lines if _configured else os.environ.get("RECONCILER_LOG_FORMAT", "") == "json"


def error_line(*, event: str, **fields: Any) -> None:
    """A fatal error as one JSON line on stderr (through the sink once logging runs)."""
    line = _json_line(level="error", event=event, **fields)
    if _sink is not None:
        _sink.write(line)
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def flush(*, timeout: float = FLUSH_SECONDS) -> bool:
    """Write out queued lines, waiting at most `timeout` seconds (at exit: never hold up the stop)."""
    return _sink.flush(timeout=timeout) if _sink is not None else True


def get_logger(**bound: Any) -> Any:
    """A structlog logger with `bound` context (resource_id, job_id…); configures logging if needed."""
    if not _configured:
        configure()
    import structlog

    return structlog.get_logger("reconciler").bind(**bound)
