"""What every store does alike with idempotency entries: check one before a write, and its
JSON form (SQLite and Redis keep entries as JSON; the memory store keeps the values)."""

from __future__ import annotations

import json

from keyguard.core.errors import AlreadyProcessed, ConfigurationError
from keyguard.core.records import IdempotencyEntry, KeyRecord, dumps_metadata

__all__ = ["already_processed", "check_entry", "decode_entry", "encode_entry"]


def check_entry(entry: IdempotencyEntry | None, record: KeyRecord) -> None:
    """Refuse an entry that does not belong with ``record`` or cannot be stored."""
    if entry is None:
        return
    if entry.key_id != record.key_id:
        raise ConfigurationError("an idempotency entry must name the key it is written with")
    if not entry.expires_at > entry.at:
        raise ConfigurationError("an idempotency entry must expire after it was made")
    try:
        dumps_metadata(entry.outcome)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"an idempotency outcome must be JSON ({exc})") from None


def already_processed(entry: IdempotencyEntry) -> AlreadyProcessed:
    return AlreadyProcessed(
        f"a request with this idempotency key already changed key {entry.key_id}",
        key_id=entry.key_id,
    )


def encode_entry(entry: IdempotencyEntry) -> str:
    return json.dumps(entry.to_dict(), separators=(",", ":"), sort_keys=True, allow_nan=False)


def decode_entry(raw: str | bytes) -> IdempotencyEntry:
    return IdempotencyEntry.from_dict(json.loads(raw))
