"""Input validation for key management: pure checks that turn caller input into stored values.

Every value an operator, the CLI or the HTTP API hands to :class:`~keyguard.management.KeyManager`
(names, owners, reasons, times, durations, metadata, rate-limit specs) passes through one of these
functions first. Each returns the normalised value or raises
:class:`~keyguard.core.errors.ConfigurationError` with a message fit for an operator (bounded
lengths, no control characters, aware datetimes only, JSON-only metadata), so nothing malformed
reaches a store, a log line or an audit event. The audit renderings of changed fields live here too.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import format_windows, parse_windows
from keyguard.core.records import KeyRecord, dumps_metadata

__all__ = [
    "MAX_ACTOR_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_METADATA_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_OWNER_LENGTH",
    "MAX_REASON_LENGTH",
    "MAX_TIMESTAMP",
    "UNSET",
    "Duration",
    "Timestamp",
    "Unset",
    "description",
    "human",
    "issued",
    "metadata",
    "owner",
    "rate_limit",
    "reason",
    "seconds",
    "shown",
    "text",
    "timestamp",
]

MAX_NAME_LENGTH: Final = 200
MAX_OWNER_LENGTH: Final = 200
MAX_ACTOR_LENGTH: Final = 200
MAX_REASON_LENGTH: Final = 500
MAX_DESCRIPTION_LENGTH: Final = 1000
MAX_METADATA_BYTES: Final = 16 * 1024
#: 9999-12-31T23:59:59Z: later times cannot be rendered as ISO-8601 by ``datetime``.
MAX_TIMESTAMP: Final = 253_402_300_799.0

Timestamp = float | int | datetime
Duration = float | int | timedelta


class Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field alone" for :meth:`KeyManager.update` fields where ``None`` means "clear".
UNSET: Final = Unset.UNSET


def text(value: object, what: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ConfigurationError(f"{what} is longer than {max_length} characters")
    if not value.isprintable():
        raise ConfigurationError(f"{what} must not contain control characters or line breaks")
    return value


def owner(value: object) -> str | None:
    return None if value is None else text(value, "owner", MAX_OWNER_LENGTH)


def reason(value: object) -> str:
    return text(value, "reason", MAX_REASON_LENGTH)


def description(value: object) -> str | None:
    """A free-text description; ``None`` or blank means none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text(value, "description", MAX_DESCRIPTION_LENGTH)


def timestamp(value: object, what: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"{what} must be a timezone-aware datetime (naive times are ambiguous)"
            )
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be epoch seconds or an aware datetime, not {type(value).__name__}"
        )
    ts = float(value)
    if not math.isfinite(ts) or not 0 <= ts <= MAX_TIMESTAMP:
        raise ConfigurationError(f"{what} is out of range")
    return ts


def seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be seconds or a timedelta, not {type(value).__name__}"
        )
    result = float(value)
    if not math.isfinite(result):
        raise ConfigurationError(f"{what} must be finite")
    return result


def metadata(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, not {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigurationError("metadata keys must be strings")
    try:
        encoded = dumps_metadata(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"metadata must be JSON-serialisable: {exc}") from None
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ConfigurationError(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB")
    # Store a deep copy decoupled from the caller's (possibly mutable) objects.
    result: dict[str, Any] = json.loads(encoded)
    return result


def rate_limit(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"rate_limit must be a string, not {type(value).__name__}")
    return format_windows(parse_windows(value))


def issued(record: KeyRecord) -> float:
    """When the current secret was issued: its last rotation, else its creation."""
    return record.rotated_at if record.rotated_at is not None else record.created_at


def shown(field: str, value: Any) -> Any:
    """An audit-friendly rendering of a changed field (sets sorted, times as ISO-8601)."""
    if field == "scopes":
        return sorted(value)
    if field in ("expires_at", "suspended_at"):
        return to_iso(value)
    if field == "metadata":
        return {"keys": sorted(value)}
    if field == "allowed_networks":
        return list(value)
    return value


def human(duration: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if duration >= size and duration % size == 0:
            return f"{int(duration // size)}{unit}"
    return f"{duration:g}s"
