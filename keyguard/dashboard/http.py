"""The dashboard's framework-free request and response, forms, cookies and security headers.

Every skin (ASGI, WSGI and the framework mounts) turns its request into one
:class:`PageRequest` — the path below the dashboard, the URL path of the dashboard itself
(``base``, for links), whether it came over HTTPS — and writes back an
:class:`~keyguard.management.api.http.ApiResponse`. Every response gets
:data:`SECURITY_HEADERS`: a Content-Security-Policy allowing only the dashboard's own script
and style files (no inline script or style, no frames, forms posting only to itself),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` (a key id in a URL stays here) and
``X-Content-Type-Options: nosniff``; pages add ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, quote

from keyguard.management.api.http import ApiResponse

__all__ = [
    "HTML",
    "MAX_FORM_BYTES",
    "NO_STORE",
    "SECURITY_HEADERS",
    "Form",
    "FormError",
    "PageRequest",
    "cookie_header",
    "html_response",
    "redirect",
]

HTML: Final = "text/html; charset=utf-8"
NO_STORE: Final = ("cache-control", "no-store")
#: Forms are small; metadata is capped at 16 KiB by key management anyway.
MAX_FORM_BYTES: Final = 64 * 1024
_MAX_FIELDS: Final = 200

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'none'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), clipboard-read=()"),
)


class Form:
    """Submitted form fields: :meth:`get` the one value of a field, :meth:`all` of them."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Sequence[tuple[str, str]]) -> None:
        self._fields = list(fields)

    def get(self, name: str, default: str = "") -> str:
        values = self.all(name)
        return values[-1] if values else default

    def all(self, name: str) -> list[str]:
        return [v for k, v in self._fields if k == name]

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self._fields)

    def __repr__(self) -> str:
        return f"Form({sorted({k for k, _ in self._fields})!r})"  # names only, never values


class FormError(Exception):
    """A request body the dashboard cannot read as a form (answered 400/413/415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One request to the dashboard.

    ``path`` is below the dashboard and starts with ``/``; ``base`` is the dashboard's own URL
    path (``/keyguard``), what links start with; ``secure`` says the request came over HTTPS.
    """

    method: str
    path: str
    base: str
    query: str = ""
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    client: str | None = None
    secure: bool = False
    _cookies: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return values[0] if len(values) == 1 else None

    def forwarded_for(self) -> str | None:
        lines = [v for k, v in self.headers if k.lower() == "x-forwarded-for"]
        return ", ".join(lines) if lines else None

    def cookie(self, name: str) -> str | None:
        """The first value of cookie ``name`` (parsed leniently: a malformed cookie set by
        another application on the host does not hide the others)."""
        if not self._cookies:
            self._cookies[""] = ""  # parsed (even when there are none)
            for k, v in self.headers:
                if k.lower() != "cookie":
                    continue
                for part in v.split(";"):
                    key, eq, value = part.strip().partition("=")
                    if eq and key and key not in self._cookies:
                        self._cookies[key] = value.strip().strip('"')
        return self._cookies.get(name) or None

    def params(self) -> dict[str, str]:
        """The query parameters (the last of repeated names wins)."""
        return dict(parse_qsl(self.query, keep_blank_values=True)[:_MAX_FIELDS])

    def form(self) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` fields, in order."""
        if len(self.body) > MAX_FORM_BYTES:
            raise FormError(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
        media = (self.header("content-type") or "").partition(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise FormError(415, "send the form as application/x-www-form-urlencoded")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(400, "the form is not valid UTF-8") from None
        fields = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        return [(k, v) for k, v in fields]

    def url(self, path: str = "/") -> str:
        return self.base + path

    def __repr__(self) -> str:
        # The body of the sign-in form holds a key: never in reprs or logs.
        return f"PageRequest({self.method} {self.path!r}, {len(self.body)} body bytes)"


def cookie_header(
    name: str,
    value: str,
    *,
    path: str,
    secure: bool,
    max_age: int | None = None,
) -> tuple[str, str]:
    """A ``Set-Cookie`` header: HttpOnly, SameSite=Strict, Secure over HTTPS; ``max_age=0``
    deletes it."""
    parts = [f"{name}={value}", f"Path={quote(path or '/', safe='/-._~')}", "HttpOnly"]
    parts.append("SameSite=Strict")
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return ("set-cookie", "; ".join(parts))


def html_response(status: int, body: str, headers: Sequence[tuple[str, str]] = ()) -> ApiResponse:
    data = body.encode("utf-8")
    out = [("content-type", HTML), NO_STORE, ("content-length", str(len(data)))]
    out.extend(headers)
    return ApiResponse(status, out, data)


def redirect(location: str, headers: Sequence[tuple[str, str]] = ()) -> ApiResponse:
    """A ``303 See Other`` (after a form: the browser follows with GET)."""
    out = [("location", location), NO_STORE, ("content-length", "0")]
    out.extend(headers)
    return ApiResponse(303, out, b"")
