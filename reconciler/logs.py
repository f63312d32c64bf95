"""Logging set-up in one place: JSON lines on stderr for journald and CI, a readable console on a TTY.

Configured on first use, so commands that never log (`plan`, `validate`) never import structlog.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

_configured = False


def configure(*, level: str | None = None, json_lines: bool | None = None) -> None:
    """Route structlog to stderr; JSON unless stderr is a terminal (override with RECONCILER_LOG_FORMAT)."""
    global _configured
    import structlog

    level_name = (level or os.environ.get("RECONCILER_LOG_LEVEL", "info")).upper()
    if json_lines is None:
        wanted = os.environ.get("RECONCILER_LOG_FORMAT", "")
        json_lines = wanted == "json" or (wanted != "console" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty() and not os.environ.get("NO_COLOR"))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(**bound: Any) -> Any:
    """A structlog logger with `bound` context (resource_id, job_id…); configures logging if needed."""
    if not _configured:
        configure()
    import structlog

    return structlog.get_logger("reconciler").bind(**bound)
