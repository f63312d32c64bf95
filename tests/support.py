"""The one helper layer of the test tiers: the real CLI and daemon as subprocesses against real scripts in
tmp_path, and what tests read back (the SQLite file, the scripts' run log, the daemon's JSON log).

Fixtures (`daemons`, `pg_url`, `postgres_server`) live in tests/conftest.py; there is no second set of helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# the checkout under test (tests/ is one level below it, whichever tier a test file sits in)
ROOT = Path(__file__).resolve().parents[1]


def reconciler_argv() -> list[str]:
    """The installed console script when there is one (as users run it), else the module."""
    script = Path(sys.executable).parent / "reconciler"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.cli"]


def cli_env(project: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: this checkout first on the path, no inherited RECONCILER_* settings
    or NO_COLOR. With a `project`, its desired/, state.db, provision/ and work/ are named (and colour is
    off); without one, the CLI uses its defaults relative to the working directory, as a user's would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") and k != "NO_COLOR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if project is not None:
        env.update({"NO_COLOR": "1", "RECONCILER_DESIRED": str(project / "desired"),
                    "RECONCILER_DB": str(project / "state.db"), "RECONCILER_PROVISION": str(project / "provision"),
                    "RECONCILER_WORK_DIR": str(project / "work"), "CONTROL": str(project / "control")})
    env.update(extra)
    return env


def run_cli(project: Path, *args: str, timeout: float = 60, bare: bool = False,
            **env: str) -> subprocess.CompletedProcess[str]:
    """`reconciler *args` in `project`; `bare`: without the project's RECONCILER_* paths (the CLI's defaults)."""
    return subprocess.run([*reconciler_argv(), *map(str, args)], cwd=project,
                          env=cli_env(None if bare else project, **env), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def spawn_cli(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*reconciler_argv(), *args], cwd=project, env=cli_env(project, **env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def write_resources(project: Path, resources: dict[str, dict], *, name: str = "fleet.yaml") -> None:
    """Write resources as YAML documents; each value holds overrides of the defaults below."""
    docs = []
    for rid, over in resources.items():
        spec = {"owner": "acme", "region": "eu-west-1", "runtime_target": "local", "deploy_ref": "v1", **over}
        lines = [f"resource_id: {rid}"] + [f"{k}: {_yaml(v)}" for k, v in spec.items()]
        docs.append("\n".join(lines) + "\n")
    (project / "desired").mkdir(parents=True, exist_ok=True)
    (project / "desired" / name).write_text("---\n".join(docs))


def _yaml(value: object) -> str:
    import json

    return json.dumps(value)


# A provision script that records every run, detects overlapping runs for one resource with a
# non-blocking flock (released by the kernel even when the run is SIGKILLed), sleeps $SLEEP and
# prints a URL. Behaviour can be steered per resource with files in $CONTROL.
RECORDING_PROVISION = textwrap.dedent("""\
    #!/usr/bin/env bash
    set -u
    log="$CONTROL/runs.log"
    exec 9>"$CONTROL/$RESOURCE_ID.lock"
    if ! flock -n 9; then echo "OVERLAP $RESOURCE_ID $RECONCILER_ACTION" >> "$log"; exit 99; fi
    echo "start $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $$" >> "$log"
    sleep "${SLEEP:-0}"
    if [ -f "$CONTROL/fail-$RESOURCE_ID" ]; then echo "boom for $RESOURCE_ID" >&2; exit 3; fi
    echo "end $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF" >> "$log"
    echo "ready at http://127.0.0.1:9/$RESOURCE_ID/$DEPLOY_REF"
""")


def make_project(root: Path, *, provision: str = RECORDING_PROVISION, teardown: str | None = None) -> Path:
    """A project directory with desired/, provision/ scripts and a control directory for them."""
    (root / "desired").mkdir(parents=True, exist_ok=True)
    (root / "control").mkdir(exist_ok=True)
    scripts = root / "provision"
    scripts.mkdir(exist_ok=True)
    teardown = teardown or provision.replace('echo "ready at http://127.0.0.1:9/$RESOURCE_ID/$DEPLOY_REF"', "")
    for name, text in (("provision.sh", provision), ("teardown.sh", teardown)):
        (scripts / name).write_text(text)
        (scripts / name).chmod(0o755)
    # scripts get a clean environment: the test scripts are steered by these two
    (scripts / "targets.yaml").write_text("pass_env: [CONTROL, SLEEP]\n")
    return root


def runs(project: Path) -> list[list[str]]:
    log = project / "control" / "runs.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def start_daemon(project: Path, *args: str, log_name: str = "daemon.log", **env: str) -> subprocess.Popen[str]:
    """A real `reconciler daemon` process; its JSON log lines go to project/<log_name>."""
    log = (project / log_name).open("a")
    if "--api" not in args:
        args = ("--no-api", *args)  # tests run in parallel with others: no fixed port
    return subprocess.Popen([*reconciler_argv(), "daemon", *args], cwd=project,
                            env=cli_env(project, RECONCILER_LOG_FORMAT="json", **env), text=True,
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def wait_for(predicate, *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test with `what` on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def db_rows(project: Path, sql: str = "SELECT * FROM resources", *args: object) -> list[dict]:
    import sqlite3

    path = project / "state.db"
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql, args)]
        except sqlite3.OperationalError:  # the daemon has not created the tables yet
            return []


def statuses(project: Path) -> dict[str, str]:
    return {row["resource_id"]: row["status"] for row in db_rows(project)}


def log_events(project: Path, log_name: str = "daemon.log") -> list[dict]:
    import json

    path = project / log_name
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def fatal_error(stderr: str) -> str | None:
    """The fatal error a command ended with: a plain `Error: …` line, or (logs in JSON, as the daemon's
    are without a terminal) a JSON line with event "error"; None when there is neither."""
    import json

    for line in stderr.splitlines():
        if line.startswith("Error: "):
            return line
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "error" and record.get("error"):
                return record["error"]
    return None


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process takes SQLite's write lock (BEGIN IMMEDIATE) and keeps it for `seconds`."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('COMMIT')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
