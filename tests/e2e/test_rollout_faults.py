"""Rollouts under faults (issue 17), written as a red-team pass over apply's one-pool waves and paced ticks:
a halt or an abort leaves nothing queued to run later, a pause lets the wave finish, a suspension does not
make apply spin, a mid-wave halt comes within a couple of checks, kill -9 / signals / a held database lock
at awkward moments. Real processes, SQLite files, scripts and HTTP health endpoints on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_rollout import IDS, Health, cli, db_rows, health, ledger, project_with, refs  # noqa: F401
from tests.support import hold_write_lock, spawn_cli, wait_for, write_resources

# attacks that held (no defect found): they run in `make bench`, keeping `make test` under its 5 minutes
SLOW = pytest.mark.slow
TWO_WAVES = ("rollout:\n  waves: [1, 100%]\n  bake: 2s\n  check_interval: 0.3s\n  unhealthy_after: 2\n"
             "  min_changes: 10\n  canary: {ids: [r07]}\n")


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a live process and its waited-for children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:13])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rollout_row(project: Path) -> dict:
    rows = db_rows(project, "SELECT * FROM rollouts ORDER BY created_at DESC")
    return rows[0] if rows else {}

@contextlib.contextmanager
def applying(project: Path, health: Health, *, parallelism: int, sleep: str) -> Iterator[subprocess.Popen[str]]:
    """`reconciler apply --yes` running in the background; killed on the way out if still running."""
    proc = spawn_cli(project, "apply", "--yes", "--parallelism", str(parallelism), SLEEP=sleep,
                     HEALTH_PORT=str(health.port))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()



def test_fleet_suspension_mid_rollout_does_not_make_apply_spin(tmp_path, health):
    """A fleet-wide suspension leaves a wave's jobs queued and unclaimable ("its jobs wait unclaimed until it
    is lifted"). The rollout workers are then 'quiet' at every claim; apply must still pace its ticks (BUSY,
    2 s), not tick back-to-back, and must finish once the suspension is lifted."""
    project = project_with(tmp_path, health, TWO_WAVES)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=4, sleep="0.1") as proc:
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        held = cli(project, health, "suspend", "--all", "--reason", "redteam freeze")
        assert held.returncode == 0, held.stdout + held.stderr
        wait_for(lambda: rollout_row(project).get("wave") == 2, timeout=30, what="wave 2 queued")
        time.sleep(0.5)
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(4.0)
        used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - t0
        assert {rid for k, rid, _, _ in ledger(project) if k == "start"} == {"r07"}  # nothing ran while frozen
        lifted = cli(project, health, "resume", "--all", "--reason", "thaw")
        assert lifted.returncode == 0, lifted.stdout + lifted.stderr
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert set(refs(project).values()) == {"v2"}
    # a paced loop (a tick per 2 s while jobs are open) uses a few % of a core; a tick storm uses most of it
    assert used / elapsed < 0.25, f"apply used {used:.2f} s CPU in {elapsed:.2f} s while the wave was frozen"


@SLOW
def test_sqlite_write_lock_held_while_apply_drives_a_wave(tmp_path, health):
    """Another process holds SQLite's write lock for 6 s during wave 2: no traceback, apply finishes."""
    project = project_with(tmp_path, health, TWO_WAVES)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=4, sleep="0.3") as proc:
        wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 3, timeout=60,
                 what="wave 2 running")
        locker = hold_write_lock(project / "state.db", 6.0)
        locker.wait(timeout=30)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err
    assert set(refs(project).values()) == {"v2"}
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)


@SLOW
@pytest.mark.parametrize("verb", ["abort", "promote", "pause"])
def test_operator_verb_from_another_process_is_honoured_while_apply_drives(tmp_path, health, verb):
    """During the canary's long bake (20 s) an operator's verb from another process: abort stops apply
    with no further wave; promote ends the bake (wave 2 starts within ~2 s); pause lets apply return,
    no wave 2 started."""
    policy = TWO_WAVES.replace("bake: 2s", "bake: 20s")
    project = project_with(tmp_path, health, policy)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=4, sleep="0.1") as proc:
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        time.sleep(1.0)
        rid = rollout_row(project)["rollout_id"]
        t0 = time.monotonic()
        done = cli(project, health, "rollout", verb, rid)
        assert done.returncode == 0, done.stdout + done.stderr
        if verb == "promote":
            wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 2, timeout=10,
                     what="wave 2 started after promote")
            latency = time.monotonic() - t0
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, out + err
            assert set(refs(project).values()) == {"v2"}
            assert latency < 3.0, latency
        else:
            out, err = proc.communicate(timeout=10)
            latency = time.monotonic() - t0
            assert latency < 3.0, latency
            assert {r for k, r, _, _ in ledger(project) if k == "start"} == {"r07"}, ledger(project)
            assert "Traceback" not in err, err


def test_daemon_halts_an_unhealthy_canary_within_two_checks_and_a_look(tmp_path, health):
    """The daemon drives: the canary turns unhealthy during a long bake (30 s; check_interval 0.5 s,
    unhealthy_after 2): the rollout's own checks halt it long before the bake ends, not the drift loop. (The
    latency itself, ~1 s, is P9's to measure: a test here only bounds it far from the bake.)"""
    from tests.support import start_daemon

    policy = ("rollout:\n  waves: [1, 100%]\n  bake: 30s\n  check_interval: 0.5s\n  unhealthy_after: 2\n"
              "  min_changes: 10\n  canary: {ids: [r07]}\n")
    project = project_with(tmp_path, health, policy)
    daemon = start_daemon(project, SLEEP="0.1", HEALTH_PORT=str(health.port))
    try:
        wait_for(lambda: db_rows(project, "SELECT * FROM locks"), timeout=30, what="the daemon's lock")
        write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        time.sleep(1.3)
        health.bad.add("v2")
        t0 = time.monotonic()
        wait_for(lambda: rollout_row(project).get("state") == "halted", timeout=20, interval=0.02,
                 what="halted")
        latency = time.monotonic() - t0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert {rid for k, rid, _, _ in ledger(project) if k == "start"} == {"r07"}
    assert latency < 10.0, latency


@SLOW
@pytest.mark.parametrize("moment", ["wave-queued", "baking"])
def test_kill_9_of_apply_as_a_wave_is_queued_or_while_quiet(tmp_path, health, moment):
    """kill -9 of apply the moment wave 2 is written (its jobs just queued), or while the workers are quiet
    during the canary's bake; the next apply completes: each update succeeded once, no overlap, waves in order."""
    from tests.e2e.test_rollout import assert_wave_order, waves_of

    project = project_with(tmp_path, health, TWO_WAVES)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    proc = spawn_cli(project, "apply", "--yes", "--parallelism", "4", SLEEP="0.3", HEALTH_PORT=str(health.port))
    if moment == "wave-queued":
        wait_for(lambda: rollout_row(project).get("wave") == 2, timeout=60, interval=0.005, what="wave 2")
    else:
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    done = cli(project, health, "apply", "--yes", "--parallelism", "4", SLEEP="0.3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(refs(project).values()) == {"v2"}
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)
    assert_wave_order(project, waves_of(project), "v2")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_during_bake_sleep_returns_promptly(tmp_path, health, sig):
    """Ctrl-C / SIGTERM while apply only waits out a long bake (30 s, no job open): it returns without waiting
    the bake out (it looks every 0.2 s), no further wave, no traceback; the rollout stays running."""
    policy = TWO_WAVES.replace("bake: 2s", "bake: 30s")
    project = project_with(tmp_path, health, policy)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=4, sleep="0.1") as proc:
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        time.sleep(1.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        latency = time.monotonic() - t0
    assert proc.returncode in (130, 143), (proc.returncode, out + err)
    assert "Traceback" not in err, err
    assert latency < 10.0, latency
    assert {rid for k, rid, _, _ in ledger(project) if k == "start"} == {"r07"}
    assert [row["state"] for row in db_rows(project, "SELECT state FROM rollouts")] == ["running"]


def test_a_halted_wave_leaves_no_queued_jobs_that_run_after_the_halt(tmp_path, health):
    """Wave 2 fails (every member's script exits 3) with parallelism 1: the rollout halts. Expected: no job of
    the halted wave is left queued to run later; the next apply (desired moved on to v3, scripts fixed) runs
    none of the halted v2 updates and converges the fleet to v3 when it exits 0."""
    policy = TWO_WAVES.replace("bake: 2s", "bake: 1s")
    project = project_with(tmp_path, health, policy)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    for rid in IDS:
        if rid != "r07":
            (project / "control" / f"fail-{rid}").write_text("")
    first = cli(project, health, "apply", "--yes", "--parallelism", "1", SLEEP="0.3")
    assert first.returncode != 0, first.stdout + first.stderr
    assert [row["state"] for row in db_rows(project, "SELECT state FROM rollouts")] == ["halted"]
    leftover = db_rows(project, "SELECT resource_id FROM jobs WHERE status = 'queued'")
    for marker in (project / "control").glob("fail-*"):
        marker.unlink()
    halted_at = len(ledger(project))
    write_resources(project, {rid: {"deploy_ref": "v3"} for rid in IDS})
    second = cli(project, health, "apply", "--yes", "--parallelism", "1", SLEEP="0.05")
    late_v2 = sorted({rid for kind, rid, ref, _ in ledger(project)[halted_at:] if kind == "start" and ref == "v2"})
    stale = {rid: ref for rid, ref in refs(project).items() if ref != "v3"}
    again = cli(project, health, "plan")
    assert not leftover, f"halted wave left {len(leftover)} jobs queued: {[r['resource_id'] for r in leftover]}"
    assert not late_v2, f"halted rollout's v2 updates ran after the halt: {late_v2}"
    if second.returncode == 0:
        assert not stale, (f"apply exited 0 but {len(stale)} resources are not at desired v3: {stale}\n"
                           f"{second.stdout[-3000:]}")
        assert "No changes" in again.stdout, again.stdout[-300:]


@pytest.mark.parametrize("verb", ["pause", "abort"])
def test_a_verb_mid_wave_does_not_strand_the_wave_s_queued_jobs(tmp_path, health, verb):
    """`rollout pause` mid-wave: "the current one finishes and bakes"; `rollout abort`: "resources not reached
    keep their old spec". Either way apply must not exit leaving the wave's jobs queued (to be run by whoever
    claims next). Wave 2 has 19 jobs, parallelism 1, 0.4 s each; the verb comes after 2 of them started."""
    project = project_with(tmp_path, health, TWO_WAVES.replace("bake: 2s", "bake: 0.5s"))
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=1, sleep="0.4") as proc:
        wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 3, timeout=60,
                 what="wave 2 running")
        rid = rollout_row(project)["rollout_id"]
        done = cli(project, health, "rollout", verb, rid)
        assert done.returncode == 0, done.stdout + done.stderr
        out, err = proc.communicate(timeout=60)
    queued = [row["resource_id"] for row in db_rows(project, "SELECT resource_id FROM jobs WHERE status = 'queued'")]
    started = {r for k, r, _, _ in ledger(project) if k == "start"}
    if verb == "pause":  # the current wave finishes
        assert not queued and started == set(IDS), f"apply exited {proc.returncode}; stranded queued: {queued}"
    else:  # not reached: old spec, and nothing left queued to reach them later
        assert not queued, f"apply exited {proc.returncode}; abort left queued: {queued}"


def test_abort_with_revert_mid_wave_puts_the_wave_back_and_leaves_nothing_queued(tmp_path, health):
    """`rollout abort --revert` while wave 2's jobs run (parallelism 1): apply drives the revert; at its end
    every wave-2 resource is at v1 (reverted or never reached), nothing is left queued, no overlap."""
    from tests.e2e.test_rollout import waves_of

    project = project_with(tmp_path, health, TWO_WAVES.replace("bake: 2s", "bake: 0.5s"))
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    with applying(project, health, parallelism=1, sleep="0.4") as proc:
        wait_for(lambda: sum(1 for k, _, _, _ in ledger(project) if k == "start") >= 3, timeout=60,
                 what="wave 2 running")
        rid = rollout_row(project)["rollout_id"]
        done = cli(project, health, "rollout", "abort", "--revert", rid)
        assert done.returncode == 0, done.stdout + done.stderr
        out, err = proc.communicate(timeout=90)
    waves = waves_of(project)
    queued = [row["resource_id"] for row in db_rows(project, "SELECT resource_id FROM jobs WHERE status = 'queued'")]
    wrong = {r: ref for r, ref in refs(project).items() if waves.get(r) == 2 and ref != "v1"}
    assert not [e for e in ledger(project) if e[0] == "OVERLAP"]
    assert not wrong and not queued, f"rc={proc.returncode} not back at v1: {wrong}; queued: {queued}\n{out[-800:]}"


@SLOW
def test_two_applies_driving_one_rollout_at_once_update_each_resource_once(tmp_path, health):
    """A second `apply` (it also creates a new resource r20) starts while the first drives the rollout (no
    daemon: both drive). Each v2 update succeeds exactly once, no overlapping runs, waves in order, r20 made."""
    from tests.e2e.test_rollout import waves_of

    project = project_with(tmp_path, health, TWO_WAVES)
    write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    first = spawn_cli(project, "apply", "--yes", "--parallelism", "3", SLEEP="0.3", HEALTH_PORT=str(health.port))
    try:
        wait_for(lambda: any(k == "end" and rid == "r07" for k, rid, _, _ in ledger(project)), timeout=60,
                 what="canary done")
        write_resources(project, {"r20": {"deploy_ref": "v2"}}, name="new.yaml")
        second = spawn_cli(project, "apply", "--yes", "--parallelism", "3", SLEEP="0.3",
                           HEALTH_PORT=str(health.port))
        out2, err2 = second.communicate(timeout=120)
        out1, err1 = first.communicate(timeout=120)
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    assert "Traceback" not in err1 + err2
    assert refs(project).get("r20") == "v2"
    assert {r: ref for r, ref in refs(project).items()} == dict.fromkeys([*IDS, "r20"], "v2")
    entries = ledger(project)
    assert not [e for e in entries if e[0] == "OVERLAP"], entries
    jobs = db_rows(project, "SELECT resource_id, count(*) AS n FROM jobs WHERE status = 'succeeded'"
                            " AND spec_json LIKE '%\"v2\"%' AND resource_id != 'r20' GROUP BY resource_id")
    assert {row["resource_id"]: row["n"] for row in jobs} == dict.fromkeys(IDS, 1)
    waves = waves_of(project)
    v2 = [e for e in entries if e[2] == "v2" and e[1] in waves]
    canary_end = max(at for kind, rid, _, at in v2 if kind == "end" and waves[rid] == 1)
    wave2_start = min(at for kind, rid, _, at in v2 if kind == "start" and waves[rid] == 2)
    assert wave2_start >= canary_end + 2.0, wave2_start - canary_end


@pytest.mark.parametrize("bake", ["1s", pytest.param("3s", marks=SLOW)])
@pytest.mark.parametrize("driver", ["apply", "daemon"])
def test_an_unhealthy_success_mid_wave_halts_within_two_checks(tmp_path, health, driver, bake):
    """Wave 2's jobs run one at a time (0.5 s each); every wave-2 resource answers 503 after its update. The
    first success is checked during its own bake (every 0.3 s, unhealthy_after 2): the rollout halts long
    before the wave's 19 jobs end, and the jobs not yet started are withdrawn (nothing left queued)."""
    from tests.support import start_daemon

    policy = (f"rollout:\n  waves: [1, 100%]\n  bake: {bake}\n  check_interval: 0.3s\n  unhealthy_after: 2\n"
              "  min_changes: 10\n  canary: {ids: [r07]}\n")
    project = project_with(tmp_path, health, policy)
    health.bad |= {rid for rid in IDS if rid != "r07"}
    daemon = None
    if driver == "daemon":
        daemon = start_daemon(project, "--parallelism", "1", SLEEP="0.5", HEALTH_PORT=str(health.port))
        wait_for(lambda: db_rows(project, "SELECT * FROM locks"), timeout=30, what="the daemon's lock")
        write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
    else:
        write_resources(project, {rid: {"deploy_ref": "v2"} for rid in IDS})
        daemon = spawn_cli(project, "apply", "--yes", "--parallelism", "1", SLEEP="0.5",
                           HEALTH_PORT=str(health.port))
    try:
        wait_for(lambda: [e for e in ledger(project) if e[0] == "end" and e[1] != "r07"], timeout=60, interval=0.01,
                 what="first wave-2 success")
        t0 = time.monotonic()
        wait_for(lambda: rollout_row(project).get("state") == "halted", timeout=20, interval=0.02, what="halted")
        latency = time.monotonic() - t0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30) if driver == "apply" else daemon.wait(timeout=30)
    assert latency < 10.0, latency
    started = {rid for kind, rid, _, _ in ledger(project) if kind == "start" and rid != "r07"}
    assert len(started) <= 12, sorted(started)  # of 19: halted mid-wave, not at its end
    assert not db_rows(project, "SELECT job_id FROM jobs WHERE status = 'queued'")
