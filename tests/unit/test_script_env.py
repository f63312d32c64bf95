"""What a script's environment is made of (runner.script_env) and how provision/targets.yaml's pass_env is
read, in-process; the CLI and daemon halves are in e2e/test_script_env.py.
"""

from __future__ import annotations

import pytest

from reconciler.errors import ReconcilerError
from reconciler.runner import read_pass_env, script_env


def test_secret_prefixes_pass_only_when_named_exactly(tmp_path, monkeypatch):
    for name, value in {"PGPASSWORD": "s", "PGHOST": "h", "RECONCILER_X": "r", "OTHER": "o"}.items():
        monkeypatch.setenv(name, value)
    env = script_env(spec={"resource_id": "a"}, action="create", workdir=tmp_path, job_id="j",
                     pass_env=("*", "PGHOST"))
    assert env["OTHER"] == "o" and env["PGHOST"] == "h"
    assert "PGPASSWORD" not in env and "RECONCILER_X" not in env


def test_read_pass_env_absent_file_means_none(tmp_path):
    assert read_pass_env(provision_dir=tmp_path) == ()
    (tmp_path / "targets.yaml").write_text("targets: [local, kubernetes]\n")
    assert read_pass_env(provision_dir=tmp_path) == ()
    (tmp_path / "targets.yaml").write_text("targets: [local]\npass_env:\n  - AWS_*\n  - SSH_AUTH_SOCK\n")
    assert read_pass_env(provision_dir=tmp_path) == ("AWS_*", "SSH_AUTH_SOCK")


@pytest.mark.parametrize(("text", "line", "hint"), [
    ("pass_env: AWS_*\n", 1, "a list"),
    ("targets: [local]\npass_env:\n  - AWS_*\n  - {a: 1}\n", 4, "a variable name or pattern"),
    ("pass_env: [AWS_*, 'A B']\n", 1, "a variable name or pattern"),
    ("targets: [local]\npas_env: [AWS_*]\n", 2, "did you mean 'pass_env'"),
    ("pass_env: [AWS_*\n", 2, "YAML"),
    ("- AWS_*\n", 1, "a mapping"),
])
def test_read_pass_env_bad_file_names_file_and_line(tmp_path, text, line, hint):
    (tmp_path / "targets.yaml").write_text(text)
    with pytest.raises(ReconcilerError) as caught:
        read_pass_env(provision_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'targets.yaml'}:{line}:"), message
    assert hint in message
