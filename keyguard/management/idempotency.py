"""Idempotent creation and rotation: a retried request is answered, never run twice.

A client that sends ``Idempotency-Key: <value>`` with a create or a rotate (and
:class:`~keyguard.management.KeyManager` callers passing :class:`Idempotency`) gets this
promise: however often the request is retried, concurrently or after a crash, at most one key
is created or one rotation happens. How:

* The request is named by a **token**, a digest of who asks (the acting key, or the actor
  label), the operation and the client's value; what it asks (its body) is summed up in a
  **fingerprint**.
* The change and an :class:`~keyguard.core.records.IdempotencyEntry` (token, fingerprint,
  outcome) are written in **one store transaction**, under the key they concern; a store refuses
  the write when a live entry with the token exists. So two concurrent attempts cannot both
  commit, and a crash leaves either both or neither.
* A retry needs to find that key without knowing its id: a create's key id is **derived from
  the token** (:func:`derived_key_id`), a rotate names its key in the request anyway. (On Redis
  Cluster this puts the entry in the key's slot, so it commits in the same script.)

What a retry gets: :class:`~keyguard.core.errors.AlreadyProcessed` naming the key. The
plaintext of the first attempt is **not** returned again — it is never stored anywhere, not
even in memory, because a key that can be fetched twice is not "shown once" — so a client that
lost the first response rotates the key to get a new secret. The same idempotency key sent
with a different request (another fingerprint) is ``AlreadyProcessed(reused=True)``: a client
bug, reported rather than guessed at. Entries are remembered for ``ttl`` (24 h by default);
a create's key id stays derived from its token, so even after that, reusing the value cannot
create a second key: it finds the first one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.errors import AlreadyProcessed, ConfigurationError
from keyguard.core.keys import BASE62, KEY_ID_LENGTH
from keyguard.core.records import IdempotencyEntry

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_IDEMPOTENCY_TTL",
    "Idempotency",
    "derived_key_id",
    "fingerprint",
    "replay_error",
]

DEFAULT_IDEMPOTENCY_TTL: Final = 24 * 3600.0
MAX_IDEMPOTENCY_TTL: Final = 30 * 86400.0
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
_MAX_FINGERPRINT: Final = 128


def fingerprint(*parts: Any) -> str:
    """A digest of what a request asks for (canonical JSON of ``parts``)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def derived_key_id(token: str) -> str:
    """The key id a create with this token gets: the same for every retry (12 base62
    characters from a digest of the token; as unguessable as the token's inputs, and key ids
    are public anyway — a key's secret is what protects it)."""
    n = int.from_bytes(hashlib.sha256(b"keyguard key id/v1\0" + token.encode()).digest(), "big")
    out = []
    for _ in range(KEY_ID_LENGTH):
        n, digit = divmod(n, 62)
        out.append(BASE62[digit])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """What a caller asks of an idempotent create or rotate.

    ``key`` is the client's idempotency key (1-255 visible ASCII characters, e.g. a UUID);
    ``fingerprint`` sums up the request (:func:`fingerprint`); ``ttl`` is how long a retry is
    recognised (default 24 h, at most 30 days).
    """

    key: str
    fingerprint: str
    ttl: float = DEFAULT_IDEMPOTENCY_TTL

    def __post_init__(self) -> None:
        key = self.key
        if (
            not isinstance(key, str)
            or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
            or not all("\x21" <= c <= "\x7e" for c in key)
        ):
            raise ConfigurationError(
                f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
                "characters (no spaces), e.g. a UUID"
            )
        if not isinstance(self.fingerprint, str) or not 0 < len(self.fingerprint) <= 128:
            raise ConfigurationError("an idempotency fingerprint is a short non-empty string")
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ConfigurationError("the idempotency ttl is a number of seconds")
        if not 0 < ttl <= MAX_IDEMPOTENCY_TTL:
            raise ConfigurationError(
                f"the idempotency ttl must be between 0 and {int(MAX_IDEMPOTENCY_TTL)} seconds"
            )

    def token(self, scope: str, operation: str) -> str:
        """The request's name: who asks (``scope``), what operation, which client key."""
        raw = f"keyguard idempotency/v1\0{scope}\0{operation}\0{self.key}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def entry(self, *, key_id: str, token: str, now: float, operation: str) -> IdempotencyEntry:
        """The entry to write with the change (its outcome holds no secret)."""
        return IdempotencyEntry(
            key_id=key_id,
            token=token,
            fingerprint=self.fingerprint,
            at=now,
            expires_at=now + float(self.ttl),
            outcome={"operation": operation, "key_id": key_id, "at": to_iso(now)},
        )

    def __repr__(self) -> str:
        return f"Idempotency(key=<{len(self.key)} chars>, ttl={self.ttl})"


def replay_error(
    found: IdempotencyEntry | None, request: Idempotency, key_id: str
) -> AlreadyProcessed:
    """What to raise when a request's token was seen already (``found``: the entry, if it is
    still live; ``None`` after it expired)."""
    reused = found is not None and found.fingerprint != request.fingerprint
    if reused:
        message = (
            f"this idempotency key was already used for a different request (which changed key "
            f"{key_id}); use a new idempotency key for a new request"
        )
    else:
        message = (
            f"this request was already processed (key {key_id}); its key was shown once and "
            "is not stored: rotate the key if that response was lost"
        )
    return AlreadyProcessed(message, key_id=key_id, reused=reused)
