"""The watch on desired/ as a runnable: inotify through watch.py, watchfiles where inotify is missing.

Every batch of relevant changes asks the pass loop for a pass; the WriteTracker it feeds tells the
desired loader which files are still being written (settle.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..watch import DesiredWatch, WriteTracker


class DesiredWatcher:
    name = "watcher"

    def __init__(self, *, directory: Path, tracker: WriteTracker, on_change: Callable[[str], None],
                 log: Any) -> None:
        self.directory = directory
        self.tracker = tracker
        self.on_change = on_change
        self.log = log

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        directory = self.directory
        if not directory.is_dir():
            self.log.error("desired directory does not exist; not watching it", desired=str(directory))
            return
        watch = DesiredWatch(directory=directory, tracker=self.tracker, on_change=self.on_change,
                             relevant=desired_name)
        if watch.start(asyncio.get_running_loop()):
            try:
                await stop.wait()
            finally:
                watch.close()
            return
        self.log.warning("inotify is not available; watching with watchfiles and the settle clock alone")
        await self._watch_with_watchfiles(stop)

    async def close(self) -> None:
        pass

    async def _watch_with_watchfiles(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        async for changes in awatch(self.directory, stop_event=stop, debounce=100, step=20,
                                    watch_filter=_desired_change, recursive=True):
            self.on_change(f"{len(changes)} file changes")


def _desired_change(change: Any, path: str) -> bool:
    return desired_name(Path(path).name)


def desired_name(name: str) -> bool:
    """A name that may be desired state (or a directory holding some)."""
    return not name.startswith((".", "_")) and (name.endswith((".yaml", ".yml")) or "." not in name)


class PolicyWatcher:
    """inotify on the directory holding policy.yaml (that directory only): a save asks for a pass.

    The pass reloads the policy like a desired change (policysource.py); where inotify is missing,
    the resync picks a change up.
    """

    name = "policy watcher"

    def __init__(self, *, path: Path, tracker: WriteTracker, on_change: Callable[[str], None], log: Any) -> None:
        self.path = path
        self.tracker = tracker
        self.on_change = on_change
        self.log = log

    def prepare(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        directory = self.path.absolute().parent
        if not directory.is_dir():
            self.log.error("the policy file's directory does not exist; not watching it", policy=str(self.path))
            return
        watch = DesiredWatch(directory=directory, tracker=self.tracker, relevant=self._relevant, recursive=False,
                             on_change=lambda _why: self.on_change("policy change"))
        if not watch.start(asyncio.get_running_loop()):
            self.log.warning("inotify is not available; a policy change is picked up by the next resync")
            return
        try:
            await stop.wait()
        finally:
            watch.close()

    async def close(self) -> None:
        pass

    def _relevant(self, name: str) -> bool:
        return name == self.path.name
