"""Why a key would be refused: the shape of an answer, and asking a running service for one.

A :class:`Diagnosis` is what ``keyguard doctor`` prints: accepted or not, the refusal
``reason`` (a kind: ``format``, ``prefix``, ``unknown``, ``expired``, ``scope``…), the keyguard
error ``code`` the service answers for it, a sentence saying exactly why, what to do, and the
:class:`Finding` of each check made on the way. Nothing in it ever holds the key.

:func:`probe` asks a service: it sends one request (the given method and path, with the key)
and explains what comes back — a keyguard problem+json by its code, an application's own
answer, a redirect (not followed: the key would go along), or no answer at all (a wrong base
URL). It uses only the standard library, so the ``keyguard`` command needs no HTTP extra. The
local half, which reads a key store, is :mod:`keyguard.management.cli.doctor`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from keyguard.client.errors import ADVICE, advice_for
from keyguard.client.keycheck import redact
from keyguard.core.clock import to_iso

__all__ = ["REASONS", "Diagnosis", "Finding", "ago", "probe", "reason_for_code"]

#: Refusal kinds, and the keyguard code the service answers for each.
REASONS: Final[dict[str, str]] = {
    "missing": "missing_api_key",
    "invalid_request": "invalid_request",
    "format": "invalid_api_key_format",
    "prefix": "invalid_api_key_format",
    "unknown": "invalid_api_key",
    "wrong_secret": "invalid_api_key",
    "rotated_out": "invalid_api_key",
    "invalid": "invalid_api_key",
    "expired": "expired_api_key",
    "revoked": "revoked_api_key",
    "suspended": "suspended_api_key",
    "scope": "insufficient_scope",
    "no_route": "insufficient_scope",
    "network": "network_not_allowed",
    "rate_limited": "rate_limited",
    "unavailable": "auth_unavailable",
}
_BY_CODE: Final = {
    "missing_api_key": "missing",
    "invalid_request": "invalid_request",
    "invalid_api_key_format": "format",
    "invalid_api_key": "invalid",
    "expired_api_key": "expired",
    "revoked_api_key": "revoked",
    "suspended_api_key": "suspended",
    "insufficient_scope": "scope",
    "network_not_allowed": "network",
    "rate_limited": "rate_limited",
    "auth_unavailable": "unavailable",
}


def reason_for_code(code: str) -> str:
    """The refusal kind of a keyguard code (``"refused"`` for a code this version lacks)."""
    return _BY_CODE.get(code, "refused")


def ago(ts: float, now: float) -> str:
    """``2025-01-01T00:00:00Z (3 days ago)`` / ``(in 2 hours)``."""
    delta = now - ts
    span = abs(delta)
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if span >= seconds or unit == "second":
            n = int(span // seconds)
            amount = f"{n} {unit}{'' if n == 1 else 's'}"
            break
    return f"{to_iso(ts)} ({amount} ago)" if delta >= 0 else f"{to_iso(ts)} (in {amount})"


@dataclass
class Finding:
    """One check and its outcome."""

    check: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "message": self.message}


@dataclass
class Diagnosis:
    """The verdict on one key (for one request, when a method and path were given)."""

    accepted: bool
    message: str
    reason: str | None = None
    code: str | None = None
    key_id: str | None = None
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def advice(self) -> str:
        """What to do (from the client's error table), or "" when accepted."""
        if self.code is None:
            return ""
        found = ADVICE.get(self.code)
        return found.action if found is not None else advice_for(self.code, 0).action

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "code": self.code,
            "message": self.message,
            "advice": self.advice or None,
            "key_id": self.key_id,
            "checks": [f.to_dict() for f in self.findings],
            "facts": self.facts,
        }


def refused(
    reason: str,
    message: str,
    findings: list[Finding],
    *,
    key_id: str | None = None,
    code: str | None = None,
    **facts: Any,
) -> Diagnosis:
    """A refusal of kind ``reason``; its check is recorded as failed."""
    findings.append(Finding(reason, False, message))
    return Diagnosis(
        False,
        message,
        reason,
        code or REASONS.get(reason),
        key_id,
        findings,
        {k: v for k, v in facts.items() if v is not None},
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the key to wherever the Location points: report it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def probe(
    base_url: str,
    method: str,
    path: str,
    key: str,
    *,
    key_id: str | None = None,
    timeout: float = 10.0,
    findings: list[Finding] | None = None,
    now: float | None = None,
) -> Diagnosis:
    """Send ``method path`` to the service at ``base_url`` with ``key`` and explain the answer."""
    findings = [] if findings is None else findings
    now = time.time() if now is None else now
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return refused(
            "unreachable",
            f"{base_url!r} is not an http:// or https:// base URL",
            findings,
            key_id=key_id,
        )
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    secret = key.rsplit("_", 1)[-1]
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, method=method.upper(), headers={"Authorization": f"UserKey {key}"}
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout) as response:
            status, headers, body = response.status, response.headers, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read(65536)
        exc.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return refused(
            "unreachable",
            f"cannot reach {redact(url, secret)}: {redact(str(reason), secret)} — check the "
            "base URL (--url), and that the service is running",
            findings,
            key_id=key_id,
        )
    where = f"{method.upper()} {path}"
    facts: dict[str, Any] = {"status": status, "request_id": headers.get("X-Request-ID")}
    if 200 <= status < 300:
        findings.append(Finding("service", True, f"{where} answered {status}"))
        remaining = headers.get("X-RateLimit-Remaining")
        message = f"accepted: {where} answered HTTP {status}"
        if remaining is not None:
            message += f" ({remaining} requests left in the tightest rate-limit window)"
        return Diagnosis(True, message, None, None, key_id, findings, facts)
    if 300 <= status < 400:
        location = redact(headers.get("Location") or "?", secret)
        return refused(
            "redirect",
            f"{where} redirected ({status}) to {location}; doctor does not follow redirects "
            "(the key would go along): use the final address as --url",
            findings,
            key_id=key_id,
            **facts,
        )
    problem = _problem(headers.get("Content-Type"), body, secret)
    if problem is None:
        hint = (
            "no such route at this base URL: check --url and --path (a missing path prefix "
            "such as /api/v1?)"
            if status == 404
            else "this is not a keyguard error: the application itself refused the request, "
            "or something in front of it did (check the base URL)"
        )
        return refused(
            "http_error", f"{where} answered HTTP {status} — {hint}", findings, key_id=key_id
        )
    code = str(problem.get("code"))
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else ""
    reason = reason_for_code(code)
    required = problem.get("required_scopes")
    if code == "insufficient_scope" and not required:
        reason = "no_route"
    message = f"the service refused {where} with {status} {code}: {detail}"
    retry_after = problem.get("retry_after")
    if not isinstance(retry_after, int):
        raw = (headers.get("Retry-After") or "").strip()
        retry_after = int(raw) if raw.isdigit() else None
    if retry_after is not None:
        facts["retry_after"] = retry_after
        facts["until"] = to_iso(now + retry_after)
        message += f" Retry after {retry_after} s, at {to_iso(now + retry_after)}."
    if isinstance(required, list):
        facts["required_scopes"] = [s for s in required if isinstance(s, str)]
    if reason == "invalid":
        message += (
            " (The service does not say whether the key id is unknown or the secret is wrong, "
            "for example a rotated-out secret: run 'keyguard doctor' against its key store to "
            "find out.)"
        )
    return refused(reason, message, findings, key_id=key_id, code=code, **facts)


def _problem(content_type: str | None, body: bytes, secret: str) -> dict[str, Any] | None:
    if not (content_type or "").lower().startswith("application/problem+json"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("code"), str):
        return None
    return {k: redact(v, secret) if isinstance(v, str) else v for k, v in data.items()}
