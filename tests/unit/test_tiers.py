"""The test tiers stay tiers: every test file sits in tests/unit, tests/integration or tests/e2e, and the
unit tier runs nothing out of process (no CLI or daemon subprocess, no PostgreSQL), so `make test-unit`
stays a matter of seconds. README.md ("Development") says what goes where.
"""

from __future__ import annotations

import re

from tests.support import ROOT

TESTS = ROOT / "tests"
TIERS = ("unit", "integration", "e2e")
# what only the integration and e2e tiers may use: the CLI/daemon as processes, the PostgreSQL fixtures
OUT_OF_PROCESS = re.compile(r"\b(run_cli|spawn_cli|start_daemon|start_api_daemon|reconciler_argv|pg_url|"
                            r"postgres_server|daemons)\b")


def test_every_test_file_sits_in_a_tier():
    stray = sorted(str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py")
                   if path.relative_to(TESTS).parts[0] not in TIERS)
    assert stray == [], f"move these into tests/unit, tests/integration or tests/e2e: {stray}"


def test_the_unit_tier_starts_no_cli_daemon_or_postgres():
    offenders = {path.name: sorted(set(OUT_OF_PROCESS.findall(path.read_text())))
                 for path in sorted((TESTS / "unit").glob("test_*.py")) if path.name != "test_tiers.py"}
    assert {name: found for name, found in offenders.items() if found} == {}
