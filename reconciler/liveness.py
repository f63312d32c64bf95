"""Who this process is on its machine, and whether another holder there is gone: one answer for every lease.

The single-daemon lock, the leader lease and job leases all name their holder by host and pid. A holder on
this host whose process no longer exists (kill -9) need not be waited out; one on another host always is,
since its pid means nothing here.
"""

from __future__ import annotations

import os
import socket

# The name this process uses for itself in leases; containers that share a hostname can set it apart.
HOST = os.environ.get("RECONCILER_HOST") or socket.gethostname()


def owner_is_dead(host: str | None, pid: int | str | None) -> bool:
    """True when (host, pid) names a process of this host that no longer exists."""
    from .runner import process_alive

    text = str(pid) if pid is not None else ""
    return host == HOST and text.isdigit() and not process_alive(pid=int(text))
