"""Signed webhooks: POST a JSON notification to a URL, signed with HMAC-SHA256, retried.

**The signature.** Every request carries ``Keyguard-Signature: t=<unix seconds>,v1=<hex>``
where ``<hex>`` is ``HMAC-SHA256(secret, "<t>." + body)`` over the exact bytes of the body.
A receiver recomputes it with the shared secret, compares in constant time, and refuses a
``t`` too far from its own clock (replays): :func:`verify_signature` does all three. The
secret is never sent (not in the body, not in a header); ``Keyguard-Event-Id`` names the
notification, the same on every retry, so a receiver can drop a duplicate.

**Delivery.** Retried with exponential backoff and full jitter (``backoff * 2**attempt``,
capped at ``max_backoff``; a ``Retry-After`` the receiver sends is honoured up to that cap) on
network errors, timeouts, ``408``, ``429`` and ``5xx``; any other answer is final (``2xx``
delivered, other ``4xx`` refused: retrying a request the receiver rejects, for instance for a
bad signature, would not help). Redirects are not followed. Only the standard library is used,
so ``keyguard notify`` works on a bare install.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from keyguard.core.errors import ConfigurationError

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "Webhook",
    "WebhookResult",
    "sign",
    "verify_signature",
]

logger = logging.getLogger("keyguard.webhooks")

SIGNATURE_HEADER: Final = "Keyguard-Signature"
EVENT_ID_HEADER: Final = "Keyguard-Event-Id"
EVENT_TYPE_HEADER: Final = "Keyguard-Event-Type"
#: The shortest webhook secret accepted (bytes): a short secret can be guessed offline
#: from one signed request.
MIN_SECRET_BYTES: Final = 16
_RETRIED: Final = frozenset({408, 425, 429})
_USER_AGENT: Final = "keyguard-webhook/1"


def _secret_bytes(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(raw, bytes) or len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"a webhook secret must be at least {MIN_SECRET_BYTES} bytes "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return raw


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``Keyguard-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(_secret_bytes(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (a ``Keyguard-Signature`` value) signs ``body`` with ``secret``,
    made within ``tolerance`` seconds of ``now``. Several ``v1=`` entries are allowed (any
    may match). For receivers; constant-time comparison."""
    if not header:
        return False
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                stamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    expected = sign(secret, body, stamp).partition(",v1=")[2]
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(candidate.encode(), expected.encode())
    return found


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a signed POST goes to the configured URL or nowhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """How one delivery went: ``delivered``, the last ``status`` (``None``: no answer),
    the number of ``attempts``, and the last ``error`` (never the secret)."""

    delivered: bool
    status: int | None
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class Webhook:
    """A receiver URL and the secret requests to it are signed with.

    ``retries`` further attempts after the first (default 4), waiting ``backoff * 2**n``
    seconds (jittered, at most ``max_backoff``) before retry ``n``; ``timeout`` per attempt.
    ``sleep`` and ``clock`` are replaceable for tests.
    """

    url: str
    secret: str | bytes = field(repr=False)
    timeout: float = 5.0
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("a webhook URL starts with https:// (or http://) and a host")
        _secret_bytes(self.secret)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigurationError("webhook retries must be an integer >= 0")
        for name in ("timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"webhook {name} must be a number of seconds >= 0")

    @property
    def target(self) -> str:
        """A short stable name of this receiver (a hash of its URL), for once-only markers;
        the URL itself may carry a token, so it is not used as is."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @property
    def shown_url(self) -> str:
        """The URL without its query string or credentials, for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def request(self, payload: Mapping[str, Any], *, event_id: str, event_type: str) -> Any:
        """The signed request for ``payload`` (signed now)."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            SIGNATURE_HEADER: sign(self.secret, body, int(self.clock())),
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
        }
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked in __post_init__

    def _attempt(self, payload: Mapping[str, Any], event_id: str, event_type: str) -> Any:
        """One POST: ``(status or None, retry-after seconds or None, error or None)``."""
        opener = urllib.request.build_opener(_NoRedirect)
        request = self.request(payload, event_id=event_id, event_type=event_type)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                response.read()
                return int(response.status), None, None
        except urllib.error.HTTPError as exc:
            with exc:  # an HTTPError holds the response (and its socket) open
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    wait = float(retry_after) if retry_after is not None else None
                except ValueError:
                    wait = None
                return int(exc.code), wait, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, None, f"{type(exc).__name__}: {reason}"

    def send(
        self, payload: Mapping[str, Any], *, event_id: str, event_type: str = "keyguard"
    ) -> WebhookResult:
        """POST ``payload`` as JSON, signed, retrying as the module docstring says. Never
        raises for a receiver's failure: the result says how it went."""
        status: int | None = None
        error: str | None = None
        for attempt in range(self.retries + 1):
            status, wait, error = self._attempt(payload, event_id, event_type)
            if status is not None and 200 <= status < 300:
                return WebhookResult(True, status, attempt + 1)
            retriable = status is None or status >= 500 or status in _RETRIED
            if not retriable or attempt == self.retries:
                break
            delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))  # noqa: S311 - jitter
            if wait is not None:
                delay = max(delay, min(wait, self.max_backoff))
            logger.info(
                "webhook %s: %s, retrying in %.1f s", self.shown_url, error or status, delay
            )
            self.sleep(delay)
        logger.warning(
            "webhook %s: not delivered after %d attempt(s): %s",
            self.shown_url,
            attempt + 1,
            error or status,
        )
        return WebhookResult(False, status, attempt + 1, error)
