"""Redaction and escaping as functions: database passwords hidden in every spelling, control characters
escaped (the CLI, API and script halves are in e2e/test_terminal.py).
"""

from __future__ import annotations

import pytest

from reconciler.store import redact
from reconciler.terminal import has_control, printable, printable_lines


@pytest.mark.parametrize("given, shown", [
    ("postgresql://app:hunter2@db.example/fleet", "postgresql://app:***@db.example/fleet"),
    ("postgres://app:hunter2@db:5432/fleet?sslmode=require", "postgres://app:***@db:5432/fleet?sslmode=require"),
    ("postgresql://:hunter2@db/fleet", "postgresql://:***@db/fleet"),
    ("postgresql://app:hun%40ter2@db/fleet", "postgresql://app:***@db/fleet"),
    ("postgresql://app:p@ss@db/fleet", "postgresql://app:***@db/fleet"),
    ("postgresql://app:pa/ss@db/fleet", "postgresql://app:***@db/fleet"),
    ("postgresql://db/fleet?user=app&password=hunter2", "postgresql://db/fleet?user=app&password=***"),
    ("postgresql://db/fleet?password=hunter2&sslmode=require", "postgresql://db/fleet?password=***&sslmode=require"),
    ("postgresql://db/fleet?%70assword=hunter2", "postgresql://db/fleet?%70assword=***"),
    ("postgresql://db/fleet?sslpassword=hunter2", "postgresql://db/fleet?sslpassword=***"),
    ("host=db dbname=fleet password=hunter2 user=app", "host=db dbname=fleet password=*** user=app"),
    ("host=db password = 'hun ter\\'2' user=app", "host=db password = *** user=app"),
    ("host=db PASSWORD=hunter2", "host=db PASSWORD=***"),
    ("postgresql://app@db/fleet", "postgresql://app@db/fleet"),
    ("state.db", "state.db"),
    ("sqlite:////var/lib/reconciler/state.db", "sqlite:////var/lib/reconciler/state.db"),
])
def test_redact_hides_the_password_in_every_spelling(given, shown):
    assert redact(given) == shown
    assert "hunter2" not in redact(given) and "ter\\'2" not in redact(given)


@pytest.mark.parametrize("given, shown", [
    ("plain text", "plain text"),
    ("http://x/\x1b[2J", "http://x/\\x1b[2J"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x9b31m\x7f\x00", "\\x9b31m\\x7f\\x00"),
    ("bidi \u202eevil", "bidi \\u202eevil"),
    ("ünïcödé, 日本, non\u00a0breaking", "ünïcödé, 日本, non\u00a0breaking"),
])
def test_printable_escapes_control_characters(given, shown):
    assert printable(given) == shown
    assert has_control(given) is (given != shown)


def test_printable_lines_keeps_line_breaks_only():
    assert printable_lines("one\x1b[1A\ntwo\r\n") == "one\\x1b[1A\ntwo\\r\n"
