"""Read and validate policy.yaml: a `Policy`, or one `SpecError` naming file:line and field of every problem.

Validated like a desired file: read with `yamlfast` (line numbers for every key, duplicate keys and
non-data tags refused), unknown keys refused with a did-you-mean, wrong types named, patterns compiled
(Python regular expressions, `re` syntax) so a bad one fails here and not in a pass. No file where the
default place is means no policy (None): no limits beyond today's mass-delete guard.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from ..errors import SpecError, SpecProblem
from ..policyfile import POLICY_ENV as POLICY_ENV  # re-exported: the policy package names them too
from ..policyfile import POLICY_FILE as POLICY_FILE
from ..policyfile import default_policy_path as default_policy_path
from ..settle import NotRegular, open_regular
from ..yamlfast import Document, YamlProblem, load_documents
from .model import (
    DEFAULT_KEY,
    MASS_DELETE_FRACTION,
    MASS_DELETE_MINIMUM,
    Allowed,
    Changes,
    Choice,
    Limit,
    Limits,
    MassDelete,
    Mode,
    OwnerRules,
    Params,
    Pattern,
    Place,
    Policy,
    Quotas,
)
from .rollout import read_rollout

TOP_KEYS = ("mode", "quotas", "allowed", "params", "changes", "rollout")
QUOTA_KEYS = ("total", "per_owner", "per_region", "per_runtime_target", "per_owner_runtime_target")
ALLOWED_KEYS = ("regions", "runtime_targets", "deploy_ref", "owners")
OWNER_KEYS = ("regions", "runtime_targets", "protected")
PARAMS_KEYS = ("required", "forbidden")
CHANGES_KEYS = ("max_per_plan", "max_per_owner_per_hour", "mass_delete")
PLAN_KINDS = ("create", "update", "delete")
MASS_DELETE_KEYS = ("minimum", "fraction")
KEY_DEPTH = 4  # allowed.owners.<owner>.regions, quotas.per_owner_runtime_target.<owner>.<target>


class PolicyError(SpecError):
    """policy.yaml does not load: every problem with file, line and field (a SpecError, shown alike)."""


def find_policy(*, given: Path | None, desired: Path) -> Policy | None:
    """The policy in force: `given` (--policy, RECONCILER_POLICY; it must exist), else the default place
    (absent there: None, no policy)."""
    if given is not None:
        return load_policy(path=Path(given))
    path = default_policy_path(desired=desired)
    if not path.exists():
        return None
    return load_policy(path=path)


def load_policy(*, path: Path) -> Policy:
    """Read and validate one policy file; SpecError with file:line for anything wrong."""
    name = _shown_path(path)
    try:
        with open_regular(path) as stream:
            data = stream.read()
    except FileNotFoundError:
        raise PolicyError([SpecProblem(name, 0, "", "no such policy file")]) from None
    except NotRegular as exc:
        raise PolicyError([SpecProblem(name, 0, "", str(exc.strerror))]) from None
    except OSError as exc:
        raise PolicyError([SpecProblem(name, 0, "", f"cannot read: {exc.strerror}")]) from None
    return parse_policy(text=data, name=name)


def parse_policy(*, text: str | bytes, name: str) -> Policy:
    """A policy from its text; `name` is what problems and places call the file."""
    try:
        documents = [doc for doc in load_documents(text, key_depth=KEY_DEPTH) if doc.value is not None]
    except YamlProblem as exc:
        raise PolicyError([SpecProblem(name, exc.line, exc.field, exc.message, exc.column)]) from None
    if not documents:
        return Policy(file=name)
    doc = documents[0]
    if len(documents) > 1 or not isinstance(doc.value, dict):
        raise PolicyError([SpecProblem(name, doc.line, "", "expected one mapping with "
                                     + ", ".join(f"`{key}:`" for key in TOP_KEYS))])
    reader = _Reader(name=name, doc=doc)
    policy = reader.policy(doc.value)
    if reader.problems:
        raise PolicyError(reader.problems)
    return policy


class _Reader:
    """Walks the document once, collecting every problem (a compiler's list, not the first only)."""

    def __init__(self, *, name: str, doc: Document) -> None:
        self.name, self.doc = name, doc
        self.problems: list[SpecProblem] = []

    def place(self, path: str) -> Place:
        return Place(self.name, self.doc.key_lines.get(path, self.doc.line))

    def problem(self, path: str, message: str) -> None:
        self.problems.append(SpecProblem(self.name, self.place(path).line, path, message))

    def policy(self, value: dict[Any, Any]) -> Policy:
        top = self.mapping(value, "", TOP_KEYS) or {}
        mode = Mode.ENFORCE
        if "mode" in top:
            if top["mode"] in tuple(Mode):
                mode = Mode(top["mode"])
            else:
                self.problem("mode", f"expected {' or '.join(tuple(Mode))}, got {_shown(top['mode'])}")
        return Policy(file=self.name, mode=mode, quotas=self.quotas(top.get("quotas")),
                      allowed=self.allowed(top.get("allowed")), params=self.params(top.get("params")),
                      changes=self.changes(top.get("changes")),
                      rollout=read_rollout(self, top["rollout"]) if top.get("rollout") is not None else None)

    def mapping(self, value: Any, path: str, keys: tuple[str, ...] | None) -> dict[str, Any] | None:
        """A mapping with text keys (and, when `keys` is given, only those); None if absent or wrong."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_shown(value)}")
            return None
        good: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.problem(path, f"key {key!r} is not text; quote it")
            elif keys is not None and key not in keys:
                hint = difflib.get_close_matches(key, keys, n=1)
                self.problem(where, "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint
                                                     else f"; allowed: {', '.join(keys)}"))
            else:
                good[key] = item
        return good

    def count(self, value: Any, path: str) -> Limit | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.problem(path, f"expected a whole number ≥ 0, got {_shown(value)}")
            return None
        return Limit(value, self.place(path))

    def limits(self, value: Any, path: str) -> Limits:
        """{name: count, default: count}."""
        table = self.mapping(value, path, None) or {}
        named = {key: limit for key, item in table.items() if (limit := self.count(item, f"{path}.{key}"))}
        default = named.pop(DEFAULT_KEY, None)
        return Limits(named=named, default=default)

    def quotas(self, value: Any) -> Quotas:
        table = self.mapping(value, "quotas", QUOTA_KEYS) or {}
        pairs = self.mapping(table.get("per_owner_runtime_target"), "quotas.per_owner_runtime_target", None) or {}
        return Quotas(
            total=self.count(table["total"], "quotas.total") if "total" in table else None,
            per_owner=self.limits(table.get("per_owner"), "quotas.per_owner"),
            per_region=self.limits(table.get("per_region"), "quotas.per_region"),
            per_runtime_target=self.limits(table.get("per_runtime_target"), "quotas.per_runtime_target"),
            per_owner_runtime_target={owner: self.limits(item, f"quotas.per_owner_runtime_target.{owner}")
                                      for owner, item in pairs.items()},
        )

    def names(self, value: Any, path: str) -> Choice | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.problem(path, f"expected a list of names, e.g. [a, b], got {_shown(value)}")
            return None
        return Choice(frozenset(value), self.place(path))

    def pattern(self, value: Any, path: str) -> Pattern | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(path, f"expected a Python regular expression (quote it), got {_shown(value)}")
            return None
        try:
            return Pattern(re.compile(value), self.place(path))
        except re.error as exc:
            self.problem(path, f"not a valid Python regular expression: {exc}")
            return None

    def allowed(self, value: Any) -> Allowed:
        table = self.mapping(value, "allowed", ALLOWED_KEYS) or {}
        owners = self.mapping(table.get("owners"), "allowed.owners", None) or {}
        return Allowed(regions=self.names(table.get("regions"), "allowed.regions"),
                       runtime_targets=self.names(table.get("runtime_targets"), "allowed.runtime_targets"),
                       deploy_ref=self.pattern(table.get("deploy_ref"), "allowed.deploy_ref"),
                       owners={owner: self.owner(item, f"allowed.owners.{owner}") for owner, item in owners.items()})

    def owner(self, value: Any, path: str) -> OwnerRules:
        table = self.mapping(value, path, OWNER_KEYS) or {}
        protected = table.get("protected", False)
        if not isinstance(protected, bool):
            self.problem(f"{path}.protected", f"expected true or false, got {_shown(protected)}")
            protected = False
        return OwnerRules(regions=self.names(table.get("regions"), f"{path}.regions"),
                          runtime_targets=self.names(table.get("runtime_targets"), f"{path}.runtime_targets"),
                          protected=self.place(f"{path}.protected") if protected else None)

    def params(self, value: Any) -> Params:
        table = self.mapping(value, "params", PARAMS_KEYS) or {}
        required = self.names(table.get("required"), "params.required")
        forbidden = self.names(table.get("forbidden"), "params.forbidden")
        return Params(required=tuple(sorted(required.values)) if required else (),
                      required_place=required.place if required else None,
                      forbidden=tuple(sorted(forbidden.values)) if forbidden else (),
                      forbidden_place=forbidden.place if forbidden else None)

    def changes(self, value: Any) -> Changes:
        table = self.mapping(value, "changes", CHANGES_KEYS) or {}
        per_plan = self.mapping(table.get("max_per_plan"), "changes.max_per_plan", PLAN_KINDS) or {}
        hourly = table.get("max_per_owner_per_hour")
        return Changes(
            max_per_plan={kind: limit for kind, item in per_plan.items()
                          if (limit := self.count(item, f"changes.max_per_plan.{kind}"))},
            max_per_owner_per_hour=self.count(hourly, "changes.max_per_owner_per_hour") if hourly is not None
            else None,
            mass_delete=self.mass_delete(table.get("mass_delete")),
        )

    def mass_delete(self, value: Any) -> MassDelete:
        table = self.mapping(value, "changes.mass_delete", MASS_DELETE_KEYS)
        if table is None:
            return MassDelete()
        minimum = self.count(table["minimum"], "changes.mass_delete.minimum") if "minimum" in table else None
        fraction = table.get("fraction", MASS_DELETE_FRACTION)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            self.problem("changes.mass_delete.fraction", f"expected a number from 0 to 1, got {_shown(fraction)}")
            fraction = MASS_DELETE_FRACTION
        return MassDelete(minimum=minimum.value if minimum else MASS_DELETE_MINIMUM, fraction=float(fraction),
                          place=self.place("changes.mass_delete"))


def _shown_path(path: Path) -> str:
    """As a compiler prints paths: relative to the working directory when below it (spec.display_path)."""
    text = os.path.relpath(path)
    return str(path) if text.startswith("..") else text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
