"""Governance: policy.yaml (quotas, allowed values, change limits) checked the same way everywhere.

`model` holds what a policy says, `load` reads and validates policy.yaml, `evaluate` is the one pure
evaluation (desired + observed + plan → `Verdict`) and what a verdict does to a plan (`held_plan` for
the daemon, `refused_plan` for the CLI). `plan_fleet` in engine.py calls it for every path.
"""

from .evaluate import evaluate, held_plan, refused_plan
from .load import POLICY_ENV, POLICY_FILE, PolicyError, default_policy_path, find_policy, load_policy, parse_policy
from .model import (
    Governance,
    Held,
    Mode,
    Place,
    Policy,
    PolicyWarning,
    Rule,
    Usage,
    Verdict,
    Violation,
)

__all__ = ["POLICY_ENV", "POLICY_FILE", "Governance", "Held", "Mode", "Place", "Policy", "PolicyError",
           "PolicyWarning", "Rule", "Usage", "Verdict", "Violation", "default_policy_path", "evaluate", "find_policy",
           "held_plan", "load_policy", "parse_policy", "refused_plan"]
