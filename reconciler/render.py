"""Show a Plan the way platform engineers read plans: Terraform-style text, or a stable JSON shape.

Rendering is separate from planning (as in Terraform) so the same Plan feeds the terminal, CI's
JSON consumers and the daemon's logs.

JSON shape (format_version "1.0"; fields are only ever added):
    {"format_version": "1.0",
     "changes": [{"resource_id", "action", "before", "after", "reason", "reason_code", "changed", "source",
                  "or_adopt"?}],   # or_adopt: true when the target's observe.sh may adopt it instead
     "kept":    [{"resource_id", "reason", "reason_code", "hold", "suspension"?}],  # protected, suspended, forgotten
     "waiting": [{"resource_id", "reason", "reason_code", "hold", "retry_at"?}],  # in progress, backoff, unhealthy
     "summary": {"create", "update", "replace", "delete", "retry", "unchanged"},
     "refused": null | "why the plan is refused",
     "policy": {...},  # only when a policy.yaml governs the plan: policy/report.py's verdict_json
     "fleet_suspension": null | {"reason", "actor", "since", "until", "file"}}  # `suspend --all` in force
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .models import REPLACE_FIELDS
from .plan import Change, Hold, Plan, Reason
from .terminal import printable

if TYPE_CHECKING:  # the policy section is rendered only when a verdict exists (no policy: not imported)
    from .policy import Verdict
    from .rollout.plan import Proposal

FORMAT_VERSION = "1.0"
# keyed by Change.shown: the action as plans show it (a spec run again shows as "retry")
_SHOWN = ("create", "update", "replace", "delete", "retry")
_SYMBOL = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "retry": "~"}
_HEADLINE = {
    "create": "will be created",
    "update": "will be updated in place",
    "replace": "must be replaced",
    "delete": "will be destroyed",
    "retry": "will be retried",
}
_COLOUR = {"+": "32", "~": "33", "-/+": "35", "-": "31", "bold": "1", "dim": "2", "warn": "33"}


class _Paint:
    def __init__(self, *, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, style: str) -> str:
        return f"\x1b[{_COLOUR[style]}m{text}\x1b[0m" if self.colour else text


def plan_json(plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> dict[str, Any]:
    shown = {
        "format_version": FORMAT_VERSION,
        "changes": [
            {"resource_id": c.resource_id, "action": c.shown, "before": c.before, "after": c.after,
             "reason": c.message, "reason_code": str(c.reason), "changed": list(c.changed), "source": c.source,
             **({"or_adopt": True} if c.or_adopt else {})}
            for c in plan.changes
        ],
        "kept": [_held_json(c) for c in plan.kept],
        "waiting": [_held_json(c) for c in plan.waiting],
        "summary": summary_counts(plan),
        "refused": plan.refusal,
        "fleet_suspension": plan.fleet_suspension.as_json() if plan.fleet_suspension else None,
    }
    if verdict is not None and not verdict.policy.built_in:  # no policy file: no section, as before
        from .policy.report import verdict_json

        shown["policy"] = verdict_json(verdict)
    if rollout is not None:
        shown["rollout"] = rollout_json(rollout)
    return shown


def rollout_json(rollout: Proposal) -> dict[str, Any]:
    """The rollout this plan's changes make (issue 17): its waves with their resources, and its settings."""
    policy = rollout.policy
    return {"summary": rollout.summary(), "bake_seconds": policy.bake, "max_failures": policy.max_failures,
            "on_failure": str(policy.on_failure), "max_parallel": policy.max_parallel,
            "waves": [{"wave": number, "size": size,
                       "resources": [m.resource_id for m in rollout.members if m.wave == number]}
                      for number, size in enumerate(rollout.sizes, start=1)],
            "skipped": [_held_json(change) for change in rollout.skipped]}


def _held_json(change: Change) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource_id": change.resource_id, "reason": change.message,
                             "reason_code": str(change.reason), "hold": str(change.hold) if change.hold else None}
    if change.retry_at:
        entry["retry_at"] = change.retry_at
    if change.suspension is not None:
        entry["suspension"] = change.suspension.as_json()
    return entry


def render_json(plan: Plan, *, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
    # Compact, and encoded by pydantic-core in Rust: 2x the json module at 100k changes; pipe to jq to read.
    import pydantic_core

    return pydantic_core.to_json(plan_json(plan, verdict=verdict, rollout=rollout)).decode() + "\n"


def summary_counts(plan: Plan) -> dict[str, int]:
    counts = dict.fromkeys(_SHOWN, 0)
    for change in plan.changes:
        counts[change.shown] += 1
    counts["unchanged"] = plan.unchanged
    return counts


def summary_line(plan: Plan) -> str:
    if not plan.changes:
        held = _held_summary(plan.kept + plan.waiting)
        return f"No changes to make now; {held}." if held else "No changes. Observed state matches desired/."
    n = summary_counts(plan)
    line = f"Plan: {n['create']} to create, {n['update']} to update, {n['replace']} to replace, {n['delete']} to delete"
    return line + (f", {n['retry']} to retry." if n["retry"] else ".")


def _held_summary(notes: tuple[Change, ...]) -> str:
    """What is not settled although nothing is to be done now, e.g. "2 resources wait for a retry (next at …)"."""
    parts = []
    for hold, one, many in _HELD_PHRASES:
        held = [change for change in notes if change.hold is hold]
        if not held:
            continue
        text = f"{len(held)} {one if len(held) == 1 else many}"
        if hold is Hold.RETRY:
            text += f" (next at {min(change.retry_at or '' for change in held)})"
        parts.append(text)
    return ", ".join(parts)


_HELD_PHRASES = (
    (Hold.RETRY, "resource waits for a retry", "resources wait for a retry"),
    (Hold.IN_PROGRESS, "resource has a job in progress", "resources have a job in progress"),
    (Hold.UNHEALTHY, "resource is unhealthy (self-heal is off)", "resources are unhealthy (self-heal is off)"),
    (Hold.PROTECTED, "protected resource kept as it is", "protected resources kept as they are"),
    (Hold.POLICY, "resource held by the policy", "resources held by the policy"),
    (Hold.BUDGET, "change waits for a change budget", "changes wait for a change budget"),
    (Hold.SUSPENDED, "suspended resource left alone", "suspended resources left alone"),
    (Hold.UNMANAGED, "forgotten resource kept unmanaged", "forgotten resources kept unmanaged"),
    (Hold.ROLLOUT, "change waits for its rollout", "changes wait for their rollout"),
)


def render_text(plan: Plan, *, colour: bool, verdict: Verdict | None = None, rollout: Proposal | None = None) -> str:
    """Resources declared through the HTTP API rather than by a file are marked as such; the policy's
    verdict, when one governs the plan, follows the summary."""
    paint = _Paint(colour=colour)
    out: list[str] = []
    if plan.fleet_suspension is not None:
        fleet = plan.fleet_suspension.describe().replace("suspended", "The fleet is suspended", 1)
        out.append(paint(printable(f"{fleet}: nothing is started until `reconciler resume --all`."), "warn") + "\n")
    if plan.changes:
        out.append("reconciler will perform the following actions:\n")
        out.extend(_block(change, paint) for change in plan.changes)
    out.extend(_note(change, paint, "kept") for change in plan.kept)
    out.extend(_note(change, paint, "waiting") for change in plan.waiting)
    out.append(paint(summary_line(plan), "bold"))
    if rollout is not None:
        out.append(paint(rollout.summary(), "bold"))
    if verdict is not None and not verdict.policy.built_in and (verdict.violations or verdict.warnings
                                                                or verdict.deferred):
        out.append(policy_text(verdict, paint))
    if plan.refusal:
        out.append(paint(f"\nRefused: {plan.refusal}.", "-"))
    return "\n".join(out) + "\n"


_SEVERITY = {"error": ("✗", "-"), "warning": ("!", "warn"), "override": ("~", "~")}


def policy_text(verdict: Verdict, paint: _Paint) -> str:
    from .policy.report import verdict_lines, verdict_summary

    lines = [paint(verdict_summary(verdict), "bold")]
    for severity, line in verdict_lines(verdict):
        symbol, style = _SEVERITY[severity]
        lines.append(paint(printable(f"  {symbol} {line}"), style))
    return "\n".join(lines)


def _note(change: Change, paint: _Paint, kind: str) -> str:
    kind = "" if change.hold is Hold.SUSPENDED else f"{kind}, "  # its message starts with "suspended"
    text = printable(f"  # {change.resource_id}: {kind}{change.message}")
    return paint(text, "warn" if kind == "kept" else "dim") + "\n"


def _block(change: Change, paint: _Paint) -> str:
    symbol = _SYMBOL[change.shown]
    headline = _HEADLINE[change.shown] + (" (or adopted)" if change.or_adopt else "")
    head = paint(f"  # {change.resource_id} {headline}", "bold") + f" ({change.message})"
    head += " [declared via the API]" if change.source == "api" else ""
    lines = [head, f"{paint(symbol.rjust(3), symbol)} resource \"{change.resource_id}\" {{"]
    lines.extend(_attributes(change, paint))
    lines.append("    }\n")
    return "\n".join(lines)


def _attributes(change: Change, paint: _Paint) -> list[str]:
    if change.before is None:  # a create, or a retry of one
        return _listing(change.after or {}, "+", paint)
    if change.after is None:  # a teardown
        return _listing(change.before, "-", paint)
    return _diff(change, paint)


def _listing(spec: dict[str, Any], symbol: str, paint: _Paint) -> list[str]:
    width = max((len(name) for name in spec), default=0)
    return [f"      {paint(symbol, symbol)} {name.ljust(width)} = {_value(value)}" for name, value in spec.items()]


def _diff(change: Change, paint: _Paint) -> list[str]:
    before, after = change.before or {}, change.after or {}
    changed = change.changed or tuple(name for name in after if before.get(name) != after.get(name))
    width = max((len(name) for name in changed), default=0)
    lines = []
    for name in changed:
        forcing = change.reason is Reason.REPLACE_FORCED and name in REPLACE_FIELDS
        forces = paint(" # forces replacement", "-") if forcing else ""
        lines.append(f"      {paint('~', '~')} {name.ljust(width)} = {_value(before.get(name))} -> "
                     f"{_value(after.get(name))}{forces}")
    hidden = len(after) - len(changed)
    if hidden > 0:
        lines.append(paint(f"        # ({hidden} unchanged attributes hidden)", "dim"))
    return lines


def _value(value: Any) -> str:
    # JSON escapes C0 controls itself; DEL, C1 (a lone \x9b is CSI) and bidi controls are escaped here
    return printable(json.dumps(value, sort_keys=True, ensure_ascii=False))
