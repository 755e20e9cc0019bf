"""The lifetime policy for keys created over HTTP: every key expires, within a maximum.

Keys minted by a network API outlive the requests that made them; the platform asks for
rotation every 90 days. So a key created through the management API gets an expiry even when
the request names none — the maximum lifetime, or the acting key's own expiry if that comes
first (a child may not outlive its parent) — and a request for a later one is refused
(``422``, naming ``expires_in`` or ``expires_at``) or, with ``on_excess="clamp"``, shortened to
the maximum with a warning in the response. ``max_lifetime=None`` lifts the policy (the
:class:`~keyguard.management.KeyManager`'s own ``max_lifetime``, if any, still applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from keyguard.core.clock import to_iso
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.management.api.problems import ApiError
from keyguard.management.validation import MAX_TIMESTAMP, human

__all__ = ["DEFAULT_HTTP_MAX_LIFETIME", "LifetimePolicy"]

#: 90 days: the platform's rotation period.
DEFAULT_HTTP_MAX_LIFETIME: Final = 90 * 86400.0


@dataclass(frozen=True, slots=True)
class LifetimePolicy:
    """``max_lifetime`` seconds at most (``None``: no limit); ``on_excess`` says what happens to
    a request for more: ``"refuse"`` (default) or ``"clamp"``."""

    max_lifetime: float | None = DEFAULT_HTTP_MAX_LIFETIME
    on_excess: Literal["refuse", "clamp"] = "refuse"

    def __post_init__(self) -> None:
        limit = self.max_lifetime
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0
        ):
            raise ConfigurationError("max_lifetime must be a positive number of seconds or None")
        if self.on_excess not in ("refuse", "clamp"):
            raise ConfigurationError("on_excess must be 'refuse' or 'clamp'")

    def resolve(
        self, data: Mapping[str, Any], now: float, parent_expiry: float | None
    ) -> tuple[float | None, list[str]]:
        """The expiry to create a key with, from the validated request fields
        (``expires_in`` seconds or ``expires_at`` epoch seconds), and any warnings."""
        requested: float | None = None
        field = "expires_in" if "expires_in" in data else "expires_at"
        if "expires_in" in data:
            requested = now + float(data["expires_in"])
        elif "expires_at" in data:
            requested = float(data["expires_at"])
            if requested <= now:
                raise ApiError(
                    ErrorCode.INVALID_FIELD,
                    f"expires_at: {to_iso(requested)} is not in the future",
                    field="expires_at",
                )
        if requested is not None and requested > MAX_TIMESTAMP:
            raise ApiError(ErrorCode.INVALID_FIELD, f"{field}: out of range", field=field)
        if self.max_lifetime is None:
            return requested, []
        limit = min(now + self.max_lifetime, MAX_TIMESTAMP)
        if requested is None:
            return (limit if parent_expiry is None else min(limit, parent_expiry)), []
        if requested <= limit + 1e-6:
            return requested, []
        shown = human(self.max_lifetime)
        if self.on_excess == "refuse":
            raise ApiError(
                ErrorCode.INVALID_FIELD,
                f"{field}: beyond the maximum lifetime of {shown} for keys created over HTTP "
                f"(latest allowed: {to_iso(limit)})",
                field=field,
            )
        return limit, [
            f"{field} was beyond the maximum lifetime of {shown} for keys created over HTTP; "
            f"the key expires at {to_iso(limit)}"
        ]
