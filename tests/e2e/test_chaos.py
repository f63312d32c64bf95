"""The chaos campaign (issue 13): its pure parts, the short campaign `make test` runs, and (slow, in
`make bench`) the self-test that re-introduces known past defects and requires the campaign to find
them from a fixed seed, with the seed and a shrunk schedule in its report.

The campaigns run `python -m chaos` as a real process (it re-execs itself in a private mount namespace
for the disk faults); convergence is checked against a generous limit, a failure rather than a timing
assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos import invariants, model, schedule
from chaos.observe import Records, Run, Snapshot, read_runs
from tests import pgserver
from tests.support import ROOT

# The short campaign: a few fixed seeds, about 60 s in all on this machine (2 cores, shared), chosen
# so that together they run every operation, fault and misbehaviour at least once (test below).
SHORT_SQLITE_SEEDS, SHORT_POSTGRES_SEEDS, SHORT_STEPS = "28,782", "888", 20


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def start_chaos(workdir: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "results.json"
    proc = subprocess.Popen([sys.executable, "-m", "chaos", *args, "--json", str(out), "--workdir", str(workdir)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def run_chaos(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "chaos", *args, "--json", str(out), "--workdir", str(tmp_path)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    print(done.stdout, done.stderr)
    return done, (json.loads(out.read_text()) if out.exists() else {})


# --- the pure parts ----------------------------------------------------------------------------------


def test_a_seed_fixes_the_schedule() -> None:
    first = schedule.generate(seed=5, steps=50, backend="sqlite")
    assert first == schedule.generate(seed=5, steps=50, backend="sqlite")
    assert first != schedule.generate(seed=6, steps=50, backend="sqlite")
    assert schedule.loads(schedule.dumps(first)) == first
    assert not {step.kind for step in first} & schedule.POSTGRES_ONLY
    assert not {step.kind for step in schedule.generate(seed=5, steps=200, backend="postgres")} & schedule.SQLITE_ONLY


def test_the_short_campaign_runs_every_operation_and_fault() -> None:
    def kinds(backend: str, seeds: str) -> set[str]:
        steps = [step for seed in seeds.split(",")
                 for step in schedule.generate(seed=int(seed), steps=SHORT_STEPS, backend=backend)]
        return ({step.kind for step in steps} | {step.args["mode"] for step in steps if "mode" in step.args}
                | {step.args["write"] for step in steps if "write" in step.args})

    sqlite = kinds("sqlite", SHORT_SQLITE_SEEDS)
    assert sqlite >= {*schedule.allowed(backend="sqlite"), *schedule.MISBEHAVIOURS, *schedule.WRITE_MODES,
                      *schedule.POLICY_KINDS}
    postgres = [step for seed in SHORT_POSTGRES_SEEDS.split(",")
                for step in schedule.generate(seed=int(seed), steps=SHORT_STEPS, backend="postgres")]
    # one outage longer than the /health tolerance, so that invariant is checked too
    assert any(step.kind == "restart_postgres" and step.args["down"] > 6 for step in postgres)


def test_any_subset_of_a_schedule_is_a_schedule() -> None:
    """Shrinking drops steps: every step must still mean something in whatever model it meets."""
    steps = schedule.generate(seed=9, steps=120, backend="sqlite")
    state = model.initial()
    for step in steps[::3]:
        if step.kind in ("add", "change_inplace", "change_replace", "remove", "rename", "move"):
            state = model.edit(state, kind=step.kind, args=step.args)
        assert model.MIN_FILE_RESOURCES <= len(state.files) <= model.MAX_FILE_RESOURCES
    assert all(state.text(name, world="w") is None or "resource_id" in state.text(name, world="w")
               for name in model.FILES)


def _run(rid: str, action: str, job: str, *, pid: int, started: float, ended: float | None = None,
         code: int | None = 0, worker: int = 1) -> Run:
    return Run(pid=pid, resource_id=rid, action=action, deploy_ref="v1", region="eu-west-1", job_id=job,
               worker=worker, mode="ok", started=started, ended=ended, exit=code if ended else None,
               url=f"http://x/{pid}" if action != "delete" else None)


def _snap(*, at: float, resources: dict | None = None, jobs: dict | None = None, events: dict | None = None) -> Snapshot:
    return Snapshot(at=at, resources=resources or {}, jobs=jobs or {}, event_jobs=events or {})


def test_a_teardown_is_warranted_only_by_a_state_that_dropped_the_resource() -> None:
    versions = [invariants.Version(at=100.0, declared=frozenset({"a", "b"}), what="start"),
                invariants.Version(at=200.0, declared=frozenset({"a"}), what="b removed")]
    records = Records(runs=[_run("b", "delete", "j1", pid=1, started=201.0),
                            _run("a", "delete", "j2", pid=2, started=150.0),
                            _run("a", "delete", "j3", pid=3, started=151.0)], overlaps=[])
    jobs = {"j1": {"action": "delete", "created_at": "1970-01-01T00:03:20.500000Z"},
            "j2": {"action": "delete", "created_at": "1970-01-01T00:02:29.000000Z"},
            "j3": {"action": "replace", "created_at": "1970-01-01T00:02:29.000000Z"}}
    found = invariants.unwarranted_teardowns(records, _snap(at=300.0, jobs=jobs), versions)
    assert [v.detail.split()[0] for v in found] == ["a"]  # b was removed; a's replace is allowed


def test_a_forgotten_resource_is_never_torn_down_after_its_forget() -> None:
    records = Records(runs=[_run("a", "delete", "j1", pid=1, started=99.0),
                            _run("a", "delete", "j2", pid=2, started=101.0),
                            _run("b", "delete", "j3", pid=3, started=101.0)], overlaps=[])
    found = invariants.forgotten_teardowns(records, {"a": 100.0})
    assert [(v.kind, v.detail.split()[0]) for v in found] == [("forgotten resource torn down", "a")]
    snap = _snap(at=200.0, resources={"a": {"status": "forgotten"}, "b": {"status": "active"}})
    gaps = invariants.convergence_gaps(Records(runs=[], overlaps=[]), snap, desired={}, ever={"a", "b"},
                                       open_scripts=0, forgotten=frozenset({"a", "b"}))
    assert gaps == ["b: active, want forgotten"]


def test_deleted_rows_need_a_teardown_that_exited_0_and_completed_runs_need_their_record() -> None:
    records = Records(runs=[_run("a", "delete", "j1", pid=1, started=1.0, ended=2.0, code=3),
                            _run("b", "create", "j2", pid=2, started=1.0, ended=2.0),
                            _run("c", "create", "j3", pid=3, started=1.0, ended=2.0, worker=77)], overlaps=[])
    snap = _snap(at=100.0, resources={"a": {"status": "deleted"}},
                 jobs={"j2": {"action": "create", "status": "running"}, "j3": {"action": "create", "status": "running"}})
    assert [v.kind for v in invariants.deleted_without_teardown(records, snap)] == [
        "deleted before its teardown succeeded"]
    lost = invariants.lost_runs(records, snap, killed=[77])  # c's worker was killed with kill -9: excused
    assert [v.detail.split()[0] for v in lost] == ["b"]


def test_policy_steps_join_a_schedule_without_moving_its_other_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the policy operations come from a draw of their own, so a seed keeps its other steps."""
    steps = schedule.generate(seed=28, steps=21, backend="sqlite")
    policy = [step for step in steps if step.kind in schedule.POLICY_KINDS]
    assert len(policy) == 3 and {step.kind for step in policy} == set(schedule.POLICY_KINDS)
    monkeypatch.setattr(schedule, "POLICY_FROM", 10**6)  # (issue 17's rollout step uses the same threshold)
    drawn = (*schedule.POLICY_KINDS, schedule.ROLLOUT_KIND)
    assert [step for step in steps if step.kind not in drawn] == schedule.generate(
        seed=28, steps=21, backend="sqlite")
    assert [step.kind for step in steps].count(schedule.ROLLOUT_KIND) == 1
    monkeypatch.undo()
    assert not any(step.kind in schedule.POLICY_KINDS for step in schedule.generate(seed=3, steps=12,
                                                                                      backend="sqlite"))


def _job(rid: str, action: str, owner: str, at: float) -> dict:
    stamp = f"1970-01-01T00:{int(at) // 60:02d}:{int(at) % 60:02d}.000000Z"
    return {"job_id": f"j-{rid}-{at}", "resource_id": rid, "action": action, "owner": owner, "created_at": stamp}


def test_no_create_may_take_an_owner_over_the_quota_without_an_override() -> None:
    policies = [invariants.PolicyVersion(at=0.0, per_owner=None, what="none"),
                invariants.PolicyVersion(at=100.0, per_owner=2, what="at most 2")]
    versions = [invariants.Version(at=0.0, declared=frozenset({"a", "b", "c", "d", "e"}), what="all")]
    jobs = [_job("a", "create", "acme", 10), _job("b", "create", "acme", 10), _job("c", "create", "acme", 10),
            _job("c", "create", "acme", 120),  # a retry of one already in the bucket: not entering
            _job("d", "create", "acme", 130),  # over: three already there
            _job("a", "delete", "acme", 140), _job("b", "delete", "acme", 140), _job("d", "delete", "acme", 140),
            _job("e", "create", "acme", 150)]  # two left (c, e): at the limit
    snap = _snap(at=200.0, jobs={job["job_id"]: job for job in jobs})
    found = invariants.quota_exceeded(snap, policies, versions)
    assert [v.detail.split()[0] for v in found] == ["d"]
    excused = Snapshot(at=200.0, resources={}, jobs=snap.jobs, event_jobs={}, overridden=frozenset({"j-d-130"}))
    assert invariants.quota_exceeded(excused, policies, versions) == []
    # a policy loosened just before (within the read slack) may still have been the one read
    loose = [*policies, invariants.PolicyVersion(at=128.0, per_owner=None, what="none again")]
    assert invariants.quota_exceeded(snap, loose, versions) == []
    # a resource some visible desired state no longer declared may have been counted out already
    dropped = [*versions, invariants.Version(at=129.0, declared=frozenset({"a", "d", "e"}), what="b, c gone")]
    assert invariants.quota_exceeded(snap, policies, dropped) == []


def test_the_scripts_record_runs_and_detect_overlaps(tmp_path: Path) -> None:
    from chaos.scripts import write_scripts

    write_scripts(provision=tmp_path / "p", control=tmp_path / "c")
    (tmp_path / "c").mkdir()
    env = {**os.environ, "RESOURCE_ID": "r1", "RECONCILER_ACTION": "create", "DEPLOY_REF": "v2", "REGION": "x",
           "RESOURCE_PARAMS": '{"sleep":0.5}', "RECONCILER_JOB_ID": "j9"}
    first = subprocess.Popen([str(tmp_path / "p" / "provision.sh")], env=env, stdout=subprocess.PIPE, text=True)
    import time

    time.sleep(0.2)
    second = subprocess.run([str(tmp_path / "p" / "provision.sh")], env=env, capture_output=True, text=True)
    assert second.returncode == 99
    assert "ready at http://127.0.0.1:9/r1/v2/" in first.communicate(timeout=10)[0]
    records = read_runs(tmp_path / "c" / "runs.log")
    assert len(records.overlaps) == 1 and [run.completed for run in records.runs] == [True]


# --- the short campaign (make test) -------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_short_campaign(tmp_path: Path) -> None:
    """SQLite and PostgreSQL side by side (the campaigns mostly wait, so together they take the time of
    the longer one); each must hold every invariant and converge within a generous limit."""
    runs = {"sqlite": ("--seeds", SHORT_SQLITE_SEEDS)}
    if pgserver.available():
        runs["postgres"] = ("--seeds", SHORT_POSTGRES_SEEDS)
    else:
        print(f"PostgreSQL server binaries not found in {pgserver.PG_BIN}: the PostgreSQL campaign is skipped")
    procs = {backend: start_chaos(tmp_path / backend, *args, "--steps", str(SHORT_STEPS), "--backend", backend,
                                  "--converge-limit", "150") for backend, args in runs.items()}
    for backend, (proc, out) in procs.items():
        stdout, _ = proc.communicate(timeout=390)
        print(stdout)
        results = json.loads(out.read_text()) if out.exists() else {}
        assert proc.returncode == 0, f"{backend}:\n{stdout[-6000:]}"
        expected = SHORT_SQLITE_SEEDS if backend == "sqlite" else SHORT_POSTGRES_SEEDS
        assert [item["seed"] for item in results["results"]] == [int(s) for s in expected.split(",")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", sorted((ROOT / "chaos" / "regressions").glob("*.json")), ids=lambda p: p.stem)
def test_a_failure_found_stays_fixed(tmp_path: Path, path: Path) -> None:
    """Each shrunk schedule a campaign found (chaos/regressions/) runs again, without the defect, and holds."""
    saved = json.loads(path.read_text())
    done, _ = run_chaos(tmp_path, "--seed", str(saved["seed"]), "--backend", saved["backend"], "--schedule",
                        str(path), "--confirm", "0", timeout=290)
    assert done.returncode == 0, f"{saved['found']}\n{done.stdout[-4000:]}"


# --- the self-test (make bench): known defects, brought back, are found from a fixed seed --------------

SELF_TEST = {
    # a hanging script, then its daemon killed twice: the second time while it takes the job over
    "claim-forgets-old-run": ("12570", "12", "sqlite", "overlap"),
    # desired files written in slices (truncate, then pieces) while the daemon watches
    "unsettled-read": ("1", "12", "sqlite", "unwarranted teardown"),
    # the daemon plans without its policy: a per-owner quota saved, then acme resources added and renamed
    "policy-ignored": ("28", "20", "sqlite", "quota exceeded without an override"),
    # issue 16: suspensions read by no plan and no claim; the schedule's own suspend steps meet edits
    "suspension-ignored": ("10", "30", "sqlite", "touched while suspended"),
    # a rollout's next wave does not wait for the bake (issue 17): seed 28 has its rollout step at step 13 of 30
    "rollout-no-bake": ("28", "20", "sqlite", "wave started before the previous one baked"),
}
# the defects found before the operator controls existed: their seeds' schedules as they were then
WITHOUT_CONTROLS = {"claim-forgets-old-run", "unsettled-read", "policy-ignored"}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("defect", sorted(SELF_TEST))
def test_the_campaign_finds_a_reintroduced_defect(tmp_path: Path, defect: str) -> None:
    seed, steps, backend, kind = SELF_TEST[defect]
    controls = ("--no-controls",) if defect in WITHOUT_CONTROLS else ()
    done, results = run_chaos(tmp_path, "--seed", seed, "--steps", steps, "--backend", backend, "--defect", defect,
                              *controls, "--shrink", "--shrink-kind", kind, "--shrink-budget", "900", timeout=3500)
    assert done.returncode == 1
    (item,) = results["results"]
    assert item["seed"] == int(seed) and any(v.startswith(kind) for v in item["violations"])
    assert f"seed {seed} FAILED" in done.stdout and "shrunk schedule of seed" in done.stdout
    assert 0 < len(item["shrunk"]) < int(steps)


def test_a_suspended_resource_is_never_touched_except_by_a_job_claimed_before() -> None:
    """Issue 16: runs of a job queued or claimed inside a suspension's window are violations."""
    held = [invariants.Held(key=0, resource_id="a", start=100.0, end=200.0),
            invariants.Held(key=1, resource_id=None, start=300.0, end=None)]
    records = Records(runs=[_run("a", "update", "j1", pid=1, started=150.0),  # queued while suspended
                            _run("a", "update", "j2", pid=2, started=101.0),  # claimed just before: finishes
                            _run("a", "update", "j3", pid=3, started=160.0),  # queued before, claimed inside
                            _run("b", "update", "j4", pid=4, started=150.0),  # not suspended
                            _run("b", "create", "j5", pid=5, started=350.0)],  # the fleet was
                      overlaps=[])
    iso = "1970-01-01T00:{:02d}:{:02d}.000000Z".format
    jobs = {"j1": {"created_at": iso(2, 20), "started_at": iso(2, 29)},
            "j2": {"created_at": iso(1, 30), "started_at": iso(1, 39)},
            "j3": {"created_at": iso(1, 30), "started_at": iso(2, 39)},
            "j4": {"created_at": iso(2, 20), "started_at": iso(2, 29)},
            "j5": {"created_at": iso(5, 40), "started_at": iso(5, 49)}}
    found = invariants.touched_while_suspended(records, _snap(at=400.0, jobs=jobs), held)
    assert [v.detail.split(" (job ")[1].split(",")[0] for v in found] == ["j1", "j3", "j5"]


def test_a_wave_queued_before_the_previous_one_baked_is_a_violation() -> None:
    from chaos.observe import WaveJob

    def job(wave: int, queued: float, finished: float | None, status: str = "succeeded") -> WaveJob:
        return WaveJob("ro-1", wave, queued, finished, status, bake=2.0, promoted=False)

    good = [job(1, 0.0, 1.0), job(2, 3.1, 4.0), job(2, 3.2, 4.5), job(3, 6.6, 7.0)]
    assert invariants.early_waves(good) == []
    early = [job(1, 0.0, 1.0), job(2, 2.5, 4.0)]  # 1.5 s after the canary's success, bake 2 s
    assert [v.kind for v in invariants.early_waves(early)] == ["wave started before the previous one baked"]
    running = [job(1, 0.0, None, "running"), job(2, 5.0, 6.0)]
    assert len(invariants.early_waves(running)) == 1
