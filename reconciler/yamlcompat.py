"""The tool reads YAML 1.1 (PyYAML); editors validate with the committed JSON Schema through a YAML 1.2
reader. Where the two read a plain scalar in a typed field differently (`protected: yes` is true to one
and text to the other; `region: no` false to one and text to the other; `010`, `1:30`, `0o10`, `1e3`
differ too), the tool refuses it with the fix, so every file the tool accepts the editor accepts with
the same values. Free-form `params` keep PyYAML's reading (documented in the README).

Pure: a plain scalar's text in, the kind each version gives it out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

import yaml

_TAG = "tag:yaml.org,2002:"
_RESOLVER = yaml.resolver.Resolver()

# YAML 1.2's core schema (spec §10.3.2), widened by what common 1.2 readers also type (underscores in
# numbers, 0b binaries, dates): anything that might not be text to an editor counts as not text.
_CORE_12 = [
    ("null", r"~|null|Null|NULL|"),
    ("bool", r"true|True|TRUE|false|False|FALSE"),
    ("int", r"[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+"),
    ("float", r"[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"),
    ("timestamp", r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt ].*)?"),
]
_PATTERNS_12 = [(kind, re.compile(f"(?:{pattern})")) for kind, pattern in _CORE_12]
# A plain scalar starting with none of these is text to both versions (every typed reading starts so).
_TYPED_STARTS = frozenset("yYnNtTfFoO-+0123456789.<~=")
_WORDS = {"str": "text", "int": "a number", "float": "a number", "bool": "a boolean", "null": "null",
          "timestamp": "a date", "merge": "a merge key", "value": "a value key"}


@lru_cache(maxsize=4096)
def kind_11(text: str) -> str:
    """What PyYAML (YAML 1.1) makes of a plain scalar: str, int, float, bool, null, timestamp, merge, value."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag.removeprefix(_TAG)


@lru_cache(maxsize=4096)
def kind_12(text: str) -> str:
    """What a YAML 1.2 reader makes of a plain scalar (the same names as `kind_11`)."""
    for kind, pattern in _PATTERNS_12:
        if pattern.fullmatch(text):
            return kind
    return "str"


def disagreements(*, plain: Mapping[str, str], text_fields: Iterable[str],
                  bool_fields: Iterable[str]) -> list[tuple[str, str]]:
    """(field, message with the fix) for each typed field whose plain scalar YAML 1.1 and 1.2 read apart,
    or that is a date (text to this tool, a date to some editors)."""
    found = []
    for name in text_fields:
        text = plain.get(name)
        if text is not None and (not text or text[0] in _TYPED_STARTS) and not _long_word(text):
            message = _text_problem(name, text)
            if message:
                found.append((name, message))
    for name in bool_fields:
        if name in plain and kind_11(plain[name]) == "bool" and kind_12(plain[name]) != "bool":
            found.append((name, f"{name}: {plain[name]} is read differently by YAML 1.1 (a boolean) and 1.2 "
                                f"(text); write {str(_as_bool(plain[name])).lower()}"))
    return found


_WORD_STARTS = frozenset("yYnNtTfFoO")


def _long_word(text: str) -> bool:
    """Text to both versions without asking them: the typed words that start with these letters (yes, no,
    true, false, on, off, null) have at most five; ids like `tenant-000042` are all distinct, so the
    readers' caches would miss on every one (20 ms of a 10,000-resource plan)."""
    return len(text) > 5 and text[0] in _WORD_STARTS


def _text_problem(name: str, text: str) -> str | None:
    old, new = kind_11(text), kind_12(text)
    quote = f'quote it: {name}: "{text}"'
    if old == new == "str" or (old == new and old != "timestamp"):
        return None  # text to both, or the same non-text to both (the type check says "expected a string")
    if old == new:
        return f"{name}: {text} is a date to YAML; {quote}"
    return f"{name}: {text} is read differently by YAML 1.1 ({_WORDS[old]}) and 1.2 ({_WORDS[new]}); {quote}"


def _as_bool(text: str) -> bool:
    return text.lower() in ("yes", "on", "true", "y")
