"""Where ``keyguard review`` learns which scopes each key actually used.

:class:`UsageSource` is the one question the review asks: *how many requests did this key make
that needed each scope, since a given time?* — or ``None`` when the source cannot answer for
that whole period (it started recording later, or knows nothing of the key), in which case the
review makes no suggestion rather than a wrong one. The usage counters of the observability
layer are the intended real source (they are not wired yet); :class:`MappingUsageSource` answers
from counts given to it, for tests and for ``keyguard review --usage FILE``, whose JSON form is::

    {"since": "2030-01-01T00:00:00Z",
     "keys": {"3F9aQ2xLm7Pw": {"agents:read": 1200, "tasks:read": 3}}}

``since`` is when the counting started; a key absent from ``keys`` made no request since then.
A scope counts a request that *needed* it (the route's requirement), not the key's grants.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from keyguard.core.errors import ConfigurationError, ScopeError
from keyguard.core.scopes import parse_required

__all__ = ["MappingUsageSource", "UsageSource", "load_usage"]


@runtime_checkable
class UsageSource(Protocol):
    """Per-key scope usage (see the module docstring)."""

    def scope_usage(self, key_id: str, since: float) -> Mapping[str, int] | None:
        """Requests per needed scope made by ``key_id`` since ``since`` (epoch seconds); an
        empty mapping for a key that made none; ``None`` when the source has no complete data
        for that period."""
        ...


class MappingUsageSource:
    """Usage counted elsewhere and handed over: ``{key_id: {scope: requests}}``, complete
    from ``since`` (epoch seconds) on."""

    __slots__ = ("_usage", "since")

    def __init__(self, usage: Mapping[str, Mapping[str, int]], *, since: float) -> None:
        clean: dict[str, Mapping[str, int]] = {}
        for key_id, scopes in usage.items():
            if not isinstance(key_id, str) or not isinstance(scopes, Mapping):
                raise ConfigurationError("usage must map key ids to {scope: count} mappings")
            counts: dict[str, int] = {}
            for scope, count in scopes.items():
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ConfigurationError(
                        f"usage of {scope!r} by {key_id!r}: counts are integers >= 0"
                    )
                try:
                    counts[parse_required(scope)] = count
                except ScopeError as exc:
                    raise ConfigurationError(f"usage of {key_id!r}: {exc}") from None
            clean[key_id] = MappingProxyType(counts)
        self._usage = clean
        self.since = float(since)

    def scope_usage(self, key_id: str, since: float) -> Mapping[str, int] | None:
        if since < self.since:
            return None  # the period asked about starts before our data does
        return self._usage.get(key_id, MappingProxyType({}))

    def __repr__(self) -> str:
        return f"MappingUsageSource(keys={len(self._usage)}, since={self.since})"


def _when(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.timestamp()
    raise ConfigurationError(
        'usage file: "since" must be an ISO-8601 time with a zone (e.g. 2030-01-01T00:00:00Z) '
        "or epoch seconds"
    )


def load_usage(text: str) -> MappingUsageSource:
    """A :class:`MappingUsageSource` from the JSON form in the module docstring."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"usage file: not JSON ({exc})") from None
    if not isinstance(data, dict) or "since" not in data or not isinstance(data.get("keys"), dict):
        raise ConfigurationError('usage file: expected {"since": ..., "keys": {key_id: {...}}}')
    try:
        return MappingUsageSource(data["keys"], since=_when(data["since"]))
    except ConfigurationError as exc:
        raise ConfigurationError(f"usage file: {exc}") from None
