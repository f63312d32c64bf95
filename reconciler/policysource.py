"""The policy a long-lived process enforces: the last good load of policy.yaml, and why the latest failed.

The daemon reads policy.yaml like desired/: at start a policy that does not load refuses the start
(the caller exits 1 with file:line); later, a save that does not load (or a file that vanished) keeps
the last good policy in force and says why (`error`), until a good save replaces it. A file still
being written does not count yet (settle.py, as for desired files), so a half-written policy never
loosens the limits for a pass. `generation` changes whenever the policy in force or its error
changes, so an idle pass can tell that nothing it decides from moved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .errors import ReconcilerError, SpecError, SpecProblem
from .settle import DEFAULT_SETTLE, UNREADABLE, Settler, Stamp, WriteHints, stamp_of

P = TypeVar("P")


class PolicySource(Generic[P]):
    """policy.yaml for the daemon: `policy` (None: no policy file) is the last good one."""

    def __init__(self, *, path: Path | None, load: Callable[[Path], P], required: bool = False,
                 settle: float = DEFAULT_SETTLE, writes: WriteHints | None = None) -> None:
        self.path = path  # None: no file named and none beside desired/
        self.required = required  # named explicitly (--policy, RECONCILER_POLICY): it must exist at start
        self._load = load
        self.policy: P | None = None
        self.error: ReconcilerError | None = None
        self.generation = 0
        self._stamp: Stamp | None = None
        self._settler = Settler(settle=settle, writes=writes)

    def start(self) -> None:
        """The first load, strict: raises the loader's error (file:line) for a policy that does not load."""
        if self.path is None:
            return
        stamp = stamp_of(self.path)
        if stamp == UNREADABLE:
            if self.required:
                raise SpecError([SpecProblem(str(self.path), 0, "", "policy file does not exist")])
            self._stamp = stamp
            return
        self.policy, self._stamp = self._load(self.path), stamp

    def forget(self) -> None:
        """Read the file again at the next refresh, changed or not (SIGHUP)."""
        self._stamp = None

    def refresh(self) -> float:
        """Load again if the file changed; seconds until a change still being written may count (0: none)."""
        if self.path is None:
            return 0.0
        stamp = stamp_of(self.path)
        if stamp == self._stamp:
            return 0.0
        if stamp == UNREADABLE:
            if self.policy is not None or self.error is not None:
                self._failed(stamp, SpecError([SpecProblem(str(self.path), 0, "", (
                    "policy file is gone; the last good policy stays in force (an empty file means no limits)"))]))
            self._stamp = stamp
            return 0.0
        wait = self._settler.wait(changed={self.path: stamp}, gone=(), strict=False)
        if wait > 0:
            return wait
        return self._read(stamp)

    def _read(self, stamp: Stamp) -> float:
        assert self.path is not None
        try:
            policy = self._load(self.path)
        except ReconcilerError as exc:
            self._failed(stamp, exc)
            return 0.0
        except Exception as exc:  # a bug in a loader must not take the daemon down: report it as a load error
            self._failed(stamp, SpecError([SpecProblem(str(self.path), 0, "",
                                                       f"cannot load: {type(exc).__name__}: {exc}")]))
            return 0.0
        if stamp_of(self.path) != stamp:  # changed while being read: read again once it settles
            return self._settler.recheck
        self.policy, self.error, self._stamp = policy, None, stamp
        self.generation += 1
        return 0.0

    def _failed(self, stamp: Stamp, error: ReconcilerError) -> None:
        self.error, self._stamp = error, stamp
        self.generation += 1

    def problems(self) -> list[str]:
        """The latest load's problems, one line each (file:line: …); [] while the file loads."""
        if self.error is None:
            return []
        if isinstance(self.error, SpecError):
            return [str(problem) for problem in self.error.problems]
        return [str(self.error)]

