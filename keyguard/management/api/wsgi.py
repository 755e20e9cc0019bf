"""The management API as a WSGI application (no framework imported).

``ManagementAPI(...).wsgi_app()`` serves every route under the API's prefix; mounted by a
dispatcher (Werkzeug's ``DispatcherMiddleware``, a Flask route, Django) the prefix is already in
``SCRIPT_NAME`` and only ``PATH_INFO`` is routed. The body is read up to the API's limit (one
byte more, so an oversized body is refused ``413`` unread); repeated header fields arrive joined
by commas, as WSGI servers join them, and a comma in ``Authorization`` is read as two fields
(refused ``invalid_request``), exactly as the WSGI middleware reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from keyguard.management.api.asgi import route_path, status_line
from keyguard.management.api.http import ApiRequest, ApiResponse

if TYPE_CHECKING:
    from keyguard.management.api.handler import ManagementAPI

__all__ = ["ManagementWSGI", "request_from_environ"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def _text(raw: str) -> str:
    """A WSGI (latin-1 decoded) string as the UTF-8 text the client sent."""
    if raw.isascii():
        return raw
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _headers(environ: Environ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if name == "authorization" and "," in value:
            out.extend((name, part) for part in value.split(","))
        else:
            out.append((name, value))
    return out


def request_from_environ(
    environ: Environ, api: ManagementAPI, *, strip_prefix: bool = True
) -> tuple[ApiRequest, bool]:
    """The :class:`ApiRequest` for a WSGI request (its body read up to the API's limit), and
    whether its path is inside the API's prefix."""
    path = route_path(
        _text(environ.get("PATH_INFO", "") or "/"),
        _text(environ.get("SCRIPT_NAME", "") or ""),
        api.prefix,
        strip_prefix,
    )
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = b""
    stream = environ.get("wsgi.input")
    if length > 0 and stream is not None:
        body = stream.read(min(length, api.max_body + 1))
    request = ApiRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=path or "/",
        query=environ.get("QUERY_STRING", ""),
        headers=_headers(environ),
        body=body,
        client=environ.get("REMOTE_ADDR") or None,
    )
    return request, path is not None


class ManagementWSGI:
    """A WSGI application answering with a :class:`ManagementAPI`."""

    def __init__(self, api: ManagementAPI, *, strip_prefix: bool = True) -> None:
        self.api = api
        self.strip_prefix = strip_prefix

    def respond(self, environ: Environ) -> ApiResponse:
        request, inside = request_from_environ(environ, self.api, strip_prefix=self.strip_prefix)
        return self.api.handle(request) if inside else self.api.outside(request)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        response = self.respond(environ)
        start_response(status_line(response.status), list(response.headers))
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]
