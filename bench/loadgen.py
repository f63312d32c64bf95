"""`python -m bench.loadgen CONFIG_JSON`: a bounded HTTP load generator, run in its own process.

`concurrency` keep-alive connections (one aiohttp session) send GETs until `requests` have been
answered or `cap_seconds` have passed, after `warmup` untimed requests that open the connections.
Paths are either one fixed `path` or `/provisions/<id>` for random ids of the bench fleet
(`ids`: how many, `seed`). Prints one JSON line: requests, errors, seconds, rps, p50_ms, p99_ms.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


def _paths(config: dict) -> list[str]:
    total = config["requests"] + config.get("warmup", 0)
    if config.get("ids"):
        rng = random.Random(config.get("seed", 1))
        return [f"/provisions/tenant-{rng.randint(1, config['ids']):06d}" for _ in range(total)]
    return [config["path"]] * total


async def _run(config: dict) -> dict:
    import aiohttp

    base, concurrency = config["base"].rstrip("/"), config["concurrency"]
    paths = _paths(config)
    warmup = config.get("warmup", 0)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(path: str, record: bool) -> None:
            started = time.perf_counter()
            try:
                async with session.get(base + path) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                status = type(exc).__name__
            if record:
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        queue = iter(paths[:warmup])

        async def warm() -> None:
            for path in queue:
                await one(path, False)

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        timed = iter(paths[warmup:])
        deadline = time.perf_counter() + config["cap_seconds"]

        async def worker() -> None:
            for path in timed:
                if time.perf_counter() > deadline:
                    return
                await one(path, True)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] * 1000

    return {"requests": len(ordered), "errors": errors, "seconds": elapsed, "rps": len(ordered) / elapsed,
            "p50_ms": pct(50), "p99_ms": pct(99), "capped": len(ordered) < config["requests"]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_run(json.loads(sys.argv[1])))), flush=True)
