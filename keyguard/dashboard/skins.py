"""The dashboard as a pure ASGI and a pure WSGI application (no framework imported).

Mounted by a framework (Starlette's ``Mount``, Flask or Django routes, Werkzeug's dispatcher)
the prefix is in ``root_path``/``SCRIPT_NAME``; served on its own, the prefix is stripped here
and a path outside it is ``404``. Links point at the mount (``base``) either way. Bodies are
read up to the dashboard's limit (one byte more: a larger form is refused unread); the ASGI
skin runs the synchronous handler in a worker thread, so store I/O never blocks the event
loop. HTTPS is recognised from the ASGI ``scheme`` or WSGI ``wsgi.url_scheme`` (behind a
TLS-terminating proxy, pass ``secure_cookies=True`` or let the server rewrite the scheme).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from keyguard.dashboard.http import PageRequest
from keyguard.management.api.asgi import route_path, status_line
from keyguard.management.api.http import ApiResponse

if TYPE_CHECKING:
    from keyguard.dashboard.app import Dashboard

__all__ = ["DashboardASGI", "DashboardWSGI", "base_path", "request_from_environ"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def base_path(mounted_at: str, prefix: str, strip_prefix: bool) -> str:
    """The dashboard's URL path, from what the server or framework took off the path."""
    mounted = mounted_at.rstrip("/")
    if not strip_prefix or mounted.endswith(prefix):
        return mounted
    return mounted + prefix


class DashboardASGI:
    """An ASGI application answering with a :class:`~keyguard.dashboard.Dashboard`."""

    def __init__(self, dashboard: Dashboard, *, strip_prefix: bool = True) -> None:
        self.dashboard = dashboard
        self.strip_prefix = strip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
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
        dash = self.dashboard
        mounted = scope.get("root_path", "")
        path = route_path(scope.get("path", "/"), mounted, dash.prefix, self.strip_prefix)
        client = scope.get("client")
        request = PageRequest(
            method=scope.get("method", "GET"),
            path=path or "/",
            base=base_path(mounted, dash.prefix, self.strip_prefix),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=await _read_body(receive, dash.max_body),
            client=str(client[0]) if client and client[0] is not None else None,
            secure=scope.get("scheme") in ("https", "wss"),
        )
        if path is None:
            return dash.outside(request)
        return await asyncio.to_thread(dash.handle, request)


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


Environ = dict[str, Any]


def _text(raw: str) -> str:
    """A WSGI (latin-1 decoded) string as the UTF-8 text the client sent."""
    if raw.isascii():
        return raw
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def request_from_environ(
    environ: Environ, dashboard: Dashboard, *, strip_prefix: bool = True
) -> tuple[PageRequest, bool]:
    """The :class:`PageRequest` of a WSGI request (body read up to the limit), and whether its
    path is inside the dashboard."""
    mounted = _text(environ.get("SCRIPT_NAME", "") or "")
    path = route_path(
        _text(environ.get("PATH_INFO", "") or "/"), mounted, dashboard.prefix, strip_prefix
    )
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    body = stream.read(min(length, dashboard.max_body + 1)) if length > 0 and stream else b""
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and isinstance(value, str):
            headers.append((key.replace("_", "-").lower(), value))
    request = PageRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=path or "/",
        base=base_path(mounted, dashboard.prefix, strip_prefix),
        query=environ.get("QUERY_STRING", ""),
        headers=headers,
        body=body,
        client=environ.get("REMOTE_ADDR") or None,
        secure=environ.get("wsgi.url_scheme") == "https",
    )
    return request, path is not None


class DashboardWSGI:
    """A WSGI application answering with a :class:`~keyguard.dashboard.Dashboard`."""

    def __init__(self, dashboard: Dashboard, *, strip_prefix: bool = True) -> None:
        self.dashboard = dashboard
        self.strip_prefix = strip_prefix

    def respond(self, environ: Environ) -> ApiResponse:
        request, inside = request_from_environ(
            environ, self.dashboard, strip_prefix=self.strip_prefix
        )
        return self.dashboard.handle(request) if inside else self.dashboard.outside(request)

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self.respond(environ)
        start_response(status_line(response.status), list(response.headers))
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]
