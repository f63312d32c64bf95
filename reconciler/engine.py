"""One reconcile pass and the workers that carry it out: load → plan → enqueue → claim → run → record.

This is the only module that combines the store with side effects. Everything it decides is
decided elsewhere (the plan, the retry policy); it only moves data between them and the scripts.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

from .models import ObservedResource
from .plan import Plan, PlanPolicy, compute_plan
from .spec import DesiredState, load_desired


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan together with the desired state it was made from."""

    desired: DesiredState
    observed: dict[str, ObservedResource]
    plan: Plan


def make_plan(
    *, desired_dir: Path, observed: dict[str, ObservedResource], in_flight: Iterable[str], now: datetime,
    policy: PlanPolicy, targets: Iterable[str] = (),
) -> PlanView:
    """Load desired/ and plan against `observed`; `targets` (ids) narrows the plan to those resources."""
    desired = load_desired(directory=desired_dir)
    plan = compute_plan(desired.resources, observed, now=now, in_flight=in_flight, policy=policy, targets=targets)
    return PlanView(desired=desired, observed=observed, plan=plan)


def desired_commit(*, directory: Path) -> str | None:
    """The git commit of the desired directory, recorded with every event; None outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
