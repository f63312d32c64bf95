"""What a daemon is started with, and how its start is refused: read by every part of the daemon package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ReconcilerError
from ..retry import RetryPolicy
from ..settle import DEFAULT_SETTLE
from ..workers import AfterCheck, EngineConfig

if TYPE_CHECKING:
    from ..tokens import Keyring

LOCK_TTL = 15.0  # default of --lock-ttl: the single-daemon lock (SQLite) lapses this long after a renewal
LEADER_TTL = 10.0  # default of --leader-ttl


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    db: str
    desired: Path
    provision: Path
    work_dir: Path
    resync: float = 60.0
    drift_interval: float = 300.0
    unhealthy_after: int = 3
    check_concurrency: int = 100
    check_timeout: float = 5.0
    self_heal: bool = False
    parallelism: int = 10
    timeout: float = 900.0
    stop_grace: float = 30.0
    allow_mass_delete: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api: str | None = "127.0.0.1:7878"  # HOST:PORT, or None for no API
    api_token_file: Path | None = None
    api_tokens: Path | None = None  # the tokens file (tokens.py), re-read on SIGHUP
    busy_timeout: float = 30.0  # SQLite: seconds a write waits for another process's lock
    lease_seconds: float = 30.0  # a job's lease; renewed every third of it while its script runs
    lock_ttl: float = LOCK_TTL
    leader_ttl: float = LEADER_TTL
    settle: float = DEFAULT_SETTLE  # seconds a changed desired file must stay unchanged (settle.py)
    policy: Path | None = None  # --policy/RECONCILER_POLICY; None: policy.yaml beside desired/ if it exists


class DaemonRefused(ReconcilerError):
    """The daemon cannot start (another holds the database); the message says who."""


def engine_config(*, options: DaemonOptions, guard_orphans: bool) -> EngineConfig:
    """How scripts run, read afresh from provision/ (at start and on SIGHUP)."""
    from ..actor import daemon_actor
    from ..engine import target_timeouts
    from ..runner import read_pass_env

    return EngineConfig(provision_dir=options.provision, work_dir=options.work_dir, timeout=options.timeout,
                        retry=options.retry, lease_seconds=options.lease_seconds,
                        target_timeouts=target_timeouts(provision_dir=options.provision),
                        guard_orphans=guard_orphans, pass_env=read_pass_env(provision_dir=options.provision),
                        after_check=AfterCheck(timeout=options.check_timeout, unhealthy_after=options.unhealthy_after,
                                               actor=daemon_actor()))


def read_token(path: Path | None) -> str | None:
    """The API's bearer token from its file (never from the command line, where `ps` shows it)."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise DaemonRefused(f"cannot read --api-token-file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise DaemonRefused(f"--api-token-file {path}: the token must be at least 16 characters")
    return token


def keyring(options: DaemonOptions) -> Keyring:
    """The API's tokens: --api-token-file's and --api-tokens'; a tokens file that does not load refuses the start."""
    from ..errors import SpecError
    from ..tokens import Keyring

    admin = read_token(options.api_token_file)
    try:
        return Keyring(admin_token=admin, tokens_file=options.api_tokens)
    except SpecError as exc:
        raise DaemonRefused(f"--api-tokens {options.api_tokens} does not load: "
                            + "; ".join(str(problem) for problem in exc.problems)) from None
