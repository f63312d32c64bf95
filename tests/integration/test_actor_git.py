"""The git actor of desired/ against real repositories in tmp_path: the HEAD commit and its author, the dirty
mark, the cache per HEAD, no repository at all, and a checkout owned by another user (git's "dubious
ownership", the documented systemd layout)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.actor import GitActor
from reconciler.engine import desired_commit, file_attribution

AUTHOR = {"GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.com",
          "GIT_COMMITTER_NAME": "Ci Bot", "GIT_COMMITTER_EMAIL": "ci@example.com"}


def git(repo: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**clean, **AUTHOR, "HOME": str(repo.parent), **env}).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "checkout"
    (root / "desired").mkdir(parents=True)
    (root / "desired" / "fleet.yaml").write_text("resource_id: a\n")
    (root / "README").write_text("not desired\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_the_actor_is_head_and_its_author_not_the_committer(repo):
    sha = git(repo, "rev-parse", "HEAD")
    actor = GitActor(repo / "desired")
    assert actor.describe() == f"git:{sha[:12]} Ada Lovelace <ada@example.com>"
    assert actor.commit() == sha[:12] == desired_commit(directory=repo / "desired")


def test_an_uncommitted_edit_of_desired_is_marked_dirty_and_other_edits_are_not(repo):
    actor = GitActor(repo / "desired")
    (repo / "README").write_text("edited\n")
    assert not actor.describe().endswith("(dirty)")
    (repo / "desired" / "fleet.yaml").write_text("resource_id: b\n")
    assert actor.describe().endswith(" (dirty)")
    git(repo, "checkout", "--", "desired")
    (repo / "desired" / "new.yaml").write_text("resource_id: c\n")  # untracked counts too
    assert actor.describe().endswith(" (dirty)")
    git(repo, "add", "desired")
    git(repo, "commit", "-q", "-m", "second", GIT_AUTHOR_NAME="Bob")
    assert actor.describe() == f"git:{git(repo, 'rev-parse', '--short=12', 'HEAD')} Bob <ada@example.com>"


def test_a_pass_runs_git_only_when_head_the_index_or_the_files_moved(repo, tmp_path):
    calls = tmp_path / "calls"
    wrapper = tmp_path / "git-counting"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexec {shutil.which('git')} \"$@\"\n")
    wrapper.chmod(0o755)
    actor = GitActor(repo / "desired", git=str(wrapper))
    first = actor.describe(files_version=1)
    count = len(calls.read_text().splitlines())
    for _ in range(5):
        assert actor.describe(files_version=1) == first and actor.commit() == first[4:16]
    assert len(calls.read_text().splitlines()) == count  # cached: no git at all
    git(repo, "commit", "-q", "--allow-empty", "-m", "moved")
    assert actor.describe(files_version=1) != first  # HEAD moved: asked again


def test_outside_git_there_is_no_commit_and_file_changes_are_git_unknown(tmp_path):
    (tmp_path / "desired").mkdir()
    actor = GitActor(tmp_path / "desired")
    assert actor.describe() is None and actor.commit() is None
    assert file_attribution(git=actor, runner="cli:a@b").files == "git:unknown"


def test_a_checkout_owned_by_another_user_still_has_its_commit(repo):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the checkout to another user")
    sha = git(repo, "rev-parse", "HEAD")
    subprocess.run(["chown", "-R", "nobody", str(repo)], check=True)
    os.chmod(repo.parent, 0o755)
    plain = subprocess.run(["git", "-C", str(repo / "desired"), "rev-parse", "HEAD"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")})
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr  # what git does without our setting
    actor = GitActor(repo / "desired")
    assert actor.describe() == f"git:{sha[:12]} Ada Lovelace <ada@example.com>"  # and not dirty
    assert desired_commit(directory=repo / "desired") == sha[:12]
