"""What the harness means the desired state to be: resources in files and through the API (pure).

Every operation on the desired state is a function of this model and a step's own draws; the world
then writes the model's files (atomically, in slices, or through git). The invariants compare the
system with the sequence of models the harness made visible, never with what the daemon reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from .schedule import OWNERS, REGIONS

FILES = ("fleet-a.yaml", "fleet-b.yaml", "fleet-c.yaml")
MAX_FILE_RESOURCES = 12
MIN_FILE_RESOURCES = 2
MAX_API_RESOURCES = 3


@dataclass(frozen=True, slots=True)
class Resource:
    resource_id: str
    file: str
    owner: str = "acme"
    region: str = "eu-west-1"
    deploy_ref: str = "v1"
    sleep: float = 0.2

    def spec(self, *, world: str) -> dict[str, Any]:
        return {"resource_id": self.resource_id, "owner": self.owner, "region": self.region,
                "runtime_target": "local", "deploy_ref": self.deploy_ref,
                "params": {"sleep": self.sleep, "world": world}}


@dataclass(frozen=True, slots=True)
class Model:
    files: dict[str, Resource]  # resource_id → resource declared in a file
    api: dict[str, Resource]  # resource_id → resource declared through the API

    def declared(self) -> frozenset[str]:
        return frozenset(self.files) | frozenset(self.api)

    def all(self) -> dict[str, Resource]:
        return {**self.files, **self.api}

    def text(self, name: str, *, world: str) -> str | None:
        """The YAML of one file, or None when no resource lives in it (the file is removed)."""
        docs = [_yaml(res.spec(world=world)) for res in sorted(self.files.values(), key=lambda r: r.resource_id)
                if res.file == name]
        return "---\n".join(docs) if docs else None


def initial() -> Model:
    resources = [Resource(resource_id=f"r{i}", file=FILES[i % len(FILES)], sleep=0.1 + 0.1 * (i % 4))
                 for i in range(6)]
    return Model(files={r.resource_id: r for r in resources}, api={})


def _yaml(spec: dict[str, Any]) -> str:
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in spec.items())


def _chosen(model: Model, pick: float) -> Resource | None:
    ids = sorted(model.files)
    return model.files[ids[min(int(pick * len(ids)), len(ids) - 1)]] if ids else None


def edit(model: Model, *, kind: str, args: dict[str, Any]) -> Model:
    """The model after one desired-state operation; an operation that cannot apply leaves it as is."""
    target = _chosen(model, args["pick"])
    value, n = args.get("value", 0), args.get("n", 0)
    files = dict(model.files)
    if kind == "add" and len(files) < MAX_FILE_RESOURCES:
        rid = f"r{n}x{value}"
        files[rid] = Resource(resource_id=rid, file=FILES[value % len(FILES)], owner=OWNERS[value % 3],
                              region=REGIONS[value % 3], sleep=0.1 + 0.1 * (value % 5))
    elif target is None:
        return model
    elif kind == "change_inplace":
        files[target.resource_id] = _changed(target, field=args.get("field", "deploy_ref"), value=value)
    elif kind == "change_replace":
        others = [region for region in REGIONS if region != target.region]
        files[target.resource_id] = replace(target, region=others[value % len(others)])
    elif kind == "remove" and len(files) > MIN_FILE_RESOURCES:
        del files[target.resource_id]
    elif kind == "rename":
        del files[target.resource_id]
        rid = f"r{n}n{value}"
        files[rid] = replace(target, resource_id=rid)
    elif kind == "move":
        others = [name for name in FILES if name != target.file]
        files[target.resource_id] = replace(target, file=others[value % len(others)])
    return replace(model, files=files)


def _changed(resource: Resource, *, field: str, value: int) -> Resource:
    if field == "owner":
        return replace(resource, owner=OWNERS[(OWNERS.index(resource.owner) + 1) % len(OWNERS)])
    if field == "params":
        return replace(resource, sleep=round(0.1 + 0.1 * ((int(resource.sleep * 10) + value) % 5), 1))
    return replace(resource, deploy_ref=f"v{value}")


def without(model: Model, resource_id: str) -> Model:
    """The model with one file resource no longer declared (forgotten, or removed before forgetting)."""
    return replace(model, files={rid: res for rid, res in model.files.items() if rid != resource_id})


def api_post(model: Model, *, n: int, value: int, pick: float) -> tuple[Model, Resource]:
    """Declare a new API resource, or (when there are enough) change one's deploy_ref."""
    api = dict(model.api)
    if len(api) >= MAX_API_RESOURCES:
        ids = sorted(api)
        chosen = api[ids[min(int(pick * len(ids)), len(ids) - 1)]]
        resource = replace(chosen, deploy_ref=f"v{value}")
    else:
        resource = Resource(resource_id=f"api{n}", file="", region=REGIONS[value % 3], sleep=0.2)
    api[resource.resource_id] = resource
    return replace(model, api=api), resource


def api_delete(model: Model, *, pick: float) -> tuple[Model, str | None]:
    ids = sorted(model.api)
    if not ids:
        return model, None
    rid = ids[min(int(pick * len(ids)), len(ids) - 1)]
    api = dict(model.api)
    del api[rid]
    return replace(model, api=api), rid
