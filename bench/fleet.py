"""Generated fleets: the same resources as reconciler's desired/ files and as Terraform input.

Fleets follow the scale rule of the goals: N resources in N/100 files (100 documents per file).
A fleet is written once per size under bench/out/ and reused while its stamp matches.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PER_FILE = 100
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
FORMAT_VERSION = 1

# Instant: what "provisioned" means when only the controller's own cost is being measured.
INSTANT_SCRIPT = '#!/bin/sh\necho "http://127.0.0.1:9/$RESOURCE_ID"\n'
TEARDOWN_SCRIPT = "#!/bin/sh\nexit 0\n"


def sleeping_script(seconds: float) -> str:
    return f'#!/bin/sh\nsleep {seconds}\necho "http://127.0.0.1:9/$RESOURCE_ID"\n'


def resource_id(index: int) -> str:
    return f"tenant-{index:06d}"


def spec(index: int) -> dict:
    """The resource with this 1-based index, as plain data (the YAML below writes the same values)."""
    return {
        "resource_id": resource_id(index),
        "owner": f"owner-{index % 97:02d}",
        "region": REGIONS[index % len(REGIONS)],
        "runtime_target": "local",
        "deploy_ref": "v1.4.2",
        "params": {"size": "small", "replicas": 2},
    }


def _document(index: int) -> str:
    s = spec(index)
    return (
        f"resource_id: {s['resource_id']}\n"
        f"owner: {s['owner']}\n"
        f"region: {s['region']}\n"
        "runtime_target: local\n"
        "deploy_ref: v1.4.2\n"
        "params: {size: small, replicas: 2}\n"
    )


def _list_item(index: int) -> str:
    return "- " + _document(index).rstrip("\n").replace("\n", "\n  ") + "\n"


def _chunks(count: int) -> list[range]:
    return [range(start, min(start + PER_FILE, count + 1)) for start in range(1, count + 1, PER_FILE)]


def _fresh(directory: Path, stamp: str) -> bool:
    """True when `directory` already holds this fleet; otherwise empty it for writing."""
    marker = directory / ".stamp"
    if marker.exists() and marker.read_text() == stamp:
        return True
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return False


def write_desired(directory: Path, count: int) -> Path:
    """`count` resources as multi-document YAML files of 100 documents each: desired/fleet-0001.yaml, ..."""
    stamp = json.dumps({"kind": "desired", "count": count, "v": FORMAT_VERSION})
    if _fresh(directory, stamp):
        return directory
    for number, chunk in enumerate(_chunks(count), start=1):
        text = "---\n".join(_document(i) for i in chunk)
        (directory / f"fleet-{number:04d}.yaml").write_text(text)
    (directory / ".stamp").write_text(stamp)  # a dot file: reconciler ignores it
    return directory


def write_terraform_fleet(directory: Path, count: int) -> Path:
    """The same resources for Terraform: one YAML *list* per file, since yamldecode() reads one document."""
    stamp = json.dumps({"kind": "terraform", "count": count, "v": FORMAT_VERSION})
    if _fresh(directory, stamp):
        return directory
    for number, chunk in enumerate(_chunks(count), start=1):
        (directory / f"fleet-{number:04d}.yaml").write_text("".join(_list_item(i) for i in chunk))
    (directory / ".stamp").write_text(stamp)
    return directory


def write_ids(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(resource_id(i) + "\n" for i in range(1, count + 1)))
    return path


def write_scripts(directory: Path, *, provision: str, teardown: str = TEARDOWN_SCRIPT) -> Path:
    """A provision/ directory as reconciler expects it: provision.sh and teardown.sh, executable."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("provision.sh", provision), ("teardown.sh", teardown)):
        path = directory / name
        path.write_text(text)
        os.chmod(path, 0o755)
    return directory
