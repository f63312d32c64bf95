"""The policy as the one-shot commands use it: the policy.yaml in force, the `Governance` of one run,
and what `validate` and `policy check` report.

`plan`, `apply` and `destroy` hand `plan_fleet` a Governance that refuses a plan with a blocking
violation (the CLI's mode); `policy check` evaluates as the daemon would (held and deferred, the rest
goes ahead), with the policy enforced even when it says `mode: warn`, to show what enforcing it would
hold. The evaluation itself is policy/evaluate.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .actor import cli_actor
from .engine import Fleet, PlanView, governance, plan_fleet
from .models import ObservedResource
from .options import PlanOptions
from .plan import PlanPolicy
from .policy import Governance, Mode, Policy, Verdict, Violation, evaluate, find_policy
from .policy.model import QUOTA_RULES
from .policy.report import verdict_json, violation_line
from .ports import BudgetReader
from .spec import DesiredState
from .targets import known_targets


def policy_in_force(*, given: Path | None, desired: Path) -> Policy | None:
    """--policy / RECONCILER_POLICY (must exist), else policy.yaml beside desired/ (absent: None)."""
    return find_policy(given=given, desired=desired)


def run_governance(*, policy: Policy | None, store: BudgetReader | None, planning: PlanOptions,
                   provision: Path | None = None) -> Governance:
    """The CLI's Governance: refuse on a blocking violation; overrides with their reason and the CLI user."""
    found = governance(policy=policy, store=store, overrides=planning.exceeding, budgets=False,
                       known_targets=_targets(provision))
    if not planning.exceeding:
        return found
    return replace(found, reason=planning.why, actor=cli_actor())


def validate_verdict(*, policy: Policy, desired: DesiredState, provision: Path | None) -> Verdict:
    """`validate`: the declared resources alone (no database), every violation blocking (in enforce mode)."""
    return evaluate(policy=policy, desired=desired.resources, observed={}, plan=None, sources=desired.sources,
                    known_targets=_targets(provision))


def _targets(provision: Path | None) -> frozenset[str] | None:
    if provision is None or not provision.is_dir():
        return None
    return known_targets(provision_dir=provision).names


@dataclass(frozen=True, slots=True)
class CheckReport:
    """`policy check`: what enforcing the policy now would hold, and the live resources that break it."""

    view: PlanView
    verdict: Verdict
    held: tuple[Violation, ...]  # violations holding a change now (the daemon would hold these)
    live: tuple[Violation, ...]  # live resources breaking a rule, reported (never torn down)
    over_quota: tuple[Violation, ...]  # buckets whose live resources exceed a quota
    mode: Mode = Mode.ENFORCE  # what the file says (the check enforces it either way)

    @property
    def clean(self) -> bool:
        return not (self.held or self.live or self.over_quota or self.verdict.deferred)

    def json(self) -> dict[str, Any]:
        return {"policy": verdict_json(self.verdict), "mode_in_file": str(self.mode),
                "would_hold": [_entry(v) for v in self.held], "live": [_entry(v) for v in self.live],
                "over_quota": [_entry(v) for v in self.over_quota]}


def check_policy(*, policy: Policy, desired: DesiredState, fleet: Fleet, store: BudgetReader | None,
                 provision: Path | None) -> CheckReport:
    """Evaluate as the daemon's pass would (holds and budgets), with the policy enforced."""
    enforced = replace(policy, mode=Mode.ENFORCE)
    governed = governance(policy=enforced, store=store, budgets=True, known_targets=_targets(provision))
    view = plan_fleet(desired=desired, fleet=fleet, policy=PlanPolicy(), governance=governed)
    verdict = view.verdict
    assert verdict is not None, "a policy was given"
    rows = fleet.observed
    held = tuple(v for v in verdict.violations if v.blocking and v.resource_id is not None)
    live = tuple(v for v in verdict.violations if not v.blocking and v.resource_id is not None
                 and _is_live(rows.get(v.resource_id)))
    over = tuple(v for v in verdict.violations if v.resource_id is None and v.rule in QUOTA_RULES)
    return CheckReport(view=view, verdict=verdict, held=held, live=live, over_quota=over, mode=policy.mode)


def _is_live(row: ObservedResource | None) -> bool:
    return row is not None and row.live


def _entry(violation: Violation) -> dict[str, Any]:
    return {"rule": str(violation.rule), "resource_id": violation.resource_id, "message": violation.message,
            "resource_at": violation.where, "rule_at": str(violation.place) if violation.place else None}


def check_text(report: CheckReport) -> str:
    """The text of `policy check`."""
    verdict, file = report.verdict, report.verdict.policy.file
    out = [f"Policy {file} (checked as enforced; the file says {report.mode}) against "
           f"{report.view.plan.live} live resources:"]
    sections = (("would hold (a change the daemon would not start)", report.held, "✗"),
                ("live resources breaking a rule (kept as they are, reported)", report.live, "!"),
                ("over quota (live resources are never torn down; new ones are held)", report.over_quota, "!"))
    for title, found, symbol in sections:
        if found:
            out.append(f"{title}:")
            out.extend(f"  {symbol} {violation_line(v, file=file)}" for v in found)
    if verdict.deferred:
        out.append(f"deferred by a change budget: {len(verdict.deferred)} change(s), started by later passes")
    if verdict.usage and any(usage.limit is not None for usage in verdict.usage.values()):
        out.append("quota use per owner:")
        out.extend(f"  {owner}: {usage.count} of {usage.limit}" for owner, usage in verdict.usage.items()
                   if usage.limit is not None)
    out.extend(f"warning: {warning}" for warning in verdict.warnings)
    if report.clean:
        out.append("Nothing would be held; no live resource breaks the policy.")
    return "\n".join(out) + "\n"
