"""The secret-scanning alert receiver: a leaked key reported by a scanner is revoked in seconds.

:class:`AlertReceiver` is framework-free — ``handle(method, headers, body)`` returns a
:class:`Response` — and :mod:`keyguard.abuse.apps` mounts it as an ASGI or WSGI application.
It accepts GitHub's secret-scanning partner format (a JSON array of ``{"token", "type", "url",
"source"}``, signed with ECDSA: :class:`~keyguard.abuse.signing.GitHubKeySet`) and, for other
scanners, the same array signed with an HMAC (:class:`~keyguard.abuse.signing.HmacVerifier`).

Order of work, and why:

1. method, body size and **the signature, before anything else**: nothing in the body is
   parsed, and no store is read, for a request the scanner did not sign (``401
   invalid_signature``; ``503 signing_keys_unavailable`` when the scanner's keys cannot be
   had, so that it retries);
2. each token is parsed (a token that is not a keyguard key, checksum included, is a
   ``false_positive`` with no store access), looked up by key id, and its **whole secret**
   compared with the stored digests (:func:`~keyguard.abuse.leaks.match_secret`): an unknown
   id and a known id with a wrong secret cost the same work and get the same answer,
   ``false_positive`` — so the receiver tells nobody which ids exist, and a guessed id alone
   cannot get anyone's key revoked;
3. a live key is handed to the configured :class:`LeakAction` — :class:`RevokeLeaked`
   (default; one-way, cascading to the keys it created, which an attacker holding it may have
   minted) or :class:`SuspendLeaked` (reversible; needs a manager with ``suspend``) — and the
   ``on_action`` callbacks (e.g. a verifier's ``invalidate``, so this process stops accepting
   the key at once); a key already revoked is left alone;
4. the answer is GitHub's feedback array: ``[{"token_hash": <sha256 hex of the token>,
   "token_type": <its type>, "label": "true_positive" | "false_positive"}]``. A store that
   cannot be reached answers ``503`` (the scanner retries; revocation is idempotent).

The token itself is never logged or echoed; logs name the key id and where it leaked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from keyguard.abuse.leaks import SecretMatch, clean_text, match_secret
from keyguard.abuse.signing import GitHubKeySet, HmacVerifier, KeySetUnavailable, SignatureError
from keyguard.core.clock import Clock
from keyguard.core.errors import ConfigurationError, KeyguardError, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.records import KeyRecord
from keyguard.core.store import KeyStore

__all__ = [
    "AlertReceiver",
    "LeakAction",
    "LeakReport",
    "Response",
    "RevokeLeaked",
    "SuspendLeaked",
]

logger = logging.getLogger("keyguard.abuse")

TRUE_POSITIVE: Final = "true_positive"
FALSE_POSITIVE: Final = "false_positive"
GITHUB_KEY_ID_HEADER: Final = "github-public-key-identifier"
GITHUB_SIGNATURE_HEADER: Final = "github-public-key-signature"
DEFAULT_MAX_BODY: Final = 1 << 20
_MAX_TOKEN: Final = 512
_MAX_FIELD: Final = 2048


@dataclass(frozen=True, slots=True)
class LeakReport:
    """Where a scanner says a key leaked (``url`` and ``source`` as the scanner sent them)."""

    scanner: str
    token_type: str
    url: str
    source: str

    def reason(self) -> str:
        """The revocation/suspension reason recorded in the audit log."""
        where = f" at {self.url}" if self.url else ""
        source = f" ({self.source})" if self.source else ""
        return clean_text(f"leaked: reported by {self.scanner} secret scanning{where}{source}")


@runtime_checkable
class LeakAction(Protocol):
    """What to do with a live leaked key; returns the ids of the keys it changed."""

    name: str

    def __call__(self, record: KeyRecord, report: LeakReport) -> Sequence[str]: ...


class _Manager(Protocol):
    store: KeyStore
    hasher: Hasher

    def revoke(
        self, key_id: str, *, reason: str, actor: str | None = ..., cascade: bool = ...
    ) -> list[str]: ...


class RevokeLeaked:
    """Revoke the key (and, with ``cascade``, every key it created) through a KeyManager."""

    name = "revoke"

    def __init__(self, manager: _Manager, *, cascade: bool = True) -> None:
        self.manager = manager
        self.cascade = cascade

    def __call__(self, record: KeyRecord, report: LeakReport) -> Sequence[str]:
        if record.revoked_at is not None:
            return ()
        return self.manager.revoke(
            record.key_id,
            reason=report.reason(),
            actor=f"secret-scanning:{report.scanner}",
            cascade=self.cascade,
        )


class SuspendLeaked:
    """Suspend the key (reversible, audited) through a KeyManager that supports suspension."""

    name = "suspend"

    def __init__(self, manager: object) -> None:
        suspend = getattr(manager, "suspend", None)
        if not callable(suspend):
            raise ConfigurationError(
                "SuspendLeaked needs a KeyManager with suspend() (key suspension); "
                "use RevokeLeaked meanwhile"
            )
        self._suspend: Callable[..., Any] = suspend

    def __call__(self, record: KeyRecord, report: LeakReport) -> Sequence[str]:
        if record.revoked_at is not None or getattr(record, "suspended_at", None) is not None:
            return ()
        self._suspend(
            record.key_id, reason=report.reason(), actor=f"secret-scanning:{report.scanner}"
        )
        return (record.key_id,)


@dataclass(frozen=True, slots=True)
class Response:
    """What to answer: status, headers, body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


def problem(status: int, code: str, detail: str, **headers: str) -> Response:
    """A ``application/problem+json`` answer with a stable ``code``."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": _TITLES.get(status, "Error"),
            "status": status,
            "code": code,
            "detail": detail,
        },
        separators=(",", ":"),
    ).encode()
    head = [("content-type", "application/problem+json"), ("cache-control", "no-store")]
    head.extend((k.replace("_", "-"), v) for k, v in headers.items())
    return Response(status, head, body)


def _header_map(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), value)
    return out


class AlertReceiver:
    """Receives secret-scanning alerts and acts on the live keys they report.

    ``manager`` is a :class:`~keyguard.management.KeyManager` (its store and hasher are used
    for the lookups). At least one of ``github`` (a :class:`GitHubKeySet`) and ``webhook`` (an
    :class:`HmacVerifier`) must be given; a request is checked by the form its headers name.
    ``action`` defaults to :class:`RevokeLeaked`; ``on_action`` callbacks receive each key id
    acted on. ``key_format`` sets the prefixes recognised (``accept_prefixes`` included).
    """

    def __init__(
        self,
        manager: _Manager,
        *,
        github: GitHubKeySet | None = None,
        webhook: HmacVerifier | None = None,
        action: LeakAction | None = None,
        on_action: Iterable[Callable[[str], object]] = (),
        key_format: KeyFormat = DEFAULT_FORMAT,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Clock = time.time,
    ) -> None:
        if github is None and webhook is None:
            raise ConfigurationError("give github= (GitHubKeySet) and/or webhook= (HmacVerifier)")
        self.manager = manager
        self.store = manager.store
        self.hasher = manager.hasher
        self.github = github
        self.webhook = webhook
        self.action: LeakAction = action if action is not None else RevokeLeaked(manager)
        self.on_action = tuple(on_action)
        self.key_format = key_format
        self.max_body = max_body
        self._clock = clock

    # -- the request -------------------------------------------------------------------------
    def handle(
        self,
        method: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
    ) -> Response:
        """Answer one request (see the module docstring for the order of work)."""
        if method.upper() != "POST":
            return problem(405, "method_not_allowed", "send alerts with POST", allow="POST")
        if len(body) > self.max_body:
            return problem(413, "payload_too_large", f"at most {self.max_body} bytes")
        fields = _header_map(headers)
        try:
            scanner = self._authenticate(fields, body)
        except SignatureError as exc:
            logger.warning("secret scanning: refused an alert: %s", exc)
            return problem(401, "invalid_signature", "the alert is not signed by a known scanner")
        except KeySetUnavailable as exc:
            logger.error("secret scanning: %s", exc)
            return problem(
                503,
                "signing_keys_unavailable",
                "the scanner's public keys cannot be fetched; retry later",
                retry_after="60",
            )
        items = self._items(body)
        if isinstance(items, Response):
            return items
        try:
            results = [self._one(item, scanner) for item in items]
        except StoreUnavailable:
            logger.error("secret scanning: the key store is unreachable; the alert will be retried")
            return problem(
                503, "store_unavailable", "the key store is unreachable; retry", retry_after="5"
            )
        return Response(
            200,
            [("content-type", "application/json"), ("cache-control", "no-store")],
            json.dumps(results, separators=(",", ":")).encode(),
        )

    def _authenticate(self, fields: Mapping[str, str], body: bytes) -> str:
        if GITHUB_SIGNATURE_HEADER in fields or GITHUB_KEY_ID_HEADER in fields:
            if self.github is None:
                raise SignatureError("GitHub alerts are not configured")
            self.github.verify(
                fields.get(GITHUB_KEY_ID_HEADER), fields.get(GITHUB_SIGNATURE_HEADER), body
            )
            return "github"
        if self.webhook is not None:
            self.webhook.verify(
                fields.get(HmacVerifier.TIMESTAMP_HEADER),
                fields.get(HmacVerifier.SIGNATURE_HEADER),
                body,
            )
            return "webhook"
        raise SignatureError("no signature headers")

    @staticmethod
    def _items(body: bytes) -> list[Mapping[str, Any]] | Response:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return problem(400, "invalid_request", "the body is not JSON")
        if not isinstance(data, list) or not all(
            isinstance(item, dict) and isinstance(item.get("token"), str) for item in data
        ):
            return problem(
                400, "invalid_request", 'expected a JSON array of {"token": ..., "type": ...}'
            )
        return data

    def _one(self, item: Mapping[str, Any], scanner: str) -> dict[str, str]:
        token: str = item["token"]
        token_type = _text(item.get("type"))
        answer = {
            "token_hash": hashlib.sha256(token.encode("utf-8")).hexdigest(),
            "token_type": token_type,
            "label": FALSE_POSITIVE,
        }
        parsed = self.key_format.parse(token) if len(token) <= _MAX_TOKEN else None
        if parsed is None:
            return answer  # not a key of ours: nothing to look up
        record = self.store.get(parsed.key_id)
        match = match_secret(self.hasher, record, parsed.full, self._clock())
        if record is None or match is SecretMatch.NONE:
            return answer
        answer["label"] = TRUE_POSITIVE
        report = LeakReport(scanner, token_type, _text(item.get("url")), _text(item.get("source")))
        if not match.live:
            logger.warning(
                "secret scanning: a rotated-out secret of key %s leaked at %s; nothing to do",
                record.key_id,
                report.url or "?",
            )
            return answer
        try:
            acted = list(self.action(record, report))
        except StoreUnavailable:
            raise
        except KeyguardError as exc:
            logger.error(
                "secret scanning: could not %s leaked key %s: %s",
                self.action.name,
                record.key_id,
                exc,
            )
            return answer
        logger.warning(
            "secret scanning: key %s leaked at %s (%s); %s: %s",
            record.key_id,
            report.url or "?",
            report.source or "?",
            self.action.name,
            ", ".join(acted) or "nothing to change",
        )
        for key_id in acted:
            for callback in self.on_action:
                callback(key_id)
        return answer


def _text(value: object) -> str:
    return clean_text(value, _MAX_FIELD) if isinstance(value, str) else ""
