"""Errors the user can act on, kept apart so every layer can raise them without importing another.

A `SpecError` always knows where the bad input is (file, line, field), because a platform engineer
fixing a YAML file needs the place, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One thing wrong with the desired state, at one place."""

    file: str
    line: int
    field: str
    message: str
    column: int = 0  # 1-based where known (YAML syntax errors); 0 when the line says enough

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        where += f":{self.column}" if self.line and self.column else ""
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def sort_key(self) -> tuple[str, int, str]:
        return (self.file, self.line, self.field)


class ReconcilerError(Exception):
    """Base of every error that is reported to the user as a message, never as a traceback."""


class SpecError(ReconcilerError):
    """The desired state failed to load: carries every problem found, sorted like a compiler's."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = sorted(problems, key=SpecProblem.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class StoreError(ReconcilerError):
    """The observed-state database cannot be opened or used (bad URL, permissions, newer schema, corrupt file)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or written right now (locked, restarting, disk full, read-only).

    Nothing was written by the failed call. A long-lived loop waits and tries again; a one-shot
    command reports it and exits 1.
    """


class StoreConflict(StoreError):
    """A transaction lost a race with another one (serialization failure, deadlock, constraint).

    Nothing was written by the failed call; trying again at once is safe.
    """


class ScriptError(ReconcilerError):
    """A provisioning script failed. `permanent` failures (missing script) are not worth retrying soon."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class PlanRefused(ReconcilerError):
    """A safety rule (mass delete) stopped the plan; nothing was done."""
