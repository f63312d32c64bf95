"""The `plan` / `apply --dry-run` path without a policy does not import the policy (benchmark P1).

Each import of `reconciler.policy.model` and its neighbours costs start-up time on every `plan` of a fleet
that has no policy.yaml; they are imported only when a policy (or an override) is in play. A fresh
interpreter is needed to see sys.modules as a command sees it, so each check runs in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import ROOT

LAZY = ("reconciler.policy", "reconciler.policy.model", "reconciler.policyrun", "reconciler.actor")

PLAN_IN_PROCESS = textwrap.dedent("""
    import contextlib, io, sys
    from reconciler.cli import main
    argv = sys.argv[1:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv, standalone_mode=False)
        except SystemExit:
            pass
    assert "acme-prod" in out.getvalue(), out.getvalue()
    print(sorted(name for name in sys.modules if name in {lazy!r}))
""")


def _run(code: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _project(tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "a.yaml").write_text("resource_id: acme-prod\nowner: acme\nregion: eu-west-1\n"
                                    "runtime_target: local\ndeploy_ref: v1\n")
    return desired


def test_importing_the_cli_imports_no_policy(tmp_path):
    code = f"import sys, reconciler.cli; print(sorted(n for n in sys.modules if n in {LAZY!r}))"
    assert _run(code, cwd=tmp_path) == "[]"


def test_plan_and_dry_run_without_a_policy_import_no_policy(tmp_path):
    desired = _project(tmp_path)
    code = PLAN_IN_PROCESS.format(lazy=LAZY)
    common = ("--desired", str(desired), "--db", str(tmp_path / "none.db"))
    assert _run(code, "plan", "-o", "json", *common, cwd=tmp_path) == "[]"
    assert _run(code, "apply", "--dry-run", *common, cwd=tmp_path) == "[]"
    assert not (tmp_path / "none.db").exists()


def test_a_policy_file_beside_desired_is_still_found(tmp_path):
    desired = _project(tmp_path)
    (tmp_path / "policy.yaml").write_text("quotas:\n  total: 100\n")
    code = PLAN_IN_PROCESS.format(lazy=LAZY)
    assert "reconciler.policy.model" in _run(code, "plan", "-o", "json", "--desired", str(desired),
                                             "--db", str(tmp_path / "none.db"), cwd=tmp_path)
