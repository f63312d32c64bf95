"""The pure parts of the audit trail: actor formats, who a planned change is attributed to, the dates
`audit` takes, and that only retention and a restore may delete events (a scan of every SQL string)."""

from __future__ import annotations

import ast
import getpass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.actor import Attribution, api_actor, cli_actor, daemon_actor
from reconciler.audit import parse_moment
from reconciler.errors import ReconcilerError
from reconciler.liveness import HOST
from reconciler.models import Action
from reconciler.plan import Change, Reason

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
GIT = "git:0123456789ab Ada <ada@example.com>"


def test_actor_formats():
    assert cli_actor() == f"cli:{getpass.getuser()}@{HOST}"
    assert daemon_actor() == f"daemon:{HOST}"
    assert api_actor("admin") == "api:admin" and api_actor("team-a") == "api:team-a"
    assert api_actor(None) == "api:local"


def change(reason: Reason, source: str = "file") -> Change:
    return Change("r1", Action.UPDATE, reason, "why", source=source)


@pytest.mark.parametrize("reason", [Reason.NEW, Reason.SPEC_CHANGED, Reason.REPLACE_FORCED, Reason.REMOVED,
                                    Reason.DECLARED_AGAIN, Reason.NOT_CREATED])
def test_a_change_a_file_caused_is_the_git_actors_with_the_runner_as_by(reason):
    attribution = Attribution(files=GIT, runner="cli:ada@box")
    assert attribution.actor(change(reason)) == GIT
    assert attribution.details(change(reason)) == {"by": "cli:ada@box"}


@pytest.mark.parametrize("reason", [Reason.RETRY, Reason.SELF_HEAL, Reason.NOT_SETTLED])
def test_retries_self_heal_and_re_provisioning_are_the_runners_own(reason):
    attribution = Attribution(files=GIT, runner="daemon:h1")
    assert attribution.actor(change(reason)) == "daemon:h1" and attribution.details(change(reason)) is None


def test_a_pass_changing_an_api_resource_is_the_runners():
    assert Attribution(files=GIT, runner="daemon:h1").actor(change(Reason.NEW, source="api")) == "daemon:h1"


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-31", "2026-01-31T00:00:00.000000Z"),
    ("2026-01-31T12:30:00Z", "2026-01-31T12:30:00.000000Z"),
    ("2026-01-31T12:30:00+02:00", "2026-01-31T10:30:00.000000Z"),
    ("2026-01-31T12:30:00", "2026-01-31T12:30:00.000000Z"),  # no zone: UTC, as stored
    ("90m", "2026-03-10T10:30:00.000000Z"), ("12h", "2026-03-10T00:00:00.000000Z"),
    ("7d", "2026-03-03T12:00:00.000000Z"), ("2w", "2026-02-24T12:00:00.000000Z"),
])
def test_dates_and_durations(text, expected):
    assert parse_moment(text, option="--since", now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "2026-13-01", "", "-3d", "3y"])
def test_a_bad_date_names_the_option_and_the_value(text):
    with pytest.raises(ReconcilerError, match=r"^--before '.*': not a date"):
        parse_moment(text, option="--before", now=NOW)


# --- events are append-only: the only SQL that deletes them is retention and a restore -------------

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
ALLOWED_DELETERS = {"prune_events", "import_rows"}  # audit prune; import --replace (records itself)


def _deleting_functions() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "DELETE FROM" in str(
                        node.value).upper():
                    text = node.value.upper()
                    if "EVENTS" in text or text.strip().endswith("FROM"):  # or a table named at run time
                        found.add((path.name, func.name))
    return found


def test_only_retention_and_a_restore_delete_events():
    deleting = _deleting_functions()
    assert {name for _file, name in deleting} == ALLOWED_DELETERS, deleting
