"""Where policy.yaml is, without loading it: a command on a fleet with no policy imports no policy code.

`plan` and `apply --dry-run` stat this path at start-up; the policy package (its model, loading and
evaluation) is imported only when the file exists or `--policy` / RECONCILER_POLICY names one (benchmark P1).
"""

from __future__ import annotations

from pathlib import Path

POLICY_FILE = "policy.yaml"
POLICY_ENV = "RECONCILER_POLICY"


def default_policy_path(*, desired: Path) -> Path:
    """policy.yaml in the directory that contains desired/, whatever the working directory."""
    return Path(desired).absolute().parent / POLICY_FILE


def policy_given_or_present(*, given: Path | None, desired: Path) -> bool:
    """Whether a policy may be in force: one is named (it must then exist), or policy.yaml is there."""
    return given is not None or default_policy_path(desired=desired).exists()
