"""The runtime targets this installation knows, so a typo in `runtime_target` fails instead of running
the default script (`runtime_target: kubernets` used to pass `validate` and run provision/provision.sh).

Known targets are explicit: every `provision/<target>/` directory that holds a `provision.sh` (a
helper directory such as `provision/lib/` is not a target), plus the names listed in
`provision/targets.yaml` as `targets: [name, …]` (the targets the default scripts handle). Without a
targets.yaml, or one without a `targets:` key, the shipped `local` target is known too. The file may also hold
`pass_env: [NAME, …]` (environment variables scripts may receive; read by the runner); any other key is an error.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import SpecError, SpecProblem
from .models import TARGET_PATTERN, ResourceSpec
from .settle import NotRegular, open_regular
from .yamlfast import YamlProblem, load_documents

TARGETS_FILE = "targets.yaml"
FILE_KEYS = ("targets", "pass_env")
DEFAULT_TARGETS = ("local",)
_ENV_PATTERN = re.compile(r"^[A-Za-z_*?][A-Za-z0-9_*?\[\]]*$")


@dataclass(frozen=True, slots=True)
class TargetsFile:
    """provision/targets.yaml, validated."""

    targets: tuple[str, ...] | None = None  # None: no `targets:` key (the shipped `local` is then known)
    pass_env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KnownTargets:
    names: frozenset[str]

    def unknown(self, name: str) -> str | None:
        """None for a known target; else the message, with a did-you-mean when one is close."""
        if name in self.names:
            return None
        hint = difflib.get_close_matches(name, sorted(self.names), n=1)
        known = ", ".join(sorted(self.names)) or "none"
        return (f"unknown runtime_target '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; known targets: {known} (a provision/<target>/provision.sh, or listed in "
                  f"provision/{TARGETS_FILE})")


class Located(Protocol):
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...


def known_targets(*, provision_dir: Path) -> KnownTargets:
    """The targets `provision_dir` provides; SpecError (file:line) when its targets.yaml is wrong."""
    directory = Path(provision_dir)
    listed = read_targets_file(path=directory / TARGETS_FILE)
    names = set(DEFAULT_TARGETS if listed is None or listed.targets is None else listed.targets)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        entries = []
    names.update(entry.name for entry in entries
                 if not entry.name.startswith(".") and entry.is_dir() and (Path(entry.path) / "provision.sh").is_file())
    return KnownTargets(frozenset(names))


OBSERVE_SCRIPT = "observe.sh"


def observing_targets(*, provision_dir: Path) -> frozenset[str]:
    """Targets that offer `provision/<target>/observe.sh`: their creates adopt a resource that already exists."""
    try:
        return frozenset(path.parent.name for path in Path(provision_dir).glob(f"*/{OBSERVE_SCRIPT}"))
    except OSError:
        return frozenset()


def target_problems(*, resources: Mapping[str, ResourceSpec], sources: Mapping[str, Located],
                    known: KnownTargets) -> list[SpecProblem]:
    """One problem per resource whose runtime_target is not known, at the place it is declared."""
    problems = []
    for resource_id, spec in resources.items():
        message = known.unknown(spec.runtime_target)
        if message is not None:
            source = sources.get(resource_id)
            line = (getattr(source, "target_line", 0) or source.line) if source else 0
            problems.append(SpecProblem(source.file if source else resource_id, line, "runtime_target", message))
    return problems


def read_targets_file(*, path: Path) -> TargetsFile | None:
    """provision/targets.yaml, or None when there is none; SpecError names file, line and key."""
    name = str(path)
    try:
        with open_regular(path) as stream:
            documents = load_documents(stream)
    except FileNotFoundError:
        return None
    except YamlProblem as exc:
        raise SpecError([SpecProblem(name, exc.line, exc.field, exc.message, exc.column)]) from None
    except NotRegular as exc:
        raise SpecError([SpecProblem(name, 0, "", str(exc.strerror))]) from None
    except OSError as exc:
        raise SpecError([SpecProblem(name, 0, "", f"cannot read: {exc.strerror}")]) from None
    values = [doc for doc in documents if doc.value is not None]
    if not values:
        return TargetsFile()
    doc = values[0]
    if len(values) > 1 or not isinstance(doc.value, dict):
        raise SpecError([SpecProblem(name, doc.line, "", "expected one mapping with `targets:` and `pass_env:`")])
    problems = [_unknown_key(name=name, key=str(key), line=doc.key_lines.get(str(key), doc.line))
                for key in doc.value if key not in FILE_KEYS]
    targets = _strings(doc=doc, key="targets", name=name, pattern=re.compile(TARGET_PATTERN), problems=problems)
    pass_env = _strings(doc=doc, key="pass_env", name=name, pattern=_ENV_PATTERN, problems=problems)
    if problems:
        raise SpecError(problems)
    return TargetsFile(targets=targets if "targets" in doc.value else None, pass_env=pass_env)


def _unknown_key(*, name: str, key: str, line: int) -> SpecProblem:
    hint = difflib.get_close_matches(key, FILE_KEYS, n=1)
    return SpecProblem(name, line, key, "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else
                                                          f"; allowed: {', '.join(FILE_KEYS)}"))


def _strings(*, doc: Any, key: str, name: str, pattern: re.Pattern[str],
             problems: list[SpecProblem]) -> tuple[str, ...]:
    value = doc.value.get(key, [])
    line = doc.key_lines.get(key, doc.line)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(SpecProblem(name, line, key, "expected a list of strings, e.g. [a, b]"))
        return ()
    bad = [item for item in value if not pattern.match(item)]
    if bad:
        problems.append(SpecProblem(name, line, key, f"{bad[0]!r} is not a valid name"))
    return tuple(value)
