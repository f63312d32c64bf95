"""The API's front door: the bearer token and the body's size are checked before a body is read.

FastAPI reads and parses a request's body before it runs the route's dependencies, so a token
checked there comes after an unauthenticated peer's 59 MB body already sits in memory, and nothing
bounded a body's size. This plain ASGI layer sits in front of FastAPI instead:

- a mutating method without the right token is answered 401 from the headers alone;
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

import hmac
import json
import math
from typing import Any, Awaitable, Callable

MAX_BODY_BYTES = 1024 * 1024
# An over-limit body up to this size is read on (and dropped) before the 413: a client that sends
# `Connection: close` and its whole body first (urllib does) then reads the answer, not a broken pipe.
DRAIN_BYTES = 16 * 1024 * 1024
# as deep as desired/ files may nest (yamlfast.MAX_DEPTH): one rule for both doors
MAX_DEPTH = 64
OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, status: int, detail: Any, *, headers: tuple = ()) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


class FrontDoor:
    """ASGI middleware: token, then size, then JSON sanity; the app gets the body replayed once."""

    def __init__(self, app: Any, *, token: str | None, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            self._check_headers(method=scope["method"], headers=headers)
            body = await self._read(receive)
            if body is None:
                return  # the client went away
            _check_json(body=body, content_type=headers.get("content-type"))
        except _Refused as refused:
            await _answer(send, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, *, method: str, headers: dict[str, str]) -> None:
        if method not in OPEN_METHODS and not authorised(headers.get("authorization"), token=self.token):
            raise _Refused(401, "a valid bearer token is required", headers=((b"www-authenticate", b"Bearer"),))
        declared = headers.get("content-length", "0").strip() or "0"
        if not declared.isdigit() or int(declared) > DRAIN_BYTES:
            raise _Refused(413, self._too_big())

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
                    raise _Refused(413, self._too_big())
                continue
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)


def authorised(header: str | None, *, token: str | None) -> bool:
    """Whether an Authorization header carries the bearer token (always, when none is configured)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _check_json(*, body: bytes, content_type: str | None) -> None:
    """Refuse what FastAPI would parse as JSON but could not carry on (NaN, Infinity, deep nesting)."""
    if not body or not _is_json(content_type):
        return
    try:
        value = json.loads(body, parse_constant=_not_a_number, parse_float=_finite, parse_int=_integer)
    except _Refused:
        raise
    except RecursionError:
        raise _Refused(422, _error(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep")) from None
    except ValueError:
        return  # malformed JSON: FastAPI answers 422 with the position
    if _deeper_than(value, MAX_DEPTH):
        raise _Refused(422, _error(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep"))


def _is_json(content_type: str | None) -> bool:
    # as FastAPI decides: no content type, or application/json, or any +json type
    if not content_type:
        return True
    subtype = content_type.split(";", 1)[0].strip().lower().rpartition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _not_a_number(name: str) -> Any:
    raise _Refused(422, _error(f"{name} is not a JSON number; send a string if you mean the text",
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
        raise _Refused(422, _error(f"integer with {len(text)} digits is too large", "json_invalid_number")) from None


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


async def _answer(send: Send, refused: _Refused) -> None:
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
