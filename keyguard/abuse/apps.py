"""The alert receiver as an ASGI or a WSGI application, to mount beside an API.

Both are thin: they read the request body (never more than the receiver's ``max_body`` plus
one byte, so an oversized body is refused without being buffered) and pass method, headers and
raw body to :meth:`AlertReceiver.handle <keyguard.abuse.alerts.AlertReceiver.handle>`. The
receiver does blocking work (fetching GitHub's public keys, store writes), so the ASGI app runs
it in a worker thread, off the event loop. Mount the receiver on a path that keyguard's own
middleware treats as public: the scanner authenticates with its signature, not with an API key.

Starlette: ``Mount("/leaks", app=AlertASGIApp(receiver))``; Flask:
``DispatcherMiddleware(app.wsgi_app, {"/leaks": AlertWSGIApp(receiver)})``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from keyguard.abuse.alerts import AlertReceiver, Response, problem

__all__ = ["AlertASGIApp", "AlertWSGIApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class AlertASGIApp:
    """ASGI application answering secret-scanning alerts with ``receiver``."""

    def __init__(self, receiver: AlertReceiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        body = await self._body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if body is None:
            response = problem(413, "payload_too_large", f"at most {self.receiver.max_body} bytes")
        else:
            response = await asyncio.to_thread(
                self.receiver.handle, scope.get("method", "GET"), headers, body
            )
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body, or ``None`` once it passes the size limit."""
        limit = self.receiver.max_body
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class AlertWSGIApp:
    """WSGI application answering secret-scanning alerts with ``receiver``.

    The body is read according to ``CONTENT_LENGTH``; a request without one is answered 411.
    """

    def __init__(self, receiver: AlertReceiver) -> None:
        self.receiver = receiver

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self._respond(environ)
        status = f"{response.status} {_REASONS.get(response.status, 'Error')}"
        start_response(status, list(response.headers))
        return [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        if method.upper() != "POST":
            return self.receiver.handle(method, [], b"")
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return problem(411, "length_required", "send a Content-Length")
        if length < 0 or length > self.receiver.max_body:
            return problem(413, "payload_too_large", f"at most {self.receiver.max_body} bytes")
        body = environ["wsgi.input"].read(length) if length else b""
        headers = [
            (name[5:].replace("_", "-").lower(), value)
            for name, value in environ.items()
            if name.startswith("HTTP_") and isinstance(value, str)
        ]
        return self.receiver.handle(method, headers, body)
