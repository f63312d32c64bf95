"""The `reconciler` command line: argument parsing and exit codes only; the work happens below.

Exit codes follow Terraform: 0 success, 1 error (bad input, a usage error, failed job, refused plan), and
with `--detailed-exitcode` 2 when the plan has changes or retries pending. Bad input never shows a
traceback; when stderr carries JSON logs, errors are JSON lines too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from .errors import ReconcilerError, SpecError

if TYPE_CHECKING:  # the command line imports what a command needs when it runs (a fast --help)
    from .options import ApiOptions, CheckOptions, LeaseOptions, LoopOptions, PlanOptions, RunOptions
    from .store.base import SQLStore
    from .views import View

OUTPUT = click.Choice(["text", "json"])


@dataclass(frozen=True, slots=True)
class Settings:
    desired: Path
    db: str
    provision: Path
    work_dir: Path
    settle: float = 0.15  # RECONCILER_SETTLE: seconds a changed desired file must stay unchanged
    policy: Path | None = None  # --policy / RECONCILER_POLICY; None: policy.yaml beside desired/, if there

    def given(self, **here: Any) -> Settings:
        """These settings with the ones given after the subcommand (not None) in their place: those win."""
        if here.get("work_dir") is not None:
            here["work_dir"] = here["work_dir"].absolute()
        return replace(self, **{name: value for name, value in here.items() if value is not None})


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
            where = "the policy file" if type(exc).__name__ == "PolicyError" else "the desired state"
            _fail(f"{count} problem{'s' if count != 1 else ''} in {where}; nothing was changed")
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
        exc.exit_code = 1  # type: ignore[misc]  # click declares it on the class; an instance may differ
        raise


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _env_option(*decls: str, env: str, text: str, **kwargs: Any) -> Callable[[Any], Any]:
    """An option an environment variable may set too; its help names the variable, its default is shown."""
    return click.option(*decls, show_default=True, envvar=env, help=f"{text} [env: {env}].", **kwargs)


_SETTINGS = (
    ("--desired", "desired", dict(type=click.Path(path_type=Path), default="desired"), "RECONCILER_DESIRED",
     "Directory of desired-state YAML files"),
    ("--db", "db", dict(default="reconciler.db"), "RECONCILER_DB",
     "Observed-state database: a path, sqlite:///path or postgresql://…"),
    ("--provision", "provision", dict(type=click.Path(path_type=Path), default="provision"), "RECONCILER_PROVISION",
     "Directory of provision/teardown scripts"),
    ("--work-dir", "work_dir", dict(type=click.Path(path_type=Path), default=".reconciler/work"), "RECONCILER_WORK_DIR",
     "Per-resource working directories for the scripts"),
    ("--policy", "policy", dict(type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE"),
     "RECONCILER_POLICY", "Policy file (quotas, allowed values, change limits); default: policy.yaml in the "
     "directory that contains --desired, when it exists"),
)


def _main_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """The four settings before the subcommand, with defaults and environment variables."""
    for flag, name, kwargs, env, text in reversed(_SETTINGS):
        func = _env_option(flag, name, env=env, text=text, **kwargs)(func)
    return func


def _with_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """The four settings after the subcommand too (`reconciler plan --desired ./desired`, as kubectl and
    helm users type them); given in both places, the one after the subcommand wins. The command gets
    the merged Settings as its first argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        here = {name: kwargs.pop(f"{name}_here") for _flag, name, _kw, _env, _text in _SETTINGS}
        settings = cast(Settings, click.get_current_context().find_object(Settings)).given(**here)
        return func(settings, *args, **kwargs)

    wrapper.__click_params__ = list(getattr(func, "__click_params__", []))  # type: ignore[attr-defined]
    for flag, name, kwargs, _env, text in reversed(_SETTINGS):
        wrapper = click.option(flag, f"{name}_here", type=kwargs.get("type"), default=None,
                               help=f"{text} (also accepted before the subcommand; this one wins).")(wrapper)
    return wrapper


def _grouped(into: str, build: Callable[..., Any], *options: Callable[..., Any]) -> Callable[..., Any]:
    """Click options whose values reach the command as one frozen object named `into` (options.py)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return func(*args, **kwargs, **{into: build(**values)})

        wrapper.__click_params__ = list(getattr(func, "__click_params__", []))  # type: ignore[attr-defined]
        before = len(wrapper.__click_params__)  # type: ignore[attr-defined]
        for option in reversed(options):
            wrapper = option(wrapper)
        names = [param.name for param in wrapper.__click_params__[before:]]  # type: ignore[attr-defined]
        return wrapper

    return decorate


@click.group(cls=_UsageExit1, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="Example: reconciler plan --desired ./desired --db state.db")
@_main_settings
@click.version_option(package_name="reconciler")
@click.pass_context
def main(ctx: click.Context, desired: Path, db: str, provision: Path, work_dir: Path, policy: Path | None) -> None:
    """Reconcile desired/ (YAML in git) with the observed fleet by running your provisioning scripts."""
    from .settle import settle_from_env

    try:
        settle = settle_from_env()
    except ValueError as exc:
        _fail(str(exc))
    # Absolute: scripts run inside their work dir, so a relative RECONCILER_WORKDIR would nest twice.
    ctx.obj = Settings(desired=desired, db=db, provision=provision, work_dir=work_dir.absolute(), settle=settle,
                       policy=policy)




def _view(output: str) -> View:
    """The view of this command, picked once (views.py)."""
    from .views import pick_view

    return pick_view(output, colour=_colour())


def _plan_options(*, into: str = "planning") -> Callable[..., Any]:
    return _grouped(
        into, _planning,
        click.option("--target", "targets", multiple=True, metavar="ID",
                     help="Limit to this resource id (repeatable)."),
        click.option("--allow-mass-delete", is_flag=True,
                     help="Allow a plan that deletes every live resource or more than max(10, 25%) "
                          "(the override of policy rule changes.mass_delete)."),
        click.option("--replace", "replace", multiple=True, metavar="ID",
                     help="Replace this resource (teardown, then provision) although nothing changed (repeatable)."),
        *_override_options(),
    )


def _override_options() -> list[Callable[..., Any]]:
    return [click.option("--override", "overrides", multiple=True, metavar="RULE",
                         help="Let this run exceed one policy rule, by the code its violation printed "
                              "(e.g. quotas.per_owner; repeatable); needs --reason."),
            click.option("--reason", metavar="TEXT", default=None,
                         help="Why the overrides are needed: recorded with them, and the actor, in the events "
                              "of every resource they let through.")]


def _planning(*, targets: tuple[str, ...] = (), allow_mass_delete: bool = False, overrides: tuple[str, ...] = (),
              reason: str | None = None, replace: tuple[str, ...] = ()) -> PlanOptions:
    """PlanOptions from the flags; an unknown rule code lists the known ones, an override needs a reason."""
    from .options import PlanOptions

    if reason is not None and not overrides:
        raise click.UsageError("--reason goes with --override RULE")
    if not overrides:  # the policy's rule codes are imported only when an override names one
        return PlanOptions(targets=targets, allow_mass_delete=allow_mass_delete, replace=replace)
    from .policy import Rule

    codes = [str(rule) for rule in Rule]
    unknown = [name for name in overrides if name not in codes]
    if unknown:
        raise click.UsageError(f"--override {unknown[0]}: no such policy rule; the rule codes are: "
                               + ", ".join(codes))
    if not (reason or "").strip():
        raise click.UsageError("--override needs --reason TEXT: why this run may exceed the rule (it is recorded)")
    return PlanOptions(targets=targets, allow_mass_delete=allow_mass_delete,
                       overrides=frozenset(Rule(name) for name in overrides), reason=reason, replace=replace)


_output_option = click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Plan format.")


@main.command()
@_with_settings
@_guarded
def validate(settings: Settings) -> None:
    """Check desired/ (and the policy, when there is one) without touching the database (for pre-commit
    hooks and CI). Policy violations are errors (exit 1) unless the policy says `mode: warn`.

    \b
    Example:
      reconciler validate --desired ./desired --policy ./policy.yaml
    """
    from .engine import load_files
    from .policyrun import policy_in_force, validate_verdict

    provision = settings.provision if settings.provision.is_dir() else None
    state = load_files(directory=settings.desired, settle=settings.settle, provision_dir=provision)
    policy = policy_in_force(given=settings.policy, desired=settings.desired)
    count = len(state.resources)
    found = f"{settings.desired}: {count} resource{'s' if count != 1 else ''}"
    if policy is None:
        click.echo(f"{found}, valid.")
        return
    verdict = validate_verdict(policy=policy, desired=state, provision=provision)
    _policy_lines(verdict)
    blocking = len(verdict.blocking)
    if blocking:
        _fail(f"{blocking} violation{'s' if blocking != 1 else ''} of the policy in {policy.file}")
    click.echo(f"{found}, valid; policy {policy.file} ({policy.mode}): "
               f"{len(verdict.violations)} reported, {len(verdict.warnings)} warnings.")


def _policy_lines(verdict: Any) -> None:
    """Every violation and warning on stderr: `error:` blocks, `warning:` is reported only."""
    from .policy.report import verdict_lines
    from .terminal import printable

    for severity, line in verdict_lines(verdict):
        click.echo(printable(f"{'error' if severity == 'error' else 'warning'}: {line}"), err=True)


@main.command()
@_output_option
@_plan_options()
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when no changes, 1 on error, 2 when there are changes or retries/jobs pending.")
@_with_settings
@_guarded
def plan(settings: Settings, output: str, planning: PlanOptions, detailed_exitcode: bool) -> None:
    """Show what apply would change, without changing anything.

    \b
    Example:
      reconciler plan --target acme-prod -o json
    """
    _show_plan(settings=settings, view=_view(output), planning=planning, detailed_exitcode=detailed_exitcode)


def _show_plan(*, settings: Settings, view: View, planning: PlanOptions, detailed_exitcode: bool) -> None:
    from .engine import load_files, plan_fleet, read_fleet
    from .policyfile import policy_given_or_present
    from .targets import observing_targets

    store = _read_store(settings)
    fleet = read_fleet(store=store)
    desired = load_files(directory=settings.desired, settle=settings.settle, provision_dir=settings.provision)
    governance = None  # no policy and no override: nothing to govern, and the policy code is not imported
    if policy_given_or_present(given=settings.policy, desired=settings.desired) or planning.exceeding:
        from .policyrun import policy_in_force, run_governance

        policy = policy_in_force(given=settings.policy, desired=settings.desired)
        governance = run_governance(policy=policy, store=store, planning=planning, provision=settings.provision)
    planned = plan_fleet(desired=desired, fleet=fleet, policy=planning.policy(), targets=planning.targets,
                         governance=governance, replace=planning.replace,
                         observable=observing_targets(provision_dir=settings.provision))
    click.echo(view.plan(planned.plan, verdict=planned.verdict, rollout=planned.rollout), nl=False)
    if planned.plan.refusal:
        sys.exit(1)
    if detailed_exitcode and (planned.plan.has_changes or planned.plan.pending):
        sys.exit(2)


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


def _read_store(settings: Settings) -> SQLStore | None:
    """The store for read-only commands: a missing database reads as an empty fleet, and is not created."""
    from .store import exists, open_store

    if not exists(settings.db):
        return None
    return open_store(url=settings.db, create=False)


def _run_options() -> Callable[..., Any]:
    """How scripts run: shared by apply, destroy and the daemon; builds RunOptions (and its RetryPolicy)."""
    from .options import RunOptions

    return _grouped(
        "run", RunOptions.from_flags,
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


_yes_option = click.option("--yes", "-y", is_flag=True,
                           help="Do not ask for confirmation (required without a terminal).")


@main.command()
@_output_option
@_plan_options()
@_yes_option
@_run_options()
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `reconciler plan`).")
@click.option("--detailed-exitcode", is_flag=True, help="With --dry-run: exit 2 when there are changes.")
@click.option("--no-wait", is_flag=True,
              help="Start a rollout (policy.yaml's rollout:) but do not follow its waves; a daemon or a later "
                   "apply advances it.")
@_with_settings
@_guarded
def apply(settings: Settings, output: str, planning: PlanOptions, yes: bool, run: RunOptions, dry_run: bool,
          detailed_exitcode: bool, no_wait: bool) -> None:
    """Close the gap: run provision/teardown scripts until observed matches desired.

    \b
    Example:
      reconciler apply --yes --parallelism 20
    """
    if dry_run:
        _show_plan(settings=settings, view=_view(output), planning=planning, detailed_exitcode=detailed_exitcode)
        return
    _apply(settings=settings, planning=planning, run=run, yes=yes, view=_view(output), destroy=False,
           wait=not no_wait)


def _apply(*, settings: Settings, planning: PlanOptions, run: RunOptions, yes: bool, view: View,
           destroy: bool, wait: bool = True) -> NoReturn:
    from .apply import ApplyOptions, run_apply
    from .options import Mode
    from .policyrun import policy_in_force

    policy = policy_in_force(given=settings.policy, desired=settings.desired)
    options = ApplyOptions(plan=planning, run=run, view=view, yes=yes, mode=Mode.DESTROY if destroy else Mode.APPLY,
                           policy=policy, wait=wait)
    sys.exit(run_apply(settings=settings, options=options))


@main.command()
@click.option("--target", "targets", multiple=True, metavar="ID", help="Limit to this resource id (repeatable).")
@_yes_option
@_run_options()
@_grouped("exceeding", lambda *, overrides, reason: (overrides, reason), *_override_options())
@_with_settings
@_guarded
def destroy(settings: Settings, targets: tuple[str, ...], yes: bool, run: RunOptions,
            exceeding: tuple[tuple[str, ...], str | None]) -> None:
    """Tear down every resource (or --target ones) as if desired/ were empty; protected ones are kept.

    Refused while a daemon holds the database: its next pass would create everything again. The policy's
    rules on deletes hold (protected owners, changes.max_per_plan.delete); --override exceeds one.

    \b
    Example:
      reconciler destroy --target acme-staging --yes
    """
    from .views import TextView

    _refuse_while_daemon_runs(settings=settings, command="destroy")
    overrides, reason = exceeding
    planning = replace(_planning(targets=targets, allow_mass_delete=True, overrides=overrides, reason=reason),
                       mass_delete_by="destroy")
    _apply(settings=settings, planning=planning, run=run, yes=yes, view=TextView(colour=_colour()), destroy=True)


@main.command("replace")
@click.argument("resource_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--reason", metavar="TEXT", default=None,
              help="Why (shown in the plan and recorded in each resource's history).")
@_output_option
@_yes_option
@_run_options()
@_with_settings
@_guarded
def replace_(settings: Settings, resource_ids: tuple[str, ...], reason: str | None, output: str, yes: bool,
             run: RunOptions) -> None:
    """Tear down and provision these resources again although nothing changed (a broken tenant, a rotated
    credential): `apply --target ID --replace ID` for each ID, one job per resource.

    \b
    Example:
      reconciler replace acme-prod --reason "rotated its credential" --yes
    """
    from .options import PlanOptions

    _apply(settings=settings, planning=PlanOptions(targets=resource_ids, replace=resource_ids, replace_reason=reason),
           run=run, yes=yes, view=_view(output), destroy=False)


@main.command()
@click.argument("resource_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded in the resource's history).")
@click.option("--force", is_flag=True,
              help="Also forget ids still declared: the plan then keeps them unmanaged (never created again) "
                   "until they are adopted again or removed from desired/.")
@_yes_option
@_with_settings
@_guarded
def forget(settings: Settings, resource_ids: tuple[str, ...], reason: str, force: bool, yes: bool) -> None:
    """Drop resources from management WITHOUT teardown (handed to another system); their rows become
    `forgotten` and keep their history. Refused while declared (unless --force) or while a job is open.

    \b
    Example:
      reconciler forget acme-legacy --reason "moved to team X's tooling" --yes
    """
    from .actor import cli_actor
    from .lifecycle import Operator
    from .lifecycle import forget as forget_resources

    sys.exit(forget_resources(settings=settings, resource_ids=resource_ids, force=force, yes=yes,
                              operator=Operator(actor=cli_actor(), reason=reason)))


@main.command()
@click.argument("resource_id", required=False)
@click.option("--output", "-o", type=click.Choice(["text", "wide", "json", "yaml"]), default="text",
              show_default=True, help="Output format; wide adds target, region, url, last check and attempts.")
@click.option("--out-of-sync", is_flag=True, help="Only the resources that are not in sync (READY not True).")
@click.option("--all", "show_all", is_flag=True,
              help="Also show deleted resources (tombstones) in the table; -o json and yaml always list them.")
@_with_settings
@_guarded
def status(settings: Settings, resource_id: str | None, output: str, out_of_sync: bool, show_all: bool) -> None:
    """Show observed resources: READY, AGE and why each one is not in sync (all, or one with its events).

    A header says whether desired/ loads and, when a daemon holds the database, its last pass.

    \b
    Example:
      reconciler status --out-of-sync
      reconciler status acme-prod -o yaml
    """
    from . import status as read
    from .models import utcnow
    from .survey import Scope, survey

    store, view = _read_store(settings), _view(output)
    # JSON and YAML keep every row, tombstones too, as JSON always did (its rows are only ever added to)
    every = show_all or bool(resource_id) or output in ("json", "yaml")
    scope = Scope(out_of_sync=out_of_sync and not resource_id, show_all=every)
    provision = settings.provision if settings.provision.is_dir() else None  # as `validate`: scripts may be elsewhere
    fleet = survey(store=store, desired_dir=settings.desired, provision_dir=provision, settle=settings.settle,
                   now=utcnow(), scope=scope)
    if resource_id:
        row = read.resource(store=store, resource_id=resource_id)
        assert store is not None, "read.resource refuses a missing database"
        line = next((line for line in fleet.lines if line.row.resource_id == resource_id), None)
        click.echo(view.resource(row=row, events=store.events(resource_id, limit=10), line=line), nl=False)
        return
    click.echo(view.fleet(status=fleet), nl=False)


@main.command()
@click.argument("resource_id")
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@_with_settings
@_guarded
def history(settings: Settings, resource_id: str, output: str) -> None:
    """Print the full event history of one resource.

    \b
    Example:
      reconciler history acme-prod
    """
    from . import status as read

    store = _read_store(settings)
    read.resource(store=store, resource_id=resource_id)
    assert store is not None, "read.resource refuses a missing database"
    click.echo(_view(output).history(events=store.events(resource_id)), nl=False)


@main.group(cls=_UsageExit1, invoke_without_command=True)
@click.option("--since", metavar="DATE|DURATION",
              help="Only events at or after this: 2026-01-31, an ISO-8601 time, or back from now (90m, 12h, 7d).")
@click.option("--actor", metavar="TEXT", help="Only events whose actor contains TEXT (any case), e.g. cli:ada.")
@click.option("--owner", metavar="OWNER", help="Only events of this owner's resources.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Show the newest LIMIT events (oldest first).")
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@_with_settings
@_guarded
def audit(settings: Settings, since: str | None, actor: str | None, owner: str | None, limit: int,
          output: str) -> None:
    """List the fleet's events across resources, newest last, each with its actor (who caused it).

    Events are append-only; `audit prune` is the one way to retire old ones (to an archive).

    \b
    Example:
      reconciler audit --since 7d --owner acme --actor git:
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    from .audit import list_events, parse_moment
    from .models import utcnow

    moment = parse_moment(since, option="--since", now=utcnow()) if since is not None else None
    events = list_events(store=_read_store(settings), since=moment, actor=actor, owner=owner, limit=limit)
    click.echo(_view(output).audit(events=events), nl=False)


@audit.command("prune")
@click.option("--before", required=True, metavar="DATE|DURATION",
              help="Prune events older than this: 2026-01-31, an ISO-8601 time, or back from now (90d).")
@click.option("--archive", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New JSON file the pruned events are written to first (never overwritten).")
@_with_settings
@_guarded
def audit_prune(settings: Settings, before: str, archive: Path) -> None:
    """Retire events older than --before: archive them to a new JSON file, then delete them in one
    transaction and record the prune (with who ran it) as an event of its own.

    \b
    Example:
      reconciler audit prune --before 180d --archive events-2026-h1.json
    """
    from .actor import cli_actor
    from .audit import parse_moment, prune
    from .models import utcnow
    from .store import open_store

    now = utcnow()
    moment = parse_moment(before, option="--before", now=now)
    store = open_store(url=settings.db, create=False)
    done = prune(store=store, before=moment, archive=archive, actor=cli_actor(), now=now, kind=store.kind)
    click.echo(f"Pruned {done.count} events older than {moment}; archived to {done.archive}.")


def _check_options(*, aliases: bool = False) -> Callable[..., Any]:
    """Health checks: shared by `check` and the daemon (the same spelling in both); builds CheckOptions.

    `check` keeps its first spellings, --concurrency and --timeout, as hidden aliases."""
    from .options import CheckOptions

    def build(*, check_concurrency: int, check_timeout: float, unhealthy_after: int, concurrency: int | None = None,
              timeout: float | None = None) -> CheckOptions:
        given = click.get_current_context().get_parameter_source
        if concurrency is not None and given("check_concurrency") is click.core.ParameterSource.DEFAULT:
            check_concurrency = concurrency
        if timeout is not None and given("check_timeout") is click.core.ParameterSource.DEFAULT:
            check_timeout = timeout
        return CheckOptions(concurrency=check_concurrency, timeout=check_timeout, unhealthy_after=unhealthy_after)

    options = [
        click.option("--unhealthy-after", type=click.IntRange(min=1), default=3, show_default=True,
                     help="Failed checks in a row before a resource is marked unhealthy."),
        click.option("--check-concurrency", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Health checks in flight at once."),
        click.option("--check-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                     help="Seconds before one health check counts as failed."),
    ]
    if aliases:
        options += [click.option("--concurrency", type=click.IntRange(min=1), default=None, hidden=True),
                    click.option("--timeout", type=click.FloatRange(min=0.1), default=None, hidden=True)]
    return _grouped("checks", build, *options)


def _daemon_loop_options() -> Callable[..., Any]:
    from .options import LoopOptions

    return _grouped(
        "loop", LoopOptions,
        click.option("--resync", type=click.FloatRange(min=0.5), default=60.0, show_default=True,
                     help="Seconds between periodic full passes (jittered by 10%)."),
        click.option("--drift-interval", type=click.FloatRange(min=0.5), default=300.0, show_default=True,
                     help="Seconds between health-check passes over every URL (jittered by 10%)."),
        click.option("--self-heal", is_flag=True,
                     help="Re-provision unhealthy resources (off by default, as in Argo CD)."),
        click.option("--stop-grace", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
                     help="On SIGTERM, seconds running scripts get to finish before they are stopped and re-queued."),
        click.option("--allow-mass-delete", is_flag=True,
                     help="Allow passes that delete every live resource or more than max(10, 25%)."),
        _env_option("--settle", type=click.FloatRange(0.0, 60.0), default=0.15, metavar="SECONDS",
                    env="RECONCILER_SETTLE",
                    text="A changed desired file counts once unchanged this long (a file renamed into place "
                         "counts at once); a vanished one is torn down only after this long"),
    )


def _api_options() -> Callable[..., Any]:
    from .options import ApiOptions

    def build(*, api: str, no_api: bool, api_token_file: Path | None, api_tokens: Path | None) -> ApiOptions:
        return ApiOptions(listen=None if no_api else api, token_file=api_token_file, tokens=api_tokens)

    return _grouped(
        "serving", build,
        _env_option("--api", "api", default="127.0.0.1:7878", metavar="HOST:PORT", env="RECONCILER_API",
                    text="Serve the HTTP API here"),
        click.option("--no-api", is_flag=True, help="Do not serve the HTTP API."),
        click.option("--api-token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     envvar="RECONCILER_API_TOKEN_FILE",
                     help="File holding the admin bearer token (api:admin, scopes read and write) that POST/DELETE "
                          "require; this or --api-tokens is needed to listen beyond loopback."),
        click.option("--api-tokens", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     envvar="RECONCILER_API_TOKENS",
                     help="YAML list of scoped tokens ({name, sha256, scopes}; see `reconciler token create`), "
                          "re-read on SIGHUP. [env: RECONCILER_API_TOKENS]"),
    )


def _lease_options() -> Callable[..., Any]:
    from .options import LeaseOptions

    return _grouped(
        "leases", LeaseOptions,
        _env_option("--busy-timeout", type=click.FloatRange(min=0.05), default=30.0, env="RECONCILER_BUSY_TIMEOUT",
                    text="Seconds a store call waits (SQLite: for another process's write lock; PostgreSQL: "
                         "for a pooled connection, at most 10) before the daemon backs off and retries "
                         "(/health then says degraded)"),
        _env_option("--lease-seconds", type=click.FloatRange(min=0.5), default=30.0, env="RECONCILER_LEASE_SECONDS",
                    text="A job's lease, renewed every min(a third of it, 5 s) while its script runs; a database "
                         "outage shorter than the lease less that interval re-runs nothing"),
        _env_option("--lock-ttl", type=click.FloatRange(min=1.0), default=15.0, env="RECONCILER_LOCK_TTL",
                    text="SQLite: the single-daemon lock lapses this long after its last renewal; claiming pauses "
                         "a third of it before"),
        _env_option("--leader-ttl", type=click.FloatRange(min=1.0), default=10.0, env="RECONCILER_LEADER_TTL",
                    text="PostgreSQL: the leader lease lapses this long after its last renewal; a leader that "
                         "cannot renew steps down a third of it before"),
    )


@main.command()
@_daemon_loop_options()
@_check_options()
@_run_options()
@_api_options()
@_lease_options()
@_with_settings
@_guarded
def daemon(settings: Settings, loop: LoopOptions, checks: CheckOptions, run: RunOptions, serving: ApiOptions,
           leases: LeaseOptions) -> None:
    """Run the controller: react to file saves, resync, health-check, and work the queue (for systemd).

    \b
    Example:
      reconciler daemon --db postgresql://reconciler@db/fleet --api 127.0.0.1:7878
    """
    from .daemon import DaemonOptions, run_daemon

    options = DaemonOptions(
        db=settings.db, desired=settings.desired, provision=settings.provision, work_dir=settings.work_dir,
        resync=loop.resync, drift_interval=loop.drift_interval, unhealthy_after=checks.unhealthy_after,
        check_concurrency=checks.concurrency, check_timeout=checks.timeout, self_heal=loop.self_heal,
        parallelism=run.parallelism, timeout=run.timeout, stop_grace=loop.stop_grace,
        allow_mass_delete=loop.allow_mass_delete, retry=run.retry, api=serving.listen,
        api_token_file=serving.token_file, api_tokens=serving.tokens, busy_timeout=leases.busy_timeout,
        lease_seconds=leases.lease_seconds,
        lock_ttl=leases.lock_ttl, leader_ttl=leases.leader_ttl, settle=loop.settle, policy=settings.policy,
    )
    sys.exit(run_daemon(options=options))


@main.command()
@_check_options(aliases=True)
@_with_settings
@_guarded
def check(settings: Settings, checks: CheckOptions) -> None:
    """Health-check every active resource's URL now, record it, and print a summary (exit 1 if any failed).

    \b
    Example:
      reconciler check --check-timeout 2 --unhealthy-after 1
    """
    import asyncio

    from .actor import cli_actor
    from .drift import run_drift_pass
    from .store import open_store
    from .terminal import printable

    store = open_store(url=settings.db)
    report = asyncio.run(run_drift_pass(store=store, concurrency=checks.concurrency, timeout=checks.timeout,
                                        unhealthy_after=checks.unhealthy_after, actor=cli_actor()))
    for failure in sorted(report.failures, key=lambda f: f.resource_id):
        click.echo(printable(f"✗ {failure.resource_id}: {failure.error} ({failure.url})"))
    for resource_id in report.turned_unhealthy:
        click.echo(f"! {resource_id} is now unhealthy")
    counts = report.summary()
    click.echo(f"Checked {counts['checked']}: {counts['healthy']} healthy, {counts['failed']} failed, "
               f"{counts['turned_unhealthy']} turned unhealthy.")
    if report.failures:  # any failed check of this run, whatever --unhealthy-after says about the state
        sys.exit(1)


@main.command()
@click.argument("resource_id", required=False)
@click.option("--url", metavar="URL", help="The existing resource's URL (with ID).")
@click.option("--from", "from_file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Adopt every row of FILE in one transaction: CSV with a header, or JSON lines "
                   "(resource_id, url, optional created_at and spec fields, which must equal desired/).")
@click.option("--dry-run", is_flag=True, help="Check and show what would be adopted; write nothing.")
@click.option("--check", "check_now", is_flag=True,
              help="Health-check each adopted URL once (else the drift loop does).")
@click.option("--reason", metavar="TEXT", default=None, help="Why (recorded in each resource's history).")
@_check_options()
@_with_settings
@_guarded
def adopt(settings: Settings, resource_id: str | None, url: str | None, from_file: Path | None, dry_run: bool,
          check_now: bool, reason: str | None, checks: CheckOptions) -> None:
    """Record resources that already exist (made by running the script by hand) as active from their
    declared spec, without running provision. Every row is checked first; any bad row adopts nothing.

    \b
    Example:
      reconciler adopt acme-prod --url https://acme.example.com/
      reconciler adopt --from fleet.csv --dry-run
    """
    from .actor import cli_actor
    from .adoption import AdoptRow
    from .lifecycle import Operator, read_adoption_file
    from .lifecycle import adopt as adopt_rows

    if (from_file is None) == (resource_id is None) or (resource_id is not None) != (url is not None):
        raise click.UsageError("give either ID --url URL, or --from FILE")
    rows = read_adoption_file(path=from_file) if from_file is not None else [
        AdoptRow(0, {"resource_id": resource_id, "url": url})]
    sys.exit(adopt_rows(settings=settings, rows=rows, name=str(from_file or ""), dry_run=dry_run,
                        check=checks if check_now else None, operator=Operator(actor=cli_actor(), reason=reason)))


@main.command("export")
@_with_settings
@_guarded
def export_(settings: Settings) -> None:
    """Write every row (resources, jobs, events, API-declared specs) to stdout as JSON.

    \b
    Example:
      reconciler export --db state.db > backup.json
    """
    from .portable import export_document
    from .store import open_store

    store = open_store(url=settings.db, create=False)
    click.echo(json.dumps(export_document(store=store), separators=(",", ":")))


@main.command("import")
@click.argument("source", type=click.File("r"))
@click.option("--replace", is_flag=True,
              help="Overwrite a database that already holds rows (refused while a daemon runs on it).")
@_with_settings
@_guarded
def import_(settings: Settings, source: Any, replace: bool) -> None:
    """Load an export (SOURCE, or - for stdin) into the --db store; refuses a non-empty one unless --replace.

    --replace is refused while a daemon holds the database.

    \b
    Example:
      reconciler import --db postgresql://reconciler@db/fleet backup.json
    """
    from .actor import cli_actor
    from .portable import import_document
    from .store import open_store, redact

    store = open_store(url=settings.db)
    if replace:
        from .coordination import refuse_while_daemon_runs

        refuse_while_daemon_runs(store=store, command="import --replace")
    counts = import_document(store=store, text=source.read(), name=source.name, replace=replace,
                             actor=cli_actor())
    summary = ", ".join(f"{count} {table}" for table, count in counts.items())
    click.echo(f"Imported into {redact(settings.db)}: {summary}.")


# --- operator controls (issue 16): suspend, resume, a pass on demand --------------------------------


_ids_argument = click.argument("resource_ids", nargs=-1, metavar="[ID]...")
_all_option = click.option("--all", "fleet", is_flag=True,
                           help="The whole fleet, including resources declared later (the incident switch).")


def _operand(resource_ids: tuple[str, ...], fleet: bool, *, command: str) -> tuple[str, ...]:
    """IDs or --all, never both, never neither (a usage error, exit 1)."""
    if bool(resource_ids) == fleet:
        raise click.UsageError(f"name the resources to {command} (ID...) or pass --all, not both and not neither")
    return resource_ids


@main.command()
@_ids_argument
@_all_option
@click.option("--reason", required=True, help="Why (shown by plan and status, recorded in the audit trail).")
@click.option("--until", default=None, metavar="TIME|DURATION",
              help="Lapse by itself then: a duration (90s, 30m, 2h, 1d, 1h30m) or an ISO-8601 time with a zone.")
@_with_settings
@_guarded
def suspend(settings: Settings, resource_ids: tuple[str, ...], fleet: bool, reason: str, until: str | None) -> None:
    """Leave resources alone: no provision, teardown or self-heal by apply or the daemon (checks go on).

    Queued jobs of them are cancelled; a running script finishes. With --all the fleet is suspended:
    the daemon keeps planning (for display) and checking, and starts nothing, so `destroy` and
    `import --replace` are allowed beside it. A suspension in a resource's file (`suspend:`) is the
    reviewed way; this one is immediate.

    \b
    Example:
      reconciler suspend acme-prod --reason "INC-42: tenant migrating" --until 2h
      reconciler suspend --all --reason "INC-43: provider outage"
    """
    from . import operations
    from .actor import cli_actor

    ids = _operand(resource_ids, fleet, command="suspend")
    with _control_store(settings) as (store, daemon):
        declared = _declared(settings) if ids else operations.Declared(frozenset(), {})
        lines = operations.suspend(store=store, ids=ids, reason=reason, until=until, actor=cli_actor(),
                                   declared=declared, daemon=daemon)
    _say_lines(lines)


@main.command()
@_ids_argument
@_all_option
@click.option("--reason", default=None, help="Why (recorded in the audit trail).")
@_with_settings
@_guarded
def resume(settings: Settings, resource_ids: tuple[str, ...], fleet: bool, reason: str | None) -> None:
    """Lift suspensions set by `reconciler suspend` (exit 1 for one declared by `suspend:` in a file).

    A running daemon is asked for a pass of the resumed resources at once.

    \b
    Example:
      reconciler resume acme-prod --reason "INC-42 closed"
      reconciler resume --all
    """
    from . import operations
    from .actor import cli_actor

    ids = _operand(resource_ids, fleet, command="resume")
    with _control_store(settings) as (store, daemon):
        declared = _declared(settings) if ids else operations.Declared(frozenset(), {})
        lines = operations.resume(store=store, ids=ids, reason=reason, actor=cli_actor(),
                                  declared=declared, daemon=daemon)
    _say_lines(lines)


@main.command()
@click.argument("resource_ids", nargs=-1, metavar="[ID]...")
@click.option("--wait", is_flag=True, help="Also wait for the jobs the pass queued (and those already open).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds to wait for the daemon's answer, and with --wait for the jobs.")
@_with_settings
@_guarded
def reconcile(settings: Settings, resource_ids: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Ask the running daemon for a pass now (all resources, or these IDs), like `flux reconcile`.

    The request goes through the database, so it needs no API address or token; the daemon that
    plans (the lock holder on SQLite, the leader on PostgreSQL) answers within about a second. Exit
    0 when the pass ran (with --wait: and every job succeeded), 1 otherwise or with no daemon.

    \b
    Example:
      reconciler reconcile acme-prod --wait
      reconciler reconcile
    """
    from . import operations
    from .actor import cli_actor
    from .terminal import printable

    with _control_store(settings) as (store, daemon):
        if not daemon:
            raise ReconcilerError("no daemon holds this database, so nobody would answer: start one "
                                  "(reconciler daemon), or run `reconciler apply` to reconcile here")
        answer = operations.ask_for_pass(store=store, ids=resource_ids, actor=cli_actor(),
                                         timeout=timeout)
        if answer.error:
            raise ReconcilerError(f"the daemon's pass failed: {answer.error}")
        jobs = ", ".join(answer.job_ids) if answer.job_ids else "none"
        click.echo(f"Pass done ({answer.request_id}): {len(answer.job_ids)} job(s): {jobs}")
        for note in answer.notes:
            click.echo(printable(f"  # {note}"))
        if not wait or not answer.job_ids:
            return
        waited = operations.wait_for_jobs(store=store, job_ids=answer.job_ids, timeout=timeout,
                                          on_end=lambda job: click.echo(printable(_job_line(job))))
    if waited.timed_out:
        left = [job.job_id for job in waited.jobs if job.status.value in ("queued", "running")]
        _fail(f"{len(left)} job(s) still open after {timeout:g} s: {', '.join(left)}")
    if not waited.ok:
        sys.exit(1)


def _job_line(job: Any) -> str:
    mark = {"succeeded": "✓", "failed": "✗", "cancelled": "-"}.get(job.status.value, "?")
    return f"{mark} {job.resource_id}: {job.action} {job.status.value}" + (f": {job.error}" if job.error else "")


@contextlib.contextmanager
def _control_store(settings: Settings) -> Iterator[tuple[Any, bool]]:
    """The store of suspend/resume/reconcile (created if missing) and whether a daemon holds it."""
    from .coordination import live_daemon
    from .store import open_store

    store = open_store(url=settings.db)
    try:
        yield store, live_daemon(store=store) is not None
    finally:
        store.close()


def _declared(settings: Settings) -> Any:
    """The ids desired/ declares and the ones its files suspend; if it does not load, only the database counts."""
    from .engine import load_files
    from .operations import Declared
    from .suspensions import declared_in_files

    try:
        state = load_files(directory=settings.desired, settle=settings.settle)
    except SpecError:
        return Declared(frozenset(), {}, loaded=False)
    where = {rid: f"{source.file}:{source.line}" for rid, source in state.sources.items()}
    return Declared(frozenset(state.resources), declared_in_files(resources=state.resources, where=where))


def _say_lines(lines: list[str]) -> None:
    from .terminal import printable

    for line in lines:
        click.echo(printable(line))


@main.group(cls=_UsageExit1)
def token() -> None:
    """Make API tokens for the daemon's tokens file (--api-tokens).

    \b
    Example:
      reconciler token create team-acme --scope write:owner=acme
    """


def _scope(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Any]:
    from .scopes import parse_scope

    try:
        return [parse_scope(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True, callback=_scope, metavar="SCOPE",
              help="read, write, read:owner=OWNER or write:owner=OWNER (repeatable; write implies read).")
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
def token_create(name: str, scopes: list[Any], output: str) -> None:
    """Print a new random token once, and the tokens-file entry (its SHA-256, never the token) to add.

    Nothing is stored: keep the token where its user can read it, append the entry to the tokens file,
    then reload the daemon (SIGHUP) for it to count.

    \b
    Example:
      reconciler token create team-acme --scope write:owner=acme --scope read:owner=shared
      reconciler token create ci-reader --scope read -o json
    """
    from .tokens import NAME_PATTERN, entry_yaml, new_token

    if not NAME_PATTERN.match(name):
        raise click.BadParameter("letters, digits and . _ @ - (at most 64; the audit actor is api:<name>)",
                                 param_hint="NAME")
    secret = new_token()
    entry = entry_yaml(name=name, scopes=scopes, token=secret)
    if output == "json":
        click.echo(json.dumps({"name": name, "token": secret, "scopes": sorted(map(str, scopes)), "entry": entry}))
        return
    click.echo(f"Token for {name} (shown this once; nothing stores it):\n\n  {secret}\n\n"
               "Add this entry to the tokens file (--api-tokens), then reload the daemon (SIGHUP):\n")
    click.echo(entry, nl=False)
@main.group("policy", cls=_UsageExit1)
def policy_group() -> None:
    """Inspect policy.yaml (--policy FILE) against the fleet.

    \b
    Example:
      reconciler policy check --policy ./policy.yaml
    """


@policy_group.command("check")
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@_with_settings
@_guarded
def policy_check(settings: Settings, output: str) -> None:
    """List what the policy, enforced, would hold now, and the live resources that break it (exit 1 if any).

    Evaluates as the daemon's pass would, even for a policy in `mode: warn`, so a policy can be tried
    before it is enforced. Live resources over a quota are reported, never torn down.

    \b
    Example:
      reconciler policy check --policy ./new-policy.yaml -o json
    """
    from .engine import load_files, read_fleet
    from .errors import ReconcilerError
    from .policy import default_policy_path
    from .policyrun import check_policy, check_text, policy_in_force

    policy = policy_in_force(given=settings.policy, desired=settings.desired)
    if policy is None:
        raise ReconcilerError(f"no policy: {default_policy_path(desired=settings.desired)} does not exist "
                              "(name one with --policy FILE)")
    store = _read_store(settings)
    desired = load_files(directory=settings.desired, settle=settings.settle, provision_dir=settings.provision)
    report = check_policy(policy=policy, desired=desired, fleet=read_fleet(store=store), store=store,
                          provision=settings.provision)
    if output == "json":
        click.echo(json.dumps(report.json(), indent=2))
    else:
        from .terminal import printable_lines

        click.echo(printable_lines(check_text(report)), nl=False)
    if not report.clean:
        sys.exit(1)


@main.group("rollout", cls=_UsageExit1)
def rollout_group() -> None:
    """Follow and steer rollouts: large change sets rolled out in health-gated waves (policy.yaml's rollout:).

    \b
    Example:
      reconciler rollout status -o json
    """


@rollout_group.command("status")
@click.argument("rollout_id", required=False)
@click.option("--output", "-o", type=OUTPUT, default="text", show_default=True, help="Output format.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many of the newest rollouts to show (without ROLLOUT_ID).")
@_with_settings
@_guarded
def rollout_status(settings: Settings, rollout_id: str | None, output: str, limit: int) -> None:
    """Show rollouts per wave: done, running, failed, baking until …; halts with their reason.

    \b
    Example:
      reconciler rollout status ro-1a2b3c4d5e -o json
    """
    from .rolloutctl import status_json, status_text
    from .terminal import printable_lines

    store = _read_store(settings)
    if store is None:
        click.echo("[]" if output == "json" else "No rollouts.")
        return
    if output == "json":
        click.echo(status_json(store=store, rollout_id=rollout_id, limit=limit), nl=False)
    else:
        click.echo(printable_lines(status_text(store=store, rollout_id=rollout_id, limit=limit)), nl=False)


def _rollout_verb(settings: Settings, rollout_id: str, verb: str, *, revert: bool = False) -> None:
    from .actor import cli_actor
    from .rolloutctl import control
    from .store import open_store

    store = open_store(url=settings.db, create=False)
    click.echo(control(store=store, rollout_id=rollout_id, verb=verb, revert=revert, actor=cli_actor()))


@rollout_group.command("pause")
@click.argument("rollout_id")
@_with_settings
@_guarded
def rollout_pause(settings: Settings, rollout_id: str) -> None:
    """Start no further wave (the current one finishes and bakes); recorded with who paused it.

    \b
    Example:
      reconciler rollout pause ro-1a2b3c4d5e
    """
    _rollout_verb(settings, rollout_id, "pause")


@rollout_group.command("resume")
@click.argument("rollout_id")
@_with_settings
@_guarded
def rollout_resume(settings: Settings, rollout_id: str) -> None:
    """Let a paused rollout go on.

    \b
    Example:
      reconciler rollout resume ro-1a2b3c4d5e
    """
    _rollout_verb(settings, rollout_id, "resume")


@rollout_group.command("abort")
@click.argument("rollout_id")
@click.option("--revert", is_flag=True, help="Also put the current wave back on the recorded previous spec.")
@_with_settings
@_guarded
def rollout_abort(settings: Settings, rollout_id: str, revert: bool) -> None:
    """End a rollout: resources not reached keep their old spec (held until desired/ changes again).

    \b
    Example:
      reconciler rollout abort ro-1a2b3c4d5e --revert
    """
    _rollout_verb(settings, rollout_id, "abort", revert=revert)


@rollout_group.command("promote")
@click.argument("rollout_id")
@_with_settings
@_guarded
def rollout_promote(settings: Settings, rollout_id: str) -> None:
    """Skip the rest of the current wave's bake: the next wave starts when its jobs are done.

    \b
    Example:
      reconciler rollout promote ro-1a2b3c4d5e
    """
    _rollout_verb(settings, rollout_id, "promote")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the resource format (for editors' YAML language server).

    \b
    Example:
      reconciler schema > reconciler.schema.json
    """
    from .models import ResourceSpec

    document = ResourceSpec.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "reconciler resource"
    click.echo(json.dumps(document, indent=2))


@main.command()
@click.pass_context
def version(ctx: click.Context) -> None:
    """Print the version, as --version does.

    \b
    Example:
      reconciler version
    """
    from importlib.metadata import version as installed

    click.echo(f"{ctx.find_root().info_name}, version {installed('reconciler')}")


if __name__ == "__main__":  # pragma: no cover
    main()
