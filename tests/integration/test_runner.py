"""The runner against real scripts in tmp_path and real processes: the contract, the timeouts, the gate."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconciler.models import canonical_json
from reconciler.runner import (
    PDEATHSIG,
    gate_argv,
    group_runs_job,
    kill_process_group,
    process_group_alive,
    resolve_script,
    run_script,
)
from tests.support import ROOT

SPEC = {
    "resource_id": "acme-prod",
    "owner": "acme; rm -rf /",
    "region": "eu-west-1",
    "runtime_target": "local",
    "deploy_ref": "v1.4.2",
    "params": {"size": "small", "note": "ünïcode"},
    "protected": False,
}


def write_script(path: Path, body: str, *, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run(tmp_path: Path, body: str, **overrides):
    script = write_script(tmp_path / "script.sh", body)
    options = {"spec": SPEC, "action": "create", "workdir": tmp_path / "work", "needs_url": False,
               "timeout": 10.0, "grace": 1.0}
    options.update(overrides)
    return run_script(script=script, **options)


def pid_gone(pid: int, *, within: float = 3.0) -> bool:
    """Gone = no such process, or a zombie (here, pid 1 does not reap orphans)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if text[text.rfind(")") + 2] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_contract_environment_arrives_without_shell_interpretation(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    spec = {**SPEC, "deploy_ref": f"$(touch {pwned})", "owner": f"x; touch {pwned}; rm -rf /"}
    names = ["RESOURCE_ID", "OWNER", "REGION", "RUNTIME_TARGET", "DEPLOY_REF", "RESOURCE_PARAMS",
             "RESOURCE_JSON", "RECONCILER_ACTION", "RECONCILER_WORKDIR", "RECONCILER_JOB_ID"]
    outcome = run(tmp_path, f"""
for name in {' '.join(names)}; do printf '%s' "${{!name}}" > "$RECONCILER_WORKDIR/$name"; done
pwd > "$RECONCILER_WORKDIR/cwd"
[ -t 0 ] || cat > "$RECONCILER_WORKDIR/stdin"
""", spec=spec, action="update", job_id="job-7")
    assert outcome.ok, outcome
    work = tmp_path / "work"
    got = {name: (work / name).read_text() for name in names}
    assert got["DEPLOY_REF"] == spec["deploy_ref"] and got["OWNER"] == spec["owner"]
    assert got["RESOURCE_ID"] == "acme-prod" and got["REGION"] == "eu-west-1" and got["RUNTIME_TARGET"] == "local"
    assert json.loads(got["RESOURCE_PARAMS"]) == spec["params"]
    assert got["RESOURCE_JSON"] == canonical_json(spec)
    assert (got["RECONCILER_ACTION"], got["RECONCILER_JOB_ID"]) == ("update", "job-7")
    assert got["RECONCILER_WORKDIR"] == str(work) == (work / "cwd").read_text().strip()
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert (work / "stdin").read_text() == ""  # the script's stdin is /dev/null, not the gate pipe
    assert not pwned.exists()


def test_last_stdout_url_wins_and_stderr_urls_do_not_count(tmp_path: Path) -> None:
    outcome = run(tmp_path, """
echo "first http://old.example/a"
echo 'ready: "https://new.example:8443/x?y=1" done'
echo "http://stderr.example/" >&2
""", needs_url=True)
    assert outcome.ok and outcome.exit_code == 0
    assert outcome.url == "https://new.example:8443/x?y=1"


def test_needs_url_without_url_fails_with_the_reason(tmp_path: Path) -> None:
    outcome = run(tmp_path, "echo provisioned\n", needs_url=True)
    assert not outcome.ok and not outcome.permanent
    assert outcome.exit_code == 0
    assert outcome.error == "exit 0 but printed no http(s):// URL"
    assert run(tmp_path, "echo provisioned\n", needs_url=False).ok


def test_nonzero_exit_reports_code_and_stderr_tail(tmp_path: Path) -> None:
    outcome = run(tmp_path, "echo working; echo 'quota exceeded in eu-west-1' >&2; exit 3\n")
    assert not outcome.ok and not outcome.permanent
    assert (outcome.exit_code, outcome.error) == (3, "exited 3")
    assert outcome.output_tail.index("working") < outcome.output_tail.index("quota exceeded in eu-west-1")


def test_hang_past_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    outcome = run(tmp_path, 'sleep 300 & echo $! > "$RECONCILER_WORKDIR/child"; wait\n', timeout=0.5, grace=1.0)
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.error == "timed out after 0.5s (terminated)"
    assert outcome.duration < 0.5 + 1.0 + 1.0
    assert pid_gone(int((tmp_path / "work" / "child").read_text()))


def test_script_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    body = "trap '' TERM\nsleep 300 & echo $! > \"$RECONCILER_WORKDIR/child\"\nwhile :; do wait; done\n"
    outcome = run(tmp_path, body, timeout=0.3, grace=0.5)
    assert outcome.error == "timed out after 0.3s (killed)" and outcome.exit_code is None
    assert 0.8 <= outcome.duration < 0.8 + 1.5
    assert pid_gone(int((tmp_path / "work" / "child").read_text()))


def test_ten_megabytes_of_output_stay_bounded(tmp_path: Path) -> None:
    body = """
head -c 10000000 /dev/zero | tr '\\0' 'o'
head -c 10000000 /dev/zero | tr '\\0' 'e' >&2
echo; echo http://flood.example/
"""
    outcome = run(tmp_path, body, needs_url=True, capture_bytes=64 * 1024)
    assert outcome.ok, outcome.error
    assert outcome.url == "http://flood.example/"
    assert len(outcome.output_tail.encode()) <= 4096
    assert outcome.output_tail.endswith("http://flood.example/\n")


def test_missing_script_is_permanent_and_spawns_nothing(tmp_path: Path) -> None:
    started: list[int] = []
    script = tmp_path / "provision" / "x" / "provision.sh"
    outcome = run_script(script=script, spec=SPEC, action="create", workdir=tmp_path / "w",
                         needs_url=True, on_start=started.append)
    assert not outcome.ok and outcome.permanent and outcome.exit_code is None
    assert outcome.error == f"script not found: {script}"
    assert started == []


@pytest.mark.parametrize("guard", [True, False])
def test_a_spec_too_large_for_the_kernel_is_a_permanent_error_that_says_so(tmp_path: Path, guard: bool) -> None:
    """Issue 11 item 16: Linux caps each environment string at 128 KiB; RESOURCE_JSON carries the whole spec."""
    started: list[int] = []
    spec = {**SPEC, "params": {"blob": "x" * (200 * 1024)}}
    outcome = run(tmp_path, "echo ran > ran.txt\n", spec=spec, on_start=started.append, guard=guard)
    assert not outcome.ok and outcome.permanent and outcome.exit_code is None
    assert "too large" in outcome.error and "RESOURCE_JSON" in outcome.error and "128 KiB" in outcome.error
    assert "x" * 100 not in outcome.error
    assert started == [] and not (tmp_path / "work" / "ran.txt").exists()


def test_non_executable_script_is_permanent(tmp_path: Path) -> None:
    script = write_script(tmp_path / "provision.sh", "echo hi\n", executable=False)
    outcome = run_script(script=script, spec=SPEC, action="create", workdir=tmp_path / "w", needs_url=False)
    assert not outcome.ok and outcome.permanent
    assert outcome.error.startswith(f"script is not executable: {script}")


def test_killed_by_signal_is_named(tmp_path: Path) -> None:
    outcome = run(tmp_path, "echo about to die\nkill -9 $$\n")
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.error == "killed by signal SIGKILL"
    assert "about to die" in outcome.output_tail


def test_on_start_sees_the_group_before_the_script_runs(tmp_path: Path) -> None:
    marker = tmp_path / "work" / "ran"
    seen: list[tuple[int, bool, bool, bool]] = []

    def on_start(pgid: int) -> None:
        time.sleep(0.2)  # give a script that ignored the gate time to betray itself
        seen.append((pgid, os.getpgid(pgid) == pgid, marker.exists(), group_runs_job(pgid=pgid, job_id="j-1")))
        assert not group_runs_job(pgid=pgid, job_id="j-2")

    outcome = run(tmp_path, 'touch "$RECONCILER_WORKDIR/ran"\n', job_id="j-1", on_start=on_start)
    assert outcome.ok
    [(pgid, leads_group, ran_early, runs_job)] = seen
    assert leads_group and not ran_early and runs_job
    assert marker.exists()
    assert not process_group_alive(pgid=pgid)


def test_on_start_failure_kills_the_gate_and_never_runs_the_script(tmp_path: Path) -> None:
    pgids: list[int] = []

    def on_start(pgid: int) -> None:
        pgids.append(pgid)
        raise RuntimeError("database is locked")

    outcome = run(tmp_path, 'touch "$RECONCILER_WORKDIR/ran"\n', on_start=on_start)
    assert not outcome.ok and not outcome.permanent
    assert "database is locked" in outcome.error
    assert not (tmp_path / "work" / "ran").exists()
    assert not process_group_alive(pgid=pgids[0])


@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "plain"])
def test_gate_exits_when_the_parent_never_says_go(tmp_path: Path, guard: bool) -> None:
    marker = tmp_path / "ran"
    script = write_script(tmp_path / "script.sh", f"touch {marker}\n")
    gate = subprocess.Popen(gate_argv(script=script, guard=guard), stdin=subprocess.PIPE, start_new_session=True)
    gate.stdin.close()  # what the kernel does for us when the caller dies before writing "go"
    assert gate.wait(timeout=5) != 0
    assert not marker.exists()


def test_background_children_do_not_hold_the_run_open(tmp_path: Path) -> None:
    """A straggler in the group is cleared; a setsid'd one is not ours, but must not make us hang."""
    body = """
sleep 300 & echo $! > "$RECONCILER_WORKDIR/child"
setsid sleep 300 & d=$!; echo $d > "$RECONCILER_WORKDIR/detached"
# under load setsid may not have run yet when we exit; wait until it really left our session
while [ "$(cut -d' ' -f6 /proc/$d/stat)" = "$(cut -d' ' -f6 /proc/$$/stat)" ]; do sleep 0.01; done
echo http://ok.example/
"""
    outcome = run(tmp_path, body, needs_url=True)
    detached = int((tmp_path / "work" / "detached").read_text())
    try:
        assert outcome.ok and outcome.url == "http://ok.example/"
        assert outcome.duration < 3.0
        assert pid_gone(int((tmp_path / "work" / "child").read_text()))
        assert not pid_gone(detached, within=0.1)
    finally:
        os.kill(detached, 9)


def test_kill_process_group_kills_every_member(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    leader = subprocess.Popen(["bash", "-c", f"sleep 300 & echo $! > {pids}; trap '' TERM; sleep 300"],
                              start_new_session=True)
    while not pids.exists() or not pids.read_text().strip():
        time.sleep(0.02)
    assert process_group_alive(pgid=leader.pid)
    assert kill_process_group(pgid=leader.pid, grace=0.3)
    assert leader.wait(timeout=5) == -9  # it ignored TERM, so it needed the KILL
    assert pid_gone(int(pids.read_text()))
    assert not process_group_alive(pgid=leader.pid)
    assert not kill_process_group(pgid=leader.pid, grace=0.1)


@pytest.mark.parametrize(
    ("target", "action", "expected"),
    [("k8s", "create", "k8s/provision.sh"), ("k8s", "update", "k8s/provision.sh"),
     ("k8s", "delete", "teardown.sh"), ("local", "create", "provision.sh"), ("local", "delete", "teardown.sh")],
)
def test_resolve_script_prefers_the_target_override(tmp_path: Path, target: str, action: str, expected: str) -> None:
    for name in ("provision.sh", "teardown.sh", "k8s/provision.sh"):
        write_script(tmp_path / name, "exit 0\n")
    found = resolve_script(provision_dir=tmp_path, runtime_target=target, action=action)
    assert found == tmp_path / expected


def test_resolve_script_rejects_unknown_actions_and_path_targets(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        resolve_script(provision_dir=tmp_path, runtime_target="local", action="replace")
    with pytest.raises(ValueError):
        resolve_script(provision_dir=tmp_path, runtime_target="../etc", action="create")


def test_relative_script_path_runs_from_its_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_script(tmp_path / "provision" / "provision.sh", "echo http://rel.example/\n")
    outcome = run_script(script=Path("provision/provision.sh"), spec=SPEC, action="create",
                         workdir=tmp_path / "elsewhere", needs_url=True)
    assert outcome.ok and outcome.url == "http://rel.example/"


@pytest.mark.skipif(not PDEATHSIG, reason="setpriv (util-linux) is not installed: no parent-death guard here")
def test_a_script_does_not_outlive_a_worker_killed_with_sigkill(tmp_path: Path) -> None:
    """kill -9 of the worker process ends its scripts and their children (no orphan beside a reclaim)."""
    script = write_script(tmp_path / "script.sh", 'sleep 300 & echo $! > "$RECONCILER_WORKDIR/child"\n'
                                                  'echo $$ > "$RECONCILER_WORKDIR/script"; wait\n')
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from reconciler.runner import run_script
        run_script(script=Path({str(script)!r}), spec={SPEC!r}, action="create",
                   workdir=Path({str(tmp_path / 'work')!r}), needs_url=False, timeout=600)
    """)], cwd=ROOT)
    pids = tmp_path / "work" / "script", tmp_path / "work" / "child"
    deadline = time.monotonic() + 10
    while not all(p.exists() and p.read_text().strip() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    script_pid, child_pid = (int(p.read_text()) for p in pids)
    worker.kill()
    worker.wait()
    try:
        assert pid_gone(script_pid) and pid_gone(child_pid)
    finally:  # when the guard fails, do not leave the orphans to confuse other tests
        for pid in (script_pid, child_pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
