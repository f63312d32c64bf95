"""The backoff policy, pure: attempt number in, delay out (exponential, capped, full jitter).

Full jitter ("sleep = random(0, min(cap, base * factor ** attempt))") spreads the retries of many
resources that failed together, so a recovering dependency is not hit by all of them at once.
The random source is an argument so tests can pin it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Defaults: base 5 s, doubling, capped at 15 min."""

    base: float = 5.0
    factor: float = 2.0
    cap: float = 900.0

    def ceiling(self, *, attempt: int) -> float:
        """The largest delay after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt, 1) - 1
        if exponent > 64:  # beyond any cap; avoids float overflow for absurd attempt counts
            return self.cap
        return min(self.cap, self.base * self.factor**exponent)


def next_delay(*, attempt: int, policy: RetryPolicy, random: Callable[[], float], permanent: bool = False) -> float:
    """Seconds to wait before the next attempt. Permanent failures wait the full cap (a human must act)."""
    if permanent:
        return policy.cap
    return policy.ceiling(attempt=attempt) * random()
