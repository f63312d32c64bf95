"""policy.yaml's `rollout:` section, read into a `RolloutPolicy` with file:line problems like the rest.

Kept apart from load.py so the loader's walk stays one screen per section; it uses the loader's
`_Reader` (problems, places, mappings) through the small `Reading` protocol.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from ..models import Action
from ..rollout.model import (
    DEFAULT_ACTIONS,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_MIN_CHANGES,
    DEFAULT_UNHEALTHY_AFTER,
    Canary,
    OnFailure,
    RolloutPolicy,
    WaveTarget,
)

ROLLOUT_KEYS = ("waves", "bake", "max_failures", "max_parallel", "min_changes", "on_failure", "canary", "actions",
                "check_interval", "unhealthy_after")
CANARY_KEYS = ("ids", "owners", "regions")
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class Reading(Protocol):
    def problem(self, path: str, message: str) -> None: ...
    def mapping(self, value: Any, path: str, keys: tuple[str, ...] | None) -> dict[str, Any] | None: ...


def read_rollout(reader: Reading, value: Any) -> RolloutPolicy | None:
    """`rollout:` → RolloutPolicy; problems go to the reader (file:line of each key)."""
    table = reader.mapping(value, "rollout", ROLLOUT_KEYS)
    if table is None:
        return None
    canary = reader.mapping(table.get("canary"), "rollout.canary", CANARY_KEYS) or {}
    return RolloutPolicy(
        waves=_waves(reader, table.get("waves", [1, "100%"])),
        bake=_duration(reader, table.get("bake", "10m"), "rollout.bake"),
        max_failures=_whole(reader, table.get("max_failures", 0), "rollout.max_failures", least=0),
        max_parallel=(_whole(reader, table["max_parallel"], "rollout.max_parallel", least=1)
                      if table.get("max_parallel") is not None else None),
        min_changes=_whole(reader, table.get("min_changes", DEFAULT_MIN_CHANGES), "rollout.min_changes", least=1),
        on_failure=_on_failure(reader, table.get("on_failure", "halt")),
        canary=Canary(ids=_names(reader, canary.get("ids"), "rollout.canary.ids"),
                      owners=_names(reader, canary.get("owners"), "rollout.canary.owners"),
                      regions=_names(reader, canary.get("regions"), "rollout.canary.regions")),
        actions=_actions(reader, table.get("actions")),
        check_interval=_duration(reader, table.get("check_interval", DEFAULT_CHECK_INTERVAL), "rollout.check_interval",
                                 positive=True),
        unhealthy_after=_whole(reader, table.get("unhealthy_after", DEFAULT_UNHEALTHY_AFTER),
                               "rollout.unhealthy_after", least=1),
    )


def _waves(reader: Reading, value: Any) -> tuple[WaveTarget, ...]:
    if not isinstance(value, list) or not value:
        reader.problem("rollout.waves", f"expected a list of counts and percentages, e.g. [1, 5%, 25%, 100%], "
                       f"got {value!r}")
        return (WaveTarget(count=1),)
    targets: list[WaveTarget] = []
    for item in value:
        target = _target(item)
        if target is None:
            reader.problem("rollout.waves", f"{item!r}: expected a whole number ≥ 1 or a percentage from 1% to 100%")
            continue
        if targets and _bigger(targets[-1], target):
            reader.problem("rollout.waves", f"{item}: waves are cumulative and must grow (after {targets[-1]})")
        targets.append(target)
    return tuple(targets)


def _target(item: Any) -> WaveTarget | None:
    if isinstance(item, int) and not isinstance(item, bool):
        return WaveTarget(count=item) if item >= 1 else None
    match = _PERCENT.match(item) if isinstance(item, str) else None
    if match is None:
        return None
    percent = float(match.group(1))
    return WaveTarget(percent=percent) if 0 < percent <= 100 else None


def _bigger(before: WaveTarget, after: WaveTarget) -> bool:
    """Only comparable targets (both counts or both percentages) can be seen to shrink."""
    if before.count is not None and after.count is not None:
        return after.count <= before.count
    if before.percent is not None and after.percent is not None:
        return after.percent <= before.percent
    return False


def parse_duration(value: Any) -> float | None:
    """`10m`, `2s`, `1h30m`, or a number of seconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    match = _DURATION.match(value) if isinstance(value, str) and value.strip() else None
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _duration(reader: Reading, value: Any, path: str, *, positive: bool = False) -> float:
    seconds = parse_duration(value)
    if seconds is None or (positive and seconds <= 0):
        reader.problem(path, f"expected a duration such as 30s, 10m or 1h{' (more than 0)' if positive else ''}, "
                       f"got {value!r}")
        return 1.0
    return seconds


def _whole(reader: Reading, value: Any, path: str, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        reader.problem(path, f"expected a whole number ≥ {least}, got {value!r}")
        return least
    return value


def _on_failure(reader: Reading, value: Any) -> OnFailure:
    if value in tuple(OnFailure):
        return OnFailure(value)
    reader.problem("rollout.on_failure", f"expected {' or '.join(tuple(OnFailure))}, got {value!r}")
    return OnFailure.HALT


def _names(reader: Reading, value: Any, path: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        reader.problem(path, f"expected a list of names, e.g. [a, b], got {value!r}")
        return frozenset()
    return frozenset(value)


def _actions(reader: Reading, value: Any) -> frozenset[Action]:
    if value is None:
        return DEFAULT_ACTIONS
    allowed = ("create", "update", "replace", "delete")
    if not isinstance(value, list) or not value or not all(item in allowed for item in value):
        reader.problem("rollout.actions", f"expected a list of {', '.join(allowed)}, got {value!r}")
        return DEFAULT_ACTIONS
    return frozenset(Action(item) for item in value)
