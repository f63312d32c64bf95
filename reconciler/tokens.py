"""The API's tokens: the tokens file (`--api-tokens`), the single admin token, and making new tokens.

The tokens file lets teams call the API for their own owners only. It holds, per token, a name (the
audit actor is `api:<name>`), the hex SHA-256 of the token — never the token itself, so the file may
be read by whoever deploys it — and the token's scopes (scopes.py):

    - name: team-acme
      sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      scopes: [write:owner=acme]

It is validated like the other files: unknown keys, a bad hash, a bad scope, a duplicate name or hash
each name file:line and field; the hash itself is never quoted in an error. A presented token is
hashed and compared with every entry in constant time (hmac.compare_digest). `--api-token-file`'s
token is the entry `admin` with scopes read and write.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError, SpecProblem
from .scopes import ADMIN_SCOPES, FORMS, Principal, Scope, parse_scope
from .settle import NotRegular, open_regular

ENTRY_KEYS = ("name", "sha256", "scopes")
ADMIN_NAME = "admin"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
TOKEN_BYTES = 32  # of randomness in a new token (43 characters of urlsafe base64)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One token as the daemon keeps it: who, the token's SHA-256 digest, what it may do."""

    name: str
    digest: bytes
    scopes: frozenset[Scope]

    def __repr__(self) -> str:  # the digest stays out of any log line or traceback that shows an entry
        return f"TokenEntry(name={self.name!r}, scopes={sorted(map(str, self.scopes))})"


class TokenSet:
    """The tokens in force: the principal behind a presented token, found in constant time per entry."""

    def __init__(self, entries: tuple[TokenEntry, ...]) -> None:
        self._entries = entries

    @classmethod
    def of(cls, entries: Iterable[TokenEntry]) -> TokenSet:
        return cls(tuple(entries))

    def __len__(self) -> int:
        return len(self._entries)

    def principal(self, token: str) -> Principal | None:
        """Who holds `token`; None when no entry's hash matches (every entry is compared)."""
        digest = hash_token(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry
        return Principal(name=found.name, scopes=found.scopes) if found is not None else None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def admin_entry(token: str) -> TokenEntry:
    """`--api-token-file`'s token: the principal `admin`, read and write on every owner."""
    return TokenEntry(name=ADMIN_NAME, digest=hash_token(token), scopes=ADMIN_SCOPES)


def new_token() -> str:
    """A new random token (32 bytes from the secrets module, urlsafe base64)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def entry_yaml(*, name: str, scopes: Iterable[Scope], token: str) -> str:
    """The tokens-file entry for `token` (its hash, never the token), ready to append to the file."""
    listed = ", ".join(sorted({str(scope) for scope in scopes}))
    return f'- name: {name}\n  sha256: "{hashlib.sha256(token.encode()).hexdigest()}"\n  scopes: [{listed}]\n'


def read_tokens_file(*, path: Path, reserved: frozenset[str] = frozenset()) -> tuple[TokenEntry, ...]:
    """Every entry of a tokens file; SpecError with each problem at file:line and field.

    `reserved`: names another source already uses (`admin` beside --api-token-file).
    """
    name = str(path)
    root = _compose(path=path)
    if root is None:
        return ()
    if not _is(root, "SequenceNode"):
        raise SpecError([SpecProblem(name, _line(root), "", "expected a list of {name, sha256, scopes} entries")])
    problems: list[SpecProblem] = []
    entries = [_entry(node, file=name, problems=problems) for node in root.value]
    problems += _duplicates([entry for entry in entries if entry is not None], file=name, reserved=reserved)
    if problems:
        raise SpecError(problems)
    return tuple(entry.value for entry in entries if entry is not None)


def _compose(*, path: Path) -> Any:
    import yaml

    name = str(path)
    try:
        with open_regular(path) as stream:
            text = stream.read().decode("utf-8")
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    except NotRegular as exc:
        raise SpecError([SpecProblem(name, 0, "", str(exc.strerror))]) from None
    except OSError as exc:
        raise SpecError([SpecProblem(name, 0, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise SpecError([SpecProblem(name, 0, "", "not UTF-8 text")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise SpecError([SpecProblem(name, line, "", f"invalid YAML: {getattr(exc, 'problem', None) or exc}")]) \
            from None


@dataclass(frozen=True, slots=True)
class _Placed:
    value: TokenEntry
    line: int
    lines: dict[str, int]


def _entry(node: Any, *, file: str, problems: list[SpecProblem]) -> _Placed | None:
    """One list item as an entry, or None after adding its problems."""
    if not _is(node, "MappingNode"):
        problems.append(SpecProblem(file, _line(node), "", "expected a mapping with name, sha256 and scopes"))
        return None
    fields: dict[str, Any] = {}
    lines: dict[str, int] = {}
    count = len(problems)
    for key, value in node.value:
        field = str(key.value)
        if field in lines:
            problems.append(SpecProblem(file, _line(key), field, f"duplicate key (first at line {lines[field]})"))
        elif field not in ENTRY_KEYS:
            problems.append(_unknown(file=file, key=field, line=_line(key)))
        fields[field], lines[field] = value, _line(key)
    problems += [SpecProblem(file, _line(node), key, "missing; every entry has name, sha256 and scopes")
                 for key in ENTRY_KEYS if key not in fields]
    if len(problems) > count:
        return None
    entry_name = _name(fields["name"], file=file, line=lines["name"], problems=problems)
    digest = _digest(fields["sha256"], file=file, line=lines["sha256"], problems=problems)
    scopes = _scopes(fields["scopes"], file=file, line=lines["scopes"], problems=problems)
    if len(problems) > count or entry_name is None or digest is None:
        return None
    return _Placed(TokenEntry(name=entry_name, digest=digest, scopes=scopes), _line(node), lines)


def _name(node: Any, *, file: str, line: int, problems: list[SpecProblem]) -> str | None:
    if _is(node, "ScalarNode") and NAME_PATTERN.match(node.value):
        return str(node.value)
    problems.append(SpecProblem(file, line, "name", "expected a name of letters, digits and . _ @ - "
                                                    "(at most 64; the audit actor is api:<name>)"))
    return None


def _digest(node: Any, *, file: str, line: int, problems: list[SpecProblem]) -> bytes | None:
    if _is(node, "ScalarNode") and _HEX64.match(node.value):
        return bytes.fromhex(node.value)
    problems.append(SpecProblem(file, line, "sha256", "expected the token's SHA-256 as 64 hex digits, quoted "
                                                      "(`reconciler token create` prints the entry)"))
    return None


def _scopes(node: Any, *, file: str, line: int, problems: list[SpecProblem]) -> frozenset[Scope]:
    items = node.value if _is(node, "SequenceNode") else None
    if not items or not all(_is(item, "ScalarNode") for item in items):
        problems.append(SpecProblem(file, line, "scopes", f"expected a list of at least one scope: {FORMS}"))
        return frozenset()
    scopes = set()
    for item in items:
        try:
            scopes.add(parse_scope(str(item.value)))
        except ValueError as exc:
            problems.append(SpecProblem(file, _line(item), "scopes", str(exc)))
    return frozenset(scopes)


def _duplicates(entries: list[_Placed], *, file: str, reserved: frozenset[str]) -> list[SpecProblem]:
    """A name used twice (or taken by --api-token-file), a token listed twice: at the later entry."""
    problems = []
    names: dict[str, int] = {}
    digests: dict[bytes, _Placed] = {}
    for placed in entries:
        entry = placed.value
        if entry.name in reserved:
            problems.append(SpecProblem(file, placed.lines["name"], "name", f"'{entry.name}' is the token of "
                                        "--api-token-file; give this one another name"))
        elif entry.name in names:
            problems.append(SpecProblem(file, placed.lines["name"], "name",
                                        f"'{entry.name}' is used twice (also at line {names[entry.name]})"))
        first = digests.get(entry.digest)
        if first is not None:
            problems.append(SpecProblem(file, placed.lines["sha256"], "sha256", f"the same token as "
                                        f"'{first.value.name}' (line {first.line}); every token is listed once"))
        names.setdefault(entry.name, placed.line)
        digests.setdefault(entry.digest, placed)
    return problems


def _unknown(*, file: str, key: str, line: int) -> SpecProblem:
    hint = difflib.get_close_matches(key, ENTRY_KEYS, n=1)
    return SpecProblem(file, line, key, "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else
                                                        f"; allowed: {', '.join(ENTRY_KEYS)}"))


def _is(node: Any, kind: str) -> bool:
    import yaml

    return isinstance(node, getattr(yaml, kind))


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


class Keyring:
    """The tokens a daemon has in force: the admin token and the tokens file, re-read on SIGHUP.

    A tokens file that does not load at the start refuses the start (SpecError from the constructor);
    one that breaks later keeps the last good set in force, and `problem` says why until a reload
    succeeds. None of it ever holds or prints a token; only hashes are kept.
    """

    def __init__(self, *, admin_token: str | None, tokens_file: Path | None) -> None:
        self.tokens_file = tokens_file
        self._admin = (admin_entry(admin_token),) if admin_token is not None else ()
        self._reserved = frozenset({ADMIN_NAME}) if admin_token is not None else frozenset()
        self._current = self._read()
        self.problem: str | None = None

    def current(self) -> TokenSet | None:
        """The tokens in force; None when no token is configured at all."""
        return self._current if self._admin or self.tokens_file is not None else None

    def _read(self) -> TokenSet:
        listed = () if self.tokens_file is None else read_tokens_file(path=self.tokens_file, reserved=self._reserved)
        return TokenSet.of((*self._admin, *listed))

    def reload(self) -> str | None:
        """Re-read the tokens file: None when the new set is in force, else why the last good one stays."""
        if self.tokens_file is None:
            return None
        try:
            self._current = self._read()
        except SpecError as exc:
            self.problem = "; ".join(str(problem) for problem in exc.problems)
            return self.problem
        self.problem = None
        return None

    def report(self) -> dict[str, Any] | None:
        """For /health: how many tokens are in force and why a reload failed (no token, no hash)."""
        if self.current() is None:
            return None
        return {"tokens": len(self._current), "tokens_file_error": self.problem}
