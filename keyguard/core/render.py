"""Turn a denial :class:`~keyguard.core.decision.Decision` into an HTTP response, framework-free.

Every adapter renders through :class:`ProblemRenderer`, so a denial looks the same from
FastAPI, Flask or Django: ``application/problem+json`` (RFC 9457) with a stable ``code``,
``Cache-Control: no-store``, the request id, ``WWW-Authenticate: UserKey realm="…"`` on 401
(and 403), ``Retry-After`` on 429 and 503, and never any key material. Applications may
reshape the body with one hook; the status, the code and the security headers stay.

The *platform-compatible* preset (``ProblemRenderer.platform_compatible()``,
``ProblemRenderer(compat="platform")``, or ``KEYGUARD_ERROR_FORMAT=platform`` for the default
renderer every adapter uses) adds the platform's documented ``error`` (the HTTP reason phrase,
e.g. ``"Unauthorized"``) and ``message`` (e.g. ``"Invalid API key"``) fields to the same body,
so clients written against the platform's error responses keep working unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from binascii import hexlify as _hexlify
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from keyguard.core.decision import Decision
from keyguard.core.errors import STATUS, TITLES, ConfigurationError, ErrorCode
from keyguard.core.ratelimit import admitted_headers_asgi

BodyHook = Callable[[dict[str, Any], Decision], Mapping[str, Any] | bytes]

logger = logging.getLogger("keyguard.render")

#: Selects the default renderer's body format: ``problem`` (RFC 9457 only, the default) or
#: ``platform`` (RFC 9457 plus the platform's ``error`` and ``message`` fields).
ERROR_FORMAT_ENV: Final = "KEYGUARD_ERROR_FORMAT"
#: The body formats: ``None`` is plain RFC 9457.
COMPAT_FORMATS: Final = ("problem", "platform")

#: The platform's ``error`` field: the HTTP reason phrase of the status.
PLATFORM_ERRORS: Final[dict[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
#: The platform's ``message`` field, per code (keyed by the code's value, so codes added to
#: :class:`~keyguard.core.errors.ErrorCode` later can be listed before they exist).
PLATFORM_MESSAGES: Final[dict[str, str]] = {
    "missing_api_key": "Missing API key",
    "invalid_request": "Invalid request",
    "invalid_api_key_format": "Invalid API key format",
    "invalid_api_key": "Invalid API key",
    "expired_api_key": "API key has expired",
    "revoked_api_key": "API key has been revoked",
    "suspended_api_key": "API key is suspended",
    "insufficient_scope": "Insufficient permissions",
    "network_not_allowed": "API key is not allowed from this network",
    "rate_limited": "Rate limit exceeded",
    "auth_unavailable": "Authentication temporarily unavailable",
    "malformed_body": "Malformed request body",
    "invalid_field": "Invalid field",
    "unsupported_media_type": "Unsupported media type",
    "body_too_large": "Request body too large",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "permission_denied": "Permission denied",
    "invalid_state": "Invalid key state",
    "already_processed": "Request already processed",
    "idempotency_key_reused": "Idempotency key reused",
}

_MAX_REQUEST_ID: Final = 128
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The same alphabet over a raw (latin-1) header value.
_RAW_REQUEST_ID_RE: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_REALM_RE: Final = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}")  # no quote, no backslash
_CHALLENGE_CODES: Final = frozenset(
    {
        ErrorCode.MISSING_API_KEY,
        ErrorCode.INVALID_API_KEY_FORMAT,
        ErrorCode.INVALID_API_KEY,
        ErrorCode.EXPIRED_API_KEY,
        ErrorCode.REVOKED_API_KEY,
        ErrorCode.SUSPENDED_API_KEY,
        ErrorCode.INSUFFICIENT_SCOPE,
    }
)


#: Request ids only correlate a response with log lines (a caller may even choose its own),
#: so they need to be distinct, not secret: a per-process generator seeded from the OS, and
#: seeded again in every forked worker so that two workers never share a sequence. Half the
#: cost of ``os.urandom`` (a system call) on every denial.
_rid_rng = random.Random()  # noqa: S311 - distinct ids, not secrets (see above)
_rid_bits = _rid_rng.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rid_rng.seed)


def new_request_id() -> str:
    """A fresh random request id (16 hex characters)."""
    return _rid_bits(64).to_bytes(8).hex()


def request_id_from(value: str | bytes | None) -> str:
    """Reuse a caller's ``X-Request-ID`` if it is short and plain; otherwise make one.

    Untrusted ids are never echoed verbatim unless they match a conservative alphabet, which
    keeps header injection and log forging out.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value and _REQUEST_ID_RE.fullmatch(value):
        return value
    return new_request_id()


@dataclass(frozen=True, slots=True)
class Problem:
    """A rendered denial: status, header pairs and body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ProblemRenderer:
    """Renders denials. ``body_hook(problem_dict, decision)`` may return a new mapping (sent as
    problem+json) or raw bytes (sent with ``content_type``)."""

    __slots__ = (
        "_asgi",
        "_asgi_by_id",
        "_body_hook",
        "_challenge",
        "_closers",
        "_content_type",
        "_details",
        "_extra",
        "_prefixes",
        "_text_by_id",
        "_type_base",
        "compat",
        "realm",
    )

    def __init__(
        self,
        *,
        realm: str = "keyguard",
        type_base: str = "urn:keyguard:error:",
        body_hook: BodyHook | None = None,
        content_type: str = "application/problem+json",
        compat: str | None = None,
    ) -> None:
        if not _REALM_RE.fullmatch(realm):
            raise ConfigurationError("realm must be 1-64 printable ASCII characters, no quotes")
        if compat == "problem":
            compat = None
        if compat is not None and compat not in COMPAT_FORMATS:
            raise ConfigurationError(
                f"compat must be one of {', '.join(repr(c) for c in COMPAT_FORMATS)} or None, "
                f"not {compat!r}"
            )
        #: ``"platform"`` when the platform's ``error``/``message`` fields are added, else None.
        self.compat = compat
        self.realm = realm
        self._type_base = type_base
        self._body_hook = body_hook
        self._content_type = content_type
        self._challenge = f'UserKey realm="{realm}"'
        # The default body, prebuilt up to the detail for each code: a denial (a 429 above
        # all) then costs string joins instead of a dict and a json.dumps.
        self._prefixes = {
            code: (
                '{"type":'
                + json.dumps(type_base + code.value)
                + ',"title":'
                + json.dumps(TITLES[code])
                + f',"status":{STATUS[code]},"detail":'
            )
            for code in ErrorCode
        }
        self._details: dict[str, str] = {}
        # The fields the preset adds, per code, and the prebuilt end of each default body.
        self._extra: dict[ErrorCode, dict[str, str]] = (
            {code: _platform_fields(code) for code in ErrorCode} if compat == "platform" else {}
        )
        self._closers = {
            code: "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items()) + "}"
            for code, fields in self._extra.items()
        }
        #: (code, detail, required, retry_after) -> what :meth:`render_asgi` needs besides the
        #: request id and the decision's own headers (see :meth:`_asgi_template`).
        self._asgi: dict[tuple[object, ...], _AsgiTemplate] = {}
        # id(decision) -> (decision, its template): holding the decision keeps its id unique.
        self._asgi_by_id: dict[int, tuple[Decision, _AsgiTemplate]] = {}
        # The same for text_parts() (WSGI), whole decisions: id(decision) -> (it, template).
        self._text_by_id: dict[int, tuple[Decision, _TextTemplate]] = {}

    @classmethod
    def platform_compatible(cls, **options: Any) -> ProblemRenderer:
        """The preset whose bodies also carry the platform's ``error`` and ``message`` fields."""
        return cls(compat="platform", **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ProblemRenderer:
        """A renderer in the format ``KEYGUARD_ERROR_FORMAT`` names (``problem``, the default,
        or ``platform``); an unknown value is a :class:`ConfigurationError` naming both."""
        env = os.environ if environ is None else environ
        value = env.get(ERROR_FORMAT_ENV, "").strip().lower() or "problem"
        if value not in COMPAT_FORMATS:
            raise ConfigurationError(
                f"{ERROR_FORMAT_ENV}={value!r} is not a known error format; use one of: "
                + ", ".join(COMPAT_FORMATS)
            )
        return cls(compat=value, **options)

    def problem_dict(self, decision: Decision, request_id: str) -> dict[str, Any]:
        code = decision.code
        assert code is not None, "only denials are rendered"
        body: dict[str, Any] = {
            "type": self._type_base + code.value,
            "title": TITLES[code],
            "status": decision.status,
            "detail": decision.detail,
            "code": code.value,
            "request_id": request_id,
        }
        if decision.required:
            body["required_scopes"] = list(decision.required)
        if decision.retry_after is not None:
            body["retry_after"] = decision.retry_after
        extra = self._extra.get(code)
        if extra is not None:
            body.update(extra)
        return body

    def _default_body(self, code: ErrorCode, decision: Decision, request_id: str) -> bytes:
        """``json.dumps(problem_dict(...), separators=(",", ":"))``, byte for byte, faster."""
        details = self._details
        detail = details.get(decision.detail)
        if detail is None:
            if len(details) >= 1024:
                details.clear()
            detail = details[decision.detail] = json.dumps(decision.detail)
        rid = (
            '"' + request_id + '"'
            if request_id.isascii() and request_id.isalnum()
            else json.dumps(request_id)
        )
        parts = [self._prefixes[code], detail, ',"code":"', code.value, '","request_id":', rid]
        if decision.required:
            parts.append(',"required_scopes":' + json.dumps(list(decision.required)))
        if decision.retry_after is not None:
            parts.append(f',"retry_after":{int(decision.retry_after)}')
        parts.append(self._closers.get(code, "}"))
        return "".join(parts).encode()

    def render_asgi(
        self, decision: Decision, request_id: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """:meth:`render` as ASGI wants it: status, lower-case latin-1 header pairs, body —
        byte for byte the encoding of :meth:`render`'s answer. The constant parts of a
        denial (status, body around the request id, headers) are built once per kind of
        denial, so a refused request pays for little more than its request id."""
        if self._body_hook is not None:
            problem = self.render(decision, request_id)
            return problem.status, _encode_pairs(problem.headers), problem.body
        # A flood of denials repeats a few decision objects (the singletons, memoised 429s):
        # their template, extra headers included, is found by identity.
        known = self._asgi_by_id.get(id(decision))
        if known is not None and known[0] is decision:
            status, head, tail, before, after, _ = known[1]
        else:
            status, head, tail, before, after, _ = self._asgi_parts(decision)
        rid = request_id.encode("latin-1")
        if request_id.isascii() and request_id.isalnum():
            body = head + rid + tail
        else:
            body = head[:-1] + json.dumps(request_id).encode() + tail[1:]
        headers = [*before, (b"x-request-id", rid), *after]
        rate = decision.rate
        if rate is not None:
            headers += admitted_headers_asgi(*rate)
        headers.append((b"content-length", b"%d" % len(body)))
        return status, headers, body

    def asgi_messages(
        self, decision: Decision, request_id: bytes | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The denial as the two ASGI messages that answer it (``http.response.start``, then
        ``http.response.body``), from the request's raw ``X-Request-ID`` value (``None``
        without one): :meth:`render_asgi` of :func:`request_id_from` of it, in one call. A
        denial seen before (the singletons, memoised refusals) is filled into its template
        here; any other goes through :meth:`render_asgi`."""
        known = self._asgi_by_id.get(id(decision))
        if known is None or known[0] is not decision or self._body_hook is not None:
            status, headers, body = self.render_asgi(decision, request_id_from(request_id))
        else:
            status, head, tail, before, after, generated = known[1]
            length = None
            if request_id is None:
                request_id = _hexlify(_rid_bits(64).to_bytes(8))  # new_request_id()
                length = generated
            elif not (request_id.isalnum() and len(request_id) <= _MAX_REQUEST_ID) and (
                _RAW_REQUEST_ID_RE.fullmatch(request_id) is None
            ):
                request_id = _hexlify(_rid_bits(64).to_bytes(8))
                length = generated
            # An id in the request id alphabet needs no escaping in JSON: quoted as it is.
            body = b"".join((head, request_id, tail))
            headers = [
                *before,
                (b"x-request-id", request_id),
                *after,
                (b"content-length", length or b"%d" % len(body)),
            ]
        return (
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        )

    def text_parts(
        self, decision: Decision, request_id: str | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The denial as WSGI sends it, from the request's raw ``X-Request-ID`` value (``None``
        without one): :meth:`render` of :func:`request_id_from` of it, as (status, a fresh
        list of the header pairs, body). A denial seen before (the singletons, memoised
        refusals) is filled into its template here; any other is rendered in full."""
        known = self._text_by_id.get(id(decision))
        if known is None or known[0] is not decision:
            if self._body_hook is not None or decision.rate is not None:
                problem = self.render(decision, request_id_from(request_id))
                return problem.status, list(problem.headers), problem.body
            template = self._text_template(decision)
        else:
            template = known[1]
        status, head, tail, before, after, generated = template
        length = None
        if request_id is None or (
            not (
                request_id.isascii() and request_id.isalnum() and len(request_id) <= _MAX_REQUEST_ID
            )
            and _REQUEST_ID_RE.fullmatch(request_id) is None
        ):
            request_id = _rid_bits(64).to_bytes(8).hex()  # new_request_id()
            length = generated
        # An id in the request id alphabet needs no escaping in JSON: quoted as it is.
        body = b"".join((head, request_id.encode("ascii"), tail))
        headers = [
            *before,
            ("x-request-id", request_id),
            *after,
            ("content-length", length or str(len(body))),
        ]
        return status, headers, body

    def _text_template(self, decision: Decision) -> _TextTemplate:
        """:meth:`_cut` of ``decision`` (no per-request rate, the default body), remembered by
        the decision's identity."""
        template = self._cut(decision)
        if len(self._text_by_id) >= 1024:
            self._text_by_id.clear()
        self._text_by_id[id(decision)] = (decision, template)
        return template

    def _cut(self, decision: Decision) -> _TextTemplate:
        """Render ``decision`` once with a marker request id and cut it around the id: the
        status, the body up to and from the id (its quotes kept on each side), the headers
        before and after ``x-request-id`` (content-length left out: it is per request) and
        the content length with a generated, 16-character id."""
        marker = "0" * 16
        problem = self.render(decision, marker)
        body = problem.body
        at = body.index(b'"request_id":"' + marker.encode()) + len('"request_id":"')
        head, tail = body[:at], body[at + len(marker) :]
        pairs = problem.headers[:-1]
        cut = next(i for i, (k, _) in enumerate(pairs) if k == "x-request-id")
        length = str(len(head) + len(marker) + len(tail))
        return problem.status, head, tail, pairs[:cut], pairs[cut + 1 :], length

    def _asgi_parts(self, decision: Decision) -> _AsgiTemplate:
        """The template of ``decision``'s kind, its extra headers appended after the request
        id; remembered by the decision's identity when it carries no per-request rate."""
        key = (decision.code, decision.detail, decision.required, decision.retry_after)
        template = self._asgi.get(key)
        if template is None:
            template = self._asgi_template(decision)
            if len(self._asgi) >= 1024:
                self._asgi.clear()
            self._asgi[key] = template
        extra = decision.extra_headers
        if extra:
            # Refusals carry memoised tuples (refused_headers): encoded once, found by identity.
            cached = _ENCODED_BY_ID.get(id(extra))
            if cached is None or cached[0] is not extra:
                cached = (extra, tuple(_encode_pairs(extra)))
                if len(_ENCODED_BY_ID) >= 1024:
                    _ENCODED_BY_ID.clear()
                _ENCODED_BY_ID[id(extra)] = cached
            status, head, tail, before, after, generated = template
            template = (status, head, tail, before, after + cached[1], generated)
        if decision.rate is None:
            if len(self._asgi_by_id) >= 1024:
                self._asgi_by_id.clear()
            self._asgi_by_id[id(decision)] = (decision, template)
        return template

    def _asgi_template(self, decision: Decision) -> _AsgiTemplate:
        """:meth:`_cut` of a denial of this kind (its extra headers and rate left out), the
        headers encoded for ASGI."""
        status, head, tail, before, after, length = self._cut(
            decision._replace(extra_headers=(), rate=None)
        )
        encoded = (tuple(_encode_pairs(before)), tuple(_encode_pairs(after)), length.encode())
        return status, head, tail, *encoded

    def render(self, decision: Decision, request_id: str) -> Problem:
        code = decision.code
        assert code is not None, "only denials are rendered"
        content_type = self._content_type
        if self._body_hook is None:
            body = self._default_body(code, decision, request_id)
        else:
            shaped = self._body_hook(self.problem_dict(decision, request_id), decision)
            if isinstance(shaped, bytes):
                body = shaped
            else:
                body = json.dumps(dict(shaped), separators=(",", ":")).encode()
        headers: list[tuple[str, str]] = [
            ("content-type", content_type),
            ("cache-control", "no-store"),
            ("x-request-id", request_id),
        ]
        if code in _CHALLENGE_CODES:
            challenge = self._challenge
            if code is ErrorCode.INSUFFICIENT_SCOPE:
                challenge += ', error="insufficient_scope"'
                if decision.required:
                    challenge += f', scope="{" ".join(decision.required)}"'
            elif code is not ErrorCode.MISSING_API_KEY:
                # RFC 6750 §3.1: no error attribute when the request had no credentials.
                challenge += ', error="invalid_token"'
            headers.append(("www-authenticate", challenge))
        if decision.retry_after is not None:
            headers.append(("retry-after", str(decision.retry_after)))
        headers.extend(decision.headers)
        headers.append(("content-length", str(len(body))))
        return Problem(decision.status, tuple(headers), body)


#: (status, the body up to the request id's opening quote, the body from its closing quote,
#: the headers before ``x-request-id``, those after it, the content length with a generated
#: 16-character id).
_AsgiTemplate = tuple[
    int, bytes, bytes, tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...], bytes
]
#: :class:`_AsgiTemplate`'s form for text headers (WSGI): the whole decision's headers, its
#: content length with a generated id as text.
_TextTemplate = tuple[
    int, bytes, bytes, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], str
]
#: (name, value) -> its ASGI encoding, for the headers denials repeat (rate-limit headers).
_ENCODED: dict[tuple[str, str], tuple[bytes, bytes]] = {}
#: id(a tuple of text pairs) -> (that tuple, its encoding). The tuple is kept, so its id cannot
#: be reused by another object while the entry lives, and the ``is`` check confirms the hit.
_ENCODED_BY_ID: dict[int, tuple[tuple[tuple[str, str], ...], tuple[tuple[bytes, bytes], ...]]] = {}


def _encode_pairs(pairs: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    """Text header pairs as ASGI wants them: lower-case latin-1 bytes (memoised)."""
    out = []
    for pair in pairs:
        encoded = _ENCODED.get(pair)
        if encoded is None:
            name, value = pair
            encoded = (name.lower().encode("latin-1"), value.encode("latin-1"))
            if len(_ENCODED) >= 4096:
                _ENCODED.clear()
            _ENCODED[pair] = encoded
        out.append(encoded)
    return out


def _platform_fields(code: ErrorCode) -> dict[str, str]:
    return {
        "error": PLATFORM_ERRORS.get(STATUS[code], "Error"),
        "message": PLATFORM_MESSAGES.get(code.value, TITLES[code]),
    }


def _default_renderer() -> ProblemRenderer:
    """The renderer adapters use unless given one: in the format ``KEYGUARD_ERROR_FORMAT``
    names. Built at import, so an unknown value cannot fail ``import keyguard`` (and with it
    every CLI command): it is logged as an error and the RFC 9457 format is used."""
    try:
        return ProblemRenderer.from_env()
    except ConfigurationError as exc:
        logger.error("%s; using the default format", exc)
        return ProblemRenderer()


#: The renderer every adapter uses by default (see :func:`_default_renderer`).
DEFAULT_RENDERER: Final = _default_renderer()
