"""Which desired file declares each resource id, even while files fail to load.

The HTTP API must never take over or tear down a resource that a file declares. The daemon's last
good desired state is all-or-nothing, so it cannot answer that alone: a file added since, or one that
has never loaded, is not in it. This keeps each file's ids from its last clean parse, and for a file
that fails to load now adds every id on one of its `resource_id:` lines, found by a cheap scan of the
raw text. The scan may claim too much (a commented-out line), which only refuses more.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterable

from .spec import MAX_FILE_BYTES, Source, display_path

# `resource_id: x`, `- resource_id: "x"`, `{resource_id: 'x'}`, `"resource_id": "x"`
OWNED_LINE = re.compile(rb"""resource_id["']?[ \t]*:[ \t]*["']?([a-z0-9][a-z0-9-]{0,62})""")
BROKEN = "the file does not load now"

# (path, the ids its parse declared with their lines, whether it parsed and validated cleanly)
FileIds = tuple[Path, dict[str, Source], bool]


class FileOwners:
    """Ids → the file (and line) that declares them, over every file desired/ holds now.

    Updated by the pass thread (`observe`), read by the API's threads (`owner`): each update swaps
    whole dictionaries, so a reader sees one update or the next, never half of one.
    """

    def __init__(self) -> None:
        self._clean: dict[Path, dict[str, Source]] = {}
        self._owners: dict[str, str] = {}

    def owner(self, resource_id: str) -> str | None:
        """Where `resource_id` is declared ("desired/a.yaml:3"), or None when no file declares it."""
        return self._owners.get(resource_id)

    def observe(self, files: Iterable[FileIds]) -> None:
        """Take in the files as the latest load read them; a file no longer there owns nothing."""
        clean: dict[Path, dict[str, Source]] = {}
        owners: dict[str, str] = {}
        for path, ids, ok in files:
            last_clean = ids if ok else self._clean.get(path)
            if last_clean is not None:
                clean[path] = last_clean
            claimed = dict(last_clean or {}) if ok else {**_scan(path), **(last_clean or {}), **ids}
            note = "" if ok else f" ({BROKEN})"
            for resource_id, source in claimed.items():
                owners.setdefault(resource_id, f"{source}{note}")
        self._clean, self._owners = clean, owners


def _scan(path: Path) -> dict[str, Source]:
    """Every id on a `resource_id:` line of the file's raw text (never blocking on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        with os.fdopen(os.dup(fd), "rb") as stream:
            text = stream.read(MAX_FILE_BYTES)
    except OSError:
        return {}
    finally:
        os.close(fd)
    name, found, line, at = display_path(path), {}, 1, 0
    for match in OWNED_LINE.finditer(text):
        line, at = line + text.count(b"\n", at, match.start()), match.start()
        found.setdefault(match.group(1).decode(), Source(name, line))
    return found
