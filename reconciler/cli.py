"""The `reconciler` command line: argument parsing and exit codes only; the work happens below.

Exit codes follow Terraform: 0 success, 1 error (bad input, a usage error, failed job, refused plan), and
with `--detailed-exitcode` 2 when the plan has changes or retries pending. Bad input never shows a
traceback; when stderr carries JSON logs, errors are JSON lines too.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import click

from .errors import ReconcilerError, SpecError

OUTPUT = click.Choice(["text", "json"])


@dataclass(frozen=True, slots=True)
class Settings:
    desired: Path
    db: str
    provision: Path
    work_dir: Path
    settle: float = 0.15  # RECONCILER_SETTLE: seconds a changed desired file must stay unchanged


def _fail(message: str) -> NoReturn:
    """`Error: …` and exit 1; a JSON line instead when stderr carries JSON logs (journalctl | jq)."""
    if _json_logs():
        from .logs import error_line

        error_line(event="error", error=message)
    else:
        click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error meant for the user into a message and exit status 1."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            _spec_problems(exc)
            count = len(exc.problems)
            _fail(f"{count} problem{'s' if count != 1 else ''} in the desired state; nothing was changed")
        except ReconcilerError as exc:
            _fail(str(exc))

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _spec_problems(exc: SpecError) -> None:
    if not _json_logs():
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        return
    from .logs import error_line

    for problem in exc.problems:
        error_line(event="desired state does not load", file=problem.file, line=problem.line,
                   field=problem.field, problem=problem.message)


def _json_logs() -> bool:
    from .logs import logs_are_json

    return logs_are_json()


class _UsageExit1(click.Group):
    """Usage errors exit 1, as Terraform's do: 2 means "changes present" under `plan --detailed-exitcode`."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _usage_errors_exit_1():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors_exit_1():
            return super().invoke(ctx)


class _JsonUsageError(click.UsageError):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        from .logs import error_line

        error_line(event="usage error", error=self.format_message())


@contextlib.contextmanager
def _usage_errors_exit_1() -> Iterator[None]:
    try:
        yield
    except click.UsageError as exc:
        if _json_logs():
            raise _JsonUsageError(exc.format_message(), ctx=exc.ctx) from None
        exc.exit_code = 1
        raise


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@click.group(cls=_UsageExit1, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--desired", type=click.Path(path_type=Path), default="desired", show_default=True,
              envvar="RECONCILER_DESIRED", help="Directory of desired-state YAML files [env: RECONCILER_DESIRED].")
@click.option("--db", default="reconciler.db", show_default=True, envvar="RECONCILER_DB",
              help="Observed-state database: a path, sqlite:///path or postgresql://… [env: RECONCILER_DB].")
@click.option("--provision", type=click.Path(path_type=Path), default="provision", show_default=True,
              envvar="RECONCILER_PROVISION", help="Directory of provision/teardown scripts [env: RECONCILER_PROVISION].")
@click.option("--work-dir", type=click.Path(path_type=Path), default=".reconciler/work", show_default=True,
              envvar="RECONCILER_WORK_DIR",
              help="Per-resource working directories for the scripts [env: RECONCILER_WORK_DIR].")
@click.version_option(package_name="reconciler")
@click.pass_context
def main(ctx: click.Context, desired: Path, db: str, provision: Path, work_dir: Path) -> None:
    """Reconcile desired/ (YAML in git) with the observed fleet by running your provisioning scripts."""
    from .settle import settle_from_env

    try:
        settle = settle_from_env()
    except ValueError as exc:
        _fail(str(exc))
    # Absolute: scripts run inside their work dir, so a relative RECONCILER_WORKDIR would nest twice.
    ctx.obj = Settings(desired=desired, db=db, provision=provision, work_dir=work_dir.absolute(), settle=settle)


@main.command()
@click.pass_obj
@_guarded
def validate(settings: Settings) -> None:
    """Check desired/ without touching the database (for pre-commit hooks and CI)."""
    from .spec import load_desired

    state = load_desired(directory=settings.desired, settle=settings.settle)
    if settings.provision.is_dir():
        from .engine import check_targets

        check_targets(desired=state, provision_dir=settings.provision)
    count = len(state.resources)
    click.echo(f"{settings.desired}: {count} resource{'s' if count != 1 else ''}, valid.")


def _options(*options: Callable[..., Any]) -> Callable[..., Any]:
    """Several click options as one decorator, in the order given."""
    def apply_all(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return apply_all


_plan_options = _options(
    click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Plan format."),
    click.option("--target", "targets", multiple=True, metavar="ID", help="Limit to this resource id (repeatable)."),
    click.option("--allow-mass-delete", is_flag=True,
                 help="Allow a plan that deletes every live resource or more than max(10, 25%)."),
)


@main.command()
@_plan_options
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when no changes, 1 on error, 2 when there are changes or retries/jobs pending.")
@click.pass_obj
@_guarded
def plan(settings: Settings, output: str, targets: tuple[str, ...], allow_mass_delete: bool,
         detailed_exitcode: bool) -> None:
    """Show what apply would change, without changing anything."""
    _show_plan(settings=settings, output=output, targets=targets, allow_mass_delete=allow_mass_delete,
               detailed_exitcode=detailed_exitcode)


def _show_plan(*, settings: Settings, output: str, targets: tuple[str, ...], allow_mass_delete: bool,
               detailed_exitcode: bool) -> None:
    view = _plan_view(settings=settings, targets=targets, allow_mass_delete=allow_mass_delete)
    from .engine import api_declared
    from .render import render_json, render_text

    api = api_declared(view.desired)
    text = render_json(view.plan, api=api) if output == "json" else render_text(view.plan, colour=_colour(), api=api)
    click.echo(text, nl=False)
    if view.plan.refusal:
        sys.exit(1)
    if detailed_exitcode and (view.plan.has_changes or view.plan.pending):
        sys.exit(2)


def _plan_view(*, settings: Settings, targets: tuple[str, ...], allow_mass_delete: bool):
    from .engine import make_plan
    from .models import utcnow
    from .plan import PlanPolicy

    store = _read_store(settings)
    observed = store.load_observed() if store else {}
    in_flight = store.in_flight() if store else set()
    return make_plan(desired_dir=settings.desired, observed=observed, in_flight=in_flight, now=utcnow(),
                     policy=PlanPolicy(allow_mass_delete=allow_mass_delete), targets=targets,
                     api=store.api_desired() if store else None, settle=settings.settle,
                     provision_dir=settings.provision)


def _refuse_while_daemon_runs(*, settings: Settings, command: str) -> None:
    """A missing database has no daemon; an existing one is asked, then closed again."""
    from .coordination import refuse_while_daemon_runs

    store = _read_store(settings)
    if store is None:
        return
    try:
        refuse_while_daemon_runs(store=store, command=command)
    finally:
        store.close()


def _read_store(settings: Settings) -> Any:
    """The store for read-only commands: a missing database reads as an empty fleet, and is not created."""
    from .store import exists, open_store

    if not exists(settings.db):
        return None
    return open_store(url=settings.db, create=False)


# How scripts run: shared by apply, destroy and the daemon.
_run_options = _options(
    click.option("--parallelism", "-p", type=click.IntRange(1, 1000), default=10, show_default=True,
                 help="How many scripts run at once."),
    click.option("--timeout", type=click.FloatRange(min=0.1), default=900.0, show_default=True,
                 help="Seconds before a script is stopped (TERM, grace, KILL); "
                      "provision/<target>/target.yaml may set its own."),
    click.option("--retry-base", type=click.FloatRange(min=0.0), default=5.0, show_default=True,
                 help="Backoff after a first failure: up to this many seconds (full jitter), doubling."),
    click.option("--retry-cap", type=click.FloatRange(min=0.0), default=900.0, show_default=True,
                 help="Longest backoff between attempts, in seconds."),
)
_apply_options = _options(
    click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal)."),
    _run_options,
)


@main.command()
@_plan_options
@_apply_options
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `reconciler plan`).")
@click.option("--detailed-exitcode", is_flag=True, help="With --dry-run: exit 2 when there are changes.")
@click.pass_obj
@_guarded
def apply(settings: Settings, output: str, targets: tuple[str, ...], allow_mass_delete: bool, yes: bool,
          parallelism: int, timeout: float, retry_base: float, retry_cap: float, dry_run: bool,
          detailed_exitcode: bool) -> None:
    """Close the gap: run provision/teardown scripts until observed matches desired."""
    if dry_run:
        _show_plan(settings=settings, output=output, targets=targets, allow_mass_delete=allow_mass_delete,
                   detailed_exitcode=detailed_exitcode)
        return
    from .apply import ApplyOptions, run_apply
    from .retry import RetryPolicy

    options = ApplyOptions(targets=targets, allow_mass_delete=allow_mass_delete, yes=yes, parallelism=parallelism,
                           timeout=timeout, retry=RetryPolicy(base=retry_base, cap=retry_cap), output=output,
                           colour=_colour())
    sys.exit(run_apply(settings=settings, options=options))


@main.command()
@click.option("--target", "targets", multiple=True, metavar="ID", help="Limit to this resource id (repeatable).")
@_apply_options
@click.pass_obj
@_guarded
def destroy(settings: Settings, targets: tuple[str, ...], yes: bool, parallelism: int, timeout: float,
            retry_base: float, retry_cap: float) -> None:
    """Tear down every resource (or --target ones) as if desired/ were empty; protected ones are kept.

    Refused while a daemon holds the database: its next pass would create everything again.
    """
    from .apply import ApplyOptions, run_apply
    from .retry import RetryPolicy

    _refuse_while_daemon_runs(settings=settings, command="destroy")

    options = ApplyOptions(targets=targets, allow_mass_delete=True, yes=yes, parallelism=parallelism,
                           timeout=timeout, retry=RetryPolicy(base=retry_base, cap=retry_cap), output="text",
                           colour=_colour(), destroy=True)
    sys.exit(run_apply(settings=settings, options=options))


@main.command()
@click.argument("resource_id", required=False)
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@click.pass_obj
@_guarded
def status(settings: Settings, resource_id: str | None, output: str) -> None:
    """Show observed resources (all, or one with its latest events)."""
    from . import status as show

    store = _read_store(settings)
    if resource_id:
        click.echo(show.one(store=store, resource_id=resource_id, output=output), nl=False)
    else:
        if output == "text":
            click.echo(show.leader_line(store=store))
        click.echo(show.table(store=store, output=output), nl=False)


@main.command()
@click.argument("resource_id")
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@click.pass_obj
@_guarded
def history(settings: Settings, resource_id: str, output: str) -> None:
    """Print the full event history of one resource."""
    from . import status as show

    click.echo(show.history(store=_read_store(settings), resource_id=resource_id, output=output), nl=False)


@main.command()
@click.option("--resync", type=click.FloatRange(min=0.5), default=60.0, show_default=True,
              help="Seconds between periodic full passes (jittered by 10%).")
@click.option("--drift-interval", type=click.FloatRange(min=0.5), default=300.0, show_default=True,
              help="Seconds between health-check passes over every URL (jittered by 10%).")
@click.option("--unhealthy-after", type=click.IntRange(min=1), default=3, show_default=True,
              help="Failed checks in a row before a resource is marked unhealthy.")
@click.option("--self-heal", is_flag=True, help="Re-provision unhealthy resources (off by default, as in Argo CD).")
@click.option("--check-concurrency", type=click.IntRange(min=1), default=100, show_default=True,
              help="Health checks in flight at once.")
@click.option("--check-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds before one health check counts as failed.")
@click.option("--stop-grace", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
              help="On SIGTERM, seconds running scripts get to finish before they are stopped and re-queued.")
@_run_options
@click.option("--allow-mass-delete", is_flag=True,
              help="Allow passes that delete every live resource or more than max(10, 25%).")
@click.option("--api", "api", default="127.0.0.1:7878", show_default=True, metavar="HOST:PORT",
              envvar="RECONCILER_API", help="Serve the HTTP API here [env: RECONCILER_API].")
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.option("--settle", type=click.FloatRange(0.0, 60.0), default=0.15, show_default=True,
              envvar="RECONCILER_SETTLE", metavar="SECONDS",
              help="A changed desired file counts once unchanged this long (a file renamed into place "
                   "counts at once); a vanished one is torn down only after this long [env: RECONCILER_SETTLE].")
@click.option("--api-token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              envvar="RECONCILER_API_TOKEN_FILE",
              help="File holding the bearer token that POST/DELETE require; needed to listen beyond loopback.")
@click.option("--busy-timeout", type=click.FloatRange(min=0.05), default=30.0, show_default=True,
              envvar="RECONCILER_BUSY_TIMEOUT",
              help="SQLite: seconds a write waits for another process's lock before the daemon backs off and "
                   "retries (/health then says degraded) [env: RECONCILER_BUSY_TIMEOUT].")
@click.option("--lease-seconds", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              envvar="RECONCILER_LEASE_SECONDS",
              help="A job's lease, renewed every min(a third of it, 5 s) while its script runs; a database "
                   "outage shorter than the lease less that interval re-runs nothing [env: RECONCILER_LEASE_SECONDS].")
@click.option("--lock-ttl", type=click.FloatRange(min=1.0), default=15.0, show_default=True,
              envvar="RECONCILER_LOCK_TTL",
              help="SQLite: the single-daemon lock lapses this long after its last renewal; claiming pauses a "
                   "third of it before [env: RECONCILER_LOCK_TTL].")
@click.option("--leader-ttl", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              envvar="RECONCILER_LEADER_TTL",
              help="PostgreSQL: the leader lease lapses this long after its last renewal; a leader that cannot "
                   "renew steps down a third of it before [env: RECONCILER_LEADER_TTL].")
@click.pass_obj
@_guarded
def daemon(settings: Settings, resync: float, drift_interval: float, unhealthy_after: int, self_heal: bool,
           check_concurrency: int, check_timeout: float, stop_grace: float, parallelism: int, timeout: float,
           retry_base: float, retry_cap: float, allow_mass_delete: bool, api: str, no_api: bool,
           settle: float, api_token_file: Path | None, busy_timeout: float, lease_seconds: float, lock_ttl: float,
           leader_ttl: float) -> None:
    """Run the controller: react to file saves, resync, health-check, and work the queue (for systemd)."""
    from .daemon import DaemonOptions, run_daemon
    from .retry import RetryPolicy

    options = DaemonOptions(
        db=settings.db, desired=settings.desired, provision=settings.provision, work_dir=settings.work_dir,
        resync=resync, drift_interval=drift_interval, unhealthy_after=unhealthy_after,
        check_concurrency=check_concurrency, check_timeout=check_timeout, self_heal=self_heal,
        parallelism=parallelism, timeout=timeout, stop_grace=stop_grace, allow_mass_delete=allow_mass_delete,
        retry=RetryPolicy(base=retry_base, cap=retry_cap), api=None if no_api else api,
        api_token_file=api_token_file, busy_timeout=busy_timeout, lease_seconds=lease_seconds, lock_ttl=lock_ttl,
        leader_ttl=leader_ttl, settle=settle,
    )
    sys.exit(run_daemon(options=options))


@main.command()
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True,
              help="Health checks in flight at once.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds before one check counts as failed.")
@click.option("--unhealthy-after", type=click.IntRange(min=1), default=3, show_default=True,
              help="Failed checks in a row before a resource is marked unhealthy.")
@click.pass_obj
@_guarded
def check(settings: Settings, concurrency: int, timeout: float, unhealthy_after: int) -> None:
    """Health-check every active resource's URL now, record it, and print a summary (exit 1 if any failed)."""
    import asyncio

    from .daemon import run_drift_pass
    from .store import open_store
    from .terminal import printable

    store = open_store(url=settings.db)
    report = asyncio.run(run_drift_pass(store=store, concurrency=concurrency, timeout=timeout,
                                        unhealthy_after=unhealthy_after))
    for failure in sorted(report.failures, key=lambda f: f.resource_id):
        click.echo(printable(f"✗ {failure.resource_id}: {failure.error} ({failure.url})"))
    for resource_id in report.turned_unhealthy:
        click.echo(f"! {resource_id} is now unhealthy")
    counts = report.summary()
    click.echo(f"Checked {counts['checked']}: {counts['healthy']} healthy, {counts['failed']} failed, "
               f"{counts['turned_unhealthy']} turned unhealthy.")
    if report.failures:  # any failed check of this run, whatever --unhealthy-after says about the state
        sys.exit(1)


@main.command("export")
@click.pass_obj
@_guarded
def export_(settings: Settings) -> None:
    """Write every row (resources, jobs, events, API-declared specs) to stdout as JSON."""
    from .portable import export_document
    from .store import open_store

    store = open_store(url=settings.db, create=False)
    click.echo(json.dumps(export_document(store=store), separators=(",", ":")))


@main.command("import")
@click.argument("source", type=click.File("r"))
@click.option("--replace", is_flag=True,
              help="Overwrite a database that already holds rows (refused while a daemon runs on it).")
@click.pass_obj
@_guarded
def import_(settings: Settings, source: Any, replace: bool) -> None:
    """Load an export (SOURCE, or - for stdin) into the --db store; refuses a non-empty one unless --replace.

    --replace is refused while a daemon holds the database.
    """
    from .portable import import_document
    from .store import open_store, redact

    store = open_store(url=settings.db)
    if replace:
        from .coordination import refuse_while_daemon_runs

        refuse_while_daemon_runs(store=store, command="import --replace")
    counts = import_document(store=store, text=source.read(), name=source.name, replace=replace)
    summary = ", ".join(f"{count} {table}" for table, count in counts.items())
    click.echo(f"Imported into {redact(settings.db)}: {summary}.")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the resource format (for editors' YAML language server)."""
    from .models import ResourceSpec

    document = ResourceSpec.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "reconciler resource"
    click.echo(json.dumps(document, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
