"""`reconciler daemon`: the controller left running under systemd, as a package of supervised parts.

Passes are level-triggered and coalesced (passes.py); workers claim jobs from the shared queue all the
time (pool.py), so jobs queued by `reconciler apply` in another process get done here too; the
election (election.py) decides who claims and who plans; drift checks run in drift.py's loop; the API
(apiserver.py, plane.py) and systemd (reporter.py) see the daemon through those parts. root.py composes
them. The names below are the package's public face (the CLI, coordination and tests import them).
"""

from ..drift import DriftReport, run_drift_pass
from .election import LEADER_LOCK, LEADER_POLL, LOCK_NAME
from .options import LEADER_TTL, LOCK_TTL, DaemonOptions, DaemonRefused, read_token
from .root import Daemon, run_daemon

__all__ = ["LEADER_LOCK", "LEADER_POLL", "LEADER_TTL", "LOCK_NAME", "LOCK_TTL", "Daemon", "DaemonOptions",
           "DaemonRefused", "DriftReport", "read_token", "run_daemon", "run_drift_pass"]
