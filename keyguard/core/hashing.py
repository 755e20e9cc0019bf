"""Tagged, constant-time digests of API keys: what a store holds instead of the key.

A digest is ``sha256$<hex>`` or, when a server-side pepper is configured, ``hmac-sha256$<hex>``.
The pepper defends against an attacker who steals the store but not the server's
configuration: without it, the digests cannot be checked offline. It also defends against an
attacker who can *write* the store: with a pepper configured, plain ``sha256$`` digests are
refused (unless a migration explicitly accepts them), so nobody can plant a digest for a key of
their choice. The tag lets a deployment switch algorithms without invalidating keys: a key
verified against an old tag is re-hashed with the current one (:meth:`Hasher.needs_rehash`).
Keys are random with ≥190 bits, so a fast hash is the right tool (there is nothing to
brute-force); a slow password hash would only make every request slower.

A store remembers a fingerprint of the pepper it was used with (:attr:`Hasher.fingerprint`,
checked by :func:`keyguard.core.pepper.check_store`), so a process started without the pepper,
or with another one, refuses to start instead of answering ``invalid_api_key`` for every key.
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
#: A file holding the pepper (Docker/Kubernetes secret mounts); used when ``KEYGUARD_PEPPER``
#: is unset. One trailing newline is ignored.
PEPPER_FILE_ENV: Final = "KEYGUARD_PEPPER_FILE"
#: Set to ``1`` while migrating a store to a pepper: plain ``sha256$`` digests are then still
#: accepted (and re-hashed with the pepper on their key's next use).
ACCEPT_UNPEPPERED_ENV: Final = "KEYGUARD_ACCEPT_UNPEPPERED"
#: The fingerprint of "no pepper".
NO_PEPPER: Final = "none"
_MIN_PEPPER_BYTES: Final = 16
_FINGERPRINT_LABEL: Final = b"keyguard pepper fingerprint v1"


def _pepper_from_env() -> bytes | None:
    value = os.environ.get(PEPPER_ENV)
    if value:
        return value.encode("utf-8")
    path = os.environ.get(PEPPER_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(4096)
    except OSError as exc:
        raise ConfigurationError(
            f"{PEPPER_FILE_ENV} names {path!r}, which cannot be read: {exc.strerror}"
        ) from None
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if not data:
        raise ConfigurationError(f"the pepper file {path!r} ({PEPPER_FILE_ENV}) is empty")
    return data


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class Hasher:
    """Computes and checks key digests.

    ``pepper`` (bytes or str, at least 16 bytes) switches to HMAC-SHA256; when omitted it is read
    from ``KEYGUARD_PEPPER`` (or the file named by ``KEYGUARD_PEPPER_FILE``) if
    ``pepper_from_env`` is true.

    ``accept_unpeppered`` (default false; ``KEYGUARD_ACCEPT_UNPEPPERED=1`` when reading the
    environment) keeps accepting plain ``sha256$`` digests although a pepper is configured.
    Leave it off except while migrating an existing store to a pepper: it lets anyone who can
    write the store plant a digest for a key of their choice.
    """

    __slots__ = ("_pepper", "accept_unpeppered", "dummy_digest", "fingerprint", "tag")

    def __init__(
        self,
        pepper: bytes | str | None = None,
        *,
        pepper_from_env: bool = True,
        accept_unpeppered: bool | None = None,
    ) -> None:
        if pepper is None and pepper_from_env:
            pepper = _pepper_from_env()
        if isinstance(pepper, str):
            pepper = pepper.encode("utf-8")
        if pepper is not None and len(pepper) < _MIN_PEPPER_BYTES:
            raise ConfigurationError(f"the pepper must be at least {_MIN_PEPPER_BYTES} bytes long")
        if accept_unpeppered is None:
            accept_unpeppered = pepper_from_env and _truthy(os.environ.get(ACCEPT_UNPEPPERED_ENV))
        self._pepper = pepper
        self.tag = HMAC_SHA256 if pepper is not None else SHA256
        self.accept_unpeppered = bool(accept_unpeppered) and pepper is not None
        #: A digest no key matches, in the configured algorithm: compared against when a key id
        #: is unknown, so that an unknown id costs exactly the work of a wrong secret.
        self.dummy_digest = self.tag + "$" + "0" * 64
        #: Identifies the pepper without revealing it (an HMAC of a fixed label under the
        #: pepper; the pepper has ≥128 bits, so it cannot be recovered from this).
        self.fingerprint = (
            NO_PEPPER
            if pepper is None
            else HMAC_SHA256
            + ":"
            + hmac.new(pepper, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]
        )

    def digest(self, key: str) -> str:
        """Return the tagged digest of ``key`` with the configured algorithm."""
        return self.tag + "$" + self._hex(self.tag, key.encode("utf-8"))

    def _hex(self, tag: str, data: bytes) -> str:
        pepper = self._pepper
        if tag == HMAC_SHA256:
            if pepper is not None:
                return hmac.new(pepper, data, hashlib.sha256).hexdigest()
        elif tag == SHA256 and (pepper is None or self.accept_unpeppered):
            return hashlib.sha256(data).hexdigest()
        # A digest we may not accept (unknown tag, HMAC without the pepper, or a plain digest
        # while a pepper is configured) must never match; do the configured algorithm's work
        # anyway so that the refusal costs what a wrong secret costs.
        self._burn(data)
        return ""

    def _burn(self, data: bytes) -> None:
        if self._pepper is not None:
            hmac.new(self._pepper, data, hashlib.sha256).hexdigest()
        else:
            hashlib.sha256(data).hexdigest()

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


#: The unpeppered dummy digest (kept for compatibility; prefer ``Hasher.dummy_digest``, which
#: uses the configured algorithm).
DUMMY_DIGEST: Final = SHA256 + "$" + "0" * 64
