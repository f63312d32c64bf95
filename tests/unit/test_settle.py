"""The settle rules on real files, in-process: the desired cache holds a young, vanished, shrunk or still-open
file until it settles, and git's index lock is found also for a worktree. The daemon, the CLI and a
real `git pull` are in e2e/test_settle.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.spec import DesiredCache, Unsettled
from reconciler.watch import IN_CLOSE_WRITE, IN_MODIFY, IN_MOVED_TO, WriteTracker
from tests.support import wait_for


def _document(rid: str, ref: str) -> str:
    return (f"resource_id: {rid}\nowner: acme\nregion: eu-west-1\nruntime_target: local\n"
            f"deploy_ref: {ref}\nparams: {{size: small}}\n")


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _old(path: Path) -> None:
    """Backdate a file, as one written long ago."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def _write(desired: Path, name: str, ids: list[str], *, old: bool = True) -> Path:
    path = desired / name
    path.write_text("---\n".join(_document(rid, "v1") for rid in ids))
    if old:
        _old(path)
    return path


def _loads(cache: DesiredCache, desired: Path):
    try:
        return cache.load(directory=desired)
    except Unsettled:
        return None


def test_the_cache_holds_a_young_file_until_it_settles(tmp_path):
    desired = tmp_path / "desired"
    desired.mkdir()
    _write(desired, "a.yaml", ["alpha"], old=False)
    cache = DesiredCache(settle=0.3)
    with pytest.raises(Unsettled) as held:
        cache.load(directory=desired)
    assert held.value.files == [str(desired / "a.yaml").removeprefix(os.getcwd() + "/")] and held.value.wait > 0
    assert list(wait_for(lambda: _loads(cache, desired), what="a.yaml settled").resources) == ["alpha"]


def test_a_vanished_file_counts_as_gone_only_after_the_settle(tmp_path):
    desired = tmp_path / "desired"
    desired.mkdir()
    _write(desired, "a.yaml", ["alpha"])
    _write(desired, "b.yaml", ["bravo"])
    cache = DesiredCache(settle=0.3)
    assert set(cache.load(directory=desired).resources) == {"alpha", "bravo"}
    (desired / "b.yaml").unlink()
    with pytest.raises(Unsettled):
        cache.load(directory=desired)
    assert set(wait_for(lambda: _loads(cache, desired), what="b.yaml confirmed gone").resources) == {"alpha"}


def test_an_atomic_save_counts_at_once_but_a_save_that_drops_resources_waits(tmp_path):
    desired = tmp_path / "desired"
    desired.mkdir()
    _write(desired, "a.yaml", ["alpha", "bravo"])
    tracker = WriteTracker()
    tracker.active = True
    cache = DesiredCache(settle=30, writes=tracker)  # only the watcher can make a young file count
    cache.load(directory=desired)
    _write(desired, ".b.tmp", ["charlie"], old=False).rename(desired / "b.yaml")
    tracker.event(str(desired / "b.yaml"), IN_MOVED_TO)
    assert set(cache.load(directory=desired).resources) == {"alpha", "bravo", "charlie"}
    _write(desired, ".a.tmp", ["alpha"], old=False).rename(desired / "a.yaml")  # drops bravo
    tracker.event(str(desired / "a.yaml"), IN_MOVED_TO)
    with pytest.raises(Unsettled):
        cache.load(directory=desired)


def test_a_file_held_open_by_its_writer_never_counts_however_old(tmp_path):
    desired = tmp_path / "desired"
    desired.mkdir()
    _write(desired, "a.yaml", ["alpha"])
    tracker = WriteTracker()
    tracker.active = True
    cache = DesiredCache(settle=0.01, writes=tracker)
    cache.load(directory=desired)
    path = _write(desired, "a.yaml", ["alpha", "bravo"])  # old mtime: the clock alone would accept it
    tracker.event(str(path), IN_MODIFY)
    with pytest.raises(Unsettled):
        cache.load(directory=desired)
    tracker.event(str(path), IN_CLOSE_WRITE)
    assert set(cache.load(directory=desired).resources) == {"alpha", "bravo"}


def test_the_index_lock_of_a_worktree_is_found_through_its_gitdir_file(tmp_path):
    from reconciler.settle import git_index_lock

    main = tmp_path / "main"
    main.mkdir()
    _git(main, "init", "-q", "-b", "main")
    (main / "desired").mkdir()
    (main / "desired" / "a.yaml").write_text(_document("alpha", "v1"))
    _git(main, "add", ".")
    _git(main, "commit", "-q", "-m", "one")
    _git(main, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "other")
    assert git_index_lock(main / "desired") == (main / ".git" / "index.lock").resolve()
    assert git_index_lock(tmp_path / "wt" / "desired") == (main / ".git" / "worktrees" / "wt" / "index.lock").resolve()
    assert git_index_lock(tmp_path) is None


def _caught_mid_truncate(path: Path) -> None:
    """What stat(2) shows of a file inside its writer's open(O_TRUNC): the new size with the old mtime
    (ext4 sets the size before the times, and IN_MODIFY is only queued once the call returns). Seen by
    the chaos campaign (seed 28 under load): size 0, inode unchanged, mtime 4.4 s old, read twice alike."""
    before = os.stat(path)
    with path.open("r+b") as handle:
        handle.truncate(0)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_file_caught_mid_truncate_does_not_drop_its_resources_on_its_old_mtime(tmp_path):
    desired = tmp_path / "desired"
    desired.mkdir()
    path = _write(desired, "a.yaml", ["alpha", "bravo"])  # written an hour ago
    _write(desired, "b.yaml", ["charlie"])
    tracker = WriteTracker()
    tracker.active = True  # the watcher runs, but the truncation's IN_MODIFY has not been handled yet
    cache = DesiredCache(settle=30, writes=tracker)
    assert set(cache.load(directory=desired).resources) == {"alpha", "bravo", "charlie"}
    _caught_mid_truncate(path)
    # an old mtime vouches for a file read for the first time, never for new content of one we knew
    with pytest.raises(Unsettled) as held:
        cache.load(directory=desired)
    assert held.value.files == [display(path)] and held.value.wait > 29
    path.write_text("---\n".join(_document(rid, "v1") for rid in ["alpha", "bravo"]))  # the writer finishes
    tracker.event(str(path), IN_MODIFY)
    tracker.event(str(path), IN_CLOSE_WRITE)
    _old(path)
    assert set(cache.load(directory=desired).resources) == {"alpha", "bravo", "charlie"}


def test_a_torn_read_is_not_forgotten_when_the_next_stamp_looks_old(tmp_path):
    """A read torn by a writer (stamp None) marks the file as one that changed under our eyes: its next
    stamp needs our own clock to confirm a drop, however old its mtime claims to be."""
    desired = tmp_path / "desired"
    desired.mkdir()
    path = _write(desired, "a.yaml", ["alpha", "bravo"])
    tracker = WriteTracker()
    tracker.active = True
    cache = DesiredCache(settle=30, writes=tracker)
    cache.load(directory=desired)
    tracker.event(str(path), IN_MODIFY)  # a writer is at work: the file is not read
    _write(desired, "a.yaml", ["alpha", "bravo", "charlie"])
    with pytest.raises(Unsettled):
        cache.load(directory=desired)
    tracker.event(str(path), IN_CLOSE_WRITE)
    _caught_mid_truncate(path)
    with pytest.raises(Unsettled):
        cache.load(directory=desired)


def display(path: Path) -> str:
    return str(path).removeprefix(os.getcwd() + "/")


def test_a_file_git_recreates_while_a_fresh_daemon_lists_desired_is_not_read_as_removed(tmp_path):
    """Chaos seed 28 under load, step 19: a daemon restarted during a `git pull` listed desired/ while git
    had unlinked fleet-b.yaml; git recreated it and dropped index.lock before the lock was checked, so the
    stale listing counted (a fresh daemon has no memory of fleet-b to hold) and r1, r4 were torn down.
    Here git "finishes" exactly between the listing and the lock check."""
    desired = tmp_path / "desired"
    desired.mkdir()
    _git(tmp_path, "init", "-q", "-b", "main")
    _write(desired, "a.yaml", ["alpha"])
    cache = DesiredCache(settle=0.01)

    def git_finishes_now() -> bool:
        _write(desired, "b.yaml", ["bravo"])  # git's checkout writes the file, then removes its lock
        return False

    cache._settler.git_busy = git_finishes_now  # type: ignore[method-assign]
    with pytest.raises(Unsettled):
        cache.load(directory=desired)
    cache._settler.git_busy = lambda: False  # type: ignore[method-assign]
    assert set(wait_for(lambda: _loads(cache, desired), what="both files").resources) == {"alpha", "bravo"}
