"""Terraform as the peer: a root module of `terraform_data` resources with a `local-exec` provisioner.

Only built-in pieces are used (no providers, no `required_providers`), so `terraform init` needs no
network. The fleet is read the way a Terraform user would: `fileset()` over the directory and
`yamldecode()` of each file, which holds a YAML list (yamldecode reads a single document).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .harness import base_env, run_checked

MAIN_TF = """\
locals {
  files = fileset("${path.module}/fleet", "*.yaml")
  specs = flatten([for f in local.files : yamldecode(file("${path.module}/fleet/${f}"))])
  fleet = { for s in local.specs : s.resource_id => s }
}

resource "terraform_data" "resource" {
  for_each = local.fleet
  input    = each.value

  provisioner "local-exec" {
    command     = "${path.module}/provision.sh"
    environment = { RESOURCE_ID = each.key }
  }
}
"""


def binary() -> str | None:
    return shutil.which("terraform")


def version() -> str | None:
    """Terraform's version, or None when it is not installed (measurements then say so)."""
    exe = binary()
    if not exe:
        return None
    try:
        done = subprocess.run([exe, "version", "-json"], capture_output=True, text=True, timeout=60,
                              env=env(Path("/tmp")))
        return json.loads(done.stdout)["terraform_version"]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return "unknown"


def env(root: Path) -> dict[str, str]:
    """Hermetic: no update check over the network, an empty CLI config, no colour or prompts."""
    config = root / "terraformrc"
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("")
    return base_env(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0", TF_CLI_CONFIG_FILE=str(config))


def prepare(directory: Path) -> Path:
    """Write main.tf into `directory` (which holds fleet/ and provision.sh) and run `terraform init`."""
    (directory / "main.tf").write_text(MAIN_TF)
    run_checked([binary(), "init", "-input=false", "-no-color"], cwd=directory, env=env(directory.parent))
    return directory


def reset_state(directory: Path) -> None:
    for name in ("terraform.tfstate", "terraform.tfstate.backup", ".terraform.tfstate.lock.info"):
        (directory / name).unlink(missing_ok=True)


APPLY_FLAGS = ["-auto-approve", "-input=false", "-lock=false", "-no-color", "-parallelism=32"]
PLAN_FLAGS = ["-input=false", "-lock=false", "-no-color", "-refresh=true", "-parallelism=32", "-detailed-exitcode"]


def apply_argv() -> list[str]:
    return [binary(), "apply", *APPLY_FLAGS]


def plan_argv() -> list[str]:
    return [binary(), "plan", *PLAN_FLAGS]
