"""Per-key rate limits: several windows enforced at once, decided by one pure function.

**Admission.** A key has windows ``(N_i, W_i)`` (default: 20 per 10 s, 100 per minute, 5,000
per day). A request of cost ``c`` at time ``t`` is admitted iff, for *every* window,
``units admitted in (t - W_i, t] + c <= N_i``. Admission is all-or-nothing: a refused request
consumes nothing in any window, so a client that waits as told gets in exactly when told.

**Retry-After.** For each violated window, the earliest moment it has room for ``c`` units if
nothing else is admitted meanwhile; ``retry_after`` is the latest of those moments, in whole
seconds rounded up, at least 1. When ``c`` exceeds some window's ``N`` the request can never be
admitted: it is refused with ``retry_after=None`` (catch this at configuration time with
:func:`validate_cost`).

**Exact and bucketed windows.** A window with ``period <= EXACT_MAX_PERIOD`` (1 h) and
``limit <= EXACT_MAX_LIMIT`` is exact: all exact windows share one sliding log of admitted
unit timestamps, trimmed to the longest exact window (so its length is bounded by that
window's limit). A longer window (the day) counts units in ``LONG_WINDOW_BUCKETS`` (96)
buckets of ``period / 96`` (15 min for a day), aligned to the epoch. Every bucket that
overlaps ``(t - W, t]`` is counted in full, so a bucketed window never admits more than the
exact formula would; a unit admitted at ``s`` stops counting at ``s + W + period/96`` at the
latest instead of ``s + W`` (at most one bucket late). Its refusals are therefore those of
the exact rule applied to the window ``(t - W - W/96, t]``.

**Time.** All arithmetic is on integer microseconds (``round(now * 1e6)``), so the Redis
Lua script, which implements the same function, reaches bit-identical decisions. A clock that
goes backwards never admits extra requests: the decision uses ``max(now, last seen now)``.

**Headers.** :func:`rate_limit_headers` renders a decision as ``Retry-After`` (refusals),
the IETF ``RateLimit-Policy``/``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-10
and -11 syntax) and the legacy ``X-RateLimit-*`` trio.

**Backends.** :class:`MemoryRateLimiter` (in-process) and
:class:`keyguard.stores.redis_ratelimit.RedisRateLimiter` (distributed) satisfy
:class:`RateLimiter`; :class:`ResilientLimiter` wraps a remote backend with a circuit breaker
and a fail-local, fail-open or fail-closed mode.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, NamedTuple, Protocol, runtime_checkable

from cachetools import LRUCache

from keyguard.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_WINDOWS",
    "EXACT_MAX_LIMIT",
    "EXACT_MAX_PERIOD",
    "LONG_WINDOW_BUCKETS",
    "MemoryRateLimiter",
    "RateDecision",
    "RateLimiter",
    "RateState",
    "ResilientLimiter",
    "Window",
    "WindowStatus",
    "decide",
    "format_windows",
    "parse_windows",
    "rate_limit_headers",
    "validate_cost",
]

logger = logging.getLogger("keyguard.ratelimit")

#: Windows up to this period (seconds) and :data:`EXACT_MAX_LIMIT` are exact sliding logs.
EXACT_MAX_PERIOD: Final = 3600.0
#: An exact window keeps one timestamp per admitted unit; above this limit it is bucketed.
EXACT_MAX_LIMIT: Final = 10_000
#: Buckets per long window; the release of a unit is late by at most ``period / 96``.
LONG_WINDOW_BUCKETS: Final = 96

_US: Final = 1_000_000
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_NAMED_PERIODS: Final = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week"}


def _to_us(seconds: float) -> int:
    # Round half up, exactly as the Lua script does (math.floor(x + 0.5)).
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
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(f"window limit must be an integer >= 1, got {self.limit!r}")
        if (
            isinstance(self.period, bool)
            or not isinstance(self.period, int | float)
            or not math.isfinite(self.period)
            or self.period < 0.001
        ):
            raise ConfigurationError(
                f"window period must be a number of seconds >= 0.001, got {self.period!r}"
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


# ---------------------------------------------------------------------------------------------
# Decisions


class WindowStatus(NamedTuple):
    """One window's state after a decision.

    ``remaining``: units still available (after this request, if admitted). ``reset``: whole
    seconds (rounded up) until the window next has more room: for a violated window, until it
    has room for the refused request (its share of Retry-After; the full period when the cost
    exceeds the limit); otherwise until its oldest counted unit expires (0 when none).
    """

    limit: int
    period: float
    name: str
    remaining: int
    reset: int


class WindowPlan:
    """A window set compiled once: per-window specs, header fragments, Redis script arguments.

    Obtained from :func:`plan_for` (cached); the hot path only reads it.
    """

    __slots__ = (
        "max_exact",
        "min_limit",
        "policy",
        "redis_args",
        "rings",
        "specs",
        "ttl_ms",
        "windows",
    )

    def __init__(self, windows: tuple[Window, ...]) -> None:
        windows = check_windows(windows)
        self.windows = windows
        self.max_exact = max((_to_us(w.period) for w in windows if w.exact), default=0)
        self.min_limit = min(w.limit for w in windows)
        specs = []
        rings = []
        for w in windows:
            period = _to_us(w.period)
            if w.exact:
                width = 0
                # The longest exact window is the whole trimmed log: no search needed.
                kind = _WHOLE_LOG if period == self.max_exact else _LOG
            else:
                # Rounded up, so LONG_WINDOW_BUCKETS buckets always cover the period.
                width = -(-period // LONG_WINDOW_BUCKETS)
                kind = _RING
                rings.append((period, width))
            specs.append((w.limit, period, width, kind))
        #: Per window: (limit, period µs, bucket width µs or 0, kind).
        self.specs: tuple[tuple[int, int, int, int], ...] = tuple(specs)
        #: Distinct (period µs, bucket width µs) of the bucketed windows.
        self.rings: tuple[tuple[int, int], ...] = tuple(dict.fromkeys(rings))
        #: The constant ``RateLimit-Policy`` field value.
        self.policy = ", ".join(
            f'"{w.name}";q={w.limit};w={max(1, math.ceil(w.period))}' for w in windows
        )
        # Idle state must outlive the longest window plus one bucket of release delay.
        self.ttl_ms = max(period + width for _l, period, width, _k in specs) // 1000 + 1000
        args = [str(self.ttl_ms), str(self.max_exact), str(len(specs))]
        for limit, period, width, _kind in specs:
            args += [str(limit), str(period), str(width)]
        #: ARGV tail of the Redis script (after now, cost, consume).
        self.redis_args: tuple[str, ...] = tuple(args)

    def __repr__(self) -> str:
        return f"WindowPlan({format_windows(self.windows)!r})"


_WHOLE_LOG: Final = 0
_LOG: Final = 1
_RING: Final = 2


class RateDecision(NamedTuple):
    """The outcome of one rate-limit check.

    ``windows`` lists every window's status and ``violated`` the ones that refused the
    request; both are built on access from ``plan`` and the flat ``counts``
    (``remaining, reset`` per window, in plan order). ``degraded``: the authoritative backend
    was unreachable and a fallback decided. ``unavailable``: nothing could decide (fail-closed
    mode); answer 503 ``auth_unavailable``, not 429. ``bool(decision)`` is ``allowed``.

    A named tuple of flat values because one is built on every request: a frozen dataclass
    with a status object per window costs several times more than the decision itself.
    """

    allowed: bool
    retry_after: int | None
    plan: WindowPlan | None = None
    counts: tuple[int, ...] = ()
    violated_mask: int = 0
    degraded: bool = False
    unavailable: bool = False

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def windows(self) -> tuple[WindowStatus, ...]:
        """Every window's status (empty when no backend could tell)."""
        plan, counts = self.plan, self.counts
        if plan is None or not counts:
            return ()
        return tuple(
            WindowStatus(w.limit, w.period, w.name, counts[2 * i], counts[2 * i + 1])
            for i, w in enumerate(plan.windows)
        )

    @property
    def violated(self) -> tuple[WindowStatus, ...]:
        """The windows that refused the request (empty when admitted)."""
        mask = self.violated_mask
        return tuple(s for i, s in enumerate(self.windows) if mask >> i & 1)

    @property
    def policy(self) -> str:
        """The ``RateLimit-Policy`` field value of the window set ("" when unknown)."""
        return "" if self.plan is None else self.plan.policy


_new_tuple = tuple.__new__
_PLANS_BY_ID: dict[int, WindowPlan] = {}
_PLANS: dict[tuple[Window, ...], WindowPlan] = {}


def plan_for(windows: Sequence[Window]) -> WindowPlan:
    """The compiled form of a window set, cached by identity and by value."""
    plan = _PLANS_BY_ID.get(id(windows))
    if plan is not None and plan.windows is windows:
        return plan
    key = windows if isinstance(windows, tuple) else tuple(windows)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 1024:
            _PLANS.clear()
        plan = _PLANS[key] = WindowPlan(key)
    if len(_PLANS_BY_ID) >= 1024:
        _PLANS_BY_ID.clear()
    # Cached by id() only when the plan holds that very tuple, so the `is` check above
    # catches an id() recycled after the tuple was freed.
    if plan.windows is windows:
        _PLANS_BY_ID[id(windows)] = plan
    return plan


class _Ring:
    """A bucketed window: ``[index, units]`` pairs, oldest first, and their running total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0


class RateState:
    """The rate-limit state of one bucket (key).

    ``last``: the latest ``now`` seen (µs). ``log``: one timestamp (µs) per admitted unit of
    the exact windows, ascending. ``rings``: a long window's period (µs) -> its buckets.
    """

    __slots__ = ("last", "log", "rings")

    def __init__(self) -> None:
        self.last = -(2**62)
        self.log: deque[int] = deque()
        self.rings: dict[int, _Ring] = {}

    def copy(self) -> RateState:
        new = RateState()
        new.last = self.last
        new.log = deque(self.log)
        for period, ring in self.rings.items():
            r = new.rings[period] = _Ring()
            r.buckets = deque([b[0], b[1]] for b in ring.buckets)
            r.total = ring.total
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateState):
            return NotImplemented
        return (
            self.last == other.last
            and self.log == other.log
            and {p: (list(r.buckets), r.total) for p, r in self.rings.items() if r.total}
            == {p: (list(r.buckets), r.total) for p, r in other.rings.items() if r.total}
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RateState(last={self.last}, log={len(self.log)} units, rings={len(self.rings)})"


def decide(
    state: RateState | None,
    now: float,
    cost: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    *,
    consume: bool = True,
) -> tuple[RateDecision, RateState]:
    """The rate-limit decision: ``(state, now, cost, windows) -> (decision, new_state)``.

    Pure in the functional-core sense: no clock, no I/O, nothing global that changes the
    result. For speed the state is updated in place and returned as ``new_state`` (ownership
    passes through; ``state.copy()`` first to keep the old one). A refused request changes
    only the last-seen time and drops expired units, which no later decision can observe.
    ``consume=False`` answers whether the request *would* be admitted, consuming nothing.
    """
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")
    if state is None:
        state = RateState()
    return _run(state, _to_us(now), cost, plan_for(windows), consume), state


def _run(state: RateState, now: int, cost: int, plan: WindowPlan, consume: bool) -> RateDecision:
    # The hot path of the memory backend, mirrored line by line by the Redis Lua script.
    # Kept flat: on CPython every call or object costs 50-150 ns and the budget is ~1 µs.
    if now < state.last:
        now = state.last
    else:
        state.last = now
    log = state.log
    if log and log[0] <= now - plan.max_exact:
        cutoff = now - plan.max_exact
        popleft = log.popleft
        while log and log[0] <= cutoff:
            popleft()
    n = len(log)
    rings = state.rings
    for period, width in plan.rings:
        ring = rings.get(period)
        if ring is None:
            ring = rings[period] = _Ring()
        buckets = ring.buckets
        if buckets and buckets[0][0] < (now - period) // width:
            first = (now - period) // width
            while buckets and buckets[0][0] < first:
                ring.total -= buckets.popleft()[1]

    used_list = []
    allowed = True
    for limit, period, _width, kind in plan.specs:
        if kind == _WHOLE_LOG:
            used = n
        elif kind == _LOG:
            used = n - bisect_right(log, now - period) if n else 0
        else:
            used = rings[period].total
        used_list.append(used)
        if used + cost > limit:
            allowed = False

    counts: list[int] = []
    if allowed:
        taken = cost if consume else 0
        if taken:
            if plan.max_exact:
                if cost == 1:
                    log.append(now)
                else:
                    log.extend([now] * cost)
            for period, width in plan.rings:
                ring = rings[period]
                idx = now // width
                buckets = ring.buckets
                if buckets and buckets[-1][0] == idx:
                    buckets[-1][1] += cost
                else:
                    buckets.append([idx, cost])
                ring.total += cost
        for (limit, period, width, kind), used in zip(plan.specs, used_list, strict=True):
            # reset: until the oldest counted unit (maybe the one just taken) expires.
            if kind != _RING:
                if used:
                    reset = -(-(log[n - used] + period - now) // _US)
                else:
                    reset = -(-period // _US) if taken else 0
            else:
                buckets = rings[period].buckets
                reset = -(-((buckets[0][0] + 1) * width + period - now) // _US) if buckets else 0
            remaining = limit - used - taken
            counts += (remaining if remaining > 0 else 0, reset)
        return _new_tuple(RateDecision, (True, None, plan, tuple(counts), 0, False, False))

    # Refused: nothing consumed. Each violated window says when it will have room.
    retry = 0
    never = False
    mask = 0
    bit = 1
    for (limit, period, width, kind), used in zip(plan.specs, used_list, strict=True):
        if used + cost > limit:
            mask |= bit
            if cost > limit:
                never = True
                reset = -(-period // _US)
            elif kind != _RING:
                # The (used + cost - limit)-th oldest unit in the window must leave it.
                reset = -(-(log[n - limit + cost - 1] + period - now) // _US)
            else:
                need = used + cost - limit
                idx = 0
                for idx, units in rings[period].buckets:  # noqa: B007 - idx is the answer
                    need -= units
                    if need <= 0:
                        break
                reset = -(-((idx + 1) * width + period - now) // _US)
            if reset > retry:
                retry = reset
        elif kind != _RING:
            reset = -(-(log[n - used] + period - now) // _US) if used else 0
        else:
            buckets = rings[period].buckets
            reset = -(-((buckets[0][0] + 1) * width + period - now) // _US) if buckets else 0
        bit <<= 1
        counts += (limit - used if used < limit else 0, reset)
    return _new_tuple(
        RateDecision,
        (False, None if never else max(retry, 1), plan, tuple(counts), mask, False, False),
    )


# ---------------------------------------------------------------------------------------------
# Headers


def rate_limit_headers(
    decision: RateDecision, *, ietf: bool = True, legacy: bool = True
) -> list[tuple[str, str]]:
    """Response header pairs for ``decision``; each field appears at most once.

    - ``Retry-After`` on every refusal that has one (429, and 503 from a fail-closed limiter).
    - ``ietf``: ``RateLimit-Policy: "burst";q=20;w=10, "minute";q=100;w=60, ...`` and
      ``RateLimit: "minute";r=57;t=13, ...`` (draft-ietf-httpapi-ratelimit-headers-10/-11):
      every window when admitted, only the violated windows when refused.
    - ``legacy``: ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (seconds) for the most
      constraining window: the lowest ``remaining`` (ties: the longest wait), among the
      violated windows on a refusal.

    A decision with ``unavailable`` set carries only ``Retry-After``.
    """
    headers: list[tuple[str, str]] = []
    allowed = decision[0]
    if not allowed and decision[1] is not None:
        headers.append(("Retry-After", str(decision[1])))
    plan = decision[2]
    if plan is None or decision[6]:
        return headers
    if ietf:
        headers.append(("RateLimit-Policy", plan.policy))
    counts = decision[3]
    if not counts or not (ietf or legacy):
        return headers
    mask = -1 if allowed else decision[4]
    windows = plan.windows
    parts = []
    tight = -1
    tight_r = tight_t = 0
    for i in range(len(windows)):
        if mask >> i & 1:
            r = counts[2 * i]
            t = counts[2 * i + 1]
            parts.append(f'"{windows[i].name}";r={r};t={t}')
            if tight < 0 or r < tight_r or (r == tight_r and t > tight_t):
                tight, tight_r, tight_t = i, r, t
    if ietf and parts:
        headers.append(("RateLimit", ", ".join(parts)))
    if legacy and tight >= 0:
        headers.append(("X-RateLimit-Limit", str(windows[tight].limit)))
        headers.append(("X-RateLimit-Remaining", str(tight_r)))
        headers.append(("X-RateLimit-Reset", str(tight_t)))
    return headers


# ---------------------------------------------------------------------------------------------
# Backends


@runtime_checkable
class RateLimiter(Protocol):
    """What every rate-limit backend offers. ``bucket`` is a key id or owner id, never a key."""

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """Decide a request of ``cost`` units for ``bucket`` now, consuming on admission."""
        ...

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """:meth:`hit` for async callers."""
        ...

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """Whether a request of ``cost`` would be admitted now; consumes nothing."""
        ...

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """:meth:`peek` for async callers."""
        ...

    def reset(self, bucket: str) -> None:
        """Forget everything ``bucket`` consumed."""
        ...

    async def areset(self, bucket: str) -> None:
        """:meth:`reset` for async callers."""
        ...


def _check_cost(cost: int) -> None:
    raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")


class MemoryRateLimiter:
    """In-process rate limiter: exact per process, nothing shared between processes.

    State lives in ``stripes`` LRU caches, each behind its own lock (chosen by the bucket's
    hash), so threads working on different keys rarely contend and no background thread is
    needed. At most about ``max_keys`` buckets are kept; the least recently used is evicted
    first, which forgets its counts, so size ``max_keys`` above the number of keys active in
    a day (buckets are key ids, which only authenticated callers can make the limiter see).
    ``clock`` returns epoch seconds. ``ahit`` runs inline: the work is a few microseconds of
    CPU and the lock is never held across an ``await``.
    """

    __slots__ = ("_caches", "_clock", "_locks", "_mask")

    def __init__(
        self,
        max_keys: int = 100_000,
        stripes: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        if (
            isinstance(stripes, bool)
            or not isinstance(stripes, int)
            or stripes < 1
            or stripes & (stripes - 1)
        ):
            raise ConfigurationError(f"stripes must be a power of two, got {stripes!r}")
        per_stripe = max(1, -(-max_keys // stripes))
        self._mask = stripes - 1
        self._locks = tuple(threading.Lock() for _ in range(stripes))
        self._caches: tuple[LRUCache[str, RateState], ...] = tuple(
            LRUCache(maxsize=per_stripe) for _ in range(stripes)
        )
        self._clock = clock

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        plan = _PLANS_BY_ID.get(id(windows))
        if plan is None or plan.windows is not windows:
            plan = plan_for(windows)
        if cost.__class__ is not int or cost < 1:
            _check_cost(cost)
        now = _floor(self._clock() * 1e6 + 0.5)
        i = hash(bucket) & self._mask
        with self._locks[i]:
            cache = self._caches[i]
            try:
                state = cache[bucket]
            except KeyError:
                state = cache[bucket] = RateState()
            return _run(state, now, cost, plan, True)

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self.hit(bucket, windows, cost)

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        plan = plan_for(windows)
        if cost.__class__ is not int or cost < 1:
            _check_cost(cost)
        now = _floor(self._clock() * 1e6 + 0.5)
        i = hash(bucket) & self._mask
        with self._locks[i]:
            # An unknown bucket is looked at through a throwaway state, so peeking at many
            # buckets cannot evict the state of active ones.
            state = self._caches[i].get(bucket) or RateState()
            return _run(state, now, cost, plan, False)

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self.peek(bucket, windows, cost)

    def reset(self, bucket: str) -> None:
        i = hash(bucket) & self._mask
        with self._locks[i]:
            self._caches[i].pop(bucket, None)

    async def areset(self, bucket: str) -> None:
        self.reset(bucket)

    def __len__(self) -> int:
        return sum(len(c) for c in self._caches)


_floor = math.floor

Mode = Literal["local", "allow", "deny"]
_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half-open"


class ResilientLimiter:
    """A remote limiter that never raises: a circuit breaker and a failure mode around it.

    When ``primary`` fails (``StoreUnavailable``, timeouts, any error but misuse), the
    request is decided by ``mode``:

    - ``"local"`` (default): the in-process ``fallback`` limiter decides, flagged
      ``degraded=True``. Limits then hold per process rather than globally.
    - ``"allow"``: admitted, flagged ``degraded=True`` (fail open: availability first).
    - ``"deny"``: refused with ``unavailable=True``; the caller answers 503
      ``auth_unavailable`` with ``Retry-After``, never 429 (fail closed).

    After ``failure_threshold`` consecutive failures the circuit opens: ``primary`` is not
    called for ``cooldown`` seconds, so an unreachable Redis costs nothing per request. Then
    one request probes it (half-open); success closes the circuit, failure reopens it. Each
    transition is logged on ``keyguard.ratelimit`` (WARNING when degrading, INFO when
    probing or recovering), with the exception type only: no URLs, no keys.
    """

    def __init__(
        self,
        primary: RateLimiter,
        *,
        fallback: RateLimiter | None = None,
        mode: Mode = "local",
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("local", "allow", "deny"):
            raise ConfigurationError(f"mode must be 'local', 'allow' or 'deny', got {mode!r}")
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ConfigurationError("failure_threshold must be an integer >= 1")
        if not cooldown > 0:
            raise ConfigurationError("cooldown must be > 0 seconds")
        self.primary = primary
        self.fallback: RateLimiter = fallback if fallback is not None else MemoryRateLimiter()
        self.mode: Mode = mode
        self.failure_threshold = failure_threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: str = _CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``"closed"`` (primary in use), ``"open"`` (bypassed) or ``"half-open"`` (probing)."""
        return self._state

    # -- breaker ----------------------------------------------------------------------------

    def _should_try(self) -> bool:
        if self._state is _CLOSED:
            return True
        with self._lock:
            if self._state is _CLOSED:
                return True
            if self._probing:
                return False
            if self._state is _OPEN and self._clock() - self._opened_at < self.cooldown:
                return False
            self._state = _HALF_OPEN
            self._probing = True
        logger.info("rate-limit backend: circuit half-open, probing")
        return True

    def _succeeded(self) -> None:
        if self._state is _CLOSED and not self._failures:
            return
        with self._lock:
            recovered = self._state is not _CLOSED
            self._state = _CLOSED
            self._failures = 0
            self._probing = False
        if recovered:
            logger.info("rate-limit backend: recovered, circuit closed")

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            was = self._state
            if was is _HALF_OPEN or (was is _CLOSED and self._failures >= self.failure_threshold):
                self._state = _OPEN
                self._opened_at = self._clock()
                self._probing = False
                opened = True
            else:
                opened = False
        if opened:
            logger.warning(
                "rate-limit backend unavailable (%s): circuit open for %.1fs, mode=%s%s",
                type(exc).__name__,
                self.cooldown,
                self.mode,
                " (probe failed)" if was is _HALF_OPEN else "",
            )
        else:
            logger.debug("rate-limit backend error (%s)", type(exc).__name__)

    def _abandoned(self) -> None:
        # A probe cancelled mid-flight must not leave the breaker waiting for it forever.
        with self._lock:
            self._probing = False

    def _degraded(self, windows: tuple[Window, ...]) -> RateDecision | None:
        if self.mode == "allow":
            return RateDecision(True, None, plan_for(windows), degraded=True)
        if self.mode == "deny":
            wait = self.cooldown - (self._clock() - self._opened_at)
            retry = max(1, math.ceil(wait)) if self._state is not _CLOSED else 1
            return RateDecision(False, retry, plan_for(windows), unavailable=True)
        return None

    # -- limiter ----------------------------------------------------------------------------

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        if self._should_try():
            try:
                decision = self.primary.hit(bucket, windows, cost)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        return self._degraded(windows) or self.fallback.hit(bucket, windows, cost)._replace(
            degraded=True
        )

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        if self._should_try():
            try:
                decision = await self.primary.ahit(bucket, windows, cost)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        local = self._degraded(windows)
        if local is not None:
            return local
        return (await self.fallback.ahit(bucket, windows, cost))._replace(degraded=True)

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        if self._should_try():
            try:
                decision = self.primary.peek(bucket, windows, cost)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        return self._degraded(windows) or self.fallback.peek(bucket, windows, cost)._replace(
            degraded=True
        )

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        if self._should_try():
            try:
                decision = await self.primary.apeek(bucket, windows, cost)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        local = self._degraded(windows)
        if local is not None:
            return local
        return (await self.fallback.apeek(bucket, windows, cost))._replace(degraded=True)

    def reset(self, bucket: str) -> None:
        self.fallback.reset(bucket)
        if self._should_try():
            try:
                self.primary.reset(bucket)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()

    async def areset(self, bucket: str) -> None:
        await self.fallback.areset(bucket)
        if self._should_try():
            try:
                await self.primary.areset(bucket)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
