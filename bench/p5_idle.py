"""P5: what an idle daemon costs: CPU per resync pass and resident memory, at 1k, 10k and 100k.

The daemon (`--no-api --resync 2 --drift-interval 3600`) runs on a converged fleet, so every pass
finds nothing to do. After READY (first pass) and two more passes to settle, the CPU time of the
process (utime + stime of all its threads, /proc/<pid>/stat) is read each time a pass ends (each
pass ends with a STATUS= datagram on the NOTIFY_SOCKET we own); the figure is the median over the
following passes of the CPU used from one pass's end to the next (the pass, plus whatever else an
idle daemon does meanwhile: lock heartbeat, file watch, scheduler). RSS is VmRSS after those passes;
VmHWM (peak, reached during the first full parse) is in the note. When the CPU goal is missed, a
py-spy profile of further idle passes says where the time goes (bench/out/p5-profile-<size>.txt).
"""

from __future__ import annotations

import shutil

from .harness import Ctx, Row
from .live import Daemon, converged, cpu_seconds, median, profile, rss_mb

ID = "P5"
TITLE = "idle daemon: CPU per resync pass, RSS"
SIZES, QUICK_SIZES = (1_000, 10_000, 100_000), (1_000, 10_000)
RESYNC = 2.0
PASSES = {1_000: 5, 10_000: 5, 100_000: 3}
QUICK_PASSES = 3
SETTLE_PASSES = 2
CPU_GOAL, RSS_GOAL, GOAL_AT = 0.1, 150.0, 10_000
PROFILE_SECONDS = 8


def _measure(ctx: Ctx, count: int) -> dict:
    base = converged(ctx, count)
    project = ctx.out / "p5" / str(count)
    shutil.rmtree(project, ignore_errors=True)
    db = base.copy_db(project / "state.db")
    passes = QUICK_PASSES if ctx.quick else PASSES[count]
    args = ["--no-api", "--resync", str(RESYNC), "--drift-interval", "3600"]
    with Daemon(project, desired=base.desired, db=db, provision=base.provision, args=args) as daemon:
        ready = daemon.wait_ready(timeout=600)
        seen = daemon.notify.count("STATUS")  # READY=1 carries the first STATUS
        slow = max(60.0, count / 1000)  # a 100k pass may outlast the resync interval
        at = daemon.wait_status(after=seen - 1 + SETTLE_PASSES, timeout=slow * SETTLE_PASSES)
        cpu, times = [cpu_seconds(daemon.pid)], [at]
        for number in range(1, passes + 1):
            times.append(daemon.wait_status(after=seen - 1 + SETTLE_PASSES + number, timeout=slow))
            cpu.append(cpu_seconds(daemon.pid))
        rss, peak = rss_mb(daemon.pid), rss_mb(daemon.pid, "VmHWM")
        per_pass = [b - a for a, b in zip(cpu, cpu[1:])]
        intervals = [b - a for a, b in zip(times, times[1:])]
        figure = median(per_pass)
        profile = None
        if count == GOAL_AT and figure > CPU_GOAL:
            profile = _profile(ctx, daemon.pid, count)
    return {"count": count, "ready": ready, "per_pass": per_pass, "intervals": intervals, "cpu": figure,
            "rss": rss, "peak": peak, "profile": profile, "method": base.method}


def _profile(ctx: Ctx, pid: int, count: int) -> str | None:
    """py-spy over a few more idle passes: the top functions by own and by total time."""
    ctx.log(f"P5: profiling the idle daemon at {count:,} for {PROFILE_SECONDS} s with py-spy")
    return profile(["--pid", str(pid), "--duration", str(PROFILE_SECONDS), "--nonblocking"],
                   ctx.out / f"p5-profile-{count}", title=f"{PROFILE_SECONDS} s of an idle daemon at {count:,}")


def run(ctx: Ctx) -> list[Row]:
    results = []
    for count in QUICK_SIZES if ctx.quick else SIZES:
        ctx.log(f"P5: idle daemon at {count:,} resources, resync {RESYNC} s")
        results.append(_measure(ctx, count))
    rows, previous = [], None
    for result in results:
        count = result["count"]
        size = f"{count:,} res (DB by {result['method']})"
        goal_here = count == GOAL_AT
        peer = f"same at {previous['count']:,}" if previous else "—"
        cpu_note = (f"{len(result['per_pass'])} passes, {min(result['per_pass']):.3f}–{max(result['per_pass']):.3f} s; "
                    f"pass-to-pass {median(result['intervals']):.2f} s wall; first pass (READY) {result['ready']:.1f} s")
        if previous and previous["cpu"] > 0:
            cpu_note += f"; growth ×{result['cpu'] / previous['cpu']:.1f} for ×{count // previous['count']} resources"
        elif previous:  # /proc counts CPU in 10 ms ticks: an idle pass can cost less than one
            cpu_note += f"; growth not a ratio (at {previous['count']:,} a pass took under one 10 ms clock tick)"
        if result["profile"]:
            cpu_note += "; " + result["profile"]
        rows.append(Row(id=ID, what="idle resync: daemon CPU per pass", size=size, seconds=result["cpu"], unit="CPU s",
                        peer=peer, peer_seconds=previous["cpu"] if previous else None,
                        goal=f"≤ {CPU_GOAL} s" if goal_here else "(info)",
                        max_seconds=CPU_GOAL if goal_here else None, repeats=f"{len(result['per_pass'])} passes",
                        samples={"cpu_per_pass": result["per_pass"], "pass_interval": result["intervals"]},
                        note=cpu_note))
        rss_note = f"peak (VmHWM) {result['peak']:.0f} MB"
        if previous:
            rss_note += (f"; growth ×{result['rss'] / previous['rss']:.2f} for ×{count // previous['count']} resources, "
                         f"≈ {(result['rss'] - previous['rss']) * 1024 / (count - previous['count']):.1f} KB "
                         f"per added resource")
        rows.append(Row(id=ID, what="idle daemon RSS (VmRSS)", size=size, seconds=result["rss"], unit="MB",
                        peer=peer, peer_seconds=previous["rss"] if previous else None,
                        goal=f"≤ {RSS_GOAL:.0f} MB" if goal_here else "(info)",
                        max_seconds=RSS_GOAL if goal_here else None, repeats="1 daemon",
                        samples={"rss_mb": [result["rss"]], "peak_mb": [result["peak"]]}, note=rss_note))
        previous = result
    return rows
