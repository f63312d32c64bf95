"""The API's front door: the bearer token and the body's size are checked before a body is read.

FastAPI reads and parses a request's body before it runs the route's dependencies, so a token
checked there comes after an unauthenticated peer's 59 MB body already sits in memory, and nothing
bounded a body's size. This plain ASGI layer sits in front of FastAPI instead:

- the caller is authenticated from the headers alone: a presented bearer token must be one in force
  (else 401); a mutating method needs one once any token is configured, and so does every read but
  /health and /metrics when the API listens beyond loopback (`open_reads` False) or the request
  came through a proxy (a Forwarded or X-Forwarded-For header: TLS is terminated in front). The principal
  found (scopes.py; None for a call let in without a token) is put into the ASGI scope as
  `scope["state"]["principal"]`, where a FastAPI handler reads it as `request.state.principal`;
  what it may do is the API's to decide (api.py);
- a body over MAX_BODY_BYTES is answered 413, counted while it is read, so a chunked body without a
  Content-Length is capped as well (past the cap it is only counted, never kept);
- JSON that Python's parser accepts but nothing after it can carry is answered 422 in FastAPI's
  own error shape: NaN and Infinity, also as 1e999 (not JSON numbers; the validation error quoting
  them could not even be encoded: a 500), integers too long to convert, and nesting deeper than
  MAX_DEPTH (the parser or the validators end in RecursionError).

Everything else, malformed JSON included, is FastAPI's to answer. After a refusal the connection
stays open: uvicorn reads and discards the rest of the body (in small pieces), so an ordinary client
still sending it reads the answer instead of a reset connection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .scopes import Principal

MAX_BODY_BYTES = 1024 * 1024
# An over-limit body up to this size is read on (and dropped) before the 413: a client that sends
# `Connection: close` and its whole body first (urllib does) then reads the answer, not a broken pipe.
DRAIN_BYTES = 16 * 1024 * 1024
# as deep as desired/ files may nest (yamlfast.MAX_DEPTH): one rule for both doors
MAX_DEPTH = 64
OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# open to anyone wherever the API listens (load balancers, Prometheus): they carry no secrets
OPEN_PATHS = frozenset({"/health", "/metrics"})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Keys(Protocol):
    """The tokens in force (tokens.TokenSet): who holds a presented token."""

    def principal(self, token: str) -> Principal | None: ...


class Refused(Exception):
    def __init__(self, status: int, detail: Any, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


class FrontDoor:
    """ASGI middleware: token, then size, then JSON sanity; the app gets the body replayed once."""

    def __init__(self, app: Any, *, keys: Callable[[], Keys | None], open_reads: bool = True,
                 max_body: int = MAX_BODY_BYTES) -> None:
        """`keys`: the tokens in force now (None: none configured); asked per request, so a reload counts."""
        self.app, self.keys, self.open_reads, self.max_body = app, keys, open_reads, max_body

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            open_reads = self.open_reads and not forwarded(headers)
            principal = authenticate(method=scope["method"], path=scope["path"], header=headers.get("authorization"),
                                     tokens=self.keys(), open_reads=open_reads)
            self._check_size(headers=headers)
            body = await self._read(receive)
            if body is None:
                return  # the client went away
            _check_json(body=body, content_type=headers.get("content-type"))
        except Refused as refused:
            await _answer(send, refused)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, _replay(body, receive), send)

    def _check_size(self, *, headers: dict[str, str]) -> None:
        declared = headers.get("content-length", "0").strip() or "0"
        if not declared.isdigit() or int(declared) > DRAIN_BYTES:
            raise Refused(413, self._too_big())

    def _too_big(self) -> str:
        return f"request body larger than {self.max_body // 1024 // 1024} MiB"

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body:
                chunks.clear()  # from here on only counted, never kept
                if not more or size > DRAIN_BYTES:
                    raise Refused(413, self._too_big())
                continue
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)


def authenticate(*, method: str, path: str, header: str | None, tokens: Keys | None,
                 open_reads: bool) -> Principal | None:
    """The principal behind a request's Authorization header; Refused(401) when it may not come in.

    /health and /metrics are open to all. A presented token must be in force, whatever the method
    (a wrong token is never ignored). Without one, a read may proceed on loopback (`open_reads`), a
    write only when no token is configured at all (which the daemon allows on loopback only).
    """
    if path in OPEN_PATHS:
        return None
    scheme, _, given = (header or "").partition(" ")
    if header is not None and tokens is not None:
        principal = tokens.principal(given.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise _unauthorised("the bearer token is not valid")
        return principal
    if open_reads and (tokens is None or method in OPEN_METHODS):
        return None
    raise _unauthorised("a valid bearer token is required")


def forwarded(headers: dict[str, str]) -> bool:
    """Whether a proxy passed the request on (Forwarded, X-Forwarded-For): its client is not on loopback,
    even when the proxy that connected is, so it is treated as a call from beyond loopback."""
    return "forwarded" in headers or "x-forwarded-for" in headers


def _unauthorised(message: str) -> Refused:
    return Refused(401, message, headers=((b"www-authenticate", b"Bearer"),))


def _check_json(*, body: bytes, content_type: str | None) -> None:
    """Refuse what FastAPI would parse as JSON but could not carry on (NaN, Infinity, deep nesting)."""
    if not body or not _is_json(content_type):
        return
    try:
        value = json.loads(body, parse_constant=_not_a_number, parse_float=_finite, parse_int=_integer)
    except Refused:
        raise
    except RecursionError:
        raise Refused(422, _error(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep")) from None
    except ValueError:
        return  # malformed JSON: FastAPI answers 422 with the position
    if _deeper_than(value, MAX_DEPTH):
        raise Refused(422, _error(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep"))


def _is_json(content_type: str | None) -> bool:
    # as FastAPI decides: no content type, or application/json, or any +json type
    if not content_type:
        return True
    subtype = content_type.split(";", 1)[0].strip().lower().rpartition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _not_a_number(name: str) -> Any:
    raise Refused(422, _error(f"{name} is not a JSON number; send a string if you mean the text",
                               "json_invalid_number"))


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999 parses as infinity
        _not_a_number(text)
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise Refused(422, _error(f"integer with {len(text)} digits is too large", "json_invalid_number")) from None


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _error(message: str, kind: str) -> list[dict[str, Any]]:
    return [{"type": kind, "loc": ["body"], "msg": message, "input": None}]


async def _answer(send: Send, refused: Refused) -> None:
    body = json.dumps({"detail": refused.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *refused.headers]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, read already, handed to the app as one message; later calls reach the real channel."""
    pending = True

    async def replay() -> dict[str, Any]:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
