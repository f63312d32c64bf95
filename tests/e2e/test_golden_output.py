"""Golden output: what `plan`, `apply`, `status` and `history` print, byte for byte, on fixed fleets.

Captured before the plan learnt its reasons and the views were split out (issue 14), so that reshape
provably changes no output. Timestamps of the setup are fixed; only job ids and script durations vary,
and those are masked. Regenerate (after a deliberate output change) with RECONCILER_GOLDEN_UPDATE=1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler.health import CheckResult
from reconciler.models import JobRequest, JobResult, ResourceSpec, spec_hash
from reconciler.store import open_store
from tests.support import make_project, run_cli, write_resources

GOLDEN = Path(__file__).parent / "golden"
T0, T1, T2 = "2024-05-01T00:00:00.000000Z", "2024-05-01T00:01:00.000000Z", "2024-05-01T00:02:00.000000Z"
LATER, EARLIER = "2999-01-01T00:00:00.000000Z", "2000-01-01T00:00:00.000000Z"
MASKS = ((re.compile(r"job-[0-9a-f]{16}"), "job-<id>"), (re.compile(r"\b\d+\.\ds\b"), "<n>s"),
         (re.compile(r"(?!2024|2999|2000)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"), "<now>"),
         (re.compile(r"Scripts run without .*\n"), ""), (re.compile(r"process group \d+ on \S+"), "process group"),
         # ages grow with the clock: status's AGE ("0s" after apply, "2y" for the 2024 setup), "in 972y"
         (re.compile(r"(?<![\w.<-])\d+[smhdy](?![\w.-])"), "<age>"))


def _spec(resource_id: str, **fields) -> ResourceSpec:
    base = dict(resource_id=resource_id, owner="acme", region="eu-west-1", deploy_ref="v1")
    return ResourceSpec(**{**base, **fields})


def _run(store, spec: ResourceSpec, *, ok: bool = True, retry_at: str | None = None, now: str = T0) -> None:
    """One job for `spec` queued, claimed and finished through the store's own API."""
    row = store.get_resource(spec.resource_id)
    action = "create" if row is None else "update"
    request = JobRequest(spec.resource_id, action, "golden", spec.model_dump(), target_hash=spec_hash(spec),
                         expected_version=row.version if row else None)
    store.enqueue(requests=[request], now=now, commit="abc123")
    (job,) = store.claim(worker="w", now=now, lease_until=LATER, resource_ids=[spec.resource_id])
    result = JobResult(ok, 0 if ok else 3, f"http://127.0.0.1:9/{spec.resource_id}" if ok else None,
                       None if ok else "exit status 3: boom", "boom\n", 0.5, retry_at)
    store.finish(job=job, worker="w", result=result, now=now)


def _fleet(project: Path) -> None:
    """Every kind of line a plan shows: create, update, replace, delete, retry, kept, waiting, API-declared."""
    write_resources(project, {
        "c-new": {}, "u-app": {"deploy_ref": "v2", "params": {"size": "large"}}, "r-app": {"region": "us-east-1"},
        "keep-1": {}, "busy": {"deploy_ref": "v2"}, "backoff": {}, "retry-now": {}, "sick": {},
        "p-block": {"region": "us-east-1", "protected": True},
    })
    store = open_store(url=str(project / "state.db"))
    for spec in (_spec("u-app", params={"size": "small"}), _spec("r-app"), _spec("keep-1"), _spec("d-old"),
                 _spec("p-kept", protected=True), _spec("p-block", protected=True), _spec("busy"), _spec("sick")):
        _run(store, spec)
    _run(store, _spec("backoff"), ok=False, retry_at=LATER, now=T1)
    _run(store, _spec("retry-now"), ok=False, retry_at=EARLIER, now=T1)
    row = store.get_resource("busy")
    store.enqueue(requests=[JobRequest("busy", "update", "golden", _spec("busy", deploy_ref="v2").model_dump(),
                                       target_hash="x", expected_version=row.version)], now=T1, commit=None)
    for _ in range(3):
        store.record_health(results=[CheckResult("sick", "http://127.0.0.1:9/sick", False, None, 0.0, error="refused")],
                            now=T2, unhealthy_after=3)
    store.declare_api(resource_id="api-one", spec=_spec("api-one", owner="tenant").model_dump(), requests=[], now=T1)
    store.close()


def _refused(project: Path) -> None:
    """desired/ emptied: the plan would delete every live resource."""
    write_resources(project, {"a": {}})
    store = open_store(url=str(project / "state.db"))
    for name in ("a", "b", "c"):
        _run(store, _spec(name))
    store.close()
    (project / "desired" / "fleet.yaml").unlink()


def _waiting_only(project: Path) -> None:
    write_resources(project, {"backoff": {}, "sick": {}})
    store = open_store(url=str(project / "state.db"))
    _run(store, _spec("sick"))
    _run(store, _spec("backoff"), ok=False, retry_at=LATER, now=T1)
    for _ in range(3):
        store.record_health(results=[CheckResult("sick", "http://x/sick", False, None, 0.0, error="refused")], now=T2,
                            unhealthy_after=3)
    store.close()


def _small(project: Path) -> None:
    write_resources(project, {"one": {}, "two": {"deploy_ref": "v2"}})
    store = open_store(url=str(project / "state.db"))
    _run(store, _spec("two"))
    store.close()


CASES = {
    "fleet": (_fleet, [
        ("plan",), ("plan", "-o", "json"), ("plan", "--target", "u-app", "--target", "busy"),
        ("plan", "--detailed-exitcode", "--target", "backoff"),
        ("apply", "--dry-run", "-o", "json", "--target", "api-one"),
        ("status",), ("status", "-o", "json"), ("status", "u-app"), ("status", "backoff", "-o", "json"),
        ("history", "backoff"), ("history", "u-app", "-o", "json"),
    ]),
    "refused": (_refused, [("plan",), ("plan", "-o", "json"), ("apply", "-y")]),
    "waiting": (_waiting_only, [("plan",), ("plan", "-o", "json")]),
    "small": (_small, [("apply", "-y", "-p", "1"), ("status",), ("history", "two"), ("destroy", "-y", "-p", "1")]),
    "small-json": (_small, [("apply", "-y", "-o", "json", "-p", "1")]),
    "empty": (lambda project: write_resources(project, {"solo": {"params": {"k": [1, "two"]}}}),
              [("plan",), ("plan", "-o", "json"), ("status",), ("status", "-o", "json")]),
}


def _transcript(project: Path, commands: list[tuple[str, ...]]) -> str:
    parts = []
    for argv in commands:
        done = run_cli(project, *argv)
        parts.append(f"$ reconciler {' '.join(argv)}\n[exit {done.returncode}]\n--- stdout\n{done.stdout}"
                     f"--- stderr\n{done.stderr}")
    text = "\n".join(parts).replace(str(project), "<project>")
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    return text


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_unchanged(case: str, tmp_path: Path) -> None:
    setup, commands = CASES[case]
    project = make_project(tmp_path / "p")
    setup(project)
    text = _transcript(project, commands)
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("RECONCILER_GOLDEN_UPDATE"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
