"""The management API as a pure ASGI application (no framework imported).

``ManagementAPI(...).asgi_app()`` serves every route under the API's prefix. Mounted by a
framework (Starlette's ``Mount``, FastAPI's ``app.mount``) the prefix is already in
``root_path`` and only the rest is routed; served on its own, the prefix is stripped from the
path here (and a path outside it is ``404``). The body is read up to the API's limit (one byte
more, so an oversized body is refused ``413`` without being buffered whole), and the
synchronous handler runs in a worker thread: store I/O never blocks the event loop. Lifespan
events are acknowledged; WebSocket connections are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from keyguard.management.api.http import ApiRequest, ApiResponse

if TYPE_CHECKING:
    from keyguard.management.api.handler import ManagementAPI

__all__ = ["ManagementASGI", "route_path"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def route_path(path: str, mounted_at: str, prefix: str, strip_prefix: bool) -> str | None:
    """The path below the API's prefix, or ``None`` when ``path`` is outside it.

    ``mounted_at`` is what the server or framework already took off (ASGI ``root_path``,
    WSGI ``SCRIPT_NAME``); when it ends with the prefix, nothing more is stripped.
    """
    if mounted_at and path.startswith(mounted_at.rstrip("/") + "/"):
        path = path[len(mounted_at.rstrip("/")) :]  # servers that keep the full path
    elif mounted_at and path == mounted_at.rstrip("/"):
        path = ""
    if not strip_prefix or not prefix or mounted_at.rstrip("/").endswith(prefix):
        return path or "/"
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix) :] or "/"
    return None


class ManagementASGI:
    """An ASGI application answering with a :class:`ManagementAPI`."""

    def __init__(self, api: ManagementAPI, *, strip_prefix: bool = True) -> None:
        self.api = api
        self.strip_prefix = strip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        response = await self.respond(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                ],
            }
        )
        body = b"" if scope.get("method") == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def respond(self, scope: Scope, receive: Receive) -> ApiResponse:
        """The API's answer to the HTTP request in ``scope`` (reading its body)."""
        api = self.api
        raw_path = scope.get("path", "/")
        path = route_path(raw_path, scope.get("root_path", ""), api.prefix, self.strip_prefix)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        body = await _read_body(receive, api.max_body)
        client = scope.get("client")
        request = ApiRequest(
            method=scope.get("method", "GET"),
            path=path or "/",
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            client=str(client[0]) if client and client[0] is not None else None,
        )
        if path is None:
            return api.outside(request)
        return await asyncio.to_thread(api.handle, request)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if size <= limit:
            chunks.append(chunk[: limit + 1 - size])
        size += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def status_line(status: int) -> str:
    """``"404 Not Found"`` (for WSGI)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
