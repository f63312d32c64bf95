"""`reconciler apply` and `destroy` as a user sees them: plan, confirm, queue, run, report.

The engine does the work; this module owns the conversation: the confirmation prompt, progress
(a bar on a terminal, one line per finished job otherwise) and the closing summary with every
failure's reason and output tail. It returns the exit status; cli.py only exits with it.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, replace
from typing import Any

import click

from .engine import (
    PlanView,
    api_declared,
    desired_commit,
    enqueue,
    make_plan,
    plan_against,
    plan_scope,
    target_timeouts,
)
from .workers import EngineConfig, Finished, WorkerPool, expire_dead_leases
from .models import utcnow
from .plan import PlanPolicy
from .retry import RetryPolicy
from .render import render_json, render_text
from .spec import DesiredState
from .store import open_store
from .terminal import printable, printable_lines

TAIL_LINES = 12


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    targets: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    yes: bool = False
    parallelism: int = 10
    timeout: float = 900.0
    retry: RetryPolicy = RetryPolicy()
    output: str = "text"
    colour: bool = False
    destroy: bool = False


def run_apply(*, settings: Any, options: ApplyOptions) -> int:
    store = open_store(url=settings.db)
    expire_dead_leases(store=store, now=utcnow())
    view = _view(settings=settings, options=options, store=store)
    _show(view=view, options=options)
    if view.plan.refusal:
        return 1
    scope = plan_scope(view.plan)
    if not scope:
        return 0
    if view.plan.changes and not _confirmed(options=options):
        return 1
    commit = None if options.destroy else desired_commit(directory=settings.desired)
    enqueue(store=store, view=view, commit=commit)
    # A whole-fleet apply works the whole queue (an id list of 100k would cost every claim a scan);
    # with --target it claims only those resources' jobs.
    finished = _run(store=store, settings=settings, options=options, scope=scope if options.targets else None)
    finished += _follow_up(store=store, settings=settings, options=options, view=view, commit=commit)
    return _summarise(finished=finished, store=store, scope=scope)


def _follow_up(*, store: Any, settings: Any, options: ApplyOptions, view: PlanView,
               commit: str | None) -> list[Finished]:
    """Resources that were busy when we planned get planned again once their job is done.

    A job already in progress (another apply, a daemon, a crashed run) may have carried an older
    spec; converging means applying the current one after it, as a controller's next pass would.
    """
    waited = {change.resource_id for change in view.plan.waiting}
    finished: list[Finished] = []
    for _round in range(3):
        if not waited:
            break
        again = _view(settings=settings, options=replace(options, targets=tuple(sorted(waited))), store=store)
        if not again.plan.changes or again.plan.refusal:
            break
        for change in again.plan.changes:
            click.echo(f"~ {change.resource_id}: {change.action} ({change.reason}) after its earlier job", err=True)
        enqueue(store=store, view=again, commit=commit)
        finished += _run(store=store, settings=settings, options=options, scope=plan_scope(again.plan))
        waited = {change.resource_id for change in again.plan.waiting}
    return finished


def _view(*, settings: Any, options: ApplyOptions, store: Any) -> PlanView:
    policy = PlanPolicy(allow_mass_delete=options.allow_mass_delete)
    observed, in_flight = store.load_observed(), store.in_flight()
    if options.destroy:
        return plan_against(desired=DesiredState(resources={}), observed=observed, in_flight=in_flight,
                            now=utcnow(), policy=policy, targets=options.targets)
    return make_plan(desired_dir=settings.desired, observed=observed, in_flight=in_flight, now=utcnow(),
                     policy=policy, targets=options.targets, api=store.api_desired())


def _show(*, view: PlanView, options: ApplyOptions) -> None:
    api = api_declared(view.desired)
    text = render_json(view.plan, api=api) if options.output == "json" else render_text(
        view.plan, colour=options.colour, api=api)
    # With JSON on stdout, progress and summary go to stderr so stdout stays one JSON document.
    click.echo(text, nl=False)


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


def _run(*, store: Any, settings: Any, options: ApplyOptions, scope: set[str] | None) -> list[Finished]:
    config = EngineConfig(provision_dir=settings.provision, work_dir=settings.work_dir, timeout=options.timeout,
                          retry=options.retry, target_timeouts=target_timeouts(provision_dir=settings.provision),
                          guard_orphans=store.kind != "sqlite")
    err = options.output == "json"
    if sys.stdout.isatty() and not err:
        drawing = threading.Lock()  # workers finish on many threads; the bar draws on one at a time

        def advance(item: Finished) -> None:
            with drawing:
                bar.update(1)

        total = len(scope) if scope is not None else store.count_open()
        with click.progressbar(length=total, label="Applying", show_pos=True) as bar:
            pool = WorkerPool(store=store, config=config, parallelism=options.parallelism, on_finish=advance)
            return pool.run_until_done(scope=scope)
    pool = WorkerPool(store=store, config=config, parallelism=options.parallelism,
                      on_finish=lambda item: _print_line(_line(item), err=err))
    return pool.run_until_done(scope=scope)


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
    if not item.recorded:
        return f"? {job.resource_id}: {job.action} finished after losing its lease; not recorded"
    if result.ok:
        return f"✓ {job.resource_id}: {job.action} succeeded in {took}" + (f": {result.url}" if result.url else "")
    return f"✗ {job.resource_id}: {job.action} failed after {took}: {result.error}"


def _summarise(*, finished: list[Finished], store: Any, scope: set[str]) -> int:
    failed = [item for item in finished if item.recorded and not item.result.ok]
    ok = sum(1 for item in finished if item.recorded and item.result.ok)
    others = len(scope - {item.job.resource_id for item in finished})
    err = True
    click.echo("", err=err)
    for item in failed:
        click.echo(printable(f"Error: {item.job.resource_id}: {item.job.action} failed: {item.result.error}"),
                   err=err)
        tail = printable_lines(item.result.output_tail.strip()).splitlines()[-TAIL_LINES:]
        click.echo("".join(f"  | {line}\n" for line in tail), err=err, nl=False)
    note = f", {others} finished by another worker" if others > 0 else ""
    click.echo(f"Apply complete: {ok} succeeded, {len(failed)} failed{note}.", err=err)
    return 1 if failed or _errored(store=store, scope=scope) else 0


def _errored(*, store: Any, scope: set[str]) -> bool:
    """Jobs another worker ran for us count too: converged means every row in scope is settled well."""
    rows = store.load_observed()
    return any(rows[rid].status.value == "errored" for rid in scope if rid in rows)
