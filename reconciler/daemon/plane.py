"""What the HTTP API asks of the daemon (api.Plane), answered by the part that owns each answer.

The plane holds no state of its own beyond a one-second cache of fleet counts: ownership of ids from
the engine's desired state, readiness from the systemd reporter, the last pass from the pass loop,
the lock from the election, outages from the supervisor's record, busy scripts from the workers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import PlanView, Reconciler, Refusal
from ..errors import ReconcilerError, StoreError
from ..liveness import HOST
from ..models import FleetCounts, iso, utcnow
from ..plan import Change, Plan
from ..ports import PassStore
from ..supervise import Outages
from ..workers import WorkerPool
from .election import Election
from .passes import PassLoop
from .reporter import SystemdReporter

if TYPE_CHECKING:
    from ..govern import Governor
    from ..metrics import Metrics
    from ..models import ResourceSpec
    from ..store.base import SQLStore
    from ..tokens import Keyring, TokenSet

COUNTS_TTL = 1.0


class CountsCache:
    """Fleet counts for /health and /metrics, at most COUNTS_TTL old: a scan per scrape adds up.

    While the store is known to be away, the last counts are served without asking it (a probe must
    answer at once); a failed refresh also serves them and adds its reason to `problems`.
    """

    def __init__(self, *, store: PassStore, outages: Outages) -> None:
        self.store = store
        self.outages = outages
        self._lock = threading.Lock()
        self._cache: tuple[float, FleetCounts | None] = (0.0, None)

    def get(self, *, problems: list[str] | None = None) -> FleetCounts:
        with self._lock:
            at, counts = self._cache
            if counts is None or (time.monotonic() - at > COUNTS_TTL and not self.outages.reasons()):
                try:
                    counts = self.store.counts()
                except StoreError as exc:
                    if problems is not None:
                        problems.append(f"health: {exc}")
                    return counts or FleetCounts.empty()
                self._cache = (time.monotonic(), counts)
            return counts


class DaemonPlane:
    """api.Plane for one daemon."""

    def __init__(self, *, store: SQLStore, keyring: Keyring, open_reads: bool, reconciler: Reconciler,
                 provision: Path, pool: WorkerPool, election: Election, passes: PassLoop,
                 reporter: SystemdReporter, outages: Outages, metrics: Metrics, resync: float,
                 governor: Governor | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.open_reads = open_reads
        self.reconciler = reconciler
        self.provision = provision
        self.pool = pool
        self.election = election
        self.passes = passes
        self.reporter = reporter
        self.outages = outages
        self.metrics = metrics
        self.resync = resync
        self.counts = CountsCache(store=store, outages=outages)
        self.governor = governor
        self._notes: tuple[Plan, dict[str, Change]] | None = None

    def serial(self) -> AbstractContextManager[Any]:
        """Held by an API call from its policy check to its write, and by a pass while it plans and queues."""
        return self.governor.serial() if self.governor is not None else contextlib.nullcontext()

    def admit(self, view: PlanView) -> Refusal | None:
        """policy.yaml's answer to one API call, counted against the whole declared fleet (govern.py)."""
        if self.governor is None:
            return None
        return self.governor.admit(view, files=self.reconciler.last_good)

    def keys(self) -> TokenSet | None:
        return self.keyring.current()

    def desired_pending(self) -> str | None:
        if self.reconciler.last_good is not None:
            return None
        error = self.reconciler.load_error
        return str(error.problems[0]) if error is not None and error.problems else "the first pass has not run"

    def file_source(self, resource_id: str) -> str | None:
        from ..plan import API_SOURCE

        owner = self.reconciler.owners.owner(resource_id)
        if owner is not None:
            return owner
        # the last good state stays in force while desired/ fails to load, even for a file removed since
        desired = self.reconciler.last_good
        source = desired.sources.get(resource_id) if desired else None
        return str(source) if source is not None and source.file != API_SOURCE else None

    def declared(self, resource_id: str) -> tuple[ResourceSpec, str] | None:
        """The spec a replace provisions again: the files' (last good state), else the API's declaration."""
        from ..models import ResourceSpec
        from ..plan import API_SOURCE

        desired = self.reconciler.last_good
        if desired is not None and resource_id in desired.resources:
            return desired.resources[resource_id], "file"
        spec = self.store.api_declaration(resource_id)
        return (ResourceSpec.model_validate(spec), API_SOURCE) if spec is not None else None

    def jobs_queued(self) -> None:
        self.pool.wake()

    def plan_notes(self) -> dict[str, Change] | None:
        """The last pass's changes and notes by id (None before a plan, or on a follower, which plans nothing)."""
        last = self.passes.last
        plan = last.plan if last is not None else None
        if plan is None:
            return None
        cached = self._notes
        if cached is None or cached[0] is not plan:
            cached = (plan, {change.resource_id: change for change in plan.changes + plan.kept + plan.waiting})
            self._notes = cached
        return cached[1]

    def unknown_target(self, name: str) -> str | None:
        """Why `name` is not a runtime_target this daemon's provision/ provides (None: it is)."""
        from ..targets import known_targets

        try:
            return known_targets(provision_dir=self.provision).unknown(name)
        except ReconcilerError as exc:
            return f"provision/targets.yaml does not load: {exc}"

    def problems(self) -> list[str]:
        """Why the daemon is degraded: store outages seen by its loops, dead threads, paused claims."""
        found = self.outages.reasons()
        found += [f"{name}: thread is down" for name in self.pool.dead_threads()]
        return found + self.election.problems()

    def health_report(self) -> tuple[dict[str, Any], bool]:
        problems = self.problems()
        counts = self.counts.get(problems=problems)
        last, reporter = self.passes.last, self.reporter
        stuck = reporter.stuck()
        stale = self.election.leading and (last is None or self._pass_age() > max(3 * self.resync, 60))
        degraded = bool(problems)
        ok = reporter.ready and not reporter.stopping and not stuck and not stale and not degraded
        status = ("ok" if ok else "stopping" if reporter.stopping else "degraded" if degraded else
                  "not ready" if not reporter.ready else "stuck" if stuck else "stale")
        report = {"status": status, "reason": "; ".join(problems) if problems else None,
                  "total": counts.live, **counts.summary(), **self._pass_fields(),
                  "daemon": {"pid": os.getpid(), "host": HOST, "leading": self.election.leading},
                  "leader": None if problems else self._leader_or_none(problems)}
        tokens = self.keyring.report()
        if tokens is not None:  # counts and a reload's error only: never a token or a hash
            report["api"] = tokens
        return report, ok

    def _pass_age(self) -> float:
        at = self.passes.last_pass_at
        return (utcnow() - at).total_seconds() if at is not None else float("inf")

    def _pass_fields(self) -> dict[str, Any]:
        last = self.passes.last
        error = last.load_error if last else None
        return {"scripts_running": self.pool.busy(),
                "last_pass_at": iso(self.passes.last_pass_at) if last and self.passes.last_pass_at else None,
                "desired_commit": self.passes.desired_commit,
                "desired_loads": error is None,
                "desired_errors": [str(problem) for problem in error.problems] if error else [],
                **self._policy_fields()}

    def _policy_fields(self) -> dict[str, Any]:
        """policy.yaml: where, whether it loads (a broken one keeps the last good in force), what it holds."""
        governor = self.governor
        if governor is None:
            return {}
        source = governor.source
        return {"policy": str(source.path) if source.path is not None and source.policy is not None else None,
                "policy_loads": source.error is None, "policy_errors": source.problems(),
                "policy_held": governor.held}

    def _leader_or_none(self, problems: list[str]) -> dict[str, Any] | None:
        try:
            return self.election.holder()
        except StoreError as exc:
            problems.append(f"health: {exc}")
            return None

    def metrics_text(self) -> tuple[bytes, str]:
        from ..metrics import CONTENT_TYPE

        counts = self.counts.get()
        return self.metrics.render(statuses=counts.statuses, health=counts.health), CONTENT_TYPE

