"""The observed-state store: the only code that speaks SQL, behind one small interface.

`open_store(url=...)` picks the backend from the URL, so the engine, CLI and daemon never know
whether the rows live in a SQLite file or PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ..errors import StoreError

if TYPE_CHECKING:
    from .base import SQLStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


# key=value connection strings (libpq's other spelling): `password=x`, `password = 'a b\'c'`, `sslpassword=…`
_DSN_SECRET = re.compile(r"""(?i)(?<!\S)(\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)""")
_QUERY_PARAM = re.compile(r"([^&=#]+)=([^&#]*)")


def redact(url: str) -> str:
    """A database URL or DSN as logs, errors and status may show it: every password replaced by ***.

    Covers `user:pw@`, an empty user (`:pw@`), `?password=` (its name percent-encoded too, as libpq
    decodes it) and key=value strings. Anything unsure is hidden rather than shown.
    """
    return _DSN_SECRET.sub(lambda m: f"{m.group(1)}***", _redact_query(_redact_userinfo(url)))


def redact_message(text: str, *, url: str) -> str:
    """A driver's error about `url` with the URL's secrets hidden: libpq quotes the token it could not
    parse (`invalid percent-encoded token: "hun%zzter2"`) or the whole URI."""
    found = _secrets(url)
    for secret in sorted({*found, *map(unquote, found)} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact(text)


def _secrets(url: str) -> list[str]:
    _scheme, sep, rest = url.partition("://")
    userinfo, at, _host = rest.partition("?")[0].rpartition("@")
    found = [userinfo.partition(":")[2]] if sep and at else []
    found += [value for key, value in _QUERY_PARAM.findall(url.partition("?")[2])
              if "password" in unquote(key).lower()]
    return found + [match.group(2).strip("'") for match in _DSN_SECRET.finditer(url)]


def _redact_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, mark, query = rest.partition("?")
    userinfo, at, host = authority.rpartition("@")  # the last @: a password may hold an unencoded one
    user, colon, _password = userinfo.partition(":")
    if not (sep and at and colon):
        return url
    return f"{scheme}://{user}:***@{host}{mark}{query}"


def _redact_query(url: str) -> str:
    head, mark, query = url.partition("?")
    if not mark:
        return url

    def hide(match: re.Match[str]) -> str:
        secret = "password" in unquote(match.group(1)).lower()
        return f"{match.group(1)}=***" if secret else match.group(0)

    return head + mark + _QUERY_PARAM.sub(hide, query)


def sqlite_path(url: str) -> Path:
    """`path`, `sqlite:///relative/path` or `sqlite:////absolute/path` (SQLAlchemy's convention)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported database URL scheme '{scheme}://' "
                         "(use a file path, sqlite:///path or postgresql://…)")
    return Path(url)


def exists(url: str) -> bool:
    """Whether there is a database to read (a server is assumed to exist; a file may not yet)."""
    return is_postgres(url) or sqlite_path(url).exists()


def open_store(*, url: str, create: bool = True, pool_size: int = 20, busy_timeout: float | None = None) -> SQLStore:
    """Open (and migrate) the store at `url`; `create=False` refuses to make a new SQLite file.

    `busy_timeout`: seconds a SQLite write waits for another process's lock (default BUSY_TIMEOUT_S).
    """
    if is_postgres(url):
        from .postgres import PostgresStore

        return PostgresStore(url=url, pool_size=pool_size, wait=busy_timeout)
    from .sqlite import BUSY_TIMEOUT_S, SQLiteStore

    return SQLiteStore(path=sqlite_path(url), create=create,
                       busy_timeout=BUSY_TIMEOUT_S if busy_timeout is None else busy_timeout)
