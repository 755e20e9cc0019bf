"""The framework-free request and response of the management API, and small helpers.

Every skin (ASGI, WSGI, Flask, Django, FastAPI, Starlette) turns its request into one
:class:`ApiRequest` — method, path *below the mount prefix*, raw query string, headers, body
bytes, client address and ``X-Forwarded-For`` — and writes the :class:`ApiResponse` back, so
routing, authentication, validation and rendering exist once
(:class:`~keyguard.management.api.handler.ManagementAPI`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

__all__ = ["JSON", "NO_STORE", "ApiRequest", "ApiResponse", "json_response"]

JSON: Final = "application/json"
#: Responses of the management API are never cached: they may hold a plaintext key, and even
#: a listing says who may do what.
NO_STORE: Final = ("cache-control", "no-store")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request to the management API.

    ``path`` is relative to the mount prefix and starts with ``/`` (``/`` itself is the
    collection); ``headers`` are ``(name, value)`` pairs, names in any case, every field line
    kept; ``client`` is the transport's peer address (``None`` for a Unix socket). The client
    address is resolved from it and ``X-Forwarded-For`` like the brute-force guard does
    (:func:`keyguard.core.addresses.client_address`, :meth:`forwarded_for`).
    """

    method: str
    path: str
    query: str = ""
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    client: str | None = None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` if it appears exactly once, else ``None``."""
        values = self.header_values(name)
        return values[0] if len(values) == 1 else None

    def forwarded_for(self) -> str | None:
        """Every ``X-Forwarded-For`` line, in order, joined as one list (``None``: none)."""
        lines = self.header_values("x-forwarded-for")
        return ", ".join(lines) if lines else None

    def query_params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def __repr__(self) -> str:
        # Headers (Authorization!) and the body (metadata) stay out of reprs and logs.
        return f"ApiRequest({self.method} {self.path!r}, {len(self.body)} body bytes)"


@dataclass(slots=True)
class ApiResponse:
    """What the management API answers: status, header pairs (lower-case names), body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"ApiResponse({self.status}, {len(self.body)} body bytes)"


def json_response(
    status: int, payload: Mapping[str, Any], extra: Iterable[tuple[str, str]] = ()
) -> ApiResponse:
    """A JSON response with ``Cache-Control: no-store`` and a content length."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers = [("content-type", JSON), NO_STORE, *extra, ("content-length", str(len(body)))]
    return ApiResponse(status, headers, body)
