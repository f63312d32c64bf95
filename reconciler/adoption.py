"""Reading and checking what `reconciler adopt` is asked to record: one id and URL, or a fleet from a file.

Adopting is all or nothing: every row is checked before anything is written, and a file with any bad
row adopts nothing and lists every bad row as FILE:LINE. The checks are pure (desired state, the ids
the store manages and the rows in, a list of problems out), so each kind of bad row is a unit test.
A file is CSV with a header line or JSON lines (one object per line; detected by a leading `{`):
`resource_id`, `url`, optionally `created_at`, and any spec field, which must then equal the declared
spec — the file records what exists, the declaration stays the truth.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import SPEC_FIELDS, Adoption, ResourceSpec, iso, spec_hash
from .runner import url_problem
from .terminal import printable

REQUIRED = ("resource_id", "url")
COLUMNS = frozenset({*REQUIRED, "created_at", *SPEC_FIELDS})


@dataclass(frozen=True, slots=True)
class AdoptRow:
    """One row of the request as read, with the line it came from (0: the command line)."""

    line: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checked:
    """The adoptions to write, or (when any row is bad) the problems, each naming its FILE:LINE."""

    adoptions: list[Adoption]
    problems: list[str]


def read_file(*, text: str, name: str) -> tuple[list[AdoptRow], list[str]]:
    """The rows of a CSV (with a header) or JSON-lines file, and the lines that do not parse."""
    if text.lstrip().startswith("{"):
        return _json_lines(text=text, name=name)
    return _csv_rows(text=text, name=name)


def _json_lines(*, text: str, name: str) -> tuple[list[AdoptRow], list[str]]:
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{name}:{number}: not a JSON object ({exc.msg})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}:{number}: not a JSON object")
            continue
        unknown = sorted(set(value) - COLUMNS)
        if unknown:
            problems.append(f"{name}:{number}: unknown field{'s' if len(unknown) > 1 else ''} "
                            f"{printable(', '.join(unknown))}; expected {', '.join(sorted(COLUMNS))}")
            continue
        rows.append(AdoptRow(number, value))
    return rows, problems


def _csv_rows(*, text: str, name: str) -> tuple[list[AdoptRow], list[str]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        return [], [f"{name}:1: empty file; expected a header line (resource_id,url,…)"]
    columns = [cell.strip() for cell in header]
    unknown = sorted(set(columns) - COLUMNS)
    missing = [column for column in REQUIRED if column not in columns]
    if unknown or missing:
        what = [f"unknown column{'s' if len(unknown) > 1 else ''} {printable(', '.join(unknown))}"] if unknown else []
        what += [f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
        return [], [f"{name}:{reader.line_num}: header: {'; '.join(what)}; columns are {', '.join(sorted(COLUMNS))}"]
    rows, problems = [], []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            problems.append(f"{name}:{reader.line_num}: {len(cells)} cells, the header has {len(columns)}")
            continue
        values = {column: cell for column, cell in zip(columns, cells, strict=True) if cell != ""}
        rows.append(AdoptRow(reader.line_num, values))
    return rows, problems


def check_rows(*, rows: list[AdoptRow], desired: Mapping[str, ResourceSpec], managed: Collection[str],
               name: str, hashes: Mapping[str, str] | None = None, api: Collection[str] = ()) -> Checked:
    """Every row checked against the declared specs and the managed ids; problems for every bad row."""
    adoptions: list[Adoption] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    known = hashes or {}
    for row in rows:
        resource_id = row.values.get("resource_id")
        found = _row_problems(row=row, desired=desired, managed=managed, seen=seen)
        if found:
            where = f"{name}:{row.line}: " if row.line else ""
            label = printable(str(resource_id)) if isinstance(resource_id, str) and resource_id else "(no id)"
            problems.append(f"{where}{label}: {'; '.join(found)}")
            continue
        assert isinstance(resource_id, str)
        seen[resource_id] = row.line
        spec = desired[resource_id]
        adoptions.append(Adoption(resource_id=resource_id, spec=spec.model_dump(),
                                  spec_hash=known.get(resource_id) or spec_hash(spec), url=row.values["url"],
                                  created_at=_created_at(row.values.get("created_at"))[0],
                                  source="api" if resource_id in api else "file"))
    return Checked(adoptions=[] if problems else adoptions, problems=problems)


def _row_problems(*, row: AdoptRow, desired: Mapping[str, ResourceSpec], managed: Collection[str],
                  seen: dict[str, int]) -> list[str]:
    values = row.values
    resource_id = values.get("resource_id")
    if not isinstance(resource_id, str) or not resource_id:
        return ["resource_id is missing"]
    spec = desired.get(resource_id)
    if spec is None:
        return ["not declared in desired/ (declare it first: adopt records a declared resource)"]
    found = []
    if resource_id in managed:
        found.append("already managed (only new ids, tombstones and forgotten rows can be adopted)")
    if resource_id in seen:
        found.append(f"also on line {seen[resource_id]}" if seen[resource_id] else "given twice")
    found += _differing(values=values, spec=spec)
    url = values.get("url")
    if not isinstance(url, str) or not url:
        found.append("url is missing")
    elif (problem := url_problem(url)) is not None:
        found.append(f"url {problem}: {printable(url)}")
    found += _created_at(values.get("created_at"))[1]
    return found


def _differing(*, values: Mapping[str, Any], spec: ResourceSpec) -> list[str]:
    """Spec fields the row gives that differ from the declaration (CSV cells are text: params as JSON)."""
    found = []
    for field in SPEC_FIELDS:
        if field == "resource_id" or field not in values:
            continue
        declared = getattr(spec, field)
        if _typed(field, values[field]) != declared:
            found.append(f"{field} is {printable(json.dumps(values[field], ensure_ascii=False))} here but "
                         f"{printable(json.dumps(declared, ensure_ascii=False))} in desired/")
    return found


def _typed(field: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if field == "params":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if field == "protected":
        return {"true": True, "false": False}.get(value.strip().lower(), value)
    return value


def _created_at(value: Any) -> tuple[str | None, list[str]]:
    """The timestamp normalised to the store's form, or why it is not one (it needs a UTC offset)."""
    if value is None or value == "":
        return None, []
    if isinstance(value, str):  # a fleet adopted at once often shares a few timestamps: parse each once
        return _created_at_text(value)
    return _parse_created_at(value)


@functools.lru_cache(maxsize=4096)
def _created_at_text(value: str) -> tuple[str | None, list[str]]:
    return _parse_created_at(value)


def _parse_created_at(value: Any) -> tuple[str | None, list[str]]:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None, [f"created_at {printable(json.dumps(value))} is not an ISO-8601 timestamp"]
    if moment.tzinfo is None:
        return None, [f"created_at {printable(json.dumps(value))} has no UTC offset (add Z or +00:00)"]
    return iso(moment), []
