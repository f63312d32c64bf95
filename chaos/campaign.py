"""One campaign: build a world, run a schedule step by step checking the invariants after each, stop
the faults, require convergence within a limit; and the replays and shrinking built on it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import invariants, ops
from . import model as desired_model
from .invariants import Held, PolicyVersion, Version, Violation
from .observe import Records, Snapshot, read_runs, rollout_waves, snapshot
from .schedule import Step, dumps
from .world import World, script_pids

# A daemon started during a store fault may find out only this long after it ended (connect timeouts).
STARTUP_SLACK = 15.0


@dataclass
class Result:
    seed: int
    backend: str
    steps: int
    root: Path
    seconds: float
    violations: list[Violation]
    converged: bool
    gaps: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and self.converged

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations} | (set() if self.converged else {"no convergence"})

    def summary(self) -> str:
        head = (f"seed {self.seed} ({self.backend}, {self.steps} steps, {self.seconds:.0f} s): "
                + ("ok" if self.ok else "FAILED"))
        lines = [head, *(f"  {v}" for v in self.violations)]
        if not self.converged:
            lines += ["  no convergence:", *(f"    {gap}" for gap in self.gaps[:12])]
        lines += [f"  skipped {kind}: {why}" for kind, why in self.skipped.items()]
        return "\n".join(lines)


@dataclass
class Settings:
    backend: str
    converge_limit: float = 120.0
    keep: bool = False
    workdir: Path | None = None
    echo: Callable[[str], None] = print


class Campaign:
    def __init__(self, *, seed: int, steps: list[Step], settings: Settings, pg: Any = None) -> None:
        self.seed, self.steps, self.settings = seed, steps, settings
        self.rand = random.Random(f"writes:{seed}")
        root = Path(tempfile.mkdtemp(prefix=f"chaos-{settings.backend}-{seed}-", dir=settings.workdir))
        self.world = World(root=root, backend=settings.backend, token=f"chaos{uuid.uuid4().hex[:10]}")
        self.world.pg = pg
        self.model = desired_model.initial()
        self.versions: list[Version] = []
        self.policies: list[PolicyVersion] = []
        self.holds: list[Held] = []  # the suspensions set by the schedule's operator controls
        self.rollouts = False  # policy.yaml has a rollout: section (issue 17), kept by later policy writes
        self.found: dict[str, Violation] = {}
        self.skipped: dict[str, str] = {}
        self.repairs: list[tuple[int, str, Callable[[], Any]]] = []
        self.forgotten: dict[str, float] = {}  # id → when the `forget` that succeeded started
        self.store_faults = 0  # store faults in force (stopped server, held lock, full or read-only disk)
        self.store_back_at = 0.0  # when the last one ended
        self.policy_broken = False  # policy.yaml saved so that it does not load (policy_break, until fixed)
        self.index = 0
        self._log = (root / "steps.log").open("a")

    # --- what ops call ----------------------------------------------------------------------------

    def version(self, new: desired_model.Model, *, what: str) -> None:
        self.model = new
        self.versions.append(Version(at=time.time(), declared=new.declared(), what=what))

    def policy_version(self, per_owner: int | None, *, what: str) -> None:
        self.policies.append(PolicyVersion(at=time.time(), per_owner=per_owner, what=what))
        self.note(what)

    def suspended(self, resource_id: str | None, *, start: float, end: float | None) -> Held:
        held = Held(key=len(self.holds), resource_id=resource_id, start=start, end=end)
        self.holds.append(held)
        return held

    def resumed(self, held: Held, *, at: float) -> None:
        self.holds[held.key] = Held(key=held.key, resource_id=held.resource_id, start=held.start, end=at)

    def note(self, text: str) -> None:
        self._log.write(f"{time.time():.3f}   {text}\n")
        self._log.flush()

    def violation(self, kind: str, detail: str, *, key: str | None = None) -> None:
        """Record a violation once per `key` (default: its text); a later detail under the same key wins."""
        found = Violation(kind, detail)
        key = key or str(found)
        if self.found.get(key) != found:
            if key not in self.found:
                self.note(f"VIOLATION {found}")
            self.found[key] = found

    def skip(self, kind: str, why: str) -> None:
        self.skipped[kind] = why
        self.note(f"skipped {kind}: {why}")

    def later(self, steps: int, what: str, repair: Callable[[], Any]) -> None:
        self.repairs.append((self.index + steps, what, repair))

    def records(self) -> Records:
        return read_runs(self.world.control / "runs.log")

    def snapshot(self) -> Snapshot | None:
        return snapshot(db_url=self.world.db_url, at=time.time())

    # --- the campaign -----------------------------------------------------------------------------

    def run(self) -> Result:
        started = time.monotonic()
        try:
            self._set_up()
            for index, step in enumerate(self.steps):
                self.index = index
                self._repair(due=self.index)
                self.note(f"step {self.index}: {step.text()}")
                ops.OPERATIONS[step.kind](self, step.args)
                time.sleep(step.args.get("pause", 0.0))
                self.check()
            converged, gaps = self._converge()
            self.check(final=True)
        finally:
            self.world.stop_all()
            self._log.close()
        result = Result(seed=self.seed, backend=self.settings.backend, steps=len(self.steps), root=self.world.root,
                        seconds=time.monotonic() - started, violations=list(self.found.values()),
                        converged=converged, gaps=gaps, skipped=self.skipped)
        self._finish(result)
        return result

    def _set_up(self) -> None:
        world = self.world
        world.disk = _mount_disk(world.root / "disk", skip=self.skip)
        world.workdisk = _mount_disk(world.root / "workdisk", skip=self.skip)
        world.build(daemons=2 if self.settings.backend == "postgres" else 1)
        (world.desired / ".git" / "info" / "exclude").write_text(ops.BROKEN_FILE + "\n")
        (world.root / "schedule.json").write_text(dumps(self.steps))
        if self.settings.backend == "postgres":
            world.db_url = world.pg.new_database()
        else:
            world.db_url = str((world.disk or world.root) / "state.db")
        ops.write_model(self, self.model, mode="atomic", what="initial fleet")
        ops.write_policy(self, None, what="initial policy: no limits")
        for slot in world.slots:
            world.start_daemon(slot)
        world.wait_api()

    def check(self, *, final: bool = False) -> None:
        self._revive()
        snap = self.snapshot()
        records = self.records()
        for found in invariants.overlaps(records):
            self.violation(found.kind, found.detail, key=f"overlap {found.detail.split(':')[0]}")
        if snap is None:
            return
        checks = [invariants.unwarranted_teardowns(records, snap, self.versions),
                  invariants.deleted_without_teardown(records, snap),
                  invariants.quota_exceeded(snap, self.policies, self.versions),
                  invariants.touched_while_suspended(records, snap, self.holds),
                  invariants.forgotten_teardowns(records, self.forgotten),
                  invariants.early_waves(rollout_waves(db_url=self.world.db_url))]
        # a run cannot be recorded while the store is away: judge only once it has been back a while
        if final or (not self.store_faults and time.time() - self.store_back_at > invariants.RECORD_SLACK):
            killed = [pid for _, pid, what in self.world.killed if "SIGKILL" in what]
            checks.append(invariants.lost_runs(records, snap, killed=killed))
        for found in (item for items in checks for item in items):
            self.violation(found.kind, found.detail)

    def store_fault(self, *, on: bool) -> None:
        self.store_faults += 1 if on else -1
        if not on:
            self.store_back_at = time.time()

    def _revive(self) -> None:
        """A daemon that exited without being told to is a finding (its log says why); start it again.

        Except one that could not open its store while a store fault was in force (or just after):
        refusing to start is its documented answer, and systemd (Restart=on-failure) starts it again."""
        for slot in self.world.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                tail = slot.log.read_text(errors="replace").splitlines()[-3:] if slot.log.exists() else []
                what = (f"daemon-{slot.index} (pid {slot.proc.pid}) exited {slot.proc.returncode} on its own; "
                        f"log tail: {' | '.join(tail)[-600:]}")
                if self.store_faults or time.time() - self.store_back_at < STARTUP_SLACK:
                    self.note(f"restarted as systemd would, during a store fault: {what}")
                elif self.policy_broken and "the policy does not load" in what:
                    # issue 15: a policy that does not load stops a start (exit 1); systemd tries again
                    self.note(f"restarted as systemd would, while policy.yaml does not load: {what}")
                else:
                    self.violation("daemon exited", what)
                self.world.start_daemon(slot)

    def _repair(self, *, due: int) -> None:
        for entry in [entry for entry in self.repairs if entry[0] <= due]:
            self.repairs.remove(entry)
            self.note(f"repair: {entry[1]}")
            try:
                entry[2]()
            except Exception as exc:
                self.note(f"repair failed: {entry[1]}: {exc}")

    def _converge(self) -> tuple[bool, list[str]]:
        """Stop the faults, bring every daemon back, and wait for observed = desired."""
        self._repair(due=10**9)
        ops.write_policy(self, None, what="policy: no limits, for convergence")  # whatever was held may go
        for leftover in self.world.control.glob("next-*"):
            leftover.unlink(missing_ok=True)
        if self.world.pg is not None:
            ops.pg_ctl(self.world.pg, "start")
        for slot in self.world.slots:
            if not slot.alive():
                self.world.start_daemon(slot)
        for held in [held for held in self.holds if held.end is None]:  # one a store fault kept in force
            ops.resume_held(self, held)
        self.note("faults stopped; waiting for convergence")
        ever = {rid for version in self.versions for rid in version.declared}
        want = {rid: (res.deploy_ref, res.region) for rid, res in self.model.all().items()}
        deadline = time.monotonic() + self.settings.converge_limit
        gaps = ["not checked"]
        while time.monotonic() < deadline:
            self._revive()
            snap = self.snapshot()
            if snap is not None:
                gaps = invariants.convergence_gaps(self.records(), snap, desired=want, ever=ever,
                                                   open_scripts=len(script_pids(self.world.token)),
                                                   forgotten=frozenset(self.forgotten))
                if not gaps:
                    self.note(f"converged in {self.settings.converge_limit - (deadline - time.monotonic()):.1f} s")
                    return True, []
            time.sleep(0.5)
        self.note("did not converge: " + "; ".join(gaps))
        return False, gaps

    def _finish(self, result: Result) -> None:
        (self.world.root / "result.txt").write_text(result.summary() + "\n")
        if result.ok and not self.settings.keep:
            shutil.rmtree(self.world.root, ignore_errors=True)
            return
        if self.world.disk is not None:  # the tmpfs goes with the namespace: keep a copy of what it held
            shutil.copytree(self.world.disk, self.world.root / "disk-copy", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("filler"))
        if self.world.workdisk is not None:
            shutil.copytree(self.world.workdisk, self.world.root / "work-copy", dirs_exist_ok=True)


def _mount_disk(path: Path, *, skip: Callable[[str, str], None]) -> Path | None:
    """A small tmpfs for the database and work dirs, when this process owns a private mount namespace."""
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get("CHAOS_NAMESPACE") != "1":
        skip("disk faults", "not in a private mount namespace (needs root and unshare -m)")
        return None
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "chaos-disk", str(path)], capture_output=True,
                          text=True)
    if done.returncode:
        skip("disk faults", f"mount tmpfs failed: {done.stderr.strip()}")
        return None
    return path


# --- replays and shrinking --------------------------------------------------------------------------


def replay(*, seed: int, steps: list[Step], settings: Settings, pg: Any, times: int) -> list[Result]:
    return [Campaign(seed=seed, steps=steps, settings=settings, pg=pg).run() for _ in range(times)]


def shrink(*, seed: int, steps: list[Step], settings: Settings, pg: Any, kinds: set[str], tries: int = 2,
           budget: float = 900.0) -> list[Step]:
    """Drop chunks of steps (halves, then smaller) while some replay still shows one of `kinds`."""
    deadline = time.monotonic() + budget
    current = list(steps)
    chunk = max(1, len(current) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        start, shrunk = 0, False
        while start < len(current) and time.monotonic() < deadline:
            candidate = current[:start] + current[start + chunk:]
            if candidate and _still_fails(seed, candidate, settings, pg, kinds, tries):
                settings.echo(f"  shrink: {len(current)} → {len(candidate)} steps")
                current, shrunk = candidate, True
            else:
                start += chunk
        if not shrunk:
            chunk //= 2
    return current


def _still_fails(seed: int, steps: list[Step], settings: Settings, pg: Any, kinds: set[str], tries: int) -> bool:
    quiet = Settings(backend=settings.backend, converge_limit=settings.converge_limit, keep=False,
                     workdir=settings.workdir, echo=settings.echo)
    for _ in range(tries):
        result = Campaign(seed=seed, steps=steps, settings=quiet, pg=pg).run()
        if result.kinds() & kinds:
            return True
    return False


def report(result: Result) -> dict[str, Any]:
    return {"seed": result.seed, "backend": result.backend, "steps": result.steps, "ok": result.ok,
            "seconds": round(result.seconds, 1), "violations": [str(v) for v in result.violations],
            "converged": result.converged, "gaps": result.gaps, "world": str(result.root)}

