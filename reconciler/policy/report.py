"""A verdict as people and programs read it: text lines for `validate`, `plan` and `policy check`, and the
`policy` section of the plan JSON. Pure: the verdict in, text or plain data out.

Every line names the resource's declaration (file:line) when it has one, the rule code (what
`--override` takes) and the rule's place in policy.yaml.
"""

from __future__ import annotations

from typing import Any

from .model import Verdict, Violation

# text views show this many violations of one rule, then how many more (JSON always lists every one)
SHOWN_PER_RULE = 20


def violation_line(violation: Violation, *, file: str) -> str:
    """`desired/a.yaml:3: quotas.per_owner: a3: owner 'acme' is at … (rule at policy.yaml:4)`."""
    where = violation.where or file
    rule_at = f" (rule at {violation.place})" if violation.place else " (built-in rule)"
    overridden = " [overridden for this run]" if violation.overridden else ""
    return f"{where}: {violation.rule}: {violation.message}{rule_at}{overridden}"


def verdict_lines(verdict: Verdict) -> list[tuple[str, str]]:
    """(severity, line) per violation and warning: `error` blocks, `warning` is reported only,
    `override` was exceeded under --override; at most SHOWN_PER_RULE per rule and severity."""
    file = verdict.policy.file
    lines: list[tuple[str, str]] = []
    shown: dict[tuple[str, str], int] = {}
    for violation in verdict.violations:
        severity = "error" if violation.blocking else "override" if violation.overridden else "warning"
        key = (severity, str(violation.rule))
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= SHOWN_PER_RULE:
            lines.append((severity, violation_line(violation, file=file)))
    for (severity, rule), count in shown.items():
        if count > SHOWN_PER_RULE:
            lines.append((severity, f"{file}: {rule}: … and {count - SHOWN_PER_RULE} more (-o json lists every one)"))
    lines.extend(("warning", str(warning)) for warning in verdict.warnings)
    return lines


def verdict_summary(verdict: Verdict) -> str:
    """One line: the policy, its mode, and how many violations block, are reported or were overridden."""
    blocking = sum(1 for v in verdict.violations if v.blocking)
    overridden = sum(1 for v in verdict.violations if v.overridden)
    reported = len(verdict.violations) - blocking - overridden
    parts = [f"{blocking} blocking" if blocking else "", f"{reported} reported" if reported else "",
             f"{overridden} overridden" if overridden else "",
             f"{len(verdict.held)} held" if verdict.held else "",
             f"{len(verdict.deferred)} deferred by a budget" if verdict.deferred else ""]
    found = ", ".join(part for part in parts if part) or "no violations"
    return f"Policy {verdict.policy.file} ({verdict.policy.mode}): {found}."


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """The plan JSON's `policy` section (present when a policy governs the plan; fields only added)."""
    return {
        "file": verdict.policy.file,
        "mode": str(verdict.policy.mode),
        "violations": [_violation_json(v) for v in verdict.violations],
        "held": [{"resource_id": rid, "rule": str(held.rule)} for rid, held in sorted(verdict.held.items())],
        "deferred": [{"resource_id": rid, "rule": str(held.rule)} for rid, held in sorted(verdict.deferred.items())],
        "overridden": [{"resource_id": rid, "rules": sorted(map(str, rules))}
                       for rid, rules in sorted(verdict.overridden.items())],
        "usage": {owner: {"count": usage.count, "limit": usage.limit} for owner, usage in verdict.usage.items()},
        "warnings": [{"message": w.message, "rule_at": str(w.place)} for w in verdict.warnings],
    }


def _violation_json(violation: Violation) -> dict[str, Any]:
    return {"rule": str(violation.rule), "resource_id": violation.resource_id, "message": violation.message,
            "blocking": violation.blocking, "overridden": violation.overridden, "resource_at": violation.where,
            "rule_at": str(violation.place) if violation.place else None}
