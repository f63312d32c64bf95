"""`reconciler apply` and `destroy` as a user sees them: plan, confirm, queue, run, report.

The engine does the work; this module owns the conversation: the confirmation prompt, progress
(a bar on a terminal, one line per finished job otherwise) and the closing summary with every
failure's reason and output tail. It returns the exit status; cli.py only exits with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import click

from .actor import Attribution, GitActor, cli_actor
from .engine import (
    PlanView,
    cancel_suspended,
    enqueue,
    file_attribution,
    load_files,
    plan_fleet,
    plan_scope,
    read_fleet,
    release,
    target_timeouts,
)
from .models import ROLLOUT_JOBS, utcnow
from .options import Mode, PlanOptions, RunOptions
from .policy import Policy
from .policyrun import run_governance
from .rolloutrun import Follow
from .rollouts import held_now, start_rollout
from .runner import dropped_env, read_pass_env
from .spec import DesiredState
from .store import open_store
from .targets import observing_targets
from .terminal import printable, printable_lines
from .views import View
from .workers import AfterCheck, EngineConfig, Finished, WorkerPool, expire_dead_leases

if TYPE_CHECKING:
    from .store.base import SQLStore

TAIL_LINES = 12
ROLLOUT_POLL = 0.2  # seconds between a rollout's idle workers' claims (a wave's start wakes them at once)


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """One apply (or, in destroy mode, one destroy): what to plan, how scripts run, how it is shown."""

    plan: PlanOptions
    run: RunOptions
    view: View
    yes: bool = False
    mode: Mode = Mode.APPLY
    policy: Policy | None = None  # policy.yaml in force (loaded before anything is opened or queued)
    wait: bool = True  # follow a rollout in the foreground (False: --no-wait, leave it to a daemon or a later apply)


def run_apply(*, settings: Any, options: ApplyOptions) -> int:
    store = open_store(url=settings.db)
    config = _engine_config(settings=settings, options=options, store=store)  # bad settings: before any queueing
    expire_dead_leases(store=store, now=utcnow())
    view = _plan(settings=settings, options=options, store=store)
    click.echo(options.view.plan(view.plan, verdict=view.verdict, rollout=view.rollout), nl=False)
    if view.plan.refusal:
        return 1
    cancel_suspended(store=store, plan=view.plan, in_flight=store.in_flight(), actor=cli_actor())
    release(store=store, view=view)
    scope = plan_scope(view.plan)
    if not scope and not store.open_rollouts():
        return 0
    if view.plan.changes and not _confirmed(options=options):
        return 1
    commit, attribution = _attribution(settings=settings, options=options)
    enqueue(store=store, view=view, commit=commit, attribution=attribution)
    refused = start_rollout(store=store, view=view, commit=commit, actor=attribution.files) is None \
        and view.rollout is not None
    if refused:  # nothing of it was queued: say so, and do not pass for converged
        click.echo("Error: the rollout was not started: another rollout holds some of its resources (see "
                   "`reconciler rollout status`); the next apply proposes it again.", err=True)
    rolled = _rolled(store=store)
    _note_dropped_env(config)
    with _Interrupts() as interrupts:
        work = _Work(store=store, config=config, options=options, interrupts=interrupts)
        # A whole-fleet apply works the whole queue (an id list of 100k would cost every claim a scan);
        # with --target it claims only those resources' jobs.
        work.run(scope=(scope - rolled) if options.plan.targets else None)
        _follow_up(work=work, settings=settings, options=options, view=view, commit=commit,
                   attribution=attribution)
        halted = _follow_rollouts(work=work, options=options, actor=attribution.files)
    _detach_broken_stdout()
    code = _summarise(work=work, store=store, scope=scope - rolled - _rolled(store=store))
    return code or (1 if (halted or refused) and not work.interrupts.count else 0)


def _rolled(*, store: SQLStore) -> set[str]:
    """Resources open rollouts own: apply's summary counts them in the rollout's progress, not its own."""
    return {member.resource_id for rollout in store.open_rollouts()
            for member in store.rollout_members(rollout.rollout_id)}


def _follow_rollouts(*, work: _Work, options: ApplyOptions, actor: str) -> bool:
    """Advance (or, with a daemon holding the database, watch) the open rollouts; True when one halted."""
    err = options.view.progress_to_stderr
    follow = Follow(store=work.store, workers=work.rollout_workers, stopped=lambda: work.stopped,
                    say=lambda line: _print_line(printable(line), err=err), actor=actor, wait=options.wait,
                    held=lambda: held_now(work.store))
    return follow.follow()


def _follow_up(*, work: _Work, settings: Any, options: ApplyOptions, view: PlanView, commit: str | None,
               attribution: Attribution) -> None:
    """Resources that were busy when we planned get planned again once their job is done.

    A job already in progress (another apply, a daemon, a crashed run) may have carried an older
    spec; converging means applying the current one after it, as a controller's next pass would.
    """
    waited = {change.resource_id for change in view.plan.waiting}
    store = work.store
    for _round in range(3):
        if not waited or work.stopped:
            break
        narrowed = replace(options, plan=replace(options.plan, targets=tuple(sorted(waited))))
        again = _plan(settings=settings, options=narrowed, store=store)
        if not again.plan.changes or again.plan.refusal:
            break
        for change in again.plan.changes:
            click.echo(f"~ {change.resource_id}: {change.shown} ({change.message}) after its earlier job", err=True)
        enqueue(store=store, view=again, commit=commit, attribution=attribution)
        work.run(scope=plan_scope(again.plan))
        waited = {change.resource_id for change in again.plan.waiting}


def _attribution(*, settings: Any, options: ApplyOptions) -> tuple[str | None, Attribution]:
    """The commit and the actors of this run: an apply's file changes are the git actor's, with the CLI
    user as `by`; a destroy is the CLI user's own (no file asked for it)."""
    runner = cli_actor()
    if options.mode is Mode.DESTROY:
        return None, Attribution(files=runner, runner=runner)
    git = GitActor(settings.desired)
    return git.commit(), file_attribution(git=git, runner=runner)


def _plan(*, settings: Any, options: ApplyOptions, store: SQLStore) -> PlanView:
    """Apply plans desired/ plus the API's declarations; destroy plans as if nothing were declared."""
    destroy = options.mode is Mode.DESTROY
    fleet = read_fleet(store=store, with_api=not destroy)
    if destroy:  # an explicit operator action: it tears down its scope although the fleet is suspended
        fleet = replace(fleet, suspensions=fleet.suspensions.without_fleet())
    desired = DesiredState(resources={}) if destroy else load_files(
        directory=settings.desired, settle=settings.settle, provision_dir=settings.provision)
    governed = run_governance(policy=options.policy, store=store, planning=options.plan, provision=settings.provision)
    return plan_fleet(desired=desired, fleet=fleet, policy=options.plan.policy(), targets=options.plan.targets,
                      governance=governed, replace=options.plan.replace,
                      observable=observing_targets(provision_dir=settings.provision),
                      replace_reason=options.plan.replace_reason)


def _confirmed(*, options: ApplyOptions) -> bool:
    if options.yes:
        return True
    if not sys.stdin.isatty():
        click.echo("Error: refusing to apply without confirmation: no terminal to ask on. "
                   "Review the plan above, then pass --yes.", err=True)
        return False
    click.echo("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n")
    answer = click.prompt("  Enter a value", default="", show_default=False)
    if answer.strip() != "yes":
        click.echo("\nApply cancelled.", err=True)
        return False
    return True


def _engine_config(*, settings: Any, options: ApplyOptions, store: SQLStore) -> EngineConfig:
    return EngineConfig(provision_dir=settings.provision, work_dir=settings.work_dir, timeout=options.run.timeout,
                        retry=options.run.retry, target_timeouts=target_timeouts(provision_dir=settings.provision),
                        guard_orphans=store.kind != "sqlite",
                        pass_env=read_pass_env(provision_dir=settings.provision),
                        fleet_override=options.mode is Mode.DESTROY,
                        after_check=AfterCheck(actor=cli_actor()))


def _note_dropped_env(config: EngineConfig) -> None:
    """Say once which of our variables scripts do not get (names only), so a script that relied on one
    says why it broke."""
    dropped = dropped_env(environ=os.environ, pass_env=config.pass_env)
    if dropped:
        click.echo(f"Scripts run without {len(dropped)} variables of this environment: {', '.join(dropped)} "
                   "(list them under pass_env in provision/targets.yaml to pass them).", err=True)


class _Work:
    """What this apply's workers did across its rounds: the jobs they finished, and any that died."""

    def __init__(self, *, store: SQLStore, config: EngineConfig, options: ApplyOptions,
                 interrupts: _Interrupts) -> None:
        self.store, self.config, self.options, self.interrupts = store, config, options, interrupts
        self.finished: list[Finished] = []
        self.deaths: list[str] = []

    @property
    def stopped(self) -> bool:
        """Interrupted, or a worker died (of a round, or of the pool working now): no further rounds."""
        live = self.interrupts.pool
        return bool(self.deaths) or bool(live is not None and live.deaths) or self.interrupts.count > 0

    def run(self, *, scope: set[str] | None) -> None:
        if self.stopped:
            return
        err = self.options.view.progress_to_stderr
        if sys.stdout.isatty() and not err:
            drawing = threading.Lock()  # workers finish on many threads; the bar draws on one at a time

            def advance(item: Finished) -> None:
                with drawing:
                    bar.update(1)

            total = len(scope) if scope is not None else self.store.count_open()
            with click.progressbar(length=total, label="Applying", show_pos=True) as bar:
                self._run_pool(scope=scope, on_finish=advance)
            return
        self._run_pool(scope=scope, on_finish=lambda item: _print_line(_line(item), err=err))

    @contextlib.contextmanager
    def rollout_workers(self) -> Iterator[WorkerPool]:
        """One pool for every wave of the rollouts this apply drives, claiming only rollouts' jobs (a
        pool per wave cost ~0.5 s a wave to start and drain; an id list per claim, ~0.8 ms a job: P9)."""
        err = self.options.view.progress_to_stderr
        lines = not sys.stdout.isatty() or err  # a terminal shows each wave's progress, not a line a job

        def on_finish(item: Finished) -> None:
            self.finished.append(item)
            if lines:
                _print_line(_line(item), err=err)

        pool = WorkerPool(store=self.store, config=self.config, parallelism=self.options.run.parallelism,
                          on_finish=on_finish, idle_poll=ROLLOUT_POLL)
        self.interrupts.pool = pool
        pool.work_in(scope=ROLLOUT_JOBS)
        try:
            yield pool
        finally:
            pool.stop_claiming()
            pool.wake()
            pool.join()
            self.interrupts.pool = None
            self.deaths += pool.deaths

    def _run_pool(self, *, scope: set[str] | None, on_finish: Any) -> None:
        pool = WorkerPool(store=self.store, config=self.config, parallelism=self.options.run.parallelism,
                          on_finish=on_finish)
        self.interrupts.pool = pool
        try:
            self.finished += pool.run_until_done(scope=scope)
        finally:
            self.interrupts.pool = None
        self.deaths += pool.deaths


class _Interrupts:
    """Ctrl-C and SIGTERM while scripts run, handled as Terraform does.

    The first stops claiming and waits for the running scripts (their results are recorded); the second
    stops their process groups (TERM, grace, KILL) and hands their jobs back to the queue. The handler
    only sets flags and writes with os.write: the main thread may be anywhere when it runs.
    """

    def __init__(self) -> None:
        self.count = 0
        self.signum: int | None = None
        self.pool: WorkerPool | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup and friends: leave it ignored
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)  # 130 for SIGINT, 143 for SIGTERM

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        self.signum = self.signum or signum
        pool = self.pool
        if self.count == 1:
            running = pool.busy() if pool else 0
            _say(f"Interrupted: starting no new jobs; waiting for {running} running script(s) to finish. "
                 "Interrupt again to stop them and hand their jobs back to the queue.")
            if pool:
                pool.stop_claiming()
        elif self.count == 2:
            _say("Interrupted again: stopping the running scripts (TERM, then KILL) and handing their jobs back.")
            if pool:
                pool.abandon()
        else:
            _say("Still stopping the running scripts.")


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"\n{text}\n".encode())


def _detach_broken_stdout() -> None:
    """If stdout's reader went away (`apply | head`), point it at /dev/null so exiting does not fail again."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _print_line(text: str, *, err: bool) -> None:
    """One line per finished job, written directly: click.echo re-checks the terminal on every call."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _line(item: Finished) -> str:
    return printable(_plain_line(item))


def _plain_line(item: Finished) -> str:
    job, result = item.job, item.result
    took = f"{result.duration:.1f}s"
    if item.handed_back:
        return f"↩ {job.resource_id}: {job.action} stopped after {took}; handed back to the queue"
    if not item.recorded:
        return f"? {job.resource_id}: {job.action} finished after losing its lease; not recorded"
    if result.ok:
        return f"✓ {job.resource_id}: {job.action} succeeded in {took}" + (f": {result.url}" if result.url else "")
    return f"✗ {job.resource_id}: {job.action} failed after {took}: {result.error}"


def _summarise(*, work: _Work, store: SQLStore, scope: set[str]) -> int:
    finished = work.finished
    failed = [item for item in finished if item.recorded and not item.result.ok]
    ok = sum(1 for item in finished if item.recorded and item.result.ok)
    handed_back = sum(1 for item in finished if item.handed_back)
    pending = store.in_flight() & scope  # only jobs that really closed count as done by someone else
    others = len(scope - {item.job.resource_id for item in finished} - pending)
    err = True
    click.echo("", err=err)
    for item in failed:
        click.echo(printable(f"Error: {item.job.resource_id}: {item.job.action} failed: {item.result.error}"),
                   err=err)
        tail = printable_lines(item.result.output_tail.strip()).splitlines()[-TAIL_LINES:]
        click.echo("".join(f"  | {line}\n" for line in tail), err=err, nl=False)
    for death in work.deaths:
        click.echo(f"Error: a worker of this apply died: {death}", err=err)
    notes = [f"{handed_back} handed back to the queue" if handed_back else "",
             f"{others} finished by another worker" if others > 0 else "",
             f"{len(pending)} not finished (left in the queue for the next apply or the daemon)" if pending else ""]
    headline = "Apply interrupted" if work.interrupts.count else "Apply stopped" if work.deaths else "Apply complete"
    click.echo(f"{headline}: {ok} succeeded, {len(failed)} failed{''.join(f', {n}' for n in notes if n)}.", err=err)
    if work.interrupts.count:
        return work.interrupts.exit_code
    return 1 if failed or work.deaths or pending or _errored(store=store, scope=scope) else 0


def _errored(*, store: SQLStore, scope: set[str]) -> bool:
    """Jobs another worker ran for us count too: converged means every row in scope is settled well."""
    rows = store.load_observed()
    return any(rows[rid].status.value == "errored" for rid in scope if rid in rows)
