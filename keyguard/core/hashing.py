"""Tagged, constant-time digests of API keys: what a store holds instead of the key.

A digest is ``sha256$<hex>`` or, when a server-side pepper is configured, ``hmac-sha256$<hex>``.
The pepper defends against an attacker who steals the store but not the server's
configuration: without it, the digests cannot be checked offline. The tag lets a deployment
switch algorithms without invalidating keys: a key verified against an old tag is re-hashed
with the current one (:meth:`Hasher.needs_rehash`). Keys are random with ≥190 bits, so a
fast hash is the right tool (there is nothing to brute-force); a slow password hash would
only make every request slower.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

from keyguard.core.errors import ConfigurationError

SHA256: Final = "sha256"
HMAC_SHA256: Final = "hmac-sha256"
PEPPER_ENV: Final = "KEYGUARD_PEPPER"
_MIN_PEPPER_BYTES: Final = 16


class Hasher:
    """Computes and checks key digests.

    ``pepper`` (bytes or str, at least 16 bytes) switches to HMAC-SHA256; when omitted it is read
    from the ``KEYGUARD_PEPPER`` environment variable if ``pepper_from_env`` is true.
    """

    __slots__ = ("_pepper", "tag")

    def __init__(self, pepper: bytes | str | None = None, *, pepper_from_env: bool = True) -> None:
        if pepper is None and pepper_from_env:
            pepper = os.environ.get(PEPPER_ENV) or None
        if isinstance(pepper, str):
            pepper = pepper.encode("utf-8")
        if pepper is not None and len(pepper) < _MIN_PEPPER_BYTES:
            raise ConfigurationError(f"the pepper must be at least {_MIN_PEPPER_BYTES} bytes long")
        self._pepper = pepper
        self.tag = HMAC_SHA256 if pepper is not None else SHA256

    def digest(self, key: str) -> str:
        """Return the tagged digest of ``key`` with the configured algorithm."""
        return self.tag + "$" + self._hex(self.tag, key.encode("utf-8"))

    def _hex(self, tag: str, data: bytes) -> str:
        if tag == SHA256:
            return hashlib.sha256(data).hexdigest()
        if tag == HMAC_SHA256 and self._pepper is not None:
            return hmac.new(self._pepper, data, hashlib.sha256).hexdigest()
        # A digest we cannot compute (unknown tag, or HMAC without the pepper) must never match.
        return ""

    def verify(self, key: str, stored: str) -> bool:
        """Whether ``key`` matches the stored digest, compared in constant time."""
        tag, _, expected = stored.partition("$")
        actual = self._hex(tag, key.encode("utf-8"))
        # Compare even when actual is empty so that the cost does not depend on the tag.
        return hmac.compare_digest(actual or "-" * 64, expected) and bool(actual)

    def needs_rehash(self, stored: str) -> bool:
        """Whether a digest was made with another algorithm than the configured one."""
        return not stored.startswith(self.tag + "$")

    def __repr__(self) -> str:
        return f"Hasher(tag={self.tag!r})"


#: A digest that no key matches, compared against when a key id is unknown so that an
#: unknown id costs the same work as a wrong secret.
DUMMY_DIGEST: Final = SHA256 + "$" + "0" * 64
