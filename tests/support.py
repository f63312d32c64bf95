"""Shared helpers for tests that drive the real CLI against real scripts in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def reconciler_argv() -> list[str]:
    """The installed console script when there is one (as users run it), else the module."""
    script = Path(sys.executable).parent / "reconciler"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.cli"]


def cli_env(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "RECONCILER_DESIRED": str(project / "desired"),
           "RECONCILER_DB": str(project / "state.db"), "RECONCILER_PROVISION": str(project / "provision"),
           "RECONCILER_WORK_DIR": str(project / "work"), "CONTROL": str(project / "control")}
    env.pop("RECONCILER_LOG_FORMAT", None)
    env.update(extra)
    return env


def run_cli(project: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*reconciler_argv(), *args], cwd=project, env=cli_env(project, **env), text=True,
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
    return root


def runs(project: Path) -> list[list[str]]:
    log = project / "control" / "runs.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []
