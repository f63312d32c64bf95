"""Reading and steering rollouts (issue 17): `rollout status` and the verbs, for the CLI and the API alike.

The verbs are rollout/machine.py's pure transitions; the store writes each one with its event and
actor in one transaction (`transition_rollout`), so a verb refused in the rollout's state writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .errors import ReconcilerError
from .models import iso, utcnow
from .ports import RolloutControl, RolloutReader
from .rollout import machine
from .rollout.model import Rollout
from .rollout.report import rollout_json, rollout_text


def status_document(*, store: RolloutReader, rollout_id: str | None, limit: int) -> list[dict[str, object]]:
    now = utcnow()
    return [rollout_json(rollout=rollout, members=store.rollout_members(rollout.rollout_id), now=now)
            for rollout in _chosen(store=store, rollout_id=rollout_id, limit=limit)]


def status_text(*, store: RolloutReader, rollout_id: str | None, limit: int) -> str:
    now = utcnow()
    shown = [rollout_text(rollout=rollout, members=store.rollout_members(rollout.rollout_id), now=now)
             for rollout in _chosen(store=store, rollout_id=rollout_id, limit=limit)]
    return "\n".join(shown) if shown else "No rollouts.\n"


def status_json(*, store: RolloutReader, rollout_id: str | None, limit: int) -> str:
    return json.dumps(status_document(store=store, rollout_id=rollout_id, limit=limit), indent=2) + "\n"


def _chosen(*, store: RolloutReader, rollout_id: str | None, limit: int) -> list[Rollout]:
    if rollout_id is None:
        return store.list_rollouts(limit=limit)
    found = store.get_rollout(rollout_id)
    if found is None:
        raise ReconcilerError(f"no rollout {rollout_id!r} (see `reconciler rollout status`)")
    return [found]


VERBS: dict[str, Callable[..., Rollout]] = {"pause": machine.pause, "resume": machine.resume,
                                            "abort": machine.abort, "promote": machine.promote}


def control(*, store: RolloutControl, rollout_id: str, verb: str, revert: bool, actor: str) -> str:
    """pause, resume, abort [--revert], promote: one pure transition, written with its event and actor."""

    def change(rollout: Rollout) -> Rollout:
        try:
            return machine.abort(rollout, revert=revert) if verb == "abort" else VERBS[verb](rollout)
        except machine.Refused as exc:
            raise ReconcilerError(str(exc)) from None

    after = store.transition_rollout(rollout_id=rollout_id, change=change, now=iso(utcnow()), kind=f"rollout_{verb}",
                                     actor=actor)
    if after is None:
        raise ReconcilerError(f"no rollout {rollout_id!r} (see `reconciler rollout status`)")
    return f"Rollout {rollout_id}: {verb}{' --revert' if revert else ''} recorded ({after.state}) by {actor}."
