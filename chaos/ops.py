"""What each step does to the world: one function per operation or fault (the effects of a campaign).

Each takes the campaign (world, model, history) and the step's own draws. Faults that last "a while"
schedule their own repair a few steps later; `Campaign.repair_all` runs every pending repair before
convergence is checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model as desired_model
from .invariants import Held
from .model import FILES
from .world import base_env, call, git, script_pids

if TYPE_CHECKING:
    from .campaign import Campaign

# A daemon reports 503 within this many seconds of its store becoming unreachable (the busy timeout,
# a failed renewal and a poll of /health included).
HEALTH_TOLERANCE = 5.0
BROKEN_FILE = "zz-broken.yaml"


# --- the desired state -------------------------------------------------------------------------


def write_model(c: Campaign, new: desired_model.Model, *, mode: str, what: str) -> None:
    """Make `new` the desired state: atomically, in slices (one open file, pauses between), or by git pull."""
    if mode == "pull":
        _commit_in_dev(c, new, what=what)
        c.version(new, what=f"{what} (git pull)")
        git("pull", "-q", "--ff-only", cwd=c.world.desired)
        return
    c.version(new, what=f"{what} ({mode})")
    for name in _write_order(c, new):
        text = new.text(name, world=c.world.token)
        path = c.world.desired / name
        if text is None:
            path.unlink(missing_ok=True)
        elif mode == "slices":
            _write_slices(path, text, rand=c.rand)
        else:
            tmp = c.world.desired / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)
    _commit_in_checkout(c, what=what)


def _write_order(c: Campaign, new: desired_model.Model) -> list[str]:
    """Files that gain resources first, so a move is briefly a duplicate (refused), never an absence."""
    changed = [name for name in FILES if _current(c.world.desired / name) != new.text(name, world=c.world.token)]
    return sorted(changed, key=lambda name: new.text(name, world=c.world.token) is None
                  or len(new.text(name, world=c.world.token) or "") < len(_current(c.world.desired / name) or ""))


def _current(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


# Pauses inside a non-atomic write stay below the settle interval the daemon is given (0.15 s): a
# writer that stops longer has, by the contract of issue 11 item 2, finished as far as anyone can tell.
SLICE_PAUSE = (0.02, 0.1)


def _write_slices(path: Path, text: str, *, rand: random.Random) -> None:
    """Truncate, pause, then write in pieces: a generator's `> file` that emits a document at a time
    (cuts on document boundaries) or an editor's or `cp`'s buffered writes (cuts anywhere)."""
    data = text.encode()
    bounds = [i + 4 for i in range(len(data)) if data.startswith(b"---\n", i)]
    anywhere = list(range(1, len(data)))
    pool = bounds if bounds and rand.random() < 0.6 else anywhere
    cuts = sorted(rand.sample(pool, k=min(3, len(pool))))
    with path.open("wb") as handle:  # truncates, as `> file` or an editor does
        handle.flush()
        time.sleep(rand.uniform(*SLICE_PAUSE))
        start = 0
        for cut in [*cuts, len(data)]:
            handle.write(data[start:cut])
            handle.flush()
            start = cut
            if cut != len(data):
                time.sleep(rand.uniform(*SLICE_PAUSE))


def _commit_in_checkout(c: Campaign, *, what: str) -> None:
    git("add", "-A", cwd=c.world.desired)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=c.world.desired).returncode:
        git("commit", "-q", "-m", what, cwd=c.world.desired)
        git("push", "-q", "origin", "HEAD:main", cwd=c.world.desired)


def _commit_in_dev(c: Campaign, new: desired_model.Model, *, what: str) -> None:
    dev = c.world.dev
    git("fetch", "-q", "origin", cwd=dev)
    git("reset", "-q", "--hard", "origin/main", cwd=dev)
    for name in FILES:
        text = new.text(name, world=c.world.token)
        if text is None:
            (dev / name).unlink(missing_ok=True)
        else:
            (dev / name).write_text(text)
    git("add", "-A", cwd=dev)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dev).returncode:
        git("commit", "-q", "-m", what, cwd=dev)
        git("push", "-q", "origin", "HEAD:main", cwd=dev)


def edit(c: Campaign, kind: str, args: dict[str, Any]) -> None:
    new = desired_model.edit(c.model, kind=kind, args=args)
    if new != c.model:
        write_model(c, new, mode=args.get("write", "atomic"), what=f"{kind} step {args.get('n')}")


def burst(c: Campaign, args: dict[str, Any]) -> None:
    """Edits faster than the debounce, each saved atomically."""
    rand = random.Random(f"burst:{args['n']}")
    for i in range(args["edits"]):
        kind = rand.choice(("change_inplace", "change_inplace", "add", "remove"))
        sub = {"pick": rand.random(), "n": args["n"] * 100 + i, "value": rand.randrange(1000), "write": "atomic"}
        new = desired_model.edit(c.model, kind=kind, args=sub)
        if new != c.model:
            write_model(c, new, mode="atomic", what=f"burst {kind} {sub['n']}")
        time.sleep(args["gap"])


# --- the API --------------------------------------------------------------------------------------


def api_post(c: Campaign, args: dict[str, Any]) -> None:
    new, resource = desired_model.api_post(c.model, n=args["n"], value=args["value"], pick=args["pick"])
    status, _answer = c.world.http("POST", "/provisions", body=resource.spec(world=c.world.token))
    c.note(f"POST {resource.resource_id} → {status}")
    if 200 <= status < 300:
        c.version(new, what=f"POST {resource.resource_id}")


def api_delete(c: Campaign, args: dict[str, Any]) -> None:
    new, rid = desired_model.api_delete(c.model, pick=args["pick"])
    if rid is None:
        return
    before = c.model
    c.version(new, what=f"DELETE {rid}")
    status, _ = c.world.http("DELETE", f"/provisions/{rid}")
    c.note(f"DELETE {rid} → {status}")
    if not 200 <= status < 300:
        c.version(before, what=f"DELETE {rid} refused ({status})")


def api_delete_file_owned(c: Campaign, args: dict[str, Any]) -> None:
    ids = sorted(c.model.files)
    rid = ids[min(int(args["pick"] * len(ids)), len(ids) - 1)]
    status, answer = c.world.http("DELETE", f"/provisions/{rid}")
    c.note(f"DELETE file-owned {rid} → {status}")
    if 200 <= status < 300:
        c.violation("API changed a file-owned resource", f"DELETE /provisions/{rid} answered {status}: {answer}")


# --- operator controls (issue 16) -----------------------------------------------------------------


def replace(c: Campaign, args: dict[str, Any]) -> None:
    """POST /provisions/{id}/replace of a file-declared resource: one job, teardown then provision."""
    ids = sorted(c.model.files)
    if not ids:
        return
    rid = ids[min(int(args["pick"] * len(ids)), len(ids) - 1)]
    status, answer = c.world.http("POST", f"/provisions/{rid}/replace")
    c.note(f"replace {rid} → {status} {answer if status >= 300 else ''}")


def forget(c: Campaign, args: dict[str, Any]) -> None:
    """`reconciler forget`: of a resource just removed from desired/ (racing the daemon's teardown), or of
    one still declared (--force); when it succeeds, its teardown must never run (invariants)."""
    ids = sorted(c.model.files)
    if len(ids) <= desired_model.MIN_FILE_RESOURCES:
        return
    rid = ids[min(int(args["pick"] * len(ids)), len(ids) - 1)]
    force = args["first"] == "force"
    if not force:
        write_model(c, desired_model.without(c.model, rid), mode="atomic", what=f"remove {rid} to forget it")
    started = time.time()
    code = c.world.run_forget(rid, force=force)
    c.note(f"forget {rid} ({args['first']}) exit {code}")
    if code != 0:
        return
    c.forgotten[rid] = started
    if force:
        write_model(c, desired_model.without(c.model, rid), mode="atomic", what=f"remove forgotten {rid}")


# --- apply and check ------------------------------------------------------------------------------


def apply(c: Campaign, args: dict[str, Any]) -> None:
    proc = c.world.start_apply()
    if args["wait"]:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # it waits out a store fault, or many retries: let it go on
            c.note(f"apply {proc.pid} still running after 20 s; left to finish")


def kill_apply(c: Campaign, args: dict[str, Any]) -> None:
    proc = c.world.start_apply()
    time.sleep(args["after"])
    if proc.poll() is None:
        c.world.killed.append((time.time(), proc.pid, "apply SIGKILL"))
        proc.kill()
        proc.wait(timeout=30)


def check(c: Campaign, args: dict[str, Any]) -> None:
    c.note(f"check exit {c.world.run_check()}")


# --- processes ------------------------------------------------------------------------------------


def _slot(c: Campaign, pick: float) -> Any:
    slots = c.world.slots
    return slots[min(int(pick * len(slots)), len(slots) - 1)]


def kill_daemon(c: Campaign, args: dict[str, Any]) -> None:
    """kill -9, restart after `down`; with `again`, kill the new one while it takes over the old jobs."""
    slot = _slot(c, args["pick"])
    old = slot.proc.pid if slot.alive() else None
    c.world.stop_daemon(slot, sig=signal.SIGKILL)
    time.sleep(args["down"])
    c.world.start_daemon(slot)
    if args.get("again") and old is not None:
        _wait_for_takeover(c, slot=slot, old=old, limit=10.0)
        c.world.stop_daemon(slot, sig=signal.SIGKILL)
        time.sleep(args["down"])
        c.world.start_daemon(slot)


def _wait_for_takeover(c: Campaign, *, slot: Any, old: int, limit: float) -> None:
    """While the dead daemon's scripts still run: until the new one has claimed one of their jobs."""
    alive = set(script_pids(c.world.token))
    orphans = {run.job_id for run in c.records().runs if run.worker == old and run.pid in alive}
    if not orphans:
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        snap = c.snapshot()
        jobs = snap.jobs if snap is not None else {}
        taken = sorted(job for job in orphans
                       if jobs.get(job, {}).get("status") == "running" and (jobs[job].get("claims") or 0) > 1)
        if taken:
            c.note(f"daemon-{slot.index} is taking over {taken}: killing it during the takeover")
            return
        time.sleep(0.05)


def term_daemon(c: Campaign, args: dict[str, Any]) -> None:
    slot = _slot(c, args["pick"])
    c.world.stop_daemon(slot, sig=signal.SIGTERM, wait=30)
    time.sleep(args["down"])
    c.world.start_daemon(slot)


def kill_script(c: Campaign, args: dict[str, Any]) -> None:
    groups = sorted({_pgid(pid) for pid in script_pids(c.world.token)} - {None})
    if not groups:
        return
    pgid = groups[min(int(args["pick"] * len(groups)), len(groups) - 1)]
    c.note(f"kill -9 of script group {pgid}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # type: ignore[arg-type]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def script_misbehaves(c: Campaign, args: dict[str, Any]) -> None:
    """The next run of one resource fails, hangs, exits slowly on TERM or prints junk; then change it."""
    ids = sorted(c.model.files)
    if not ids:
        return
    rid = ids[min(int(args["pick"] * len(ids)), len(ids) - 1)]
    (c.world.control / f"next-{rid}").write_text(args["mode"])
    new = desired_model.edit(c.model, kind="change_inplace",
                             args={"pick": args["pick"], "field": "deploy_ref", "value": int(args["pick"] * 997)})
    if new != c.model:
        write_model(c, new, mode="atomic", what=f"{rid} will {args['mode']}")


# --- the store ------------------------------------------------------------------------------------


def hold_write_lock(c: Campaign, args: dict[str, Any]) -> None:
    """Hold SQLite's write lock (as an operator's sqlite3 shell or a backup does) for `seconds`."""
    path = Path(c.world.db_url)
    if not path.exists():
        return
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        c.note(f"could not take the write lock: {exc}")
        conn.close()
        return
    c.store_fault(on=True)
    try:
        _outage(c, seconds=args["seconds"], what="SQLite write lock held")
    finally:
        conn.rollback()
        conn.close()
        c.store_fault(on=False)


def restart_postgres(c: Campaign, args: dict[str, Any]) -> None:
    pg = c.world.pg
    c.store_fault(on=True)
    pg_ctl(pg, "stop", "-m", "fast")
    try:
        _outage(c, seconds=args["down"], what="PostgreSQL stopped")
    finally:
        pg_ctl(pg, "start")
        c.store_fault(on=False)


def pg_ctl(pg: Any, action: str, *extra: str) -> None:
    from tests import pgserver

    port = pg.url.rsplit(":", 1)[1]
    options = (f"-p {port} -k {pg.base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
               " -c full_page_writes=off -c max_connections=400")
    argv = [*pg.runner, str(pgserver.PG_BIN / "pg_ctl"), "-D", str(pg.base / "data"), "-w", "-t", "60", *extra]
    if action == "start":
        argv += ["-o", options, "-l", str(pg.base / "log")]
    subprocess.run([*argv, action], capture_output=True, timeout=90)


def _outage(c: Campaign, *, seconds: float, what: str) -> None:
    """Wait out an outage; when it outlasts the tolerance, every live daemon must have said 503 in time."""
    start = time.monotonic()
    watch = seconds > HEALTH_TOLERANCE + 1
    degraded: set[int] = set()
    while time.monotonic() - start < seconds:
        if watch and time.monotonic() - start <= HEALTH_TOLERANCE:
            for slot in c.world.slots:
                if slot.alive() and call(port=slot.port, method="GET", path="/health", timeout=1)[0] == 503:
                    degraded.add(slot.index)
        time.sleep(0.2)
    if watch:
        late = [slot.index for slot in c.world.slots if slot.alive() and slot.index not in degraded]
        if late:
            c.violation("health not degraded", f"{what} for {seconds} s: daemon(s) {late} never answered "
                        f"/health 503 within {HEALTH_TOLERANCE} s")


# --- files and disks ------------------------------------------------------------------------------


def yaml_error(c: Campaign, args: dict[str, Any]) -> None:
    path = c.world.desired / BROKEN_FILE
    path.write_text("resource_id: broken\nowner: [unclosed\n")
    c.later(args["steps"], "YAML error fixed", lambda: path.unlink(missing_ok=True))


def provision_away(c: Campaign, args: dict[str, Any]) -> None:
    away = c.world.root / "provision.away"
    if not c.world.provision.exists():
        return
    c.world.provision.rename(away)
    c.later(args["steps"], "provision/ back", lambda: away.rename(c.world.provision))


def disk_full(c: Campaign, args: dict[str, Any]) -> None:
    if c.world.disk is None:
        c.skip("disk_full", "no private tmpfs (not root, or unshare -m unavailable)")
        return
    filler = c.world.disk / "filler"
    with filler.open("ab") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass
    c.store_fault(on=True)
    c.later(args["steps"], "disk space back", lambda: (filler.unlink(missing_ok=True), c.store_fault(on=False)))


def disk_readonly(c: Campaign, args: dict[str, Any]) -> None:
    """The scripts' working directories' file system turns read-only (the database's cannot be remounted
    read-only while the daemon holds it open for writing: the kernel refuses with EBUSY)."""
    if c.world.workdisk is None:
        c.skip("disk_readonly", "no private tmpfs (not root, or unshare -m unavailable)")
        return
    disk = str(c.world.workdisk)
    done = subprocess.run(["mount", "-o", "remount,ro", disk], capture_output=True, text=True)
    if done.returncode:
        c.skip("disk_readonly", f"remount read-only refused: {done.stderr.strip()}")
        return
    c.later(args["steps"], "disk writable again",
            lambda: subprocess.run(["mount", "-o", "remount,rw", disk], capture_output=True, check=True))


# --- the policy ---------------------------------------------------------------------------------


def write_policy(c: Campaign, per_owner: int | None, *, what: str) -> None:
    """policy.yaml beside desired/ (where the daemon and apply find it), saved atomically; None: no limits."""
    c.policy_version(per_owner, what=what)  # visible from now on (before the daemon can have read it)
    _save_policy(c, policy_text(per_owner, rollout=c.rollouts))


# issue 17: waves of 1, then half, then the rest; a failure budget the campaign's faults cannot exhaust
# (a halt would leave the fleet unconverged by design; the invariant is about wave order, not halts)
ROLLOUT_POLICY = ("rollout:\n  waves: [1, 50%]\n  bake: 1s\n  check_interval: 0.3s\n  min_changes: 3\n"
                  "  max_failures: 1000\n")


def policy_text(per_owner: int | None, *, rollout: bool = False) -> str:
    text = f"quotas:\n  per_owner: {{default: {per_owner}}}\n" if per_owner is not None else "# no limits\n"
    return text + (ROLLOUT_POLICY if rollout else "")


def rollout_bump(c: Campaign, args: dict[str, Any]) -> None:
    """Turn rollouts on (policy.yaml's rollout:, kept from now on), then bump every file resource's deploy_ref:
    the bump goes out in waves that must each bake before the next starts."""
    c.rollouts = True
    _save_policy(c, policy_text(c.policies[-1].per_owner if c.policies else None, rollout=True))
    c.note("policy: rollout waves [1, 50%], bake 1s")
    time.sleep(0.5)  # the daemon reads the policy before the bump (a bump read first goes out at once)
    bumped = {rid: dataclasses.replace(res, deploy_ref=f"v{args['value']}") for rid, res in c.model.files.items()}
    write_model(c, dataclasses.replace(c.model, files=bumped), mode="atomic", what=f"rollout bump {args['n']}")


def _save_policy(c: Campaign, text: str, *, broken: bool = False) -> None:
    tmp = c.world.root / ".policy.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, c.world.policy)
    c.policy_broken = broken  # a daemon (re)started now refuses to start until a good save


def policy_tighten(c: Campaign, args: dict[str, Any]) -> None:
    """A per-owner quota, often below what an owner already runs: new resources of that owner are held."""
    write_policy(c, args["limit"], what=f"policy: at most {args['limit']} per owner")


def policy_loosen(c: Campaign, args: dict[str, Any]) -> None:
    write_policy(c, None, what="policy: no limits")


def policy_break(c: Campaign, args: dict[str, Any]) -> None:
    """A save that does not load: the last good policy stays in force until it is fixed."""
    _save_policy(c, "quotas:\n  per_owner: [unclosed\n", broken=True)
    c.later(args["steps"], "policy fixed",
            lambda: _save_policy(c, policy_text(c.policies[-1].per_owner if c.policies else None,
                                                rollout=c.rollouts)))


def _edit_kind(kind: str, c: Campaign, args: dict[str, Any]) -> None:
    edit(c, kind, args)


def pause(c: Campaign, args: dict[str, Any]) -> None:
    time.sleep(args["seconds"])


# --- operator controls (issue 16): suspend, resume, suspend --all ------------------------------------


def suspend(c: Campaign, args: dict[str, Any]) -> None:
    """Suspend one declared resource, for a few seconds (--until) or until resumed some steps later."""
    ids = sorted(c.model.all())
    if not ids:
        return
    rid = ids[min(int(args["pick"] * len(ids)), len(ids) - 1)]
    if any(held.resource_id == rid and held.end is None for held in c.holds):
        return
    until = args.get("until")
    began = time.time()
    expiry = ("--until", f"{until}s") if until else ()
    if not _control(c, "suspend", rid, "--reason", f"chaos step {c.index}", *expiry):
        return
    # the window starts once the command returned (its commit is before) and, with --until, ends no
    # later than the expiry the command computed (from a clock read after `began`)
    held = c.suspended(rid, start=time.time(), end=began + until if until else None)
    if until is None:
        c.later(args["steps"], f"{rid} resumed", lambda: resume_held(c, held))


def resume(c: Campaign, args: dict[str, Any]) -> None:
    """Resume one resource suspended without an expiry, if any is."""
    held = [held for held in c.holds if held.end is None and held.resource_id is not None]
    if held:
        resume_held(c, held[min(int(args["pick"] * len(held)), len(held) - 1)])


def suspend_all(c: Campaign, args: dict[str, Any]) -> None:
    """The incident switch, for a few steps: the daemons plan and check, and start nothing."""
    if any(held.resource_id is None and held.end is None for held in c.holds):
        return
    if _control(c, "suspend", "--all", "--reason", f"chaos step {c.index}"):
        held = c.suspended(None, start=time.time(), end=None)
        c.later(args["steps"], "fleet resumed", lambda: resume_held(c, held))


def resume_held(c: Campaign, held: Held) -> None:
    """Lift a suspension; retried through a store fault (a suspension left in force would never converge)."""
    current = next((item for item in c.holds if item.key == held.key), held)
    if current.end is not None:
        return
    argv = ("resume", "--all") if held.resource_id is None else ("resume", held.resource_id)
    deadline = time.monotonic() + 60
    while True:
        at = time.time()
        if _control(c, *argv):
            c.resumed(held, at=at)
            return
        if time.monotonic() > deadline:
            c.note(f"{' '.join(argv)} kept failing; left in force")
            return
        time.sleep(1.0)


def _control(c: Campaign, *args: str) -> bool:
    done = subprocess.run(c.world.command(*args), cwd=c.world.root, env=base_env(), capture_output=True, text=True,
                          timeout=120)
    c.note(f"{' '.join(args[:2])} → exit {done.returncode}: {(done.stdout + done.stderr).strip()[-300:]}")
    return done.returncode == 0


OPERATIONS: dict[str, Callable[[Campaign, dict[str, Any]], None]] = {
    **{kind: functools.partial(_edit_kind, kind)
       for kind in ("add", "change_inplace", "change_replace", "remove", "rename", "move")},
    "burst": burst, "api_post": api_post, "api_delete": api_delete, "api_delete_file_owned": api_delete_file_owned,
    "replace": replace, "forget": forget,
    "apply": apply, "kill_apply": kill_apply, "check": check, "kill_daemon": kill_daemon,
    "term_daemon": term_daemon, "kill_script": kill_script, "script_misbehaves": script_misbehaves,
    "hold_write_lock": hold_write_lock, "restart_postgres": restart_postgres, "yaml_error": yaml_error,
    "provision_away": provision_away, "disk_full": disk_full, "disk_readonly": disk_readonly, "pause": pause,
    "policy_tighten": policy_tighten, "policy_loosen": policy_loosen, "policy_break": policy_break,
    "suspend": suspend, "resume": resume, "suspend_all": suspend_all,
    "rollout_bump": rollout_bump,
}
