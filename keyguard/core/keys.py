"""Generate and parse API keys of the form ``<prefix>_<key_id>_<secret><checksum>``.

The key id is public (it is the lookup id shown in listings and logs); the secret carries at
least 190 bits from :mod:`secrets`; the last six characters are the base62 CRC32 of everything
before them, so typos and random strings are rejected without touching a store, and secret
scanners can match keyguard keys with no false positives. Parsing accepts any ``str`` or
``bytes`` and never raises: it returns a :class:`ParsedKey` or ``None``.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Final

from keyguard.core.errors import ConfigurationError

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH: Final = 12
CHECKSUM_LENGTH: Final = 6
MIN_SECRET_LENGTH: Final = 32  # 32 * log2(62) = 190.5 bits
MAX_SECRET_LENGTH: Final = 64
DEFAULT_PREFIX: Final = "kg"

_PREFIX_RE: Final = re.compile(r"[a-z][a-z0-9]{0,15}")
_KEY_ID_RE: Final = re.compile(r"[0-9A-Za-z]{12}")

# Two-character base62 table: the checksum of a key is encoded on every cache miss, and three
# table lookups beat six divmods.
_PAIRS: Final = tuple(a + b for a in BASE62 for b in BASE62)


def _checksum(body: str) -> str:
    crc = zlib.crc32(body.encode("ascii"))
    high, rest = divmod(crc, 3844 * 3844)
    mid, low = divmod(rest, 3844)
    return _PAIRS[high] + _PAIRS[mid] + _PAIRS[low]


def random_base62(length: int) -> str:
    """Return ``length`` base62 characters from the operating system's CSPRNG."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of a public key id (12 base62 characters)."""
    return _KEY_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A syntactically valid key. ``repr`` never shows the secret."""

    prefix: str
    key_id: str
    full: str

    def __repr__(self) -> str:
        return f"ParsedKey(prefix={self.prefix!r}, key_id={self.key_id!r}, secret=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A freshly generated key. The plaintext lives only here; ``repr`` hides it."""

    key_id: str
    plaintext: str

    def __repr__(self) -> str:
        return f"GeneratedKey(key_id={self.key_id!r}, plaintext=<redacted>)"

    __str__ = __repr__


class KeyFormat:
    """The key format of one deployment: its prefix and its secret length.

    ``accept_prefixes`` lets a deployment that changes its prefix keep accepting keys issued
    under the old one.
    """

    __slots__ = ("_accepted", "_max_len", "_min_len", "prefix", "secret_length")

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        *,
        secret_length: int = MIN_SECRET_LENGTH,
        accept_prefixes: tuple[str, ...] = (),
    ) -> None:
        for p in (prefix, *accept_prefixes):
            if not isinstance(p, str) or _PREFIX_RE.fullmatch(p) is None:
                raise ConfigurationError(
                    f"key prefix {p!r} must match [a-z][a-z0-9]{{0,15}} (lower-case, no '_')"
                )
        if not MIN_SECRET_LENGTH <= secret_length <= MAX_SECRET_LENGTH:
            raise ConfigurationError(
                f"secret_length must be between {MIN_SECRET_LENGTH} and {MAX_SECRET_LENGTH}"
            )
        self.prefix = prefix
        self.secret_length = secret_length
        self._accepted = frozenset((prefix, *accept_prefixes))
        longest = max(len(p) for p in self._accepted)
        shortest = min(len(p) for p in self._accepted)
        fixed = 2 + KEY_ID_LENGTH + CHECKSUM_LENGTH
        self._min_len = shortest + fixed + MIN_SECRET_LENGTH
        self._max_len = longest + fixed + MAX_SECRET_LENGTH

    @property
    def max_length(self) -> int:
        """The longest string that can be a key of this format (an upper bound for headers)."""
        return self._max_len

    @property
    def min_length(self) -> int:
        """The shortest string that can be a key of this format."""
        return self._min_len

    def generate(self, key_id: str | None = None) -> GeneratedKey:
        """Return a new key; pass ``key_id`` to issue a new secret for an existing id (rotate)."""
        if key_id is None:
            key_id = random_base62(KEY_ID_LENGTH)
        elif not is_key_id(key_id):
            raise ConfigurationError("key_id must be 12 base62 characters")
        body = f"{self.prefix}_{key_id}_{random_base62(self.secret_length)}"
        return GeneratedKey(key_id=key_id, plaintext=body + _checksum(body))

    def key_id_of(self, value: str) -> str | None:
        """The key id of ``value`` if it is a well-formed key (as :meth:`parse` decides),
        else ``None``: the verifier's per-request check, without building a ParsedKey."""
        n = len(value)
        if n < self._min_len or n > self._max_len or not value.isascii():
            return None
        prefix, sep, rest = value.partition("_")
        if not sep or prefix not in self._accepted:
            return None
        key_id = rest[:KEY_ID_LENGTH]
        tail = rest[KEY_ID_LENGTH + 1 :]
        if (
            rest[KEY_ID_LENGTH : KEY_ID_LENGTH + 1] != "_"
            or not key_id.isalnum()
            or not tail.isalnum()
            or not MIN_SECRET_LENGTH + CHECKSUM_LENGTH
            <= len(tail)
            <= MAX_SECRET_LENGTH + CHECKSUM_LENGTH
            or _checksum(value[:-CHECKSUM_LENGTH]) != value[-CHECKSUM_LENGTH:]
        ):
            return None
        return key_id

    def parse(self, value: object) -> ParsedKey | None:
        """Return the parsed key, or ``None`` when ``value`` is not a well-formed key.

        Never raises, whatever ``value`` is. Checks, cheapest first: type, length bounds,
        alphabet, structure, prefix, checksum.
        """
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(value, str):
            return None
        key_id = self.key_id_of(value)
        if key_id is None:
            return None
        return ParsedKey(prefix=value.partition("_")[0], key_id=key_id, full=value)

    def __repr__(self) -> str:
        return f"KeyFormat(prefix={self.prefix!r}, secret_length={self.secret_length})"


DEFAULT_FORMAT: Final = KeyFormat()


def generate_key(prefix: str = DEFAULT_PREFIX) -> GeneratedKey:
    """Generate a key with the given prefix (a convenience over :class:`KeyFormat`)."""
    return (DEFAULT_FORMAT if prefix == DEFAULT_PREFIX else KeyFormat(prefix)).generate()


def parse_key(value: object, prefix: str = DEFAULT_PREFIX) -> ParsedKey | None:
    """Parse ``value`` as a key of the given prefix; ``None`` if it is not one. Never raises."""
    fmt = DEFAULT_FORMAT if prefix == DEFAULT_PREFIX else KeyFormat(prefix)
    return fmt.parse(value)
