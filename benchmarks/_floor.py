"""The hand-written floors: the least a guard doing keyguard's job can spend per request.

One check, shared by the pure-ASGI guard, the FastAPI dependency and the WSGI guard: find the
``Authorization`` value, **parse** it (``UserKey kg_`` prefix and length), **SHA-256** the
key, look the digest up in a **dict** (digest → key id, scopes), check **one scope**, run
**one GCRA window** (20 per 10 s, the platform's burst window) on a dict of theoretical
arrival times, and on success add **one fixed response header**. Denials answer a
precomputed plain-text body (401 malformed or unknown, 403), or a 429 with a ``Retry-After``
computed per request. No checksum, expiry, revocation, problem body, request id, client
address or brute-force guard: a floor, not a design to copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from hashlib import sha256
from typing import Any

from benchmarks._inprocess import SCOPE, Keys

Message = MutableMapping[str, Any]

_PREFIX = b"UserKey kg_"
_LENGTH = len(b"UserKey ") + 54  # a default-format key is 54 characters
#: The GCRA window: 20 requests per 10 s.
LIMIT, PERIOD = 20, 10.0
_INTERVAL = PERIOD / LIMIT
_TOLERANCE = PERIOD - _INTERVAL
#: The fixed header added to every admitted response (ASGI and WSGI spellings).
FIXED_HEADER = (b"ratelimit-policy", b'"burst";q=20;w=10')
FIXED_HEADER_STR = ("RateLimit-Policy", '"burst";q=20;w=10')
DENIED = b"denied"


class Floor:
    """The shared check. ``clock`` is the GCRA's clock (the same admitting / frozen clocks
    the keyguard rows give their limiter)."""

    def __init__(
        self,
        keys: Keys | Mapping[str, frozenset[str]],
        clock: Callable[[], float],
        required: str = SCOPE,
    ) -> None:
        """``keys``: the run's :class:`Keys`, or its kind of table (Authorization value ->
        scopes) directly, as the end-to-end apps build it."""
        table = keys if isinstance(keys, Mapping) else keys.table
        self.entries: dict[bytes, tuple[str, frozenset[str]]] = {}
        for header, scopes in table.items():
            key = header.removeprefix("UserKey ")
            self.entries[sha256(key.encode()).digest()] = (key[3:15], scopes)
        self.clock = clock
        self.required = required
        self.tat: dict[str, float] = {}

    def check(self, value: bytes | None) -> tuple[int, Any]:
        """(200, scopes) / (401, None) / (403, None) / (429, Retry-After seconds)."""
        if value is None or len(value) != _LENGTH or not value.startswith(_PREFIX):
            return 401, None
        entry = self.entries.get(sha256(value[8:]).digest())
        if entry is None:
            return 401, None
        key_id, scopes = entry
        if self.required not in scopes:
            return 403, None
        now = self.clock()
        tat = self.tat.get(key_id, now)
        if tat < now:
            tat = now
        new = tat + _INTERVAL
        if new - now > _TOLERANCE:
            return 429, math.ceil(new - now - _TOLERANCE)
        self.tat[key_id] = new
        return 200, scopes


# -- pure ASGI -----------------------------------------------------------------------------------
_TEXT = (b"content-type", b"text/plain")
_LEN = (b"content-length", b"6")
_STARTS = {
    status: {"type": "http.response.start", "status": status, "headers": [_TEXT, _LEN]}
    for status in (401, 403)
}
_DENIED_BODY = {"type": "http.response.body", "body": DENIED}


class FloorGuard:
    """The floor as pure ASGI middleware (``Middleware(FloorGuard, floor=...)``)."""

    def __init__(self, app: Callable[..., Any], *, floor: Floor) -> None:
        self.app = app
        self.floor = floor

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for name, v in scope["headers"]:
            if name == b"authorization":
                value = v
                break
        status, extra = self.floor.check(value)
        if status != 200:
            if status == 429:
                start = {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [_TEXT, _LEN, (b"retry-after", b"%d" % extra), FIXED_HEADER],
                }
            else:
                start = _STARTS[status]
            await send(start)
            await send(_DENIED_BODY)
            return
        scope["auth"] = extra

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), FIXED_HEADER]
            await send(message)

        await self.app(scope, receive, with_header)


# -- WSGI ----------------------------------------------------------------------------------------
_STATUS_LINES = {401: "401 Unauthorized", 403: "403 Forbidden", 429: "429 Too Many Requests"}


class WSGIFloorGuard:
    """The floor as WSGI middleware."""

    def __init__(self, app: Callable[..., Iterable[bytes]], floor: Floor) -> None:
        self.app = app
        self.floor = floor

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        value = environ.get("HTTP_AUTHORIZATION")
        status, extra = self.floor.check(None if value is None else value.encode("latin-1"))
        if status != 200:
            headers = [("Content-Type", "text/plain"), ("Content-Length", "6")]
            if status == 429:
                headers += [("Retry-After", str(extra)), FIXED_HEADER_STR]
            start_response(_STATUS_LINES[status], headers)
            return [DENIED]
        environ["bench.scopes"] = extra

        def with_header(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(FIXED_HEADER_STR)
            return start_response(status, headers, exc_info)

        return self.app(environ, with_header)
