"""Window grammar: what a rate limit is (:class:`Window`), how it is written
(``"burst=20/10s, 100/minute, 5000/day"``), and the checks a window set must pass before any
decision uses it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from keyguard.core.errors import ConfigurationError

#: Windows up to this period (seconds) and :data:`EXACT_MAX_LIMIT` are exact sliding logs.
EXACT_MAX_PERIOD: Final = 3600.0
#: An exact window keeps one timestamp per admitted unit; above this limit it is bucketed.
EXACT_MAX_LIMIT: Final = 10_000
#: Buckets per long window; the release of a unit is late by less than ``period / 96``.
LONG_WINDOW_BUCKETS: Final = 96
#: Bounds that keep every count and timestamp exact in the Lua script's doubles (< 2^53).
MAX_LIMIT: Final = 2**40
MAX_PERIOD: Final = 10 * 366 * 86400.0

_US: Final = 1_000_000
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_NAMED_PERIODS: Final = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week"}


def _to_us(seconds: float) -> int:
    # Round half up. The Redis backend converts an explicit (test) clock the same way, so
    # both backends see the same microsecond.
    return math.floor(seconds * 1e6 + 0.5)


def _derive_name(period: float) -> str:
    if period == int(period):
        p = int(period)
        if p in _NAMED_PERIODS:
            return _NAMED_PERIODS[p]
        for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
            if p % size == 0:
                return f"{p // size}{suffix}"
        return f"{p}s"
    return f"{period:g}s"


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` units in any ``period`` seconds.

    ``name`` identifies the window in the ``RateLimit`` headers (letters, digits, ``_.-``);
    it defaults to a name derived from the period: ``"minute"``, ``"day"``, ``"10s"``.
    """

    limit: int
    period: float
    name: str = ""

    def __post_init__(self) -> None:
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_LIMIT
        ):
            raise ConfigurationError(
                f"window limit must be an integer in [1, 2**40], got {self.limit!r}"
            )
        if (
            isinstance(self.period, bool)
            or not isinstance(self.period, int | float)
            or not 0.001 <= self.period <= MAX_PERIOD
        ):
            raise ConfigurationError(
                f"window period must be seconds in [0.001, 10 years], got {self.period!r}"
            )
        if not self.name:
            object.__setattr__(self, "name", _derive_name(self.period))
        elif not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ConfigurationError(
                f"window name must be 1-32 letters, digits or '_.-', got {self.name!r}"
            )

    @property
    def exact(self) -> bool:
        """Whether this window is an exact sliding log (else 96 buckets, see module doc)."""
        return self.period <= EXACT_MAX_PERIOD and self.limit <= EXACT_MAX_LIMIT

    def __str__(self) -> str:
        return format_windows((self,))


DEFAULT_WINDOWS: Final[tuple[Window, ...]] = (
    Window(20, 10, "burst"),
    Window(100, 60, "minute"),
    Window(5000, 86400, "day"),
)

# ---------------------------------------------------------------------------------------------
# Parsing and formatting: "burst=20/10s, 100/minute, 5000/day"

_UNITS: Final = {
    "": 1,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_ITEM_RE: Final = re.compile(
    r"\s*(?:(?P<name>[^=\s]+)\s*=\s*)?(?P<limit>\d+)\s*(?:/|per\s)\s*"
    r"(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]*)\s*",
    re.IGNORECASE,
)


def parse_windows(spec: str) -> tuple[Window, ...]:
    """Parse ``"20/10s, 100/minute, 5000/day"`` into windows.

    Items are ``[name=]limit/[count]unit`` separated by commas; units are s, m/min, h, d, w
    and their long forms (``100/min``, ``5000/1d``, ``10/30s``, ``burst=20/10s``); a bare
    number is seconds. Names must be unique. Raises :class:`ConfigurationError`. The result
    is cached and shared, so repeated specs (per-key overrides) return the same tuple.
    """
    if not isinstance(spec, str):
        raise ConfigurationError(f"rate-limit spec must be a string, got {type(spec).__name__}")
    return _parse_windows(spec)


@lru_cache(maxsize=1024)
def _parse_windows(spec: str) -> tuple[Window, ...]:
    if not spec.strip():
        raise ConfigurationError("empty rate-limit spec")
    windows: list[Window] = []
    for item in spec.split(","):
        m = _ITEM_RE.fullmatch(item)
        unit = m and _UNITS.get(m["unit"].lower())
        if m is None or unit is None or (m["count"] is None and not m["unit"]):
            raise ConfigurationError(
                f"bad rate-limit item {item.strip()!r}: expected e.g. '100/minute' or '20/10s'"
            )
        count = float(m["count"]) if m["count"] is not None else 1.0
        period = count * unit
        windows.append(
            Window(int(m["limit"]), int(period) if period.is_integer() else period, m["name"] or "")
        )
    return check_windows(tuple(windows))


def check_windows(windows: Sequence[Window]) -> tuple[Window, ...]:
    """Validate a window set (non-empty, unique names); return it as a tuple."""
    windows = tuple(windows)
    if not windows:
        raise ConfigurationError("a rate limit needs at least one window")
    if not all(isinstance(w, Window) for w in windows):
        raise ConfigurationError("rate-limit windows must be Window instances")
    names = [w.name for w in windows]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"rate-limit window names must be unique, got {names}")
    return windows


def _format_period(period: float) -> str:
    if period == int(period):
        p = int(period)
        for size, word in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
            if p == size:
                return word
        for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
            if p % size == 0:
                return f"{p // size}{suffix}"
        return f"{p}s"
    return f"{period!r}s"


def format_windows(windows: Sequence[Window]) -> str:
    """The inverse of :func:`parse_windows`: ``"burst=20/10s, 100/minute, 5000/day"``."""
    out = []
    for w in windows:
        prefix = "" if w.name == _derive_name(w.period) else f"{w.name}="
        out.append(f"{prefix}{w.limit}/{_format_period(w.period)}")
    return ", ".join(out)


def validate_cost(cost: int, windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
    """Raise :class:`ConfigurationError` unless ``cost`` can ever be admitted under ``windows``.

    Call it when routes are configured: a request costing more than the smallest limit would
    be refused forever (``retry_after=None``).
    """
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")
    smallest = min(w.limit for w in windows)
    if cost > smallest:
        raise ConfigurationError(
            f"a request costing {cost} can never be admitted: the smallest window limit is "
            f"{smallest} ({format_windows(windows)})"
        )
