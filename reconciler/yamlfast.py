"""A safe, fast YAML document builder on libyaml's event stream, with line numbers for free.

PyYAML's `CSafeLoader` parses in C but builds objects in Python through a general resolver, and it
keeps no line numbers once the objects exist. Building straight from libyaml's events lets us, in one
pass that is faster than `yaml.load_all(..., CSafeLoader)`:

- remember the line of every key (so every validation error can name its line),
- refuse duplicate keys, unknown tags (`!!python/object`) and runaway nesting,
- bound what aliases expand to (a "billion laughs" file is rejected, not expanded),
- resolve plain scalars through a cache, since fleets repeat the same values thousands of times.

Semantics follow PyYAML's safe loader (YAML 1.1: `yes` is true, `1.10` is a float, `<<` merges),
with one deliberate difference: dates stay text as written, because every consumer here is JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO

import yaml
from yaml import events as ev

MAX_DEPTH = 64
MAX_EXPANDED_VALUES = 100_000
_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
_TIMESTAMP = _TAG + "timestamp"
_SAFE_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_COLLECTION_TAGS = {"map": _TAG + "map", "seq": _TAG + "seq"}
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_CACHE: dict[str, Any] = {}
_CACHE_LIMIT = 50_000


class YamlProblem(Exception):
    """Bad YAML at a known place; reading the file stops there."""

    def __init__(self, message: str, *, line: int, field: str = "", column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field
        self.column = column


@dataclass(slots=True)
class Document:
    """One YAML document: its value, its first line, and the line of each key at depth one and two."""

    value: Any
    line: int
    key_lines: dict[str, int]
    raw: dict[str, str]
    # top-level keys that YAML did not read as text (`yes:` is true, `1:` is 1): (as written, line)
    odd_keys: list[tuple[str, int]] = field(default_factory=list)


def _plain(text: str, line: int) -> Any:
    value = _CACHE.get(text, _CACHE)
    if value is not _CACHE:
        return value
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag == _STR:
        value = text
    elif tag == _TAG + "merge":
        value = _MERGE
    elif tag == _TAG + "value":
        value = _VALUE
    else:
        value = _construct(tag, text, line)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[text] = value
    return value


class _Special:
    """A plain scalar YAML 1.1 gives a meaning only as a mapping key: `<<` (merge) and `=` (value)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_MERGE = _Special("<<")
_VALUE = _Special("=")


def _construct(tag: str, text: str, line: int) -> Any:
    """PyYAML's safe constructor for a core tag; content it cannot hold is a problem at `line`, never a traceback."""
    try:
        value = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))
    except Exception:  # the constructors raise ValueError, KeyError, IndexError, AttributeError …
        raise YamlProblem(f"{text!r} is not a valid {_short(tag)}", line=line) from None
    return text if tag == _TIMESTAMP else value  # dates stay text as written (every consumer is JSON)


def _scalar(event: ev.ScalarEvent) -> Any:
    tag = event.tag
    if tag is None:
        return _plain(event.value, _line(event)) if event.implicit[0] else event.value
    if tag == "!":
        raise YamlProblem("the non-specific tag '!' is not allowed on a scalar (YAML readers disagree on what it "
                          "means): remove it, or quote the value", line=_line(event))
    if tag == _TAG + "binary":
        raise YamlProblem("!!binary is not allowed: the desired state travels as JSON, which cannot carry bytes; "
                          "write the base64 text as a plain string", line=_line(event))
    if tag not in _SAFE_SCALAR_TAGS:
        raise YamlProblem(f"tag {_short(tag)} is not allowed (only plain YAML data)", line=_line(event))
    if tag == _STR:
        return event.value
    return _construct(tag, event.value, _line(event))


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _line(event: Any) -> int:
    """The 1-based line an event starts on (libyaml's events always carry their mark)."""
    line: int = event.start_mark.line
    return line + 1


class _Frame:
    """An open mapping or sequence while its events stream past."""

    __slots__ = ("anchor", "key", "key_line", "lines", "merges", "path", "size", "value")

    def __init__(self, value: Any, anchor: str | None, path: str | None) -> None:
        self.value = value
        self.anchor = anchor
        self.size = 1
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.lines: dict[Any, int] | None = {} if isinstance(value, dict) else None
        self.merges: list[Any] = []
        self.path = path


_NO_KEY = object()


class DocumentBuilder:
    """Turns the events of one stream into `Document`s; one instance per file."""

    def __init__(self, stream: BinaryIO | str | bytes, *, key_depth: int = 2) -> None:
        self._stream = stream
        self._key_depth = key_depth
        self._loader = yaml.CSafeLoader(stream)
        self._anchors: dict[str, tuple[Any, int]] = {}
        self._anchor_lines: dict[str, int] = {}
        self._stack: list[_Frame] = []
        self._doc = Document(None, 0, {}, {})  # replaced at each document start
        self._expanded = 0

    def documents(self) -> list[Document]:
        docs: list[Document] = []
        try:
            self._run(docs)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            text = self._text()
            line, column = _position(text, mark) if mark else (0, 0)
            started = _position(text, exc.context_mark)[0] if exc.context_mark else line
            context = f" ({exc.context} started at line {started})" if exc.context and started != line else ""
            raise YamlProblem(f"invalid YAML: {exc.problem or exc.context}{context}", line=line,
                              column=column) from None
        except yaml.YAMLError as exc:
            raise YamlProblem(f"invalid YAML: {exc}", line=0) from None
        finally:
            self._loader.dispose()
        return docs

    def _text(self) -> str:
        """The stream's text again, to place an error (only on the error path)."""
        stream = self._stream
        if not isinstance(stream, (str, bytes)):
            stream.seek(0)
            stream = stream.read()
        return stream.decode("utf-8", "replace") if isinstance(stream, bytes) else str(stream)

    def _run(self, docs: list[Document]) -> None:
        get = self._loader.get_event
        while True:
            event: Any = get()  # dispatched on its exact type below
            kind = type(event)
            if kind is ev.ScalarEvent:
                self._add(_scalar(event), event, event.anchor, 1)
            elif kind is ev.MappingStartEvent or kind is ev.SequenceStartEvent:
                self._open(event, {} if kind is ev.MappingStartEvent else [])
            elif kind is ev.MappingEndEvent or kind is ev.SequenceEndEvent:
                self._close()
            elif kind is ev.AliasEvent:
                self._alias(event)
            elif kind is ev.DocumentStartEvent:
                self._doc = Document(None, _line(event), {}, {})
                self._anchors = {}
                self._anchor_lines = {}
                self._expanded = 0
            elif kind is ev.DocumentEndEvent:
                docs.append(self._doc)
            elif kind is ev.StreamEndEvent or event is None:
                return

    def _open(self, event: ev.CollectionStartEvent, value: Any) -> None:
        if event.tag is not None and event.tag != "!":
            self._check_collection_tag(event, value)
        if event.anchor is not None:
            self._claim_anchor(event.anchor, event)
        if len(self._stack) >= MAX_DEPTH:
            raise YamlProblem(f"nesting deeper than {MAX_DEPTH} levels", line=_line(event))
        if not self._stack:
            self._doc.line = _line(event)
        path = self._child_path()
        self._stack.append(_Frame(value, event.anchor, path))

    @staticmethod
    def _check_collection_tag(event: ev.CollectionStartEvent, value: Any) -> None:
        kind = "map" if isinstance(value, dict) else "seq"
        tag = event.tag or ""
        if tag == _COLLECTION_TAGS[kind]:
            return
        if tag in _COLLECTION_TAGS.values():
            found = "mapping" if kind == "map" else "sequence"
            raise YamlProblem(f"tag {_short(tag)} does not fit a {found}", line=_line(event))
        raise YamlProblem(f"tag {_short(tag)} is not allowed (only plain YAML data)", line=_line(event))

    def _claim_anchor(self, anchor: str, event: ev.Event) -> None:
        if anchor in self._anchor_lines:
            first = self._anchor_lines[anchor]
            raise YamlProblem(f"duplicate anchor &{anchor} (first at line {first})", line=_line(event))
        self._anchor_lines[anchor] = _line(event)

    def _child_path(self) -> str | None:
        """Dotted path of the value being opened, kept `key_depth` levels deep (two: enough for resources)."""
        if not self._stack:
            return ""
        parent = self._stack[-1]
        if parent.path is None or len(self._stack) >= self._key_depth or parent.key is _NO_KEY:
            return None
        return f"{parent.path}.{parent.key}" if parent.path else str(parent.key)

    def _close(self) -> None:
        frame = self._stack.pop()
        if frame.merges:
            self._merge(frame)
        self._add(frame.value, None, frame.anchor, frame.size)

    @staticmethod
    def _merge(frame: _Frame) -> None:
        """PyYAML's order exactly: merged pairs first (the last source of a `<<` list first), then the
        mapping's own; a later pair sets the value, the first keeps its key (so `1` vs `1.0` comes out alike)."""
        merged: dict[Any, Any] = {}
        for source in reversed(frame.merges):
            merged.update(source)
        merged.update(frame.value)
        frame.value = merged

    def _alias(self, event: ev.AliasEvent) -> None:
        if event.anchor not in self._anchors:
            raise YamlProblem(f"unknown or recursive alias *{event.anchor}", line=_line(event))
        value, size = self._anchors[event.anchor]
        self._expanded += size
        if self._expanded > MAX_EXPANDED_VALUES:
            raise YamlProblem(
                f"aliases expand to more than {MAX_EXPANDED_VALUES:,} values (an alias bomb?)", line=_line(event)
            )
        self._add(value, event, None, size)

    def _add(self, value: Any, event: ev.Event | None, anchor: str | None, size: int) -> None:
        if anchor is not None:
            if event is not None:  # a scalar; a collection claimed its anchor when it opened
                self._claim_anchor(anchor, event)
            self._anchors[anchor] = (value, size)
        if not self._stack:
            if type(value) is _Special:
                _misplaced(value, event)
            self._doc.value = value
            if event is not None:
                self._doc.line = _line(event)
            return
        frame = self._stack[-1]
        frame.size += size
        if frame.lines is None:
            if type(value) is _Special:
                _misplaced(value, event)
            frame.value.append(value)
        elif frame.key is _NO_KEY:
            self._set_key(frame, value, event)
        else:
            self._set_value(frame, value, event)

    def _set_key(self, frame: _Frame, key: Any, event: ev.Event | None) -> None:
        if event is None or isinstance(key, (dict, list)):
            raise YamlProblem("mapping keys must be plain scalars", line=self._event_line(event))
        if key is _VALUE:
            key = "="  # as PyYAML does: the YAML 1.1 value key is plain text where a key stands
        frame.key = key
        frame.key_line = _line(event)
        if frame.path == "" and not isinstance(key, str) and key is not _MERGE and isinstance(event, ev.ScalarEvent):
            self._doc.odd_keys.append((event.value, frame.key_line))

    def _set_value(self, frame: _Frame, value: Any, event: ev.Event | None) -> None:
        key, line, lines = frame.key, frame.key_line, frame.lines
        assert lines is not None, "only a mapping's frame takes values under keys"
        frame.key = _NO_KEY
        if type(value) is _Special:
            _misplaced(value, event)
        if key in lines:
            self._duplicate(lines, frame, key, line)
        if key is _MERGE:
            lines[key] = line
            self._add_merge(frame, value, line)
            return
        lines[key] = line
        frame.value[key] = value
        if frame.path is not None:
            field = self._field(frame, key)
            self._doc.key_lines[field] = line
            if frame.path == "" and type(event) is ev.ScalarEvent and event.tag is None and event.implicit[0]:
                self._doc.raw[field] = event.value  # plain scalars only: what YAML 1.1 and 1.2 may read apart

    def _duplicate(self, lines: dict[Any, int], frame: _Frame, key: Any, line: int) -> None:
        if key is _MERGE:
            raise YamlProblem(f"a second '<<' merge key in one mapping (first at line {lines[key]}): YAML "
                              "readers disagree on which one wins; merge a list instead: <<: [*a, *b]",
                              line=line, field=self._field(frame, key))
        raise YamlProblem(
            f"duplicate key (first at line {lines[key]})", line=line, field=self._field(frame, key)
        )

    def _add_merge(self, frame: _Frame, value: Any, line: int) -> None:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise YamlProblem("'<<' merges only mappings", line=line)
        frame.merges.extend(sources)

    @staticmethod
    def _field(frame: _Frame, key: Any) -> str:
        return f"{frame.path}.{key}" if frame.path else str(key)

    def _event_line(self, event: ev.Event | None) -> int:
        return _line(event) if event is not None else self._doc.line


def _position(text: str, mark: Any) -> tuple[int, int]:
    """1-based (line, column) of an error mark; libyaml puts errors found at the end of the stream past
    the last line, so those are moved to the end of the last line that has anything on it."""
    lines = text.splitlines()
    if mark.line < len(lines) and (mark.column < len(lines[mark.line]) or lines[mark.line].strip()):
        return mark.line + 1, mark.column + 1
    last = next((i for i in range(min(mark.line, len(lines) - 1), -1, -1) if lines[i].strip()), None)
    if last is None:
        return 1, 1
    return last + 1, len(lines[last].rstrip()) + 1


def _misplaced(value: _Special, event: ev.Event | None) -> None:
    line = _line(event) if event is not None else 0
    raise YamlProblem(f"a plain {value.text} means something to YAML 1.1 only as a mapping key; quote it: "
                      f"\"{value.text}\"", line=line)


def load_documents(stream: BinaryIO | str | bytes, *, key_depth: int = 2) -> list[Document]:
    """Every document of a stream; raises `YamlProblem` at the first thing that is not plain data.

    `key_lines` holds the line of every key down to `key_depth` levels (policy.yaml nests deeper than a
    resource), by dotted path."""
    return DocumentBuilder(stream, key_depth=key_depth).documents()
