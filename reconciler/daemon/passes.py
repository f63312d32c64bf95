"""The pass loop: every reason to look again only marks the state dirty; one pass at a time acts on it.

A file save, the resync, a retry or a settling file coming due, a finished job, SIGHUP and the drift
loop all `request` a pass; requests made while a pass runs coalesce into the next one. The loop owns
its dirty flag, the last pass and its wake-up timers, and tells what it found to injected sinks (the
metrics, the systemd reporter, the workers) instead of reaching into them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ..engine import PassResult, Reconciler
from ..errors import ReconcilerError
from ..liveness import HOST
from ..models import PassBeat, PassRequest, iso, parse_iso, utcnow
from ..ports import PassRecorder, PassRequests
from ..supervise import TRANSIENT, Outages
from ..workers import Finished
from .election import LEADER_POLL, Election
from .reporter import SystemdReporter
from .wakeups import WakeUps

RESYNC_JITTER = 0.1  # each resync comes the interval, give or take this fraction of it, after the last
REQUESTS_KEPT = 86400.0  # answered `reconciler reconcile` requests are kept a day, then forgotten


class PassMetrics(Protocol):
    def pass_done(self, *, at: float, problems: int) -> None: ...
    def job_finished(self, *, action: str, ok: bool, duration: float) -> None: ...


class PassLoop:
    """Coalesced, level-triggered passes of one daemon (followers only refresh desired/ for the API)."""

    name = "pass loop"

    def __init__(self, *, reconciler: Reconciler, election: Election, outages: Outages, reporter: SystemdReporter,
                 metrics: PassMetrics, wake_workers: Callable[[], None], desired: Path, resync: float,
                 log: Any, requests: PassRequests | None = None, recorder: PassRecorder | None = None,
                 holder: str = "") -> None:
        self.reconciler = reconciler
        self.election = election
        self.outages = outages
        self.reporter = reporter
        self.metrics = metrics
        self.wake_workers = wake_workers
        self.desired = desired
        self.resync = resync
        self.log = log
        self.recorder = recorder  # where each pass is recorded for `status` (the daemon's view)
        self.holder = holder
        self.last: PassResult | None = None
        self.last_pass_at: datetime | None = None
        self.desired_commit: str | None = None
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeups = WakeUps(request=self.request)  # "resync", "retry", "settle", "expiry"
        self.requests = requests  # `reconciler reconcile`'s rows, answered here
        self._demands: dict[str, PassRequest] = {}
        self._reported_error: str | None = None
        self._reported_unsettled: list[str] | None = None

    # --- runnable ---

    def prepare(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeups.start(self._loop)

    async def run(self, stop: asyncio.Event) -> None:
        self._wakeups.every("resync", seconds=self.resync, jitter=self.resync * RESYNC_JITTER, reason="resync")
        while not stop.is_set():
            await self._dirty.wait()
            if stop.is_set():
                return
            self._dirty.clear()
            await self._step()

    async def close(self) -> None:
        self._wakeups.stop()

    # --- what others tell the loop ---

    def request(self, reason: str) -> None:
        """Look again soon (in the event loop)."""
        self.log.debug("pass requested", reason=reason)
        self._dirty.set()

    def wake(self) -> None:
        """Wake the loop without asking for a pass (it is stopping)."""
        self._dirty.set()

    def demand(self, requests: list[PassRequest]) -> None:
        """Passes asked for (`reconciler reconcile`, polled by daemon/requests.py): answered by the next pass."""
        fresh = [request for request in requests if request.request_id not in self._demands]
        for request in fresh:
            self._demands[request.request_id] = request
        if fresh:
            self.request("pass requested")

    def refresh(self, reason: str) -> None:
        """Forget what the last passes remembered (a drift pass changed rows, a new term, SIGHUP), then look."""
        self.reconciler.reload()
        self.request(reason)

    def job_finished(self, item: Finished) -> None:
        """A worker finished a job (called in its thread): metrics, a log line, a retry wake-up, a pass."""
        job, result = item.job, item.result
        if item.recorded:
            self.metrics.job_finished(action=str(job.action), ok=result.ok, duration=result.duration)
        log = self.log.bind(resource_id=job.resource_id, job_id=job.job_id, action=str(job.action))
        if not item.recorded:
            log.warning("job handed back or lease lost; not recorded", error=result.error)
        elif result.ok:
            log.info("job succeeded", url=result.url, duration_s=round(result.duration, 3))
        else:
            log.error("job failed", error=result.error, exit_code=result.exit_code,
                      next_attempt_at=result.next_attempt_at, output_tail=result.output_tail[-500:])
        assert self._loop is not None
        if item.recorded and not result.ok:
            self._loop.call_soon_threadsafe(self._retry_at, result.next_attempt_at)
        # level-triggered: the spec may have moved on while the job ran; a coalesced pass catches up
        self._loop.call_soon_threadsafe(self.request, "job finished")

    # --- one pass ---

    async def _step(self) -> None:
        if not self.election.leading:
            await self._follow()
            return
        if not self.election.may_plan():  # leading, but the lease is unconfirmed (store away): ask again later
            self._later(LEADER_POLL, "leader lease unconfirmed")
            return
        demands, self._demands = list(self._demands.values()), {}
        self.reporter.pass_started()
        try:
            if demands:
                await asyncio.to_thread(self._answer_all, demands)
            result = await asyncio.to_thread(self._pass)
        except TRANSIENT as exc:  # the store is away: try again after a backed-off wait
            for request in demands:  # still pending in the store unless taken: asked again
                self._demands.setdefault(request.request_id, request)
            self._later(self.outages.failed(loop=self.name, error=exc), "store retry")
            return
        except Exception:  # a pass must never take the daemon down; the next one starts afresh
            self.log.exception("reconcile pass failed")
            return
        finally:
            self.reporter.pass_ended()
        self.outages.recovered(loop=self.name)
        self._after_pass(result)

    def _pass(self) -> PassResult:
        result = self.reconciler.reconcile_once()
        if not result.skipped or self.desired_commit is None:
            self.desired_commit = self.reconciler.git.commit()
        self._record(result)
        return result

    def _answer_all(self, demands: list[PassRequest]) -> None:
        """Run the asked-for passes now (a whole one once for all whole-fleet requests, one per narrowed
        scope) and answer each request with its jobs and the notes of its scope."""
        assert self.requests is not None, "demands come only with a request store"
        taken = [r for r in demands if self.requests.take_request(request_id=r.request_id, now=iso(utcnow()))]
        by_scope: dict[tuple[str, ...], list[PassRequest]] = {}
        for request in taken:
            by_scope.setdefault(request.resource_ids or (), []).append(request)
        for scope, requests in by_scope.items():
            job_ids, notes, error = self._answer(scope)
            for request in requests:
                self.requests.answer_request(request_id=request.request_id, job_ids=job_ids, notes=notes,
                                             error=error, now=iso(utcnow()))
                self.log.info("pass on demand answered", request_id=request.request_id, actor=request.actor,
                              resources=list(scope) or "all", jobs=len(job_ids), error=error)
        self.requests.prune_requests(before=iso(utcnow() - timedelta(seconds=REQUESTS_KEPT)))

    def _answer(self, scope: tuple[str, ...]) -> tuple[list[str], list[str], str | None]:
        try:
            result = self.reconciler.reconcile_now(targets=scope)
        except ReconcilerError as exc:  # an id neither declared nor in the database
            return [], [], str(exc).replace("--target ", "")
        if result.queued:
            self.wake_workers()
        open_jobs = self.reconciler.store.open_jobs(resource_ids=scope or None)
        job_ids = list(dict.fromkeys([*result.job_ids, *(job.job_id for job in open_jobs.values())]))
        return job_ids, _notes(result), None

    def _record(self, result: PassResult) -> None:
        """What this pass saw, for `status` on any machine; a store away for it does not fail the pass."""
        if self.recorder is None:
            return
        beat = pass_beat(reconciler=self.reconciler, result=result, holder=self.holder, commit=self.desired_commit)
        try:
            self.recorder.record_pass(beat=beat)
        except TRANSIENT as exc:
            self.log.warning("could not record the pass for status", error=str(exc))

    async def _follow(self) -> None:
        """A follower only works the queue, and reads desired/ for its API."""
        try:
            await asyncio.to_thread(self.reconciler.refresh_desired)
        except Exception:  # as a pass: never the daemon's end
            self.log.exception("reading desired/ failed")
        self.reporter.following()

    def _after_pass(self, result: PassResult) -> None:
        self.last, self.last_pass_at = result, utcnow()
        problems = len(result.load_error.problems) if result.load_error else 0
        self.metrics.pass_done(at=self.last_pass_at.timestamp(), problems=problems)
        self._report_load_error(result)
        self._await_settle(result)
        if result.queued:
            self.wake_workers()
            self.log.info("jobs queued", count=result.queued)
        if result.plan is not None and result.plan.refusal:
            self.log.error("plan refused", reason=result.plan.refusal)
        self._retry_at(result.next_retry_at)
        self._expiry_at(result.next_expiry)
        self.reporter.passed(result)

    def _report_load_error(self, result: PassResult) -> None:
        text = str(result.load_error) if result.load_error else None
        if text == self._reported_error:
            return
        self._reported_error = text
        if result.load_error is None:
            self.log.info("desired state loads again")
            return
        for problem in result.load_error.problems:
            self.log.error("desired state does not load; keeping the last good one", file=problem.file,
                           line=problem.line, field=problem.field, problem=problem.message)

    # --- wake-ups ---

    def _await_settle(self, result: PassResult) -> None:
        """Desired files still changing: the pass kept the last good state; look again once they may settle."""
        waiting = result.unsettled
        files = waiting.files if waiting else None
        if files != self._reported_unsettled:
            self._reported_unsettled = files
            if waiting is not None:
                self.log.info("desired file still changing; planning from the last good state until it settles",
                              files=waiting.files[:10], recheck_s=round(waiting.wait, 3))
        if waiting is not None and not self._wakeups.pending("settle"):
            self._wakeups.once("settle", delay=waiting.wait, reason="desired settling")

    def _retry_at(self, at: str | None) -> None:
        """A pass when the earliest retry comes due (replacing the wake-up asked for before)."""
        when = parse_iso(at)
        if when is None or when <= utcnow():
            return
        self._wakeups.once("retry", delay=(when - utcnow()).total_seconds(), reason="retry due")

    def _expiry_at(self, at: str | None) -> None:
        """A pass when the earliest suspension lapses (`--until`, a file's `until:`): it resumes by itself."""
        when = parse_iso(at)
        if when is None or when <= utcnow():
            return
        self._wakeups.once("expiry", delay=(when - utcnow()).total_seconds(), reason="suspension lapses")

    def _later(self, delay: float, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, self.request, reason)


def _notes(result: PassResult) -> list[str]:
    """Why resources of the scope got no job, and whatever else the asker should know (a few dozen at most)."""
    notes: list[str] = []
    if result.load_error is not None:
        notes.append(f"desired/ does not load ({len(result.load_error.problems)} problems): "
                     "planned from the last good state")
    plan = result.plan
    if plan is None:
        return [*notes, "desired/ has never loaded: nothing was planned"]
    if plan.fleet_suspension is not None:
        notes.append(plan.fleet_suspension.describe().replace("suspended", "the fleet is suspended", 1))
    if plan.refusal:
        notes.append(f"refused: {plan.refusal}")
    held = [f"{change.resource_id}: {change.message}" for change in (*plan.kept, *plan.waiting)]
    return notes + held[:50] + ([f"… and {len(held) - 50} more"] if len(held) > 50 else [])


def pass_beat(*, reconciler: Reconciler, result: PassResult, holder: str, commit: str | None) -> PassBeat:
    """The daemon's view after a pass: when, and whether desired/ loads (else its first problem, file:line)."""
    import os

    good = reconciler.last_good
    error = result.load_error
    files = len({source.file for source in good.sources.values()}) if good is not None else 0
    return PassBeat(holder=holder, host=HOST, pid=os.getpid(), at=iso(utcnow()), desired_loads=error is None,
                    desired_resources=len(good.resources) if good is not None else 0, desired_files=files,
                    desired_error=str(error.problems[0]) if error is not None and error.problems else None,
                    desired_commit=commit)
