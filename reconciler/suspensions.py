"""Suspensions: which resources, or the whole fleet, are left alone — by whom, why, and until when.

An operator suspends a resource (`reconciler suspend ID --reason …`, a row in the database) or declares
it in its file (`suspend: {reason: …}`, reviewed like any change); `suspend --all` suspends the fleet.
The plan leaves a suspended resource alone: no provision, no teardown, no self-heal. This module is
pure (no I/O, no clock): the store reads the rows, the files declare theirs, and everything here is
answered against a `now` the caller passes, so expiry is a comparison, not a timer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .models import FLEET_ID, ResourceSpec, iso

__all__ = ["FLEET_ID", "Suspension", "Suspensions", "declared_in_files", "parse_until"]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw])")
_DURATIONS = re.compile(r"(\d+[smhdw])+")


@dataclass(frozen=True, slots=True)
class Suspension:
    """One suspension: a resource's (or the fleet's) reason, who set it, since and until when."""

    reason: str
    actor: str
    since: str | None = None
    until: str | None = None  # None: until resumed (or, for a file's, until removed from the file)
    file: str | None = None  # `desired/x.yaml:12` when declared in a file: only editing the file lifts it

    def in_force(self, stamp: str) -> bool:
        return self.until is None or self.until > stamp

    def describe(self) -> str:
        """`suspended by cli:ann@ops: incident 42 (until 2026-…)`, as plans and errors show it."""
        who = f"in {self.file}" if self.file else f"by {self.actor}"
        return f"suspended {who}: {self.reason}" + (f" (until {self.until})" if self.until else "")

    def as_json(self) -> dict[str, str | None]:
        return {"reason": self.reason, "actor": self.actor, "since": self.since, "until": self.until,
                "file": self.file}


@dataclass(frozen=True, slots=True)
class Suspensions:
    """Every suspension a plan must respect: per resource (rows and files merged) and the fleet's."""

    resources: Mapping[str, Suspension] = field(default_factory=dict)
    fleet: Suspension | None = None

    def in_force(self, stamp: str) -> Suspensions:
        """Only those not yet expired at `stamp` (an ISO timestamp)."""
        fleet = self.fleet if self.fleet is not None and self.fleet.in_force(stamp) else None
        if not self.resources:
            return Suspensions({}, fleet)
        return Suspensions({rid: s for rid, s in self.resources.items() if s.in_force(stamp)}, fleet)

    def of(self, resource_id: str) -> Suspension | None:
        """The suspension that holds `resource_id`: its own, else the fleet's."""
        return self.resources.get(resource_id) or self.fleet

    def next_expiry(self, stamp: str) -> str | None:
        """The earliest `until` still ahead of `stamp`: when a plan made now stops being right."""
        ahead = [s.until for s in (*self.resources.values(), self.fleet) if s and s.until and s.until > stamp]
        return min(ahead, default=None)

    def with_files(self, declared: Mapping[str, Suspension]) -> Suspensions:
        """These plus the files' `suspend:` declarations; a file's wins (only editing the file lifts it)."""
        if not declared:
            return self
        return Suspensions({**self.resources, **declared}, self.fleet)

    def without_fleet(self) -> Suspensions:
        """`destroy` is an explicit operator action: it tears down its scope although the fleet is suspended."""
        return Suspensions(self.resources, None)


def declared_in_files(*, resources: Mapping[str, ResourceSpec], where: Mapping[str, str]) -> dict[str, Suspension]:
    """The files' `suspend:` blocks as suspensions (`where`: id → `file:line`, for the message)."""
    found: dict[str, Suspension] = {}
    for resource_id, spec in resources.items():
        if spec.suspend is not None:
            place = where.get(resource_id, "desired/")
            found[resource_id] = Suspension(spec.suspend.reason, f"file:{place}", None, spec.suspend.until, place)
    return found


def parse_until(text: str, *, now: datetime) -> str:
    """`--until`: a duration (`90s`, `30m`, `2h`, `1d`, `1h30m`) from `now`, or an ISO-8601 time with a zone.

    Raises ValueError with a message naming what was wrong; the time must lie ahead of `now`.
    """
    value = text.strip()
    if _DURATIONS.fullmatch(value):
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
        if seconds <= 0:
            raise ValueError(f"--until {text}: the duration must be longer than zero")
        return iso(now + timedelta(seconds=seconds))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--until {text}: expected a duration (90s, 30m, 2h, 1d, 1h30m) or an ISO-8601 time "
                         "with a time zone (2026-12-01T09:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"--until {text}: give a time zone, e.g. {value}Z")
    if moment <= now:
        raise ValueError(f"--until {text}: that time has passed (now is {iso(now)})")
    return iso(moment)
