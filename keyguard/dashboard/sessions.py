"""Dashboard sessions: signed, expiring tokens that name a key and never hold it.

A session is stateless on the server and signed with the dashboard's secret
(:func:`load_secret`: the ``secret`` argument, ``KEYGUARD_DASHBOARD_SECRET`` or the file named
by ``KEYGUARD_DASHBOARD_SECRET_FILE``), so any worker process holding the same secret accepts
it. The cookie carries a random session id, the key id, a *binding* — an HMAC of the key's
stored digest under the secret, so it is not the digest either — the times it was issued, last
seen and expires, all signed with HMAC-SHA256. Nothing in it can be turned back into the key.

A valid signature is not enough: on every request the dashboard re-reads the key's record from
the store (:meth:`SessionSigner.bound` checks the binding against the record's digest, or the
previous digest while a rotation's grace lasts), and the session ends when the key is revoked,
expired, suspended, no longer allowed to manage keys, rotated past its grace, or signed out (a
per-key sign-out time kept with the store's settings, :func:`signed_out_setting`). A key
revoked anywhere therefore ends its dashboard sessions at the next request.

The CSRF token of a session is an HMAC of its id (a synchronizer token bound to the session);
before sign-in, a short-lived signed nonce cookie plays that part for the sign-in form. Each
purpose has its own sub-key derived from the secret, so no token can stand in for another.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import KeyRecord

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "MIN_SECRET_BYTES",
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "SessionSigner",
    "SessionToken",
    "load_secret",
    "signed_out_setting",
]

logger = logging.getLogger("keyguard.dashboard")

SECRET_ENV: Final = "KEYGUARD_DASHBOARD_SECRET"  # noqa: S105 - a variable's name, not a secret
SECRET_FILE_ENV: Final = "KEYGUARD_DASHBOARD_SECRET_FILE"  # noqa: S105 - likewise
#: The session cookie (``__Secure-`` prefixed over HTTPS) and the sign-in form's nonce cookie.
COOKIE: Final = "kg_dashboard"
LOGIN_COOKIE: Final = "kg_dashboard_login"
#: A shorter secret could be guessed offline from one signed cookie.
MIN_SECRET_BYTES: Final = 32
_VERSION: Final = "v1"
_MAX_TOKEN: Final = 1024


def load_secret(
    secret: str | bytes | None = None, environ: Mapping[str, str] | None = None
) -> tuple[bytes, bool]:
    """The signing secret and whether it was configured (``False``: a random one, made now).

    ``secret`` wins, then ``KEYGUARD_DASHBOARD_SECRET``, then the file named by
    ``KEYGUARD_DASHBOARD_SECRET_FILE`` (one trailing newline ignored). Without any, a random
    secret is made for this process: sessions then end when it restarts and are not shared
    with other worker processes (a warning says so).
    """
    env = os.environ if environ is None else environ
    source = "the secret argument"
    if secret is None and env.get(SECRET_ENV):
        secret, source = env[SECRET_ENV], SECRET_ENV
    elif secret is None and env.get(SECRET_FILE_ENV):
        path = env[SECRET_FILE_ENV]
        source = SECRET_FILE_ENV
        try:
            secret = Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeError) as exc:
            raise ConfigurationError(
                f"{SECRET_FILE_ENV}: cannot read {path!r} ({exc.__class__.__name__})"
            ) from None
    if secret is None:
        logger.warning(
            "no %s: the dashboard signs sessions with a random per-process secret (they end "
            "on restart and are not shared between worker processes)",
            SECRET_ENV,
        )
        return secrets.token_bytes(MIN_SECRET_BYTES), False
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{source}: the dashboard secret must be at least {MIN_SECRET_BYTES} bytes "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return raw, True


def signed_out_setting(key_id: str) -> str:
    """The store setting holding when ``key_id`` last signed out of the dashboard."""
    return f"dashboard.signed_out:{key_id}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionToken:
    """What a session cookie says (after its signature was checked)."""

    sid: str
    key_id: str
    binding: str
    issued_at: float
    seen_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"SessionToken(key_id={self.key_id!r}, expires_at={self.expires_at})"


class SessionSigner:
    """Issues and checks session tokens, bindings and CSRF tokens under one secret."""

    def __init__(self, secret: bytes) -> None:
        def derive(purpose: str) -> bytes:
            return hmac.new(secret, f"keyguard-dashboard/{purpose}".encode(), "sha256").digest()

        self._session = derive("session")
        self._binding = derive("binding")
        self._csrf = derive("csrf")
        self._login = derive("login")

    def __repr__(self) -> str:
        return "SessionSigner(<secret>)"

    # -- sessions ----------------------------------------------------------------------------
    def binding(self, key_id: str, digest: str) -> str:
        mac = hmac.new(self._binding, f"{key_id}\n{digest}".encode(), "sha256").digest()
        return _b64(mac[:18])

    def issue(self, record: KeyRecord, now: float, ttl: float) -> SessionToken:
        return SessionToken(
            sid=_b64(secrets.token_bytes(18)),
            key_id=record.key_id,
            binding=self.binding(record.key_id, record.digest),
            issued_at=now,
            seen_at=now,
            expires_at=now + ttl,
        )

    def seen(self, token: SessionToken, now: float) -> SessionToken:
        return replace(token, seen_at=now)

    def encode(self, token: SessionToken) -> str:
        payload = json.dumps(
            [
                token.sid,
                token.key_id,
                token.binding,
                token.issued_at,
                token.seen_at,
                token.expires_at,
            ],
            separators=(",", ":"),
        ).encode("utf-8")
        body = _b64(payload)
        mac = hmac.new(self._session, f"{_VERSION}.{body}".encode("ascii"), "sha256").digest()
        return f"{_VERSION}.{body}.{_b64(mac)}"

    def decode(self, value: str | None) -> SessionToken | None:
        """The token of a cookie value whose signature is right; else ``None``."""
        if not value or len(value) > _MAX_TOKEN or not value.isascii():
            return None
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            return None
        expected = hmac.new(
            self._session, f"{parts[0]}.{parts[1]}".encode("ascii"), "sha256"
        ).digest()
        try:
            mac = _unb64(parts[2])
            if not hmac.compare_digest(mac, expected):
                return None
            sid, key_id, binding, issued, seen, expires = json.loads(_unb64(parts[1]))
            return SessionToken(
                str(sid), str(key_id), str(binding), float(issued), float(seen), float(expires)
            )
        except (binascii.Error, ValueError, TypeError):
            return None

    def bound(self, token: SessionToken, record: KeyRecord, now: float) -> bool:
        """Whether the token was issued for this key's current secret (or, while a rotation's
        grace lasts, the previous one)."""
        if record.key_id != token.key_id:
            return False
        if hmac.compare_digest(token.binding, self.binding(record.key_id, record.digest)):
            return True
        previous = record.previous_digest
        return (
            previous is not None
            and record.previous_expires_at is not None
            and now < record.previous_expires_at
            and hmac.compare_digest(token.binding, self.binding(record.key_id, previous))
        )

    # -- CSRF ---------------------------------------------------------------------------------
    def csrf(self, token: SessionToken) -> str:
        """The synchronizer token forms of this session carry."""
        return _b64(hmac.new(self._csrf, token.sid.encode("ascii"), "sha256").digest())

    def csrf_ok(self, token: SessionToken, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(
            sent.encode("utf-8", "replace"), self.csrf(token).encode("ascii")
        )

    def login_nonce(self) -> str:
        """A fresh nonce for the sign-in form's cookie."""
        return _b64(secrets.token_bytes(18))

    def login_csrf(self, nonce: str) -> str:
        return _b64(hmac.new(self._login, nonce.encode("utf-8"), "sha256").digest())

    def login_ok(self, nonce: str | None, sent: str | None) -> bool:
        if not nonce or sent is None or len(nonce) > 64:
            return False
        return hmac.compare_digest(
            sent.encode("utf-8", "replace"), self.login_csrf(nonce).encode("ascii")
        )
