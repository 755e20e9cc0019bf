"""Proving an alert comes from the scanner: GitHub's ECDSA signatures, and an HMAC for others.

**GitHub** signs the raw body of each secret-scanning alert with ECDSA (P-256, SHA-256) and
names the key in ``Github-Public-Key-Identifier``; the signature (base64 DER) is in
``Github-Public-Key-Signature``. The public keys are published as JSON,
``{"public_keys": [{"key_identifier": …, "key": "-----BEGIN PUBLIC KEY-----…", "is_current":
…}]}``. :class:`GitHubKeySet` fetches them from a configured URL and caches them for ``ttl``
seconds; an identifier it does not know makes it refetch, at most once per ``min_refresh``
seconds (so a flood of made-up identifiers cannot turn us into a flood of requests to GitHub);
when the keys cannot be refreshed, the cached set is used for at most ``max_stale`` seconds in
all, then alerts are refused (``503``, the sender retries) rather than trusting keys that may
have been withdrawn. Only ``https`` URLs are fetched, or ``http`` on the loopback interface.
ECDSA needs the ``cryptography`` package (``pip install 'keyguard[scanning]'``), imported when
a key set is built.

**Other scanners** use :class:`HmacVerifier`: ``X-Keyguard-Timestamp`` (Unix seconds) and
``X-Keyguard-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`` under a shared
secret of at least 32 bytes; a timestamp more than ``tolerance`` seconds (default 300) from now
is refused, so a captured request cannot be replayed later. (Replaying it within the window
would only repeat an idempotent revocation.)

Each check costs the same whatever is wrong with the signature — one signature verification at
most — and nothing else is read before it passes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from keyguard.core.clock import Clock
from keyguard.core.errors import ConfigurationError, KeyguardError

__all__ = [
    "GITHUB_KEYS_URL",
    "Fetch",
    "GitHubKeySet",
    "HmacVerifier",
    "KeySetUnavailable",
    "SignatureError",
    "fetch_url",
]

logger = logging.getLogger("keyguard.abuse")

#: Where GitHub publishes its secret-scanning signing keys.
GITHUB_KEYS_URL: Final = "https://api.github.com/meta/public_keys/secret_scanning"
#: ``fetch(url) -> body``: how a key set is downloaded (replaceable, e.g. in tests).
Fetch = Callable[[str], bytes]

_MAX_KEYS_BODY: Final = 1 << 20
_MAX_SIGNATURE: Final = 512  # base64 of a DER P-256 signature is ~96 characters
_MIN_SECRET: Final = 32


class SignatureError(KeyguardError):
    """The request is not signed by the scanner (bad, missing or unknown signature/key)."""


class KeySetUnavailable(KeyguardError):
    """The scanner's public keys cannot be fetched, and the cached ones are too old to trust."""


def _allowed_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise ConfigurationError(
        "the public-keys URL must be https:// (or http:// on the loopback interface)"
    )


def fetch_url(url: str, *, token: str | None = None, timeout: float = 10.0) -> bytes:
    """GET ``url`` (https, or http on loopback) and return at most 1 MiB of its body.

    ``token`` is sent as ``Authorization: Bearer`` (GitHub rate-limits anonymous requests to
    its API; a token with no scopes lifts that).
    """
    _allowed_url(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked above
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
        body: bytes = response.read(_MAX_KEYS_BODY + 1)
    if len(body) > _MAX_KEYS_BODY:
        raise KeySetUnavailable("the public-keys document is larger than 1 MiB")
    return body


@dataclass(frozen=True, slots=True)
class _Loaded:
    keys: Mapping[str, Any]  # key identifier -> EllipticCurvePublicKey
    fetched_at: float


class GitHubKeySet:
    """GitHub's secret-scanning public keys, fetched from ``url`` and cached (see the module
    docstring for ``ttl``, ``min_refresh`` and ``max_stale``). Thread-safe.

    ``fetch`` replaces the download (default :func:`fetch_url` with ``token``); ``clock`` is
    a monotonic clock.
    """

    def __init__(
        self,
        url: str = GITHUB_KEYS_URL,
        *,
        fetch: Fetch | None = None,
        token: str | None = None,
        ttl: float = 3600.0,
        min_refresh: float = 60.0,
        max_stale: float = 86400.0,
        clock: Clock = time.monotonic,
    ) -> None:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
        except ImportError:  # pragma: no cover - the scanning extra installs it
            raise ConfigurationError(
                "verifying GitHub's signatures needs 'cryptography': "
                "pip install 'keyguard[scanning]'"
            ) from None
        if fetch is None:
            _allowed_url(url)
        if not 0 < ttl <= max_stale or min_refresh < 0:
            raise ConfigurationError("need 0 < ttl <= max_stale and min_refresh >= 0")
        self.url = url
        self._fetch: Fetch = fetch or (lambda u: fetch_url(u, token=token))
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.max_stale = max_stale
        self._clock = clock
        self._ec = ec
        self._load_pem = load_pem_public_key
        self._algorithm = ec.ECDSA(hashes.SHA256())
        self._invalid: type[Exception] = InvalidSignature
        self._loaded: _Loaded | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
            entries = data["public_keys"]
            if not isinstance(entries, list):
                raise TypeError("public_keys is not a list")
        except (ValueError, TypeError, KeyError) as exc:
            raise KeySetUnavailable(f"the public-keys document is malformed ({exc})") from None
        keys: dict[str, Any] = {}
        for entry in entries:
            try:
                identifier = entry["key_identifier"]
                key = self._load_pem(entry["key"].encode("ascii"))
            except (KeyError, TypeError, ValueError, AttributeError, UnicodeError):
                logger.warning("secret scanning: skipped a malformed public key entry")
                continue
            if (
                isinstance(identifier, str)
                and isinstance(key, self._ec.EllipticCurvePublicKey)
                and isinstance(key.curve, self._ec.SECP256R1)
            ):
                keys[identifier] = key
            else:
                logger.warning("secret scanning: skipped a public key that is not ECDSA P-256")
        if not keys:
            raise KeySetUnavailable("the public-keys document holds no usable key")
        return keys

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        try:
            keys = self._parse(self._fetch(self.url))
        except (OSError, KeySetUnavailable) as exc:
            logger.warning("secret scanning: cannot refresh the public keys: %s", exc)
            return
        self._loaded = _Loaded(keys, now)

    def key(self, identifier: str) -> Any | None:
        """The public key named ``identifier``, or ``None`` if the (fresh) set has none.

        Raises :class:`KeySetUnavailable` when no set younger than ``max_stale`` is at hand.
        """
        with self._lock:
            now = self._clock()
            loaded = self._loaded
            may_try = self._last_attempt is None or now - self._last_attempt >= self.min_refresh
            expired = loaded is None or now - loaded.fetched_at >= self.ttl
            unknown = loaded is not None and identifier not in loaded.keys
            if may_try and (expired or unknown):
                self._refresh(now)
                loaded = self._loaded
            if loaded is None or now - loaded.fetched_at >= self.max_stale:
                raise KeySetUnavailable(
                    "GitHub's public keys are unavailable (could not be fetched recently)"
                )
            return loaded.keys.get(identifier)

    def verify(self, identifier: str | None, signature: str | None, body: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` (base64 DER) is the named key's
        ECDSA-SHA256 signature of ``body``; :class:`KeySetUnavailable` without usable keys."""
        if not identifier or not signature or len(signature) > _MAX_SIGNATURE:
            raise SignatureError("missing or malformed signature headers")
        key = self.key(identifier[:200])
        if key is None:
            raise SignatureError("unknown public key identifier")
        try:
            der = base64.b64decode(signature, validate=True)
            key.verify(der, body, self._algorithm)
        except (binascii.Error, ValueError, self._invalid) as exc:
            raise SignatureError("the signature does not match") from exc

    def __repr__(self) -> str:
        return f"GitHubKeySet(url={self.url!r}, ttl={self.ttl})"


class HmacVerifier:
    """Checks ``X-Keyguard-Timestamp`` / ``X-Keyguard-Signature`` (see the module docstring).

    ``secret`` (at least 32 bytes) is shared with the scanner; ``tolerance`` is the replay
    window in seconds.
    """

    __slots__ = ("_clock", "_secret", "tolerance")

    TIMESTAMP_HEADER: Final = "x-keyguard-timestamp"
    SIGNATURE_HEADER: Final = "x-keyguard-signature"

    def __init__(
        self, secret: bytes | str, *, tolerance: float = 300.0, clock: Clock = time.time
    ) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < _MIN_SECRET:
            raise ConfigurationError(f"the webhook secret must be at least {_MIN_SECRET} bytes")
        if tolerance <= 0:
            raise ConfigurationError("tolerance must be positive")
        self._secret = secret
        self.tolerance = tolerance
        self._clock = clock

    def signature(self, timestamp: str, body: bytes) -> str:
        """The ``X-Keyguard-Signature`` value for ``body`` sent at ``timestamp``."""
        mac = hmac.new(self._secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
        return "sha256=" + mac.hexdigest()

    def sign(self, body: bytes) -> dict[str, str]:
        """Headers signing ``body`` now (for senders, and tests)."""
        timestamp = str(int(self._clock()))
        return {
            "X-Keyguard-Timestamp": timestamp,
            "X-Keyguard-Signature": self.signature(timestamp, body),
        }

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> None:
        """Raise :class:`SignatureError` unless the signature is right and recent."""
        stamp = timestamp or ""
        fresh = stamp.isdigit() and len(stamp) <= 12
        expected = self.signature(stamp if fresh else "0", body)
        # Compare before judging the timestamp: the same work whatever is wrong.
        matches = hmac.compare_digest(
            expected.encode(), (signature or "").encode("latin-1", "replace")
        )
        if not (fresh and matches):
            raise SignatureError("the signature does not match")
        if abs(self._clock() - int(stamp)) > self.tolerance:
            raise SignatureError("the signature is too old (or from the future)")

    def __repr__(self) -> str:
        return f"HmacVerifier(tolerance={self.tolerance})"
