"""Health checks of every resource's URL: concurrent, bounded, time-limited, and free of side effects.

It only measures. Deciding what a failure means (count it, mark unhealthy, re-provision) belongs to
the store and the plan, so this module can be run by the daemon's drift loop and by `reconciler
check` alike, and tested against real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterable

# How much of an answer a check reads: a 600 MB body must cost a check no more than this.
BODY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One URL's answer: `ok` means 2xx or 3xx within the timeout (redirects are not followed).

    Only the status line, the headers and the first BODY_BYTES of the body are read.
    """

    resource_id: str
    url: str
    ok: bool
    status: int | None
    latency: float
    error: str | None = None


async def check_all(
    targets: Iterable[tuple[str, str]], *, concurrency: int = 100, timeout: float = 5.0
) -> list[CheckResult]:
    """Check (resource_id, url) pairs, at most `concurrency` at once; every check returns a result."""
    import aiohttp

    pairs = list(targets)
    if not pairs:
        return []
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=300)
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=limit, auto_decompress=False) as session:
        gate = asyncio.Semaphore(concurrency)
        return list(await asyncio.gather(*(_check(session, gate, rid, url) for rid, url in pairs)))


async def _check(session, gate: asyncio.Semaphore, resource_id: str, url: str) -> CheckResult:
    import aiohttp

    async with gate:
        started = time.monotonic()
        try:
            async with session.get(url, allow_redirects=False) as response:
                # A few KiB show the server answers; the rest is left unread (the connection is closed).
                await response.content.read(BODY_BYTES)
                ok = 200 <= response.status < 400
                error = None if ok else f"HTTP {response.status}"
                return CheckResult(resource_id, url, ok, response.status, time.monotonic() - started, error)
        except asyncio.TimeoutError:
            return CheckResult(resource_id, url, False, None, time.monotonic() - started, "timed out")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            return CheckResult(resource_id, url, False, None, time.monotonic() - started, reason[:200])

