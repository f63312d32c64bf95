"""Who caused a change: the `actor` every job and event records, so the audit trail answers "who".

Actors are plain strings, one format per path (the README lists them):
- `git:<12-hex commit> <author name> <<email>>` for a change of desired/ files: the HEAD commit of the
  checkout and its author, with ` (dirty)` appended when desired/ differs from HEAD (an uncommitted
  edit must not be recorded as HEAD's); `git:unknown` when git cannot tell (no repository, no git);
- `cli:<user>@<host>` for a CLI run (recorded, not authorised: whoever can open the database can act);
- `api:<token name>` for an API call (`api:admin`: the single --api-token-file token; `api:local`: a
  token-less loopback call);
- `daemon:<host>` for the daemon's own decisions (retries, self-heal, drift).

Git runs with `-c safe.directory=<the checkout>`: under the documented systemd layout the checkout is
owned by the deploy user and the daemon runs as another, and git then refuses "dubious ownership",
which used to make the commit silently disappear. Only read-only commands run, with core.fsmonitor
off, so trusting the checkout's ownership runs none of its configured programs. `GitActor` caches per
HEAD (and the index), so a pass runs git at most twice, never per file.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .liveness import HOST
from .plan import Change, Reason

GIT_UNKNOWN = "git:unknown"
DIRTY = " (dirty)"
# changes the daemon (or the CLI run) makes for its own reasons, not because a file changed
RUNNER_REASONS = frozenset({Reason.RETRY, Reason.SELF_HEAL, Reason.NOT_SETTLED,
                            Reason.REPLACE_REQUESTED})  # issue 16: the operator who asked, not the file
GIT_TIMEOUT_S = 5.0


def cli_actor() -> str:
    """`cli:<user>@<host>` for this process."""
    return f"cli:{_user()}@{HOST}"


def daemon_actor() -> str:
    """`daemon:<host>` for this process (RECONCILER_HOST names it apart, as in leases)."""
    return f"daemon:{HOST}"


def api_actor(name: str | None) -> str:
    """`api:<token name>`; a call without a token (loopback only) is `api:local`."""
    return f"api:{name}" if name else "api:local"


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container uid)
        return str(os.getuid())


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who is behind one plan's changes: the desired files' actor and the runner's (the CLI user, the daemon).

    A change a file caused is the file's (`files`: the git actor); a retry, self-heal or re-provision
    is the runner's own, as is every change of an API-declared resource made by a pass. The runner
    is kept in the queued event's details (`{"by": runner}`) when the actor is someone else.
    """

    files: str
    runner: str

    def actor(self, change: Change) -> str:
        if change.source == "file" and change.reason not in RUNNER_REASONS:
            return self.files
        return self.runner

    def details(self, change: Change) -> dict[str, Any] | None:
        return {"by": self.runner} if self.actor(change) != self.runner else None


@dataclass(frozen=True, slots=True)
class _Repo:
    top: Path  # the work tree's top: what safe.directory must name
    git_dir: Path
    common_dir: Path


class GitActor:
    """The git actor of a desired directory, cached per HEAD and index (and the caller's file version)."""

    def __init__(self, directory: Path, *, git: str = "git") -> None:
        self.directory = Path(directory)
        self.git = git
        self._repo: _Repo | None = None
        self._commit: tuple[tuple[Any, ...], tuple[str, str, str] | None] | None = None
        self._dirty: tuple[tuple[Any, ...], bool] | None = None

    def commit(self) -> str | None:
        """HEAD's 12-hex commit (the `desired_commit` column); None outside git."""
        found = self._head()
        return found[0][:12] if found else None

    def describe(self, *, files_version: Any = None) -> str | None:
        """The actor of a file change now; None outside git. `files_version` (the desired cache's
        generation) says when the files may have changed, so the dirty check is cached with it too."""
        found = self._head()
        if found is None:
            return None
        sha, name, email = found
        key = (self._key(), files_version)
        if self._dirty is None or self._dirty[0] != key or files_version is None:
            self._dirty = (key, self._is_dirty())
        return f"git:{sha[:12]} {name} <{email}>" + (DIRTY if self._dirty[1] else "")

    def _head(self) -> tuple[str, str, str] | None:
        repo = self._find()
        if repo is None:
            return None
        key = self._key()
        if self._commit is None or self._commit[0] != key:
            out = self._run("log", "-1", "--format=%H%x00%an%x00%ae", "HEAD")
            parts = out.rstrip("\n").split("\0") if out else []
            self._commit = (key, (parts[0], parts[1], parts[2]) if len(parts) == 3 else None)
        return self._commit[1]

    def _is_dirty(self) -> bool:
        out = self._run("--no-optional-locks", "status", "--porcelain", "--", ".")
        return bool(out and out.strip())

    def _find(self) -> _Repo | None:
        if self._repo is not None:
            return self._repo
        top = _work_tree_top(self.directory.resolve())
        if top is None:
            return None
        self._repo = _Repo(top, top, top)  # _run needs the top; the directories come next
        out = self._run("rev-parse", "--absolute-git-dir", "--git-common-dir")
        lines = out.splitlines() if out else []
        if len(lines) != 2:
            self._repo = None
            return None
        git_dir = Path(lines[0])
        common = Path(lines[1]) if Path(lines[1]).is_absolute() else (self.directory / lines[1]).resolve()
        self._repo = _Repo(top, git_dir, common)
        return self._repo

    def _key(self) -> tuple[Any, ...]:
        """Changes when HEAD moves (a commit, checkout, pull, reset) or the index is written."""
        repo = self._repo
        assert repo is not None
        try:
            head = (repo.git_dir / "HEAD").read_text().strip()
        except OSError:
            return (None,)
        ref = head[5:] if head.startswith("ref: ") else ""
        return (head, *(_mtime(base / ref) for base in (repo.git_dir, repo.common_dir) if ref),
                _mtime(repo.common_dir / "packed-refs"), _mtime(repo.git_dir / "index"))

    def _run(self, *args: str) -> str | None:
        repo = self._repo
        assert repo is not None
        command = [self.git, "-c", f"safe.directory={repo.top}", "-c", "core.fsmonitor=false",
                   "-C", str(self.directory), *args]
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
                                  env=env, errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None


def _work_tree_top(directory: Path) -> Path | None:
    """The nearest directory at or above `directory` holding `.git` (a directory, or a worktree's file)."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
