"""Whether a daemon holds the database: the one place a command that would fight a running daemon asks.

`destroy` and `import --replace` change the rows a daemon acts on. With a daemon running, its next
pass undoes a destroy (it re-creates every declared resource) and an import swaps the rows under its
workers, so both refuse while a daemon holds the database: on SQLite the single-daemon lock, on
PostgreSQL the leader lease (some daemon always seeks it while any runs). A holder on this host whose
process is gone (kill -9) does not count. While the fleet is suspended (`suspend --all`) the daemon
starts nothing, so both are allowed then: the incident switch first, then the operator's action.
"""

from __future__ import annotations

from typing import Any

from .daemon import LEADER_LOCK, LOCK_NAME
from .errors import ReconcilerError
from .liveness import owner_is_dead
from .models import iso, utcnow
from .ports import FleetFlagReader, LockReader


class DaemonHoldsDatabase(ReconcilerError):
    """A command refused because a running daemon would undo or trip over it; the message says who."""


def live_daemon(*, store: LockReader) -> dict[str, Any] | None:
    """The lock row of a live daemon on this database (pid, host, since), or None."""
    now = iso(utcnow())
    for name in (LOCK_NAME, LEADER_LOCK):
        holder = store.lock_holder(name=name, now=now)
        if holder is not None and not owner_is_dead(holder.get("host"), holder.get("pid")):
            return holder
    return None


def refuse_while_daemon_runs(*, store: FleetFlagReader, command: str) -> None:
    """Raise DaemonHoldsDatabase when a daemon holds the database `command` is about to change, unless
    the fleet is suspended (the daemon then starts nothing: it cannot fight the command)."""
    if store.fleet_suspension(now=iso(utcnow())) is not None:
        return
    holder = live_daemon(store=store)
    if holder is None:
        return
    raise DaemonHoldsDatabase(
        f"a daemon holds this database: pid {holder['pid']} on {holder['host']}, since {holder['since']}. "
        f"`reconciler {command}` would fight it (its passes act on these rows and re-create what is declared); "
        "stop the daemon first (e.g. systemctl stop reconciler), or suspend the fleet "
        "(reconciler suspend --all --reason …), then run it again. Nothing was changed.")

