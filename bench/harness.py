"""What every measurement shares: timing commands, the environment they run in, and result rows.

Timing is wall clock around a whole process (what an operator waits for). On a small, noisy machine a
single figure means little, so each command runs `repeat` times and the median is reported, and a
figure is only ever compared with its floor or peer measured in the same run, interleaved with it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


class BenchError(RuntimeError):
    """A command under measurement failed: the figure would be meaningless."""


@dataclass(frozen=True, slots=True)
class Timing:
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        return max(self.samples) - min(self.samples)


@dataclass(slots=True)
class Case:
    """One command to time; `setup` runs (untimed) before every repetition, e.g. to reset state."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    setup: Callable[[], None] | None = None
    ok_codes: tuple[int, ...] = (0,)
    stdin: Path | None = None
    timeout: float = 600.0


@dataclass(slots=True)
class Ctx:
    """Options of this run, passed to every measurement."""

    quick: bool
    repeat: int
    out: Path = OUT
    log: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr, flush=True))


def run_once(case: Case) -> float:
    """Run `case` once (its setup untimed) and return the wall seconds of the command alone."""
    if case.setup:
        case.setup()
    stdin = open(case.stdin, "rb") if case.stdin else subprocess.DEVNULL  # noqa: SIM115 - closed below, untimed
    try:
        started = time.perf_counter()
        done = subprocess.run(list(case.argv), env=dict(case.env) if case.env is not None else None, cwd=case.cwd,
                              stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=case.timeout)
        elapsed = time.perf_counter() - started
    finally:
        if case.stdin:
            stdin.close()
    if done.returncode not in case.ok_codes:
        tail = done.stderr.decode(errors="replace")[-2000:]
        command = " ".join(case.argv)
        raise BenchError(f"{case.name}: exit {done.returncode} (expected {case.ok_codes}): {command}\n{tail}")
    return elapsed


def time_cases(cases: Sequence[Case], repeat: int) -> dict[str, Timing]:
    """Time every case `repeat` times, round-robin, so drift in machine load hits all of them alike."""
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(repeat):
        for case in cases:
            samples[case.name].append(run_once(case))
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def time_command(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 repeat: int = 3, **options) -> Timing:
    """Wall time of one command, `repeat` runs; `.median` is the figure to report."""
    case = Case(name=str(argv[0]), argv=argv, env=env, cwd=cwd, **options)
    return time_cases([case], repeat)[case.name]


def compile_checkout() -> None:
    """Byte-compile reconciler/ once before timing, as `pip install` does for an installed copy.

    The floor's PyYAML was installed with its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE set
    (as on the shared machine) would otherwise recompile every module on every run (~17 ms of P1 at 10k).
    compileall writes the cache whatever that variable says; a stale file is still checked by mtime."""
    import compileall

    compileall.compile_dir(str(REPO / "reconciler"), quiet=1)


def reconciler_argv(*args: str) -> list[str]:
    """The CLI as the same interpreter runs it; base_env() puts this checkout first on the path."""
    return [sys.executable, "-m", "reconciler.cli", *args]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of measured commands: this checkout's reconciler, no colour, no log noise."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    env["NO_COLOR"] = "1"
    env.pop("RECONCILER_LOG_FORMAT", None)
    env.update(extra)
    return env


def reconciler_env(project: Path, *, desired: Path, db: Path | None = None, provision: Path | None = None,
                   **extra: str) -> dict[str, str]:
    return base_env(RECONCILER_DESIRED=str(desired), RECONCILER_DB=str(db or project / "state.db"),
                    RECONCILER_PROVISION=str(provision or project / "provision"),
                    RECONCILER_WORK_DIR=str(project / "work"), **extra)


def run_checked(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                ok_codes: tuple[int, ...] = (0,), timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Preparation steps (not timed): fail loudly, with the command's stderr."""
    done = subprocess.run(list(argv), env=dict(env) if env is not None else None, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if done.returncode not in ok_codes:
        raise BenchError(f"exit {done.returncode}: {' '.join(argv)}\n{(done.stderr or done.stdout)[-2000:]}")
    return done


@dataclass(slots=True)
class Row:
    """One line of the results table: a figure, its peer from the same run, and the goal.

    `ratio` is always ours / peer (below 1 means faster than the peer). A goal is either a ratio
    ceiling (`max_ratio`) or an absolute ceiling in seconds (`max_seconds`); with neither the row is
    for information and gets no verdict.
    """

    id: str
    what: str
    size: str
    seconds: float | None
    peer: str
    peer_seconds: float | None
    goal: str = ""
    max_ratio: float | None = None
    max_seconds: float | None = None
    repeats: str = ""
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    unit: str = "s"

    @property
    def ratio(self) -> float | None:
        if self.seconds is None or not self.peer_seconds:
            return None
        return self.seconds / self.peer_seconds

    @property
    def verdict(self) -> str:
        if self.seconds is None:
            return "n/a"
        met: list[bool] = []  # with both ceilings, both must hold
        if self.max_seconds is not None:
            met.append(self.seconds <= self.max_seconds)
        if self.max_ratio is not None:
            if self.ratio is None:
                return "n/a"
            met.append(self.ratio <= self.max_ratio)
        if not met:
            return "—"
        return "PASS" if all(met) else "MISS"

    def to_json(self) -> dict:
        return {"id": self.id, "what": self.what, "size": self.size, "seconds": _round(self.seconds), "unit": self.unit,
                "peer": self.peer, "peer_seconds": _round(self.peer_seconds), "ratio": _round(self.ratio),
                "goal": self.goal, "max_ratio": self.max_ratio, "max_seconds": self.max_seconds,
                "verdict": self.verdict, "repeats": self.repeats, "note": self.note,
                "samples": {k: [_round(v) for v in vs] for k, vs in self.samples.items()}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def samples_of(timings: Mapping[str, Timing]) -> dict[str, list[float]]:
    return {name: list(t.samples) for name, t in timings.items()}
