"""Secrets and terminals (issue 11, item 14): database passwords redacted in every spelling, and
control characters from scripts, API callers and files escaped before they reach a terminal.
"""

from __future__ import annotations

import json

import pytest

from reconciler.terminal import has_control
from tests.support import make_project, run_cli, wait_for, write_resources


@pytest.mark.parametrize("url", [
    "postgresql://app:hun%zzter2@127.0.0.1:1/fleet",  # libpq quotes the token it cannot decode
    "postgresql://app:hunter2@[::1/fleet",  # … or the whole URI
    "postgresql://127.0.0.1:1/fleet?password=hunter2%",
    "postgresql://:hunter2@127.0.0.1:1/fleet",
])
def test_a_bad_database_url_never_prints_its_password(url, tmp_path):
    done = run_cli(tmp_path, "status", RECONCILER_DB=url)
    assert done.returncode == 1 and "Error: cannot use database" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr and "zzter" not in done.stderr and "hun%" not in done.stderr


HOSTILE_PROVISION = """#!/usr/bin/env bash
printf 'ready at http://127.0.0.1:9/%s\\033[1A\\033[2K\\rforged-row  active  healthy\\n' "$RESOURCE_ID"
"""


def raw_controls(text: str) -> list[str]:
    return sorted({repr(ch) for ch in text if has_control(ch) and ch != "\n"})


def test_a_url_with_control_characters_is_refused_and_never_printed_raw(tmp_path):
    project = make_project(tmp_path, provision=HOSTILE_PROVISION)
    write_resources(project, {"evil": {}})
    done = run_cli(project, "apply", "--yes")
    assert done.returncode == 1
    assert "control characters" in done.stdout + done.stderr
    assert raw_controls(done.stdout + done.stderr) == []
    rows = json.loads(run_cli(project, "status", "-o", "json").stdout)
    assert rows[0]["status"] == "errored" and rows[0]["url"] is None
    for args in (("status",), ("status", "evil"), ("history", "evil")):
        shown = run_cli(project, *args)
        assert shown.returncode == 0 and raw_controls(shown.stdout) == [], (args, shown.stdout)
    assert "\\x1b[1A" in run_cli(project, "status", "evil").stdout  # escaped, still readable


def test_api_fields_with_control_characters_reach_the_terminal_escaped(tmp_path, daemons):
    from tests.e2e.test_api import start_api_daemon

    project = make_project(tmp_path)
    write_resources(project, {"from-file": {"params": {"note": "\u009b2J\x7f"}}})
    planned = run_cli(project, "plan")
    assert raw_controls(planned.stdout) == [] and "\\x9b2J" in planned.stdout
    _, client = start_api_daemon(project, daemons)
    spec = {"resource_id": "api-evil", "owner": "team\x1b]0;pwned\x07", "region": "eu\x1b[2K\rforged",
            "deploy_ref": "v1", "params": {"note": "\x1b[31mred\x9b"}}
    assert client.call("POST", "/provisions", spec)[0] == 202
    wait_for(lambda: client.call("GET", "/provisions/api-evil")[1].get("status") == "active", what="active")
    for args in (("status",), ("status", "api-evil"), ("history", "api-evil")):
        shown = run_cli(project, *args)
        assert shown.returncode == 0 and raw_controls(shown.stdout) == [], (args, shown.stdout)
    assert "team\\x1b]0;pwned\\x07" in run_cli(project, "status").stdout
