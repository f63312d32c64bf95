"""How a rollout looks (pure): per wave done, running, failed or baking until …, as text and JSON.

`rollout status`, `apply`'s per-wave progress and the API read the same view, computed from the
rows and a clock reading with the machine's own rules (a wave bakes until its last success + bake).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .machine import Decision, Step, bake_until, decide
from .model import FAILURES, OUT, Member, MemberState, Rollout, RolloutState, WaveState


@dataclass(frozen=True, slots=True)
class WaveView:
    wave: int
    state: WaveState
    size: int
    succeeded: int
    failed: int
    open: int
    out: int  # superseded or skipped
    baking_until: datetime | None = None
    failures: tuple[str, ...] = ()


def waves(*, rollout: Rollout, members: Iterable[Member], now: datetime) -> list[WaveView]:
    every = list(members)
    shown = []
    for number in range(1, rollout.waves + 1):
        wave = [m for m in every if m.wave == number]
        counted = [m for m in wave if m.state not in OUT]
        failed = [m for m in counted if m.state in FAILURES or m.state in {MemberState.REVERTING,
                                                                          MemberState.REVERTED}]
        opened = [m for m in counted if m.state is MemberState.QUEUED]
        until = bake_until(rollout=rollout, members=wave) if number == rollout.wave else None
        shown.append(WaveView(number, _state(rollout, number, counted, failed, opened, until, now), len(wave),
                              sum(1 for m in counted if m.state is MemberState.SUCCEEDED), len(failed), len(opened),
                              len(wave) - len(counted), until if until and until > now else None,
                              tuple(f"{m.resource_id}: {m.state}" + (f" ({m.error})" if m.error else "")
                                    for m in failed)))
    return shown


def _state(rollout: Rollout, number: int, counted: list[Member], failed: list[Member], opened: list[Member],
           until: datetime | None, now: datetime) -> WaveState:
    if number > rollout.wave:
        return WaveState.PENDING
    if number < rollout.wave:
        return WaveState.FAILED if len(failed) > rollout.settings.max_failures else WaveState.DONE
    if len(failed) > rollout.settings.max_failures:
        return WaveState.FAILED
    if opened or any(m.state is MemberState.PENDING for m in counted):
        return WaveState.RUNNING
    if rollout.state in {RolloutState.RUNNING, RolloutState.PAUSED} and until is not None and until > now \
            and not rollout.promoted:
        return WaveState.BAKING
    return WaveState.DONE


def progress_line(*, rollout: Rollout, decision: Decision) -> str:
    """One line of `apply`'s per-wave progress; printed when it changes."""
    head = f"Rollout {rollout.rollout_id}: "
    where = f"wave {rollout.wave} of {rollout.waves}"
    if rollout.revert:
        return head + f"reverting {where}"
    if rollout.state is RolloutState.HALTED:
        return head + f"halted at {where}: {rollout.reason}"
    if rollout.state is not RolloutState.RUNNING:
        return head + str(rollout.state) + (f" at {where}" if rollout.state is RolloutState.PAUSED else "")
    if decision.step is Step.WAIT and decision.bake_until is not None:
        return head + f"{where} baking until {decision.bake_until.strftime('%H:%M:%S')} UTC"
    size = rollout.sizes[rollout.wave - 1] if 0 < rollout.wave <= len(rollout.sizes) else 0
    return head + f"{where} running ({size} resources)"


def observe(*, rollout: Rollout, members: Iterable[Member], now: datetime) -> Decision:
    """What the advancing process would decide now (read-only: a watcher shows it without acting)."""
    return decide(rollout=rollout, members=members, now=now)


def rollout_json(*, rollout: Rollout, members: list[Member], now: datetime) -> dict[str, Any]:
    return {
        "rollout_id": rollout.rollout_id, "state": str(rollout.state), "wave": rollout.wave, "waves": rollout.waves,
        "sizes": list(rollout.sizes), "created_at": rollout.created_at, "updated_at": rollout.updated_at,
        "actor": rollout.actor, "desired_commit": rollout.desired_commit, "reason": rollout.reason,
        "promoted": rollout.promoted, "reverting": rollout.revert,
        "settings": {"bake_seconds": rollout.settings.bake, "max_failures": rollout.settings.max_failures,
                     "on_failure": str(rollout.settings.on_failure)},
        "waves_detail": [
            {"wave": view.wave, "state": str(view.state), "size": view.size, "succeeded": view.succeeded,
             "failed": view.failed, "running": view.open, "superseded_or_skipped": view.out,
             "baking_until": view.baking_until.isoformat() if view.baking_until else None,
             "failures": list(view.failures)}
            for view in waves(rollout=rollout, members=members, now=now)],
    }


def rollout_text(*, rollout: Rollout, members: list[Member], now: datetime) -> str:
    lines = [f"{rollout.rollout_id}  {rollout.state}  wave {rollout.wave} of {rollout.waves}  "
             f"({', '.join(map(str, rollout.sizes))} resources)  since {rollout.created_at}"
             + (f"  by {rollout.actor}" if rollout.actor else "")]
    if rollout.reason:
        lines.append(f"  reason: {rollout.reason}")
    for view in waves(rollout=rollout, members=members, now=now):
        text = f"  wave {view.wave}: {view.state}, {view.succeeded}/{view.size} succeeded"
        if view.failed:
            text += f", {view.failed} failed"
        if view.open:
            text += f", {view.open} running"
        if view.out:
            text += f", {view.out} superseded or skipped"
        if view.state is WaveState.BAKING and view.baking_until:
            text += f", baking until {view.baking_until.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        lines.append(text)
        lines.extend(f"    {failure}" for failure in view.failures)
    return "\n".join(lines) + "\n"
