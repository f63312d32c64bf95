"""The store's operator transitions of issue 16 on both backends: forget, adopt (one and a fleet), the
release of a forgotten id, an adopt found by observe.sh, and an old-schema database that migrates."""

from __future__ import annotations

import json
import sqlite3

import pytest

from reconciler.errors import StoreConflict
from reconciler.models import Adoption, JobResult, ResourceSpec, ResourceStatus, canonical_json, spec_hash
from reconciler.store import open_store

from .test_store_backends import SPEC, at, claim_one, created, request_for

ACTOR = "cli:ops@host"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(url=url)
    yield opened
    opened.close()


def adoption(resource_id: str, url: str = "http://10.0.0.1/", created_at: str | None = None) -> Adoption:
    spec = ResourceSpec(resource_id=resource_id, owner="acme", region="eu", deploy_ref="v1").model_dump()
    return Adoption(resource_id=resource_id, spec=spec, spec_hash=spec_hash(ResourceSpec(**spec)), url=url,
                    created_at=created_at)


def test_forget_keeps_the_row_and_its_history_and_is_not_live(store) -> None:
    created(store)
    store.forget(resource_ids=["acme-prod"], reason="handed to team X", actor=ACTOR, now=at(5))
    row = store.get_resource("acme-prod")
    assert (row.status, row.live, row.unmanaged, row.url) == (ResourceStatus.FORGOTTEN, False, True,
                                                              "http://127.0.0.1:8001/")
    last = store.events("acme-prod")[-1]
    assert (last.kind, last.actor, last.details["reason"]) == ("forgotten", ACTOR, "handed to team X")
    assert [e.kind for e in store.events("acme-prod")][:2] == ["queued", "started"]
    assert store.counts().live == 0 and store.counts().statuses["forgotten"] == 1


def test_forget_refuses_all_when_one_id_has_an_open_job_or_is_not_managed(store) -> None:
    created(store)
    other = SPEC.model_copy(update={"resource_id": "acme-dev"})
    store.enqueue(requests=[request_for(other)], now=at(2), commit=None)
    with pytest.raises(StoreConflict) as refused:
        store.forget(resource_ids=["acme-prod", "acme-dev", "nope"], reason="r", actor=ACTOR, now=at(5))
    assert "acme-dev: a job is open" in str(refused.value) and "nope: no such resource" in str(refused.value)
    assert store.get_resource("acme-prod").status is ResourceStatus.ACTIVE


def test_release_lets_a_forgotten_id_be_created_again(store) -> None:
    created(store)
    store.forget(resource_ids=["acme-prod"], reason="r", actor=ACTOR, now=at(5))
    store.release_forgotten(resource_ids=["acme-prod"], now=at(6))
    row = store.get_resource("acme-prod")
    assert (row.status, row.unmanaged) == (ResourceStatus.FORGOTTEN, False)
    queued = store.enqueue(requests=[request_for(version=row.version)], now=at(7), commit=None)
    assert len(queued) == 1
    again = store.get_resource("acme-prod")
    assert (again.status, again.created_at) == (ResourceStatus.PROVISIONING, at(7))


def test_adopt_a_fleet_in_one_transaction_over_tombstones_and_forgotten_rows(store) -> None:
    created(store)
    store.forget(resource_ids=["acme-prod"], reason="r", actor=ACTOR, now=at(5))
    fleet = [adoption("acme-prod"), *(adoption(f"t-{i:04d}", f"http://10.0.0.{i % 250}/") for i in range(1000))]
    fleet[1] = adoption("t-0000", created_at="2020-01-01T00:00:00.000000Z")
    assert store.adopt(adoptions=fleet, actor=ACTOR, reason="brownfield", now=at(10)) == 1001
    rows = store.load_observed()
    assert sum(1 for row in rows.values() if row.status is ResourceStatus.ACTIVE) == 1001
    one = rows["t-0000"]
    assert (one.url, one.created_at, one.health.value, one.spec_hash, one.spec_json, one.generation) == (
        "http://10.0.0.1/", "2020-01-01T00:00:00.000000Z", "unknown", fleet[1].spec_hash,
        canonical_json(fleet[1].spec), 1)
    assert rows["t-0001"].created_at == at(10)
    assert (rows["acme-prod"].unmanaged, rows["acme-prod"].generation) == (False, 2)
    event = store.events("t-0005")[-1]
    assert (event.kind, event.actor, event.details["reason"]) == ("adopted", ACTOR, "brownfield")


def test_adopt_writes_nothing_when_one_id_is_already_managed(store) -> None:
    created(store)
    with pytest.raises(StoreConflict, match="acme-prod"):
        store.adopt(adoptions=[adoption("new-one"), adoption("acme-prod")], actor=ACTOR, reason=None, now=at(3))
    assert store.get_resource("new-one") is None
    assert store.get_resource("acme-prod").url == "http://127.0.0.1:8001/"


def test_a_create_adopted_by_observe_is_active_with_an_adopted_event(store) -> None:
    store.enqueue(requests=[request_for()], now=at(0), commit=None)
    job = claim_one(store)
    assert store.finish(job=job, worker="w1", result=JobResult(True, 0, "http://x/", None, adopted=True), now=at(1))
    assert store.get_resource("acme-prod").status is ResourceStatus.ACTIVE
    assert [e.kind for e in store.events("acme-prod")] == ["queued", "adopted", "url_changed"]


def test_an_old_schema_database_migrates_and_reads_unmanaged_as_false(tmp_path) -> None:
    from reconciler.store.migrations import MIGRATIONS, _v7_unmanaged

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for number, migration in enumerate(MIGRATIONS[:MIGRATIONS.index(_v7_unmanaged)]):
        migration(db)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    conn.execute("INSERT INTO resources (resource_id, owner, region, runtime_target, deploy_ref, status)"
                 " VALUES ('old', 'o', 'r', 'local', 'v1', 'active')")
    conn.commit()
    conn.close()
    store = open_store(url=str(path))
    assert store.get_resource("old").unmanaged is False
    store.close()


def test_a_forgotten_row_survives_export_and_import_across_backends(tmp_path, pg_url) -> None:
    from reconciler.portable import export_document, import_document

    source = open_store(url=str(tmp_path / "from.db"))
    created(source)
    source.forget(resource_ids=["acme-prod"], reason="r", actor=ACTOR, now=at(5))
    document = json.dumps(export_document(store=source))
    source.close()
    for url in (pg_url, str(tmp_path / "to.db")):
        target = open_store(url=url)
        import_document(store=target, text=document, name="backup.json", replace=False)
        row = target.get_resource("acme-prod")
        assert (row.status, row.unmanaged, row.live) == (ResourceStatus.FORGOTTEN, True, False)
        assert target.events("acme-prod")[-1].kind == "forgotten"
        target.close()
