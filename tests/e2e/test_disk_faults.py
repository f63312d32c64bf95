"""A corrupt database file, a read-only file system and a full disk under the CLI: `Error: …` saying what
to do, exit 1, no traceback, nothing half-written.

Root reads and writes through file modes, so the faults are real file systems instead: a small tmpfs,
mounted read-only or filled up, in a private mount namespace (`unshare -m`) that only the commands
under test see. A driver (below) runs inside the namespace and reports what happened as JSON.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import cli_env, fatal_error, make_project, reconciler_argv, run_cli, write_resources

COMMANDS = {
    "plan": ["plan"],
    "apply": ["apply", "--yes"],
    "status": ["status"],
    "daemon": ["daemon", "--no-api", "--busy-timeout", "1"],
}

# Runs as root inside `unshare -m`: mount a tmpfs, put the database there, break it, run the commands.
DRIVER = textwrap.dedent("""\
    import json, os, sqlite3, subprocess, sys

    mnt, fault, argv, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    db = os.path.join(mnt, "state.db")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], check=True)
    env = dict(os.environ, RECONCILER_DB=db)

    def cli(*args, timeout=60):
        try:
            done = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return {"rc": "timeout", "stdout": str(exc.stdout), "stderr": str(exc.stderr)}
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    def rows():
        conn = sqlite3.connect(db)
        try:
            return {"integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
                    "resources": sorted(r[0] for r in conn.execute("SELECT resource_id FROM resources")),
                    "jobs": conn.execute("SELECT count(*) FROM jobs").fetchone()[0]}
        finally:
            conn.close()  # an open file keeps the mount from going read-only

    first = cli("apply", "--yes")
    assert first["rc"] == 0, first
    before = rows()
    open(os.environ["DESIRED_MORE"], "w").write(os.environ["MORE_YAML"])  # a change to apply now
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
    elif fault.startswith("full"):
        if fault == "full-while-open":  # another reader keeps -wal/-shm: opening works, writing fails
            reader = sqlite3.connect(db)
            reader.execute("SELECT count(*) FROM resources").fetchone()
        with open(os.path.join(mnt, "filler"), "wb", buffering=0) as filler:  # unbuffered: close has nothing left to flush
            try:
                while True:
                    filler.write(b"\\0" * 65536)
                    filler.flush()
            except OSError:
                pass
    results = {name: cli(*args) for name, args in commands.items()}
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", mnt], check=True)
    if os.path.exists(os.path.join(mnt, "filler")):
        os.remove(os.path.join(mnt, "filler"))
    print(json.dumps({"before": before, "after": rows(), "results": results}))
""")


def unshare_available() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -m is not permitted here: {probe.stderr.strip()}"


def project_with_one_resource(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "p")
    write_resources(project, {"first": {}})
    return project


def run_in_namespace(tmp_path: Path, project: Path, fault: str) -> dict:
    driver, mnt = tmp_path / "driver.py", tmp_path / "mnt"
    driver.write_text(DRIVER)
    mnt.mkdir()
    more = "resource_id: second\\nowner: acme\\nregion: eu-west-1\\nruntime_target: local\\ndeploy_ref: v1\\n"
    env = cli_env(project, DESIRED_MORE=str(project / "desired" / "more.yaml"), MORE_YAML=more.replace("\\n", "\n"))
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, str(driver), str(mnt), fault,
                           json.dumps(reconciler_argv()), json.dumps(COMMANDS)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_clean_error(result: dict, *, command: str, words: tuple[str, ...]) -> None:
    assert result["rc"] == 1, (command, result)
    assert "Traceback" not in result["stderr"], (command, result["stderr"])
    assert fatal_error(result["stderr"]), (command, result["stderr"])
    assert any(word in result["stderr"] for word in words), (command, result["stderr"])


@pytest.fixture
def namespaces():
    reason = unshare_available()
    if reason:
        pytest.skip(reason)


def test_a_read_only_file_system_is_an_error_with_what_to_do(tmp_path, namespaces):
    project = project_with_one_resource(tmp_path)
    report = run_in_namespace(tmp_path, project, "read-only")
    for command in ("apply", "daemon"):
        assert_clean_error(report["results"][command], command=command, words=("read-only", "writable"))
    for command in ("plan", "status"):  # readers: an answer, or the same clean error
        result = report["results"][command]
        if result["rc"] != 0:
            assert_clean_error(result, command=command, words=("read-only", "writable"))
    assert report["after"] == report["before"]


@pytest.mark.parametrize("fault", ["full", "full-while-open"])
def test_a_full_disk_is_an_error_with_what_to_do_and_writes_nothing(tmp_path, namespaces, fault):
    project = project_with_one_resource(tmp_path)
    report = run_in_namespace(tmp_path, project, fault)
    for command in ("apply", "daemon"):
        assert_clean_error(report["results"][command], command=command, words=("disk is full", "free space"))
    for command in ("plan", "status"):
        result = report["results"][command]
        if result["rc"] != 0:
            assert_clean_error(result, command=command, words=("full", "free space"))
    assert report["after"] == report["before"] and report["after"]["integrity"] == "ok"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_corrupt_database_is_an_error_with_what_to_do_and_is_left_as_it_was(tmp_path, command):
    project = project_with_one_resource(tmp_path)
    damaged = b"SQLite format 3\0" + bytes(range(256)) * 64
    (project / "state.db").write_bytes(damaged)
    done = run_cli(project, *COMMANDS[command], timeout=60)
    assert_clean_error({"rc": done.returncode, "stderr": done.stderr}, command=command,
                       words=("damaged", "backup"))
    assert hashlib.sha256((project / "state.db").read_bytes()).digest() == hashlib.sha256(damaged).digest()
