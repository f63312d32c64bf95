"""The daemon's file watch on desired/: inotify read directly, so a finished write can be told apart.

watchfiles coalesces events into "changed" and cannot say whether a writer still holds a file open
or whether it arrived whole by rename. inotify can: IN_MODIFY without IN_CLOSE_WRITE yet means a
write in progress (a generator pausing between slices), IN_MOVED_TO means an atomic save. The
`WriteTracker` keeps that knowledge for the desired loader (settle.py's WriteHints), and the
watcher asks for a pass on every batch of events. Linux only, through ctypes on libc; where
inotify is missing the daemon falls back to watchfiles and the settle clock alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .settle import Stamp, WriteHint, stamp_of

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")
# A file "being written" whose writer has not written for this long is judged by the clock again
# (a truncate(2) by path modifies without any open, so no IN_CLOSE_WRITE ever follows).
WRITING_STALE = 60.0
# Batches of events closer than this ask for one pass.
COALESCE = 0.01
REWATCH_INTERVAL = 1.0


class WriteTracker:
    """Per path, what inotify last said: being written (since when) or arrived whole (with its stamp)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writing: dict[str, float] = {}
        self._arrived: dict[str, Stamp] = {}
        self.active = False

    def hint(self, path: Path, stamp: Stamp) -> WriteHint:
        if not self.active:
            return WriteHint.UNKNOWN
        key = os.path.abspath(path)
        with self._lock:
            since = self._writing.get(key)
            if since is not None and time.monotonic() - since < WRITING_STALE:
                return WriteHint.WRITING
            return WriteHint.ARRIVED if self._arrived.get(key) == stamp else WriteHint.UNKNOWN

    def event(self, path: str, mask: int) -> None:
        if mask & IN_CREATE and not _empty_regular(path):
            mask &= ~IN_CREATE  # a symlink, a hard link, a FIFO: created whole, nobody writes to it
        with self._lock:
            if mask & (IN_MODIFY | IN_CREATE):
                self._writing[path] = time.monotonic()
                self._arrived.pop(path, None)
            elif mask & IN_CLOSE_WRITE:
                self._writing.pop(path, None)
            elif mask & IN_MOVED_TO:
                self._writing.pop(path, None)
                self._arrived[path] = stamp_of(Path(path))
            elif mask & IN_ATTRIB:
                self._arrived.pop(path, None)
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                self._writing.pop(path, None)
                self._arrived.pop(path, None)

    def reset(self) -> None:
        """Events were lost (queue overflow): nothing is known, the clock decides."""
        with self._lock:
            self._writing.clear()
            self._arrived.clear()


def _empty_regular(path: str) -> bool:
    """A just-created empty regular file: its writer has opened it and has not written yet."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


class _Inotify:
    """The inotify file descriptor and its calls, through ctypes."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd

    def add(self, path: str) -> int:
        wd: int = self._add(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
        return wd

    def read(self) -> list[tuple[int, int, str]]:
        """Every pending event as (wd, mask, name)."""
        events: list[tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
                events.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)


class DesiredWatch:
    """Watch a directory tree with inotify: update `tracker`, call `on_change` once per batch of events."""

    def __init__(self, *, directory: Path, tracker: WriteTracker, on_change: Callable[[str], None],
                 relevant: Callable[[str], bool], recursive: bool = True) -> None:
        self.root = os.path.abspath(directory)
        self.tracker = tracker
        self.on_change = on_change
        self.relevant = relevant
        self.recursive = recursive  # False: the directory itself only (the policy file beside desired/)
        self._dirs: dict[int, str] = {}
        self._inotify: _Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start watching; False when inotify cannot be used here (the caller falls back)."""
        try:
            self._inotify = _Inotify()
            self._add_tree(self.root)
        except (OSError, AttributeError):
            self.close()
            return False
        self._loop = loop
        loop.add_reader(self._inotify.fd, self._on_readable)
        self.tracker.active = True
        return True

    def close(self) -> None:
        self.tracker.active = False
        if self._inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    def _add_tree(self, top: str) -> None:
        assert self._inotify is not None
        if not self.recursive:
            self._dirs[self._inotify.add(top)] = top
            return
        for root, dirs, _files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            self._dirs[self._inotify.add(root)] = root

    def _on_readable(self) -> None:
        assert self._inotify is not None
        relevant = False
        for wd, mask, name in self._inotify.read():
            relevant |= self._handle(wd=wd, mask=mask, name=name)
        if relevant:
            self._changed()

    def _handle(self, *, wd: int, mask: int, name: str) -> bool:
        if mask & IN_Q_OVERFLOW:
            self.tracker.reset()
            return True
        directory = self._dirs.get(wd)
        if mask & (IN_IGNORED | IN_MOVE_SELF) or directory is None:
            self._dirs.pop(wd, None)
            if directory == self.root:
                self._rewatch_later()
            return directory is not None
        if not name or not self.relevant(name):
            return False
        path = os.path.join(directory, name)
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO) and self.recursive:
                self._try_add_tree(path)
            return True
        self.tracker.event(path, mask)
        return True

    def _try_add_tree(self, path: str) -> None:
        with contextlib.suppress(OSError):  # gone again already; the next pass sees what is there
            self._add_tree(path)

    def _rewatch_later(self) -> None:
        """desired/ itself was moved or removed: watch it again once it is back."""
        if self._loop is None or self._inotify is None:
            return
        if os.path.isdir(self.root):
            self._try_add_tree(self.root)
            self._changed()
            if self.root in self._dirs.values():
                return
        self._loop.call_later(REWATCH_INTERVAL, self._rewatch_later)

    def _changed(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(COALESCE, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.on_change("file change")
