"""Load and validate desired/: YAML files in, a `DesiredState` or one `SpecError` listing every problem out.

Loading is all-or-nothing on purpose: a plan made from a partial view of the desired state would
delete whatever sat in the file that failed to parse.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import SpecError, SpecProblem
from .models import SPEC_FIELDS, ResourceSpec
from .yamlfast import Document, YamlProblem, load_documents

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was declared."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The validated desired state: resources by id, and where each was declared."""

    resources: dict[str, ResourceSpec]
    sources: dict[str, Source] = field(default_factory=dict)


def desired_files(directory: Path) -> list[Path]:
    """Every *.yaml/*.yml below `directory`, sorted, skipping names that start with '.' or '_'."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found.extend(
            Path(root, name)
            for name in files
            if not name.startswith((".", "_")) and name.endswith((".yaml", ".yml"))
        )
    return sorted(found)


def display_path(path: Path) -> str:
    """Paths as a compiler prints them: relative to the working directory when below it."""
    text = os.path.relpath(path)
    return str(path) if text.startswith("..") else text


def load_desired(*, directory: Path) -> DesiredState:
    """Read and validate every file; raise `SpecError` with all problems if anything is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError([SpecProblem(str(directory), 0, "", "desired directory does not exist")])
    problems: list[SpecProblem] = []
    resources: dict[str, ResourceSpec] = {}
    sources: dict[str, Source] = {}
    for path in desired_files(directory):
        name = display_path(path)
        for spec, source in _load_file(path=path, name=name, problems=problems):
            _add_unique(spec=spec, source=source, resources=resources, sources=sources, problems=problems)
    if problems:
        raise SpecError(problems)
    return DesiredState(resources=resources, sources=sources)


def _add_unique(
    *, spec: ResourceSpec, source: Source, resources: dict, sources: dict, problems: list[SpecProblem]
) -> None:
    first = sources.get(spec.resource_id)
    if first is not None:
        problems.append(
            SpecProblem(source.file, source.line, "resource_id",
                        f"duplicate resource_id '{spec.resource_id}' (also declared at {first})")
        )
        return
    resources[spec.resource_id] = spec
    sources[spec.resource_id] = source


def _load_file(*, path: Path, name: str, problems: list[SpecProblem]) -> list[tuple[ResourceSpec, Source]]:
    documents = _read_documents(path=path, name=name, problems=problems)
    loaded = []
    for doc in documents:
        spec = validate_document(doc=doc, name=name, problems=problems)
        if spec is not None:
            loaded.append((spec, Source(name, doc.key_lines.get("resource_id", doc.line))))
    return loaded


def _read_documents(*, path: Path, name: str, problems: list[SpecProblem]) -> list[Document]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(SpecProblem(name, 0, "", f"file is larger than {MAX_FILE_BYTES >> 20} MiB"))
            return []
        with path.open("rb") as stream:
            return load_documents(stream)
    except YamlProblem as exc:
        problems.append(SpecProblem(name, exc.line, exc.field, exc.message))
    except OSError as exc:
        problems.append(SpecProblem(name, 0, "", f"cannot read: {exc.strerror}"))
    return []


def validate_document(*, doc: Document, name: str, problems: list[SpecProblem]) -> ResourceSpec | None:
    """One document → a `ResourceSpec`, or problems appended (each with its line and field)."""
    if doc.value is None:
        return None  # an empty document (a stray '---') declares nothing
    if not isinstance(doc.value, dict):
        kind = type(doc.value).__name__.replace("list", "a list").replace("str", "a string")
        problems.append(SpecProblem(name, doc.line, "", f"document is {kind}, expected a mapping of fields"))
        return None
    try:
        return ResourceSpec.model_validate(doc.value)
    except ValidationError as exc:
        problems.extend(_explain(error=error, doc=doc, name=name) for error in exc.errors())
        return None


def _explain(*, error: dict[str, Any], doc: Document, name: str) -> SpecProblem:
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    field_name = ".".join(loc)
    line = doc.key_lines.get(field_name) or doc.key_lines.get(loc[0] if loc else "", doc.line)
    return SpecProblem(name, line, field_name, _message(error=error, doc=doc, loc=loc))


def _message(*, error: dict[str, Any], doc: Document, loc: list[str]) -> str:
    kind, given = error["type"], error.get("input")
    if "[key]" in error["loc"]:
        return f"key {loc[-1]!r} must be a string; quote it"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], SPEC_FIELDS, n=1)
        return "unknown field" + (f" (did you mean '{hint[0]}'?)" if hint else f"; allowed: {', '.join(SPEC_FIELDS)}")
    if kind == "string_type" and isinstance(given, (int, float, bool)) and len(loc) == 1:
        raw = doc.raw.get(loc[0], str(given))
        return f"expected a string, got {type(given).__name__} {raw}; quote it: {loc[0]}: \"{raw}\""
    if kind == "string_pattern_mismatch" and loc == ["resource_id"]:
        return f"'{given}' is not a valid id: use [a-z0-9][a-z0-9-]{{0,62}} (lowercase letters, digits, '-')"
    if kind == "string_pattern_mismatch" and loc == ["runtime_target"]:
        return f"'{given}' is not a valid target name: use [a-z0-9][a-z0-9_-]{{0,62}}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}" + (f" (got {given!r})" if _small(given) else "")


def _small(value: Any) -> bool:
    return isinstance(value, (int, float, bool, str)) and len(str(value)) <= 60

