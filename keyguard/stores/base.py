"""The pieces store backends share: paging cursors, limits and the listing filter.

The protocol itself, :class:`~keyguard.core.store.KeyStore`, lives in ``keyguard.core`` (the
verifier depends on it) and is re-exported here for backends and older imports.
"""

from __future__ import annotations

import base64
import binascii

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.core.store import KeyStore

__all__ = [
    "MAX_CLAIM_NAME",
    "MAX_PAGE_SIZE",
    "KeyStore",
    "check_claim",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "matches",
]

MAX_PAGE_SIZE = 1000
#: The longest notification marker name (``claim_notification``).
MAX_CLAIM_NAME = 200


def check_claim(name: str, ttl: float) -> None:
    """Refuse a marker name that is empty, too long or not printable ASCII without spaces,
    and a ``ttl`` that is not a positive number of seconds."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_CLAIM_NAME
        or not all("!" <= c <= "~" for c in name)
    ):
        raise ConfigurationError(
            f"a notification marker name is 1 to {MAX_CLAIM_NAME} visible ASCII characters"
        )
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 1e10:
        raise ConfigurationError("a notification marker's ttl is a positive number of seconds")


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"limit must be an integer between 1 and {MAX_PAGE_SIZE}")
    return limit


def encode_cursor(record: KeyRecord) -> str:
    raw = f"{record.created_at!r}|{record.key_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of :func:`encode_cursor`; a malformed cursor is a ConfigurationError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        created, _, key_id = raw.partition("|")
        return float(created), key_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError("malformed cursor") from exc


def matches(
    record: KeyRecord,
    *,
    owner: str | None,
    status: KeyStatus | None,
    created_by: str | None,
    now: float,
) -> bool:
    """The listing filter, shared by stores that filter in Python."""
    return (
        (owner is None or record.owner == owner)
        and (created_by is None or record.created_by == created_by)
        and (status is None or record.status(now) is status)
    )
