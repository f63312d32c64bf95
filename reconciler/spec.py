"""Load and validate desired/: YAML files in, a `DesiredState` or one `SpecError` listing every problem out.

Loading is all-or-nothing on purpose: a plan made from a partial view of the desired state would
delete whatever sat in the file that failed to parse.
"""

from __future__ import annotations

import difflib
import gc
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .errors import SpecError, SpecProblem
from .models import DOCUMENT_FIELDS, ResourceSpec, SuspendSpec, spec_hash
from .settle import (
    DEFAULT_SETTLE,
    GIT_RECHECK,
    UNREADABLE,
    NotRegular,
    Settler,
    Stamp,
    WriteHint,
    WriteHints,
    git_index_lock,
    open_regular,
    stamp_of,
)
from .yamlcompat import disagreements
from .yamlfast import Document, YamlProblem, load_documents

# Typed fields, checked for plain scalars that YAML 1.1 (this tool) and 1.2 (editors) read apart.
TEXT_FIELDS = tuple(name for name, info in ResourceSpec.model_fields.items() if info.annotation is str)
BOOL_FIELDS = tuple(name for name, info in ResourceSpec.model_fields.items() if info.annotation is bool)
MAX_FILE_BYTES = 64 * 1024 * 1024
# How long a one-shot command waits for files that keep changing before it gives up.
SETTLE_PATIENCE = 30.0
# Below these, forking workers costs more than it saves.
PARALLEL_MIN_FILES = 8
PARALLEL_MIN_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was declared."""

    file: str
    line: int
    target_line: int = 0  # the line of its runtime_target key, when it has one (targets.py reports there)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The validated desired state: resources by id, and where each was declared."""

    resources: dict[str, ResourceSpec]
    sources: dict[str, Source] = field(default_factory=dict)
    # spec hashes computed ahead (the daemon's cache keeps them between passes); may be partial
    hashes: dict[str, str] = field(default_factory=dict)


def desired_files(directory: Path) -> list[Path]:
    """Every *.yaml/*.yml below `directory`, sorted, skipping names that start with '.' or '_'.

    A symlink (to a file or a directory) that leads outside the tree is refused: the file watch cannot
    see its target change, and a checkout must describe the fleet by itself. Symlinked directories that
    stay inside are not followed (their files are read where they really are).
    """
    found: list[Path] = []
    outside: list[SpecProblem] = []
    stack, root = [str(directory)], os.path.realpath(directory)
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith((".", "_")):
                    continue
                wanted = entry.name.endswith((".yaml", ".yml"))
                if entry.is_symlink() and (wanted or entry.is_dir()):
                    _check_link(entry.path, root=root, directory=directory, outside=outside)
                    if entry.is_dir():
                        continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif wanted:
                    found.append(Path(entry.path))
    if outside:
        raise SpecError(outside)
    return sorted(found)


def _check_link(path: str, *, root: str, directory: Path, outside: list[SpecProblem]) -> None:
    target = os.path.realpath(path)
    if os.path.commonpath([root, target]) != root:
        outside.append(SpecProblem(display_path(Path(path)), 0, "", f"a symlink that leads outside {directory} "
                                   f"(to {target}); keep desired files in the tree (copy the file in)"))


def display_path(path: Path) -> str:
    """Paths as a compiler prints them: relative to the working directory when below it."""
    text = os.path.relpath(path)
    return str(path) if text.startswith("..") else text


def load_desired(*, directory: Path, settle: float = DEFAULT_SETTLE) -> DesiredState:
    """Read and validate every file; raise `SpecError` with all problems if anything is wrong.

    Only settled files are read (see settle.py): a file written in the last `settle` seconds is
    waited for, and a file that changes while being read is read again, up to SETTLE_PATIENCE.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError([SpecProblem(str(directory), 0, "", "desired directory does not exist")])
    settler = Settler(settle=settle, git_lock=git_index_lock(directory))
    patience = max(SETTLE_PATIENCE, 20 * settle)
    deadline = time.monotonic() + patience
    while True:
        paths = desired_files(directory)
        before = {path: stamp_of(path) for path in paths}
        wait = settler.wait(changed=before, gone=(), strict=True)
        if wait <= 0 and settler.git_busy():
            wait = GIT_RECHECK
        if wait <= 0:
            problems: list[SpecProblem] = []
            with _no_gc_pauses():
                files = _load_files(paths=paths, problems=problems)
            if {path: stamp_of(path) for path in desired_files(directory)} == before:
                return _combine(files=files, problems=problems)
            wait = settle
        if time.monotonic() + wait > deadline:
            why = (f"{settler.git_lock} stayed for {patience:.0f} s (a git operation running, or a crashed one's "
                   "lock to remove)" if settler.git_busy() else
                   f"files kept changing for {patience:.0f} s; run again once they are written")
            raise SpecError([SpecProblem(str(directory), 0, "", why)])
        time.sleep(wait)


def _combine(*, files: Loaded, problems: list[SpecProblem]) -> DesiredState:
    """All files' specs as one state, refusing duplicate ids; raises if anything was wrong anywhere."""
    resources: dict[str, ResourceSpec] = {}
    sources: dict[str, Source] = {}
    for _name, loaded in files:
        for spec, source in loaded:
            _add_unique(spec=spec, source=source, resources=resources, sources=sources, problems=problems)
    if problems:
        raise SpecError(problems)
    return DesiredState(resources=resources, sources=sources)


class _Entry(NamedTuple):
    stamp: Stamp | None  # None: torn (changed while read) or not read (being written); never reused
    loaded: list[tuple[ResourceSpec, Source]]
    problems: list[SpecProblem]
    hashes: dict[str, str]


_UNREAD = _Entry(None, [], [], {})


class Unsettled(Exception):
    """Some desired file is still being written, or vanished a moment ago: keep the last good state.

    Not a user error: the caller plans from what it had and loads again after `wait` seconds.
    """

    def __init__(self, *, wait: float, files: list[str]) -> None:
        self.wait = wait
        self.files = files
        super().__init__(f"waiting {wait:.2f} s for {', '.join(files)} to settle")


class DesiredCache:
    """Loads desired/ again re-parsing only files whose stamp changed: idle resyncs cost stats.

    Used by the daemon, which loads on every file event and every resync. `generation` counts the
    loads that combined a change, so a caller can tell an idle resync from a real one. A load while some
    file is unsettled (settle.py) raises `Unsettled` instead of returning a state made from a partial
    read; so does a settled-looking state that would drop resources before the clock confirms it.
    """

    def __init__(self, *, settle: float = DEFAULT_SETTLE, writes: WriteHints | None = None) -> None:
        self._parsed: dict[Path, _Entry] = {}  # every file's latest read, settled or not
        self._accepted: dict[Path, _Entry] = {}  # the reads the last returned state was made from
        self._ids: frozenset[str] | None = None  # ids of the last returned state
        self._state: DesiredState | None = None
        self._forget = False
        self._writes = writes
        self._settler = Settler(settle=settle, writes=writes)
        self._lock_for: Path | None = None  # the directory whose git index.lock the settler watches
        self._held: set[Path] = set()  # the paths the last load waited for
        self.generation = 0
        self.reads = 0  # counts the loads that read something new, settled or not (FileOwners follows it)

    def forget(self) -> None:
        """Re-read every file at the next load (SIGHUP, the slow loop); what settles is still tracked."""
        self._forget = True

    def load(self, *, directory: Path) -> DesiredState:
        held = self._held
        try:
            return self._load(directory=Path(directory))
        finally:
            if self._held != held:
                self.reads += 1

    def _load(self, *, directory: Path) -> DesiredState:
        if not directory.is_dir():
            raise SpecError([SpecProblem(str(directory), 0, "", "desired directory does not exist")])
        if self._forget:
            self._forget, self._parsed, self._state = False, {}, None
        if self._lock_for != directory:
            self._settler.git_lock, self._lock_for = git_index_lock(directory), directory
        files = {path: self._entry(path) for path in desired_files(directory)}
        if files.keys() != self._parsed.keys() or any(entry is not self._parsed[path] for path, entry in files.items()):
            self.reads += 1
        self._parsed, self._held = files, set()
        gone = [path for path in self._accepted if path not in files]
        changed = {path: entry.stamp for path, entry in files.items() if entry is not self._accepted.get(path)}
        if not changed and not gone and self._state is not None:
            return self._state
        self._hold(changed=changed, gone=gone, strict=False)
        self.generation += 1
        self._state = None
        problems = [problem for entry in files.values() for problem in entry.problems]
        state = _combine(files=[(display_path(path), entry.loaded) for path, entry in files.items()],
                         problems=problems)
        if self._ids is None or not self._ids <= state.resources.keys():
            self._hold(changed=changed, gone=gone, strict=True)  # a drop is confirmed by the clock only
        self._relist(directory=directory, listed=files.keys())
        self._settler.forget(gone)
        self._accepted, self._ids = files, frozenset(state.resources)
        self._state = DesiredState(state.resources, state.sources,
                                   {rid: h for entry in files.values() for rid, h in entry.hashes.items()})
        return self._state

    def files(self) -> list[tuple[Path, dict[str, Source], bool]]:
        """Each file as the last `load` read it, even when that load failed or was held: the ids its
        valid documents declare, and whether the file itself parsed, validated and settled cleanly.
        A file that vanished a moment ago (its absence not yet confirmed) is listed with its last ids."""
        listed = [(path, {spec.resource_id: source for spec, source in entry.loaded},
                   not entry.problems and entry.stamp is not None and path not in self._held)
                  for path, entry in self._parsed.items()]
        vanished = [(path, {spec.resource_id: source for spec, source in entry.loaded}, False)
                    for path, entry in self._accepted.items() if path in self._held and path not in self._parsed]
        return listed + vanished

    def _relist(self, *, directory: Path, listed: Iterable[Path]) -> None:
        """The listing must still hold after git's lock was found free: a checkout unlinks a file and
        writes it again before it drops the lock, so a listing taken before the check may lack it (a fresh
        daemon, with no memory of that file, would take it as removed)."""
        now = set(desired_files(directory))
        if now != set(listed):
            self._held = now ^ set(listed)
            raise Unsettled(wait=self._settler.recheck, files=sorted(display_path(path) for path in self._held))

    def _hold(self, *, changed: dict[Path, Stamp | None], gone: list[Path], strict: bool) -> None:
        files = [display_path(path) for path in [*changed, *gone]]
        wait = self._settler.wait(changed=changed, gone=gone, strict=strict)
        if wait <= 0 and self._settler.git_busy():
            wait, files = GIT_RECHECK, [*files, f"{self._settler.git_lock} (a git checkout is running)"]
        if wait > 0:
            self._held = {*changed, *gone}
            raise Unsettled(wait=wait, files=files)

    def _entry(self, path: Path) -> _Entry:
        stamp = stamp_of(path)
        cached = self._parsed.get(path)
        if cached is not None and cached.stamp == stamp and stamp != UNREADABLE:
            return cached
        if self._writes is not None and self._writes.hint(path, stamp) is WriteHint.WRITING:
            return _UNREAD
        found: list[SpecProblem] = []
        loaded = _load_serial(paths=[path], problems=found)[0][1]
        if stamp_of(path) != stamp:
            return _UNREAD
        return _Entry(stamp, loaded, found, {spec.resource_id: spec_hash(spec) for spec, _ in loaded})


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Loading allocates millions of small acyclic objects; the cyclic collector would only rescan them.

    Afterwards they are frozen out of the collector's view (they are still freed by reference count).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _add_unique(
    *, spec: ResourceSpec, source: Source, resources: dict[str, ResourceSpec], sources: dict[str, Source],
    problems: list[SpecProblem],
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


Loaded = list[tuple[str, list[tuple[ResourceSpec, Source]]]]


def _load_files(*, paths: list[Path], problems: list[SpecProblem]) -> Loaded:
    """Parse and validate files, on every core when there is enough to parse (the 100k-resource case)."""
    many = len(paths) >= PARALLEL_MIN_FILES and (os.cpu_count() or 1) > 1 and threading.active_count() == 1
    if many and sum(_size(path) for path in paths) >= PARALLEL_MIN_BYTES:
        return _load_parallel(paths=paths, problems=problems)
    return _load_serial(paths=paths, problems=problems)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _load_serial(*, paths: list[Path], problems: list[SpecProblem]) -> Loaded:
    loaded = []
    for path in paths:
        name = display_path(path)
        documents = _read_documents(path=path, name=name, problems=problems)
        loaded.append((name, _validate_file(documents=documents, name=name, problems=problems)))
    return loaded


def _load_parallel(*, paths: list[Path], problems: list[SpecProblem]) -> Loaded:
    """Share the files between this process and forked workers (libyaml's event objects are the cost).

    Workers send back each valid spec as JSON text, the cheapest thing to move between processes and
    to turn back into a model (validation from JSON runs in pydantic's Rust core).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 2, 4)
    chunks = _shares(paths, workers=workers)
    with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_load_chunk_as_json, chunk) for chunk in chunks[1:]]
        loaded = _load_serial(paths=chunks[0], problems=problems)
        for future in futures:
            as_json, found = future.result()
            problems.extend(found)
            loaded.extend(_from_json(as_json))
    return sorted(loaded, key=lambda item: item[0])


# This process also revives the workers' specs afterwards, so it parses a smaller share itself.
OWN_SHARE = 0.8


def _shares(paths: list[Path], *, workers: int) -> list[list[Path]]:
    """Deal the files out round-robin by weight: this process gets OWN_SHARE of an equal part."""
    weights = [OWN_SHARE] + [1.0] * (workers - 1)
    chunks: list[list[Path]] = [[] for _ in range(workers)]
    given = [0.0] * workers
    for path in paths:
        target = min(range(workers), key=lambda i: (given[i] + 1) / weights[i])
        chunks[target].append(path)
        given[target] += 1
    return chunks


# a spec as JSON, its `suspend:` as JSON (not part of the spec's dump) or None, and its lines
_Shipped = list[tuple[str, list[tuple[str, str | None, int, int]]]]


def _load_chunk_as_json(paths: list[Path]) -> tuple[_Shipped, list[SpecProblem]]:
    problems: list[SpecProblem] = []
    loaded = _load_serial(paths=paths, problems=problems)
    as_json = [(name, [(spec.model_dump_json(), spec.suspend.model_dump_json() if spec.suspend else None,
                        source.line, source.target_line) for spec, source in items])
               for name, items in loaded]
    return as_json, problems


def _from_json(as_json: _Shipped) -> Loaded:
    return [(name, [(_revive(text, suspend), Source(name, *lines)) for text, suspend, *lines in items])
            for name, items in as_json]


def _revive(text: str, suspend: str | None) -> ResourceSpec:
    spec = ResourceSpec.model_validate_json(text)
    return spec if suspend is None else spec.model_copy(update={"suspend": SuspendSpec.model_validate_json(suspend)})


def _validate_file(*, documents: list[Document], name: str,
                   problems: list[SpecProblem]) -> list[tuple[ResourceSpec, Source]]:
    loaded = []
    for doc in documents:
        spec = validate_document(doc=doc, name=name, problems=problems)
        if spec is not None:
            loaded.append((spec, Source(name, doc.key_lines.get("resource_id", doc.line),
                                        doc.key_lines.get("runtime_target", 0))))
    return loaded


def _read_documents(*, path: Path, name: str, problems: list[SpecProblem]) -> list[Document]:
    try:
        with open_regular(path) as stream:
            if os.fstat(stream.fileno()).st_size > MAX_FILE_BYTES:
                problems.append(SpecProblem(name, 0, "", f"file is larger than {MAX_FILE_BYTES >> 20} MiB"))
                return []
            return load_documents(stream)
    except YamlProblem as exc:
        problems.append(SpecProblem(name, exc.line, exc.field, exc.message, exc.column))
    except NotRegular as exc:
        problems.append(SpecProblem(name, 0, "", str(exc.strerror)))
    except OSError as exc:
        problems.append(SpecProblem(name, 0, "", f"cannot read: {exc.strerror}"))
    except Exception as exc:
        problems.append(SpecProblem(name, 0, "", f"cannot read: {type(exc).__name__}: {exc}"))
    return []


def validate_document(*, doc: Document, name: str, problems: list[SpecProblem]) -> ResourceSpec | None:
    """One document → a `ResourceSpec`, or problems appended (each with its line and field)."""
    if doc.value is None:
        return None  # an empty document (a stray '---') declares nothing
    if not isinstance(doc.value, dict):
        kind = type(doc.value).__name__.replace("list", "a list").replace("str", "a string")
        problems.append(SpecProblem(name, doc.line, "", f"document is {kind}, expected a mapping of fields"))
        return None
    if doc.odd_keys:
        problems.extend(SpecProblem(name, line, text, f"key {text!r} is not read as text by YAML; quote it: "
                                    f"\"{text}\"") for text, line in doc.odd_keys)
        return None
    apart = disagreements(plain=doc.raw, text_fields=TEXT_FIELDS, bool_fields=BOOL_FIELDS)
    if apart:
        problems.extend(SpecProblem(name, doc.key_lines.get(key, doc.line), key, message) for key, message in apart)
        return None
    try:
        return ResourceSpec.model_validate(doc.value)
    except ValidationError as exc:
        problems.extend(_explain(error=error, doc=doc, name=name) for error in exc.errors())
        return None


def _explain(*, error: ErrorDetails, doc: Document, name: str) -> SpecProblem:
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    field_name = ".".join(loc)
    line = doc.key_lines.get(field_name) or doc.key_lines.get(loc[0] if loc else "", doc.line)
    return SpecProblem(name, line, field_name, _message(error=error, doc=doc, loc=loc))


def _message(*, error: ErrorDetails, doc: Document, loc: list[str]) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if "[key]" in error["loc"]:
        return f"key {loc[-1]!r} must be a string; quote it"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], DOCUMENT_FIELDS, n=1)
        return "unknown field" + (f" (did you mean '{hint[0]}'?)" if hint else
                                  f"; allowed: {', '.join(DOCUMENT_FIELDS)}")
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

