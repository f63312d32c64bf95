"""Who is calling the API and what they may do: scopes, the principal, and the one permission rule.

A token carries scopes: `read`, `write` (every owner), `read:owner=<owner>`, `write:owner=<owner>`
(one owner's resources). Write implies read for the same owners: a team that may declare its
resources may also poll them. A scope is parsed once, where it is read (the tokens file, the
`token create` command), into a `Scope` value; everything after compares values, never text.

The principal is what the API's front door (httpguard) found behind a bearer token, handed to the
handlers in the ASGI scope. None stands for a call the door let in without a token (loopback with
no token configured, or a loopback read): the door already decided that such a call may proceed,
so it may do anything the route offers. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class ScopeKind(StrEnum):
    READ = "read"
    WRITE = "write"


OWNER_PREFIX = "owner="
FORMS = "read, write, read:owner=<owner> or write:owner=<owner>"
_OWNER = re.compile(r"^[^\s\x00-\x1f\x7f]+$")  # an owner as written in a spec: no spaces, no control characters


@dataclass(frozen=True, slots=True)
class Scope:
    """One permission: a kind, for every owner (owner None) or for one."""

    kind: ScopeKind
    owner: str | None = None

    def __str__(self) -> str:
        return str(self.kind) if self.owner is None else f"{self.kind}:{OWNER_PREFIX}{self.owner}"

    def allows(self, kind: ScopeKind, owner: str) -> bool:
        kind_ok = self.kind is ScopeKind.WRITE or kind is ScopeKind.READ
        return kind_ok and (self.owner is None or self.owner == owner)


ADMIN_SCOPES = frozenset({Scope(ScopeKind.READ), Scope(ScopeKind.WRITE)})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a token: its name (the audit actor is `api:<name>`) and its scopes."""

    name: str
    scopes: frozenset[Scope]


def parse_scope(text: str) -> Scope:
    """`read`, `write`, `read:owner=acme`, `write:owner=acme` → Scope; ValueError naming the accepted forms."""
    head, colon, rest = text.partition(":")
    kind = ScopeKind(head) if head in ScopeKind.__members__.values() else None
    if kind is not None and not colon:
        return Scope(kind)
    owner = rest[len(OWNER_PREFIX):] if rest.startswith(OWNER_PREFIX) else ""
    if kind is None or not _OWNER.match(owner):
        raise ValueError(f"{text!r} is not a scope; expected {FORMS}")
    return Scope(kind, owner)


def may(principal: Principal | None, kind: ScopeKind, owner: str) -> bool:
    """Whether the caller may `kind` (read or write) the resources of `owner`."""
    return principal is None or any(scope.allows(kind, owner) for scope in principal.scopes)


def readable_owners(principal: Principal | None) -> frozenset[str] | None:
    """The owners whose resources the caller may read; None for every owner."""
    if principal is None or any(scope.owner is None for scope in principal.scopes):
        return None
    return frozenset(scope.owner for scope in principal.scopes if scope.owner is not None)


def needed(kind: ScopeKind, owner: str) -> str:
    """The scopes that would allow it, for a 403's message."""
    if kind is ScopeKind.READ:
        return f"read, write, read:{OWNER_PREFIX}{owner} or write:{OWNER_PREFIX}{owner}"
    return f"write or write:{OWNER_PREFIX}{owner}"
