"""Half-written desired files never count: real daemons, real scripts, writes in slices, a real `git pull`.

Every provision and teardown run is recorded by the scripts (tests/support.py), so "no teardown" and
"no truncated deploy_ref was ever provisioned" are read from what really ran, not from the database.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support import (
    log_events,
    make_project,
    runs,
    start_daemon,
    statuses,
    wait_for,
)
from tests.unit.test_settle import _document, _git, _old

IDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def _fleet(refs: dict[str, str]) -> str:
    return "---\n".join(_document(rid, ref) for rid, ref in refs.items())


def _refs(changed: str | None = None) -> dict[str, str]:
    return {rid: ("v1.4.3" if rid == changed else "v1.4.2") for rid in IDS}


def _converged(project: Path, refs: dict[str, str]) -> bool:
    from tests.support import db_rows

    rows = {row["resource_id"]: (row["status"], row["deploy_ref"]) for row in db_rows(project)}
    return all(rows.get(rid) == ("active", ref) for rid, ref in refs.items())


def _started(project: Path) -> list[tuple[str, str, str]]:
    """(resource, action, deploy_ref) of every script start, in order."""
    return [(run[1], run[2], run[3]) for run in runs(project) if run[0] == "start"]


def _slices(text: str, count: int, cut_inside: str) -> list[str]:
    """`count` slices of `text`, one of them ending inside `cut_inside` (a truncated value)."""
    cut = text.index(cut_inside) + len(cut_inside) - 2  # "deploy_ref: v1.4.3" → "... v1.4"
    step = max(1, len(text) // count)
    bounds = sorted({*range(step, len(text), step), cut})[: count - 1]
    edges = [0, *bounds, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:])]


def _start(project: Path, daemons: list, *, settle: str) -> None:
    (project / "desired" / "fleet.yaml").write_text(_fleet(_refs()))
    daemons.append(start_daemon(project, "--resync", "0.5", RECONCILER_SETTLE=settle))
    wait_for(lambda: _converged(project, _refs()), timeout=30, what="six resources active at v1.4.2")


def _assert_only_the_update(project: Path, before: int) -> None:
    wait_for(lambda: _converged(project, _refs("charlie")), timeout=30, what="charlie updated to v1.4.3")
    time.sleep(1.0)  # two more resyncs: nothing else may follow
    after = _started(project)[before:]
    assert after == [("charlie", "update", "v1.4.3")], after
    assert not [run for run in runs(project) if run[2] == "delete"]


def test_a_file_written_in_slices_through_one_open_is_never_read_half_written(project, daemons):
    """A generator writing `> desired/fleet.yaml`: one open, pauses longer than the debounce and the settle."""
    _start(project, daemons, settle="0.15")
    before = len(_started(project))
    text = _fleet(_refs("charlie"))
    with (project / "desired" / "fleet.yaml").open("w") as stream:
        for piece in _slices(text, 6, "deploy_ref: v1.4.3"):
            stream.write(piece)
            stream.flush()
            time.sleep(0.4)
    _assert_only_the_update(project, before)


def test_a_file_written_in_slices_by_separate_writes_waits_for_the_settle(project, daemons):
    """Each slice its own open/append/close (a script of `>>`s), pauses longer than the debounce."""
    _start(project, daemons, settle="1.5")
    before = len(_started(project))
    path = project / "desired" / "fleet.yaml"
    path.write_text("")
    for piece in _slices(_fleet(_refs("charlie")), 6, "deploy_ref: v1.4.3"):
        time.sleep(0.25)
        with path.open("a") as stream:
            stream.write(piece)
    _assert_only_the_update(project, before)


def test_a_file_deleted_and_recreated_within_the_settle_is_not_torn_down(project, daemons):
    (project / "desired" / "other.yaml").write_text(_document("golf", "v1"))  # not the whole fleet
    _start(project, daemons, settle="1.5")
    wait_for(lambda: statuses(project).get("golf") == "active", what="golf active")
    path = project / "desired" / "fleet.yaml"
    path.unlink()
    time.sleep(0.4)
    path.write_text(_fleet(_refs()))
    time.sleep(2.5)  # past the settle and several resyncs
    assert not [run for run in runs(project) if run[2] == "delete"]
    assert _converged(project, _refs())


def test_a_real_delete_is_torn_down_after_the_settle(project, daemons):
    settle = 1.0
    _start(project, daemons, settle=str(settle))
    (project / "desired" / "other.yaml").write_text(_document("golf", "v1"))
    wait_for(lambda: statuses(project).get("golf") == "active", what="golf active")
    removed = time.monotonic()
    (project / "desired" / "other.yaml").unlink()
    wait_for(lambda: statuses(project).get("golf") == "deleted", timeout=30, what="golf torn down")
    assert time.monotonic() - removed >= settle  # a lower bound: it held the delete back for the settle
    assert [run[1] for run in runs(project) if run[2] == "delete" and run[0] == "start"] == ["golf"]


@pytest.mark.parametrize("smudge, settle", [("0.3", "1.0"), ("1.5", "0.3")],
                         ids=["filter-within-settle", "filter-slower-than-settle"])
def test_a_git_pull_of_a_multi_file_change_tears_nothing_down(tmp_path, daemons, smudge, settle):
    """git unlinks each changed file, runs its filters, then writes it: each file vanishes for a moment.

    The checkout uses a smudge filter that takes a while per file (as git-lfs or git-crypt do), so the
    moment a file is missing is long enough for any pass to see it. When the filter is slower than
    the settle interval, the index.lock git holds for the whole checkout keeps the daemon waiting.
    """
    upstream = tmp_path / "upstream"
    (upstream / "desired").mkdir(parents=True)
    files = {"a.yaml": IDS[:2], "b.yaml": IDS[2:4], "c.yaml": IDS[4:]}
    for name, ids in files.items():
        (upstream / "desired" / name).write_text("---\n".join(_document(rid, "v1.4.2") for rid in ids))
    (upstream / ".gitattributes").write_text("*.yaml filter=slow\n")
    _git(upstream, "init", "-q", "-b", "main")
    _git(upstream, "add", ".")
    _git(upstream, "commit", "-q", "-m", "fleet")
    project = make_project(tmp_path / "checkout-parent")
    checkout = project / "repo"
    _git(project, "clone", "-q", str(upstream), str(checkout))
    _git(checkout, "config", "filter.slow.smudge", f"sleep {smudge}; cat")
    _git(checkout, "config", "filter.slow.clean", "cat")
    daemons.append(start_daemon(project, "--resync", "0.5", RECONCILER_SETTLE=settle,
                                RECONCILER_DESIRED=str(checkout / "desired")))
    wait_for(lambda: _converged(project, _refs()), timeout=30, what="six resources active")
    before = len(_started(project))
    # one commit changes every file: a new ref in a.yaml, and c.yaml's resources move to b.yaml
    (upstream / "desired" / "a.yaml").write_text(
        "---\n".join(_document(rid, "v1.4.3" if rid == "alpha" else "v1.4.2") for rid in IDS[:2]))
    (upstream / "desired" / "b.yaml").write_text("---\n".join(_document(rid, "v1.4.2") for rid in IDS[2:]))
    (upstream / "desired" / "c.yaml").unlink()
    _git(upstream, "commit", "-q", "-am", "move c's resources to b, bump alpha")
    _git(checkout, "pull", "-q", "--ff-only")
    wanted = {**_refs(), "alpha": "v1.4.3"}
    wait_for(lambda: _converged(project, wanted), timeout=30, what="alpha updated")
    time.sleep(1.0)
    assert _started(project)[before:] == [("alpha", "update", "v1.4.3")]
    assert not [run for run in runs(project) if run[2] == "delete"]


def test_the_daemon_logs_that_it_waits_for_a_changing_file(project, daemons):
    _start(project, daemons, settle="2")
    with (project / "desired" / "fleet.yaml").open("a") as stream:
        stream.write("# a comment, the file stays open\n")
        stream.flush()
        wait_for(lambda: any(e["event"].startswith("desired file still changing") for e in log_events(project)),
                 what="the settle wait in the log")
    proc = daemons[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


# --- the one-shot commands wait too (the desired cache itself: unit/test_settle.py) -----------------------


def test_plan_waits_for_a_file_being_written_in_slices(project):
    import threading

    from tests.support import run_cli

    path = project / "desired" / "fleet.yaml"
    pieces = _slices(_fleet(_refs()), 6, "deploy_ref: v1.4.2")
    path.write_text(pieces[0])

    def rest() -> None:
        for piece in pieces[1:]:
            time.sleep(0.15)
            with path.open("a") as stream:
                stream.write(piece)

    writer = threading.Thread(target=rest)
    writer.start()
    done = run_cli(project, "plan", RECONCILER_SETTLE="1.0")
    writer.join()
    assert done.returncode == 0, done.stderr
    assert "Plan: 6 to create" in done.stdout


def test_a_bad_settle_value_is_a_clear_error(project):
    from tests.support import run_cli

    done = run_cli(project, "validate", RECONCILER_SETTLE="soon")
    assert done.returncode == 1 and "RECONCILER_SETTLE='soon': expected seconds" in done.stderr


def test_plan_waits_while_git_holds_the_index_lock(project):
    import threading

    from tests.support import run_cli

    _git(project, "init", "-q")
    (project / "desired" / "fleet.yaml").write_text(_fleet(_refs()))
    _old(project / "desired" / "fleet.yaml")
    lock = project / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(1.0, lock.unlink).start()
    started = time.monotonic()
    done = run_cli(project, "plan", RECONCILER_SETTLE="0.1")
    assert done.returncode == 0 and "Plan: 6 to create" in done.stdout
    assert time.monotonic() - started >= 1.0  # a lower bound: it waited for the lock to go
