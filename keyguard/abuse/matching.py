"""Finding keyguard keys in bytes: one compiled pattern, then the checksum, in one linear pass.

A key is ``<prefix>_<key_id>_<secret><checksum>``: prefix ``[a-z][a-z0-9]{0,15}``, key id 12
base62 characters, secret 32–64 base62 characters and a 6-character base62 CRC32 checksum of
everything before it (:mod:`keyguard.core.keys`). The pattern searched for is the part after
the prefix, :data:`CANDIDATE` (``_<12 alnum>_<38–70 alnum>`` not followed by another letter or
digit): it begins with a literal ``_``, which lets the regular-expression engine skip ahead at C
speed (a pattern that begins with the prefix's character class is ~25 times slower on source
code, because every lower-case letter starts an attempt). For each candidate the prefix is
read backwards (up to 16 ``[a-z0-9]`` characters starting with a letter) and each possible
prefix, longest first, is checked with :meth:`KeyFormat.parse`, which validates the checksum.
A random string of the right shape passes the checksum once in about 4·10⁹, so look-alikes,
truncated keys and keys with one wrong character are not reported.

:func:`iter_keys` works on a stream in bounded memory (blocks of :data:`BLOCK` bytes with a
small overlap), so a file's size changes only how long it takes. :func:`mask` is how a found
key is shown: the prefix, the key id and the first four characters of the secret, then
``****`` — never the secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Final

from keyguard.core.keys import CHECKSUM_LENGTH, KEY_ID_LENGTH, KeyFormat, ParsedKey

__all__ = [
    "BLOCK",
    "CANDIDATE",
    "KEY_REGEX",
    "RawMatch",
    "is_binary",
    "iter_keys",
    "mask",
]

#: The regular expression to register with a secret scanner (GitHub's partner programme, a
#: custom pattern, gitleaks...): it matches every keyguard key of any prefix. Restrict the
#: prefix (``kg_[A-Za-z0-9]{12}_…``) to match only one deployment's keys. The checksum is what
#: makes a match certain: :func:`keyguard.core.keys.parse_key` checks it.
KEY_REGEX: Final = r"[a-z][a-z0-9]{0,15}_[A-Za-z0-9]{12}_[A-Za-z0-9]{38,70}"

#: What is searched for: everything after the prefix, delimited on the right.
CANDIDATE: Final = re.compile(rb"_[0-9A-Za-z]{12}_[0-9A-Za-z]{38,70}(?![0-9A-Za-z])")

_MAX_PREFIX: Final = 16
_PREFIX_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
_LETTERS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz")
#: The longest key: prefix, separators, key id, 64-character secret and checksum.
_MAX_KEY: Final = _MAX_PREFIX + 2 + KEY_ID_LENGTH + 64 + CHECKSUM_LENGTH
#: Bytes read at a time from a stream; memory use is about twice this.
BLOCK: Final = 1 << 20
#: Bytes kept from one block to the next: a key cut by a block boundary is whole in the next.
_OVERLAP: Final = 2 * _MAX_KEY + 64
#: How far :func:`is_binary` looks (git's own heuristic: a NUL byte in the first 8000 bytes).
SNIFF: Final = 8000

_SECRET_SHOWN: Final = 4


def is_binary(head: bytes) -> bool:
    """Whether content that starts with ``head`` is binary (a NUL byte, as git decides)."""
    return b"\0" in head[:SNIFF]


def mask(parsed: ParsedKey) -> str:
    """``<prefix>_<key_id>_<first 4 characters of the secret>****``."""
    start = len(parsed.prefix) + 1 + KEY_ID_LENGTH + 1
    return parsed.full[: start + _SECRET_SHOWN] + "****"


@dataclass(frozen=True, slots=True)
class RawMatch:
    """A key found in a stream: where (1-based line and column, 0-based byte offset) and what.

    ``repr`` hides the key.
    """

    offset: int
    line: int
    column: int
    key: ParsedKey

    def __repr__(self) -> str:
        return f"RawMatch(line={self.line}, column={self.column}, key={mask(self.key)!r})"


class _Formats:
    """``KeyFormat`` per prefix, built on first use; optionally only some prefixes."""

    __slots__ = ("_cache", "only")

    def __init__(self, only: Collection[str] | None) -> None:
        self.only = None if only is None else frozenset(only)
        self._cache: dict[str, KeyFormat] = {}

    def parse(self, candidate: str, prefix: str) -> ParsedKey | None:
        if self.only is not None and prefix not in self.only:
            return None
        fmt = self._cache.get(prefix)
        if fmt is None:
            fmt = self._cache[prefix] = KeyFormat(prefix)
        return fmt.parse(candidate)


def _key_at(buf: bytes, start: int, end: int, formats: _Formats) -> ParsedKey | None:
    """The key whose ``_<key_id>_…`` part is ``buf[start:end]``, if a prefix before it makes
    the checksum right."""
    lo = start
    floor = max(0, start - _MAX_PREFIX)
    while lo > floor and buf[lo - 1] in _PREFIX_CHARS:
        lo -= 1
    body = buf[start:end].decode("ascii")
    for i in range(lo, start):  # longest prefix first
        if buf[i] in _LETTERS:
            prefix = buf[i:start].decode("ascii")
            parsed = formats.parse(prefix + body, prefix)
            if parsed is not None:
                return parsed
    return None


def iter_keys(
    read: Callable[[int], bytes],
    *,
    prefixes: Collection[str] | None = None,
    block: int = BLOCK,
    first: bytes = b"",
) -> Iterator[RawMatch]:
    """Every key in the stream ``read(n)`` returns (``b""`` at its end), in order.

    ``prefixes`` restricts the prefixes reported (default: any). ``first`` is data already
    read from the stream (the bytes sniffed for :func:`is_binary`). Each byte is searched once,
    plus a small overlap between blocks; memory stays around ``2 * block``.
    """
    formats = _Formats(prefixes)
    buf = first
    base = 0  # absolute offset of buf[0]
    line = 1  # line number at buf[0]
    line_start = 0  # absolute offset where that line starts
    done_until = 0  # absolute end of the last match reported (matches never overlap)
    eof = False
    while not eof:
        data = read(block)
        eof = not data
        buf += data
        if not buf:
            return
        # Candidates ending at the very end of the buffer may continue in the next block; the
        # overlap kept below holds them whole, so leave them for then.
        limit = len(buf) if eof else len(buf) - 1
        cursor, cursor_line, cursor_line_start = 0, line, line_start
        for m in CANDIDATE.finditer(buf):
            start, end = m.span()
            if end > limit:
                break
            if base + start < done_until:
                continue
            key = _key_at(buf, start, end, formats)
            if key is None:
                continue
            key_start = start - len(key.prefix)
            cursor_line += buf.count(b"\n", cursor, key_start)
            nl = buf.rfind(b"\n", cursor, key_start)
            if nl >= 0:
                cursor_line_start = base + nl + 1
            cursor = key_start
            done_until = base + end
            yield RawMatch(
                offset=base + key_start,
                line=cursor_line,
                column=base + key_start - cursor_line_start + 1,
                key=key,
            )
        if eof:
            return
        keep = max(0, len(buf) - _OVERLAP)
        line += buf.count(b"\n", 0, keep)
        nl = buf.rfind(b"\n", 0, keep)
        if nl >= 0:
            line_start = base + nl + 1
        base += keep
        buf = buf[keep:]
