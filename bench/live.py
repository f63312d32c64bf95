"""What the daemon measurements (P3–P6) share: a running daemon, /proc figures, converged databases.

A daemon is a real `reconciler daemon` process started with this checkout's interpreter. It is told
to talk to systemd through a NOTIFY_SOCKET that we own, which gives exact events without log
parsing: READY=1 after the first pass, and one STATUS= datagram after every pass.

A converged database of N resources is built once per size under bench/out/converged/ and copied
for every daemon run, so nothing a daemon writes (lock, health) leaks into the next run.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import fleet
from .harness import BenchError, Ctx, base_env, reconciler_argv, reconciler_env, run_checked

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Above this, `apply` of an instant script takes minutes (here 3.6 s for 1,000 but about 4 minutes for
# 10,000: its rate falls as the database grows), so the database is written directly instead, shaped
# after a real apply, then checked with `plan --detailed-exitcode`.
APPLY_MAX = 1_000
BUILD_VERSION = 1


# --- small things --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_all(procs: list[subprocess.Popen], *, grace: float = 30.0) -> None:
    """SIGTERM every process, wait up to `grace`, then SIGKILL the stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {key} for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] if q < 100 else ordered[-1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_json(argv: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 300) -> dict:
    """Run a helper that prints one JSON object as its last stdout line."""
    done = run_checked(argv, env=env, cwd=cwd, timeout=timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the daemon ----------------------------------------------------------------------------------


class NotifySocket:
    """The systemd end of sd_notify: a unix datagram socket; every message is kept with its arrival time."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rb-"))  # short: unix socket paths are limited to 108 bytes
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        self.sock.setblocking(False)
        while True:
            self.messages.append((time.monotonic(), dict(
                line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)))
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return

    def count(self, key: str) -> int:
        return sum(1 for _, message in self.messages if key in message)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon:
    """`reconciler daemon ARGS` on a project; JSON log in project/daemon.log. Use as a context manager."""

    def __init__(self, project: Path, *, desired: Path, db: Path, provision: Path, args: list[str]) -> None:
        self.project, self.args = project, args
        self.log_path = project / "daemon.log"
        self.notify = NotifySocket()
        self.env = reconciler_env(project, desired=desired, db=db, provision=provision,
                                  RECONCILER_LOG_FORMAT="json", NOTIFY_SOCKET=str(self.notify.path))
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Daemon:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(reconciler_argv("daemon", *self.args), cwd=self.project, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise BenchError(f"daemon exited {self.proc.returncode}: {' '.join(self.args)}\n{tail}")

    def wait_status(self, *, after: int, timeout: float, key: str = "STATUS") -> float:
        """Block until more than `after` messages carry `key`; return the arrival time of message number after+1."""
        deadline = time.monotonic() + timeout
        while self.notify.count(key) <= after:
            self._alive()
            if time.monotonic() > deadline:
                raise BenchError(f"daemon: no {key} #{after + 1} within {timeout:.0f} s")
            self.notify.poll(0.05)
        return [at for at, message in self.notify.messages if key in message][after]

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from start to READY=1 (the first pass over desired/ and the database)."""
        return self.wait_status(after=0, key="READY", timeout=timeout) - self.started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.notify.close()


# --- a converged fleet ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Converged:
    count: int
    desired: Path
    provision: Path
    db: Path  # pristine: copy it (copy_db) before pointing a daemon at it
    method: str

    def copy_db(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(target.name + "*"):
            stale.unlink()
        shutil.copyfile(self.db, target)
        return target


def converged(ctx: Ctx, count: int) -> Converged:
    """A database in which every resource of the fleet of `count` is active and the plan is empty.

    Up to APPLY_MAX it is made the way an operator would, `reconciler apply --yes --parallelism 64`
    with an instant script; above that the rows apply writes (resource, its create job, its four
    events) are inserted directly, shaped after a 1-resource apply. Either way `plan
    --detailed-exitcode` must then report no changes. Built once per size and reused while its stamp
    matches.
    """
    home = ctx.out / "converged" / str(count)
    desired = fleet.write_desired(home / "desired", count)
    provision = fleet.write_scripts(home / "provision", provision=fleet.INSTANT_SCRIPT)
    db, marker = home / "state.db", home / "db.stamp"
    method = "apply" if count <= APPLY_MAX else "direct insert"
    stamp = json.dumps({"count": count, "method": method, "v": BUILD_VERSION, "fleet": fleet.FORMAT_VERSION})
    if db.exists() and marker.exists() and marker.read_text() == stamp:
        return Converged(count, desired, provision, db, method)
    for stale in home.glob("state.db*"):
        stale.unlink()
    marker.unlink(missing_ok=True)
    shutil.rmtree(home / "work", ignore_errors=True)
    env = reconciler_env(home, desired=desired, db=db, provision=provision)
    started = time.perf_counter()
    if method == "apply":
        ctx.log(f"converged fleet: apply --yes --parallelism 64 of {count:,} resources")
        run_checked(reconciler_argv("apply", "--yes", "--parallelism", "64"), env=env, cwd=home, timeout=900)
    else:
        ctx.log(f"converged fleet: writing {count:,} active rows directly")
        _direct(ctx, home, db, count)
    _checkpoint(db)
    run_checked(reconciler_argv("plan", "--detailed-exitcode"), env=env, cwd=home, ok_codes=(0,), timeout=300)
    ctx.log(f"converged fleet of {count:,}: {method} + plan says no changes ({time.perf_counter() - started:.0f} s)")
    marker.write_text(stamp)
    return Converged(count, desired, provision, db, method)


def _checkpoint(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _template(ctx: Ctx) -> dict[str, dict]:
    """The rows a real `apply` writes for one resource: resource, job, events (learnt, not guessed)."""
    home = ctx.out / "converged" / "shape"
    shutil.rmtree(home, ignore_errors=True)
    desired = fleet.write_desired(home / "desired", 1)
    provision = fleet.write_scripts(home / "provision", provision=fleet.INSTANT_SCRIPT)
    db = home / "state.db"
    env = reconciler_env(home, desired=desired, db=db, provision=provision)
    run_checked(reconciler_argv("apply", "--yes"), env=env, cwd=home)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        shape = {"resource": dict(conn.execute("SELECT * FROM resources").fetchone()),
                 "job": dict(conn.execute("SELECT * FROM jobs").fetchone()),
                 "events": [dict(row) for row in conn.execute("SELECT * FROM events ORDER BY id")]}
    conn.close()
    return shape


def _direct(ctx: Ctx, home: Path, db: Path, count: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from reconciler.models import ResourceSpec, canonical_json, spec_hash
    from reconciler.store import open_store

    shape = _template(ctx)
    open_store(url=str(db))  # creates and migrates the schema
    template_rid = shape["resource"]["resource_id"]
    template_job = shape["job"]["job_id"]

    def swap(value, rid: str, job_id: str, url: str):
        if not isinstance(value, str):
            return value
        return value.replace(template_job, job_id).replace(f"http://127.0.0.1:9/{template_rid}", url) \
            .replace(template_rid, rid)

    resources, jobs, events = [], [], []
    for index in range(1, count + 1):
        raw = fleet.spec(index)
        spec = ResourceSpec(**raw)
        digest, text = spec_hash(spec), canonical_json(spec.model_dump())
        rid, job_id = spec.resource_id, f"job-bench{index:011d}"
        url = f"http://127.0.0.1:9/{rid}"
        row = {key: swap(value, rid, job_id, url) for key, value in shape["resource"].items()}
        row.update(resource_id=rid, owner=spec.owner, region=spec.region, runtime_target=spec.runtime_target,
                   deploy_ref=spec.deploy_ref, url=url, spec_hash=digest, target_hash=digest, spec_json=text)
        resources.append(row)
        job = {key: swap(value, rid, job_id, url) for key, value in shape["job"].items()}
        job.update(job_id=job_id, resource_id=rid, spec_json=text)
        jobs.append(job)
        for event in shape["events"]:
            event = {key: swap(value, rid, job_id, url) for key, value in event.items() if key != "id"}
            events.append(event)
    with sqlite3.connect(db) as conn:
        for table, rows in (("resources", resources), ("jobs", jobs), ("events", events)):
            columns = list(rows[0])
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             [tuple(row[c] for c in columns) for row in rows])
    conn.close()


def profile(target: list[str], stem: Path, *, title: str, timeout: float = 300) -> str | None:
    """`py-spy record` (next to this interpreter) of `target` (`--pid N --duration S` or `-- argv…`).

    Writes stem.raw (collapsed stacks) and stem.txt (top functions by own and by inclusive time) and
    returns a one-line summary for the results note; None when py-spy is not installed.
    """
    spy = Path(PYTHON).parent / "py-spy"
    if not spy.exists():
        return None
    raw = stem.with_suffix(".raw")
    raw.unlink(missing_ok=True)
    done = subprocess.run([str(spy), "record", "--rate", "200", "--format", "raw", "--output", str(raw), *target],
                          capture_output=True, text=True, timeout=timeout, env=python_env(), stdin=subprocess.DEVNULL)
    if not raw.exists():
        return f"py-spy failed: {(done.stderr or done.stdout).strip()[-200:]}"
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, hits = line.rpartition(" ")
        if not hits.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]  # per function, not line
        samples += int(hits)
        own[frames[-1]] += int(hits)
        for frame in set(frames):
            total[frame] += int(hits)
    if not samples:
        return "py-spy: no samples"
    lines = [f"py-spy record --rate 200 ({title}): {samples} samples of non-idle threads", "", "own time:"]
    lines += [f"  {hits / samples:6.1%}  {frame}" for frame, hits in own.most_common(25)]
    lines += ["", "total time (inclusive):"]
    lines += [f"  {hits / samples:6.1%}  {frame}" for frame, hits in total.most_common(50)]
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")

    def short(frame: str) -> str:
        return frame.split(" (")[0]

    top_own = "; ".join(f"{short(frame)} {hits / samples:.0%}" for frame, hits in own.most_common(4))
    ours = [(frame, hits) for frame, hits in total.most_common()
            if "reconciler/" in frame and not frame.startswith("<module>")][:7]
    top_total = "; ".join(f"{short(frame)} {hits / samples:.0%}" for frame, hits in ours)
    return f"py-spy ({stem.name}.txt): own time {top_own}; inclusive {top_total}"


def python_env() -> dict[str, str]:
    """Environment for helper scripts (load generators, servers, floors): this checkout importable."""
    return base_env()


PYTHON = sys.executable
