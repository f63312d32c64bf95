"""P3: how long after a file is saved in desired/ the daemon starts the script for it.

A daemon runs on a converged fleet of 1,000 resources (nothing to do). Each edit saves a new file
desired/edit-NN.yaml holding one new resource, as editors save: write a temporary name, then
os.replace() it into place; the time just before the write is the save. The provision script's
first line appends `$RESOURCE_ID <date +%s%N>` to a log, so latency = script start − save, both on
the same wall clock. Edits are ~0.3 s apart (the next one is saved 0.3 s after the previous script
started). The chain measured: inotify (IN_MOVED_TO: the file arrived whole, it counts at once) → pass
(re-parse the changed file, plan) → enqueue → a worker claims → fork/exec of the script.

For information, the same is measured for in-place saves (open, write, close: a generator or an
editor that truncates): such a file counts once unchanged for the settle interval (0.15 s).
"""

from __future__ import annotations

import os
import shutil
import time

from . import fleet
from .harness import BenchError, Ctx, Row
from .live import Daemon, converged, percentile

ID = "P3"
TITLE = "reaction latency: file save → script start (daemon)"
BASE, QUICK_BASE = 1_000, 1_000
EDITS, QUICK_EDITS = 50, 10
SPACING = 0.3
PER_EDIT_TIMEOUT = 10.0
TOTAL_CAP = 90.0
ARGS = ["--no-api", "--resync", "600", "--drift-interval", "3600"]


def _script(log: str) -> str:
    return ('#!/bin/sh\n'
            f'echo "$RESOURCE_ID $(date +%s%N)" >> "{log}"\n'
            'sleep 0\n'
            'echo "http://127.0.0.1:9/$RESOURCE_ID"\n')


def _document(number: int) -> str:
    return (f"resource_id: edit-{number:02d}\nowner: owner-edit\nregion: eu-west-1\nruntime_target: local\n"
            "deploy_ref: v1.0.0\nparams: {size: small, replicas: 1}\n")


def _started(log: str, offset: int, rid: str) -> tuple[int | None, int]:
    """The script's start time (epoch ns) for `rid` when its line is in the log; also the new offset."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return None, offset
    found = None
    complete = data[:data.rfind(b"\n") + 1]
    for line in complete.decode().splitlines():
        name, _, ns = line.partition(" ")
        if name == rid:
            found = int(ns)
    return found, offset + (len(complete) if found is not None else 0)


def run(ctx: Ctx) -> list[Row]:
    base_count, edits = (QUICK_BASE, QUICK_EDITS) if ctx.quick else (BASE, EDITS)
    base = converged(ctx, base_count)
    project = ctx.out / "p3"
    shutil.rmtree(project, ignore_errors=True)
    desired = project / "desired"
    shutil.copytree(base.desired, desired)
    log = str(project / "starts.log")
    provision = fleet.write_scripts(project / "provision", provision=_script(log))
    db = base.copy_db(project / "state.db")
    latencies: list[float] = []
    ctx.log(f"P3: daemon on {base_count:,} converged resources, {edits} edits {SPACING} s apart")
    with Daemon(project, desired=desired, db=db, provision=provision, args=ARGS) as daemon:
        ready = daemon.wait_ready(timeout=120)
        time.sleep(0.5)  # let the pass that follows READY (if any) go by
        if os.path.exists(log):
            raise BenchError(f"P3: a script ran on a converged fleet: {open(log).read()[:200]}")
        offset, deadline = 0, time.monotonic() + TOTAL_CAP
        in_place: list[float] = []
        for number in range(1, 2 * edits + 1):
            if time.monotonic() > deadline:
                ctx.log(f"P3: time cap reached after {number - 1} edits")
                break
            atomic = number <= edits
            latency, offset = _edit(desired=desired, log=log, offset=offset, number=number, atomic=atomic)
            (latencies if atomic else in_place).append(latency)
            time.sleep(SPACING)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    size = f"{base_count:,} res + {len(latencies)} new files"
    note = (f"{len(latencies)} edits, {SPACING} s apart; min {min(latencies):.3f} s, max {max(latencies):.3f} s; "
            f"atomic saves (rename into place) count at once; "
            f"daemon ready in {ready:.1f} s")
    samples = {"latency": latencies}
    return [Row(id=ID, what="save → script start, p50", size=size, seconds=p50, peer="—", peer_seconds=None,
                goal="≤ 0.3 s", max_seconds=0.3, repeats=f"{len(latencies)} edits", note=note, samples=samples),
            Row(id=ID, what="save → script start, p99", size=size, seconds=p99, peer="—", peer_seconds=None,
                goal="≤ 1 s", max_seconds=1.0, repeats=f"{len(latencies)} edits",
                note="nearest rank: with 50 edits p99 is the slowest but one" if len(latencies) >= 50 else
                "nearest rank: with fewer than 100 edits p99 is the slowest")] + _in_place_row(in_place, base_count)


def _edit(*, desired, log: str, offset: int, number: int, atomic: bool) -> tuple[float, int]:
    """Save edit-NN.yaml (atomically, or in place) and wait for its script: (latency in s, log offset)."""
    rid, final = f"edit-{number:02d}", desired / f"edit-{number:02d}.yaml"
    saved = time.time_ns()
    if atomic:
        temporary = desired / f".edit-{number:02d}.yaml.tmp"  # a dot file: not desired state
        temporary.write_text(_document(number))
        os.replace(temporary, final)
    else:
        final.write_text(_document(number))
    give_up = time.monotonic() + PER_EDIT_TIMEOUT
    while True:
        started, offset = _started(log, offset, rid)
        if started is not None:
            return (started - saved) / 1e9, offset
        if time.monotonic() > give_up:
            raise BenchError(f"P3: no script start for {rid} within {PER_EDIT_TIMEOUT:.0f} s")
        time.sleep(0.002)


def _in_place_row(in_place: list[float], base_count: int) -> list[Row]:
    if not in_place:
        return []
    size = f"{base_count:,} res + {len(in_place)} new files"
    return [Row(id=ID, what="in-place save → script start, p50", size=size,
                seconds=percentile(in_place, 50), peer="—", peer_seconds=None, goal="(info)",
                repeats=f"{len(in_place)} edits",
                note=f"open/write/close, no rename: counts once unchanged for the settle interval (0.15 s); "
                     f"min {min(in_place):.3f} s, max {max(in_place):.3f} s", samples={"latency": in_place})]
