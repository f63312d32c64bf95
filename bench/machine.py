"""The machine a result came from: a figure without it cannot be compared with anything."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

from . import terraform
from .harness import REPO, base_env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _libyaml() -> bool:
    try:
        import yaml

        return bool(getattr(yaml, "__with_libyaml__", False))
    except ImportError:
        return False


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "reconciler"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + (" (reconciler/ modified)" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _reconciler_location() -> str:
    """Where the measured commands import reconciler from (should be this checkout)."""
    done = subprocess.run([sys.executable, "-c", "import reconciler, os; print(os.path.dirname(reconciler.__file__))"],
                          env=base_env(), capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or f"import failed: {done.stderr.strip()[-200:]}"


def machine_info(*, load_only: bool = False) -> dict:
    load = [round(x, 2) for x in os.getloadavg()]
    if load_only:
        return {"load_average": load}
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "pyyaml": _version("pyyaml") + (" (libyaml)" if _libyaml() else " (no libyaml)"),
        "pydantic": _version("pydantic"),
        "pydantic_core": _version("pydantic-core"),
        "reconciler": _version("reconciler"),
        "reconciler_imported_from": _reconciler_location(),
        "git_commit": _git_commit(),
        "terraform": terraform.version() or "not installed",
        "load_average_start": load,
    }
