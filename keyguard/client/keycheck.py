"""Say which part of a string that should be an API key is wrong — without repeating any of it.

A keyguard key is ``<prefix>_<key id>_<secret><checksum>`` (see :mod:`keyguard.core.keys`).
:func:`check_key` looks at a candidate the way a person would debug it — stray whitespace or
quotes, the ``UserKey`` scheme pasted along, a character that is not a letter or digit, the
wrong number of ``_`` separators, the prefix, the key id, the length of the secret, the
checksum — and returns the first :class:`KeyProblem` it finds, or ``None`` for a well-formed
key. The final word is :meth:`keyguard.core.keys.KeyFormat.parse`, under the key's own prefix
(any valid prefix) or under the ones a deployment accepts.

Messages name a part, a count or a position, never characters of the candidate: it may be a
real key with one typo, and then all but one of its characters are secret. The one exception is
a prefix that is not the deployment's, printed only once the rest of the key has passed its
checksum (then it is a real key's prefix, which is public).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from keyguard.core.keys import (
    CHECKSUM_LENGTH,
    KEY_ID_LENGTH,
    MAX_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    KeyFormat,
    ParsedKey,
)

__all__ = ["FRAGMENT", "KEY_LIKE", "PARTS", "KeyProblem", "check_key", "parse_any_prefix", "redact"]

_PREFIX_RE: Final = re.compile(r"[a-z][a-z0-9]{0,15}")
_ALLOWED: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_TAIL_MIN: Final = MIN_SECRET_LENGTH + CHECKSUM_LENGTH
_TAIL_MAX: Final = MAX_SECRET_LENGTH + CHECKSUM_LENGTH

#: Every part :func:`check_key` can blame, in the order it checks them.
PARTS: Final = (
    "empty",
    "scheme",
    "quotes",
    "characters",
    "structure",
    "prefix",
    "key_id",
    "length",
    "checksum",
)

#: Anything shaped like a keyguard key (any prefix, any case, at least 16 secret characters: a
#: truncated key still carries ~95 bits). Not anchored, so it is found inside longer text.
KEY_LIKE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}_[0-9A-Za-z]{12}_[0-9A-Za-z]{16,}")
_FORMATS: dict[str, KeyFormat] = {}


#: A run of this many characters of a secret is a fragment worth hiding (8 base62 characters
#: carry ~48 bits).
FRAGMENT: Final = 8


def redact(text: str, *secrets: str) -> str:
    """``text`` with every key-shaped substring, and every run of :data:`FRAGMENT` or more
    characters of each of ``secrets``, made ``<redacted>``.

    For a key, pass its secret part (what follows the key id): the key id is public.
    """
    covered = [False] * len(text)
    for secret in secrets:
        for start in range(len(secret) - FRAGMENT + 1):
            window = secret[start : start + FRAGMENT]
            found = text.find(window)
            while found != -1:
                covered[found : found + FRAGMENT] = [True] * FRAGMENT
                found = text.find(window, found + 1)
    if any(covered):
        parts: list[str] = []
        for i, char in enumerate(text):
            if not covered[i]:
                parts.append(char)
            elif i == 0 or not covered[i - 1]:
                parts.append("<redacted>")
        text = "".join(parts)
    return KEY_LIKE.sub("<redacted>", text)


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """Why a string is not a key: the ``part`` at fault (one of :data:`PARTS`) and a sentence
    for a person that contains none of the string."""

    part: str
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.message}"


def _format(prefix: str) -> KeyFormat:
    fmt = _FORMATS.get(prefix)
    if fmt is None:
        if len(_FORMATS) > 64:
            _FORMATS.clear()
        fmt = _FORMATS[prefix] = KeyFormat(prefix)
    return fmt


def parse_any_prefix(value: str) -> ParsedKey | None:
    """``value`` parsed under its own prefix (any valid prefix), or ``None``. Never raises."""
    prefix = value.partition("_")[0]
    if _PREFIX_RE.fullmatch(prefix) is None:
        return None
    return _format(prefix).parse(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_key(value: object, *, prefixes: Collection[str] | None = None) -> KeyProblem | None:
    """The first thing wrong with ``value`` as an API key, or ``None`` if it is a key.

    ``prefixes`` restricts the prefixes accepted (a deployment's); by default any valid prefix
    is. Surrounding whitespace is an error here: callers that read keys from files or
    environment variables strip it first.
    """
    if not isinstance(value, str):
        return KeyProblem("empty", f"expected the key as text, not {type(value).__name__}")
    if not value.strip():
        return KeyProblem("empty", "it is empty")
    if value != value.strip():
        return KeyProblem(
            "characters",
            "it has leading or trailing whitespace (a newline from a file or 'echo'?)",
        )
    head = value.split(" ", 1)[0].lower()
    if " " in value and head in ("userkey", "bearer", "authorization:"):
        return KeyProblem(
            "scheme",
            "it includes the header's scheme: give only the key itself (the client adds "
            "'Authorization: UserKey ')",
        )
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return KeyProblem("quotes", "it is wrapped in quotes: remove them")
    for position, char in enumerate(value, 1):
        if char not in _ALLOWED:
            kind = "a space" if char == " " else "not a letter, digit or '_'"
            return KeyProblem(
                "characters",
                f"character {position} of {len(value)} is {kind} (keys are ASCII letters, "
                "digits and two '_')",
            )
    separators = value.count("_")
    if separators != 2:
        return KeyProblem(
            "structure",
            f"it has {_plural(separators, 'underscore')}; a key has exactly two: "
            "<prefix>_<key id>_<secret and checksum>",
        )
    prefix, key_id, tail = value.split("_")
    if _PREFIX_RE.fullmatch(prefix) is None:
        return KeyProblem(
            "prefix",
            f"the prefix (before the first '_', {_plural(len(prefix), 'character')}) must be "
            "1-16 lower-case letters or digits, starting with a letter",
        )
    if len(key_id) != KEY_ID_LENGTH:
        return KeyProblem(
            "key_id",
            f"the key id (between the two '_') has {_plural(len(key_id), 'character')}; "
            f"it must have {KEY_ID_LENGTH}",
        )
    if not _TAIL_MIN <= len(tail) <= _TAIL_MAX:
        issue = "was cut short" if len(tail) < _TAIL_MIN else "has extra characters"
        return KeyProblem(
            "length",
            f"the part after the key id has {_plural(len(tail), 'character')}; it must have "
            f"{_TAIL_MIN} to {_TAIL_MAX} (the secret and a {CHECKSUM_LENGTH}-character "
            f"checksum): the key {issue}",
        )
    if _format(prefix).parse(value) is None:
        return KeyProblem(
            "checksum",
            f"the last {CHECKSUM_LENGTH} characters (the checksum) do not match the rest: a "
            "character was mistyped or changed (for example O for 0, l for 1, or a changed "
            "case), or the key was copied incompletely",
        )
    if prefixes is not None and prefix not in prefixes:
        accepted = ", ".join(repr(p) for p in sorted(prefixes)) or "none"
        return KeyProblem(
            "prefix",
            f"the key's prefix {prefix!r} is not one this deployment accepts ({accepted}): "
            "it is a key for another deployment or environment",
        )
    return None
