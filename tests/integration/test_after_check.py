"""The health check right after a provision (issue 16): bounded by its timeout, counted like a drift check,
and never the job's business. Real workers, real scripts, a real SQLite file, real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.models import JobRequest, ResourceSpec, spec_hash
from reconciler.store import open_store
from reconciler.workers import AfterCheck, EngineConfig, WorkerPool, check_one
from tests.support import make_project

SPEC = ResourceSpec(resource_id="web", owner="acme", region="eu-west-1", deploy_ref="v1")


@pytest.fixture
def silent() -> Iterator[str]:
    """A socket that accepts connections and never answers: a check against it can only time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_a_check_of_a_server_that_never_answers_ends_at_its_timeout(silent: str) -> None:
    (result,) = check_one(resource_id="web", url=silent, timeout=0.3)
    assert (result.ok, result.error) == (False, "timed out")


class _BrokenHealth:
    """The real store, except that recording health fails (mocked: a store refusing only that write)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def record_health(self, **kwargs):
        raise RuntimeError("disk on fire")


@pytest.mark.parametrize("broken", [False, True], ids=["counted", "store-refuses"])
def test_the_check_counts_like_a_drift_check_and_never_fails_the_job(tmp_path: Path, silent: str,
                                                                     broken: bool) -> None:
    project = make_project(tmp_path / "p", provision=f"#!/usr/bin/env bash\necho {silent}\n")
    store = open_store(url=str(project / "state.db"))
    store.enqueue(requests=[JobRequest("web", "create", "new", SPEC.model_dump(), target_hash=spec_hash(SPEC))],
                  now="2026-01-01T00:00:00.000000Z", commit=None)
    config = EngineConfig(provision_dir=project / "provision", work_dir=project / "work",
                          after_check=AfterCheck(timeout=0.3, unhealthy_after=1))
    pool = WorkerPool(store=_BrokenHealth(store) if broken else store, config=config, parallelism=1)
    (finished,) = pool.run_until_done(scope={"web"})
    assert finished.recorded and finished.result.ok
    row = store.get_resource("web")
    assert row.status == "active" and row.error is None
    # unhealthy_after=1: one failed check turns it unhealthy, as a drift check would; unless the write failed
    assert (str(row.health), row.consecutive_failures) == (("unknown", 0) if broken else ("unhealthy", 1))
    store.close()
