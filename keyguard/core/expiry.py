"""The "your key expires soon" response header, computed from a record: a pure function.

A client whose key is about to stop working should hear about it from the responses it already
gets, not from an outage. :func:`expiry_warning` gives the header to add to an *allowed*
response when the credential the request used stops working within ``window`` seconds::

    API-Key-Expires: 2030-01-31T12:00:00Z

The value is the instant (ISO-8601, UTC, whole seconds, rounded down) after which the
credential is refused: the key's ``expires_at``, or — when the request was authenticated with
the previous secret of a rotated key, still inside its grace period — the end of that grace
period if it comes first (the client must switch to the new secret by then). Nothing is sent
for keys that do not expire within the window, so the header's presence is the signal. The
value is absolute, not a countdown, so it can be computed once per cached verification and
stays true for every response it is attached to.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from keyguard.core.clock import to_iso

if TYPE_CHECKING:
    from keyguard.core.records import KeyRecord

__all__ = ["DEFAULT_WARNING_WINDOW", "EXPIRY_HEADER", "credential_deadline", "expiry_warning"]

EXPIRY_HEADER: Final = "API-Key-Expires"
#: Seven days, the same as the key manager's "expiring soon" signal.
DEFAULT_WARNING_WINDOW: Final = 7 * 86400.0


def credential_deadline(record: KeyRecord, *, previous_secret: bool = False) -> float | None:
    """When the credential a request used stops working (``None``: it does not expire)."""
    deadline = record.expires_at
    grace = record.previous_expires_at
    if previous_secret and grace is not None:
        deadline = grace if deadline is None else min(deadline, grace)
    return deadline


def expiry_warning(
    record: KeyRecord,
    now: float,
    *,
    window: float = DEFAULT_WARNING_WINDOW,
    previous_secret: bool = False,
) -> tuple[tuple[str, str], ...]:
    """``((EXPIRY_HEADER, "<ISO time>"),)`` when the credential stops working within
    ``window`` seconds of ``now`` (and has not stopped yet), else ``()``."""
    deadline = credential_deadline(record, previous_secret=previous_secret)
    if deadline is None or not now < deadline <= now + window:
        return ()
    return (expiry_header(deadline),)


def expiry_header(deadline: float) -> tuple[str, str]:
    """The warning header for a credential that stops working at ``deadline``."""
    return (EXPIRY_HEADER, to_iso(math.floor(deadline)) or "")
