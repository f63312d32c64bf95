"""When a desired file's content may count: only once it is whole, never while someone is writing it.

Writers rarely replace files atomically: a generator writing `> desired/fleet.yaml`, an editor that
truncates then writes, `cp`, and `git checkout`/`git pull` (which unlink a file, run its filters,
then create and write it again) all leave moments where a file is missing or half-written. Read in
such a moment, a 6-document file declares one resource and a truncated `deploy_ref: v1.4`; planned
from, it tears five resources down and provisions the wrong version.

So a file counts only when it is *settled*: its size, mtime (ns) and inode are the same before and
after the read, and have been for the settle interval (its mtime is at least that old, or we saw
the same stamp that long ago). A file renamed into place whole (an atomic save: inotify's
IN_MOVED_TO) counts at once. A file some process still holds open after writing to it (inotify
IN_MODIFY without its IN_CLOSE_WRITE yet) never counts. A file that vanished counts as gone only
once it has stayed gone for the settle interval.

Also here: opening a desired file without ever blocking on it (a FIFO named `*.yaml` would wait
forever for a writer), and refusing anything that is not a regular file.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from .defects import defect_enabled

# Seconds a changed file must stay unchanged before its content counts (RECONCILER_SETTLE, --settle).
DEFAULT_SETTLE = 0.15
# How often to look again while git holds its index.lock (a crashed git can leave it for good).
GIT_RECHECK = 0.5
SETTLE_ENV = "RECONCILER_SETTLE"


class Stamp(NamedTuple):
    """What identifies one version of a file's content, from stat(2)."""

    size: int
    mtime_ns: int
    inode: int


# A path that is listed but cannot be stat'ed (vanished this instant, a dangling symlink).
UNREADABLE = Stamp(-1, -1, -1)


def stamp_of(path: Path) -> Stamp:
    """The stamp of the file `path` names (symlinks followed), or UNREADABLE."""
    try:
        info = os.stat(path)
    except OSError:
        return UNREADABLE
    return Stamp(info.st_size, info.st_mtime_ns, info.st_ino)


class WriteHint(Enum):
    """What the file watcher knows about a path's latest write."""

    UNKNOWN = "unknown"  # no watcher, or nothing seen: only the clock can tell
    WRITING = "writing"  # modified and still held open by its writer
    ARRIVED = "arrived"  # renamed into place whole, and not touched since


class WriteHints(Protocol):
    def hint(self, path: Path, stamp: Stamp) -> WriteHint: ...


class NotRegular(OSError):
    """A desired path that is not a regular file (FIFO, socket, device, directory)."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: Path) -> BinaryIO:
    """Open a desired file for reading, refusing anything but a regular file; never blocks.

    stat(2) first (symlinks resolved) so a FIFO is never opened at all; O_NONBLOCK as a belt for a
    FIFO swapped in between; fstat(2) of what was opened settles it.
    """
    _require_regular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _require_regular(mode: int, path: Path) -> None:
    if not stat.S_ISREG(mode):
        kind = _kind(mode)
        raise NotRegular(0, f"not a regular file ({kind}); only regular files are read", str(path))


def settle_from_env(environ: Mapping[str, str] = os.environ) -> float:
    """RECONCILER_SETTLE as seconds (DEFAULT_SETTLE when unset); ValueError names a bad value."""
    text = environ.get(SETTLE_ENV, "").strip()
    if not text:
        return DEFAULT_SETTLE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise ValueError(f"{SETTLE_ENV}={text!r}: expected seconds between 0 and 60")
    return value


def git_index_lock(directory: Path) -> Path | None:
    """The index.lock of the git work tree holding `directory` (None outside git).

    git holds it for a whole checkout or pull, including the moments a file is unlinked while its
    filters (git-lfs, git-crypt) run: while it exists, nothing that changed is settled.
    """
    start = Path(directory).resolve()
    for parent in (start, *start.parents):
        dot = parent / ".git"
        if dot.is_dir():
            return dot / "index.lock"
        if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            try:
                with open_regular(dot) as stream:
                    text = stream.read(4096).decode(errors="replace").strip()
            except OSError:
                return None
            return (parent / text.removeprefix("gitdir:").strip()) / "index.lock" if text.startswith("gitdir:") \
                else None
    return None


class Settler:
    """The settle bookkeeping of one reader: when each stamp was first seen, when each path went missing.

    `wait` answers how many seconds remain before the given paths may count (0: now). `strict`
    ignores the watcher's ARRIVED fast path: a state that drops resources must be confirmed by the
    clock, whatever the watcher saw.

    Which clock: a file's mtime may vouch for a stamp only on the first sighting of its path. Once we
    have seen a path with other content (or torn, or being written), a drop it brings is confirmed by
    our own observation only: stat(2) inside a writer's open(O_TRUNC) shows the new size with the old
    mtime (the size is set before the times), read alike before and after, so "old mtime" can describe
    content a moment old (chaos seed 28: an empty fleet file counted at once, five resources torn down).
    """

    def __init__(self, *, settle: float, writes: WriteHints | None = None, git_lock: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], int] = time.time_ns) -> None:
        self.settle = settle
        self.git_lock = git_lock
        # a torn read or a file still being written never counts, even with a zero settle interval
        self.recheck = max(settle, 0.02)
        self.writes = writes
        self._clock, self._wall = clock, wall
        self._seen: dict[Path, tuple[Stamp, float]] = {}
        self._missing: dict[Path, float] = {}
        # paths whose content we saw change (or torn, or being written): their mtime vouches for nothing
        self._changed: set[Path] = set()

    def wait(self, *, changed: Mapping[Path, Stamp | None], gone: Iterable[Path], strict: bool) -> float:
        """Seconds until every changed path (None: torn or unread) is settled and every gone path is gone."""
        if defect_enabled("unsettled-read"):  # test-only, see reconciler/defects.py
            return 0.0
        now, wall = self._clock(), self._wall()
        longest = 0.0
        for path, stamp in changed.items():
            self._missing.pop(path, None)
            longest = max(longest, self._file_wait(path=path, stamp=stamp, now=now, wall=wall, strict=strict))
        for path in gone:
            since = self._missing.setdefault(path, now)
            longest = max(longest, self.settle - (now - since))
        return max(0.0, longest)

    def git_busy(self) -> bool:
        """A git checkout or pull is running in the work tree that holds desired/."""
        return self.git_lock is not None and os.path.lexists(self.git_lock)

    def forget(self, paths: Iterable[Path]) -> None:
        """Paths whose absence was accepted: the next time they appear, they are new files."""
        for path in paths:
            self._missing.pop(path, None)
            self._seen.pop(path, None)
            self._changed.discard(path)

    def _file_wait(self, *, path: Path, stamp: Stamp | None, now: float, wall: int, strict: bool) -> float:
        if stamp is None:  # changed while being read, or not read because it is being written
            self._seen.pop(path, None)
            self._changed.add(path)
            return self.recheck
        if stamp != UNREADABLE and self.writes is not None:
            hint = self.writes.hint(path, stamp)
            if hint is WriteHint.WRITING:
                self._changed.add(path)
                return self.recheck
            if hint is WriteHint.ARRIVED and not strict:
                return 0.0
        seen, since = self._seen.get(path, (None, now))
        if seen != stamp:
            if seen is not None:
                self._changed.add(path)
            self._seen[path], since = (stamp, now), now
        observed = self.settle - (now - since)
        if stamp == UNREADABLE or (strict and path in self._changed):
            return observed
        age = (wall - stamp.mtime_ns) / 1e9
        return min(observed, self.settle - age) if age >= 0 else observed
