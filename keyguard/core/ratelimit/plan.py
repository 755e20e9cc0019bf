"""The decision, compiled: a window set becomes a :class:`WindowPlan` holding a specialised
``run(state, now_us, cost, consume)`` (see :func:`_compile` for the steps), the constant parts
of the headers and the Redis script arguments; :class:`RateDecision` is what a run returns."""

from __future__ import annotations

import linecache
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from keyguard.core.ratelimit.state import RateState, _expire, _open_bucket, _Ring
from keyguard.core.ratelimit.windows import (
    _US,
    LONG_WINDOW_BUCKETS,
    Window,
    _to_us,
    check_windows,
    format_windows,
)


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
        "asgi_admit",
        "asgi_limits",
        "asgi_policy",
        "asgi_ratelimit",
        "asgi_render",
        "header_items",
        "header_limits",
        "header_policy",
        "header_ratelimit",
        "max_exact",
        "policy",
        "redis_args",
        "rings",
        "run",
        "specs",
        "text_admit",
        "text_render",
        "ttl_ms",
        "windows",
    )

    def __init__(self, windows: tuple[Window, ...]) -> None:
        windows = check_windows(windows)
        self.windows = windows
        self.max_exact = max((_to_us(w.period) for w in windows if w.exact), default=0)
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
        # Header fragments, formatted once: per response only numbers are filled in.
        self.header_policy = ("RateLimit-Policy", self.policy)
        self.header_items = tuple(f'"{w.name}";r=%d;t=%d' for w in windows)
        self.header_ratelimit = ", ".join(self.header_items)
        self.header_limits = tuple(str(w.limit) for w in windows)
        # The same, as the lower-case latin-1 bytes ASGI servers take, so an ASGI response
        # pays for no encoding.
        self.asgi_policy = (b"ratelimit-policy", self.policy.encode("latin-1"))
        self.asgi_ratelimit = self.header_ratelimit.encode("latin-1")
        self.asgi_limits = tuple(b"%d" % w.limit for w in windows)
        #: ``render(counts, ietf, legacy)`` -> the admitted ASGI headers; compiled on first
        #: use by :func:`keyguard.core.ratelimit.headers.admitted_headers_asgi`.
        self.asgi_render: Callable[[tuple[int, ...], bool, bool], list[Any]] | None = None
        #: The same for text pairs (a tuple), for WSGI and framework responses.
        self.text_render: Callable[[tuple[int, ...], bool, bool], tuple[Any, ...]] | None = None
        #: The decision and the admitted headers fused in one function (ASGI / text), compiled
        #: on first use by :func:`keyguard.core.ratelimit.fused.admit_function`.
        self.asgi_admit: Callable[..., Any] | None = None
        self.text_admit: Callable[..., Any] | None = None
        # Idle state must outlive the longest window plus one bucket of release delay.
        self.ttl_ms = max(period + width for _l, period, width, _k in specs) // 1000 + 1000
        args = [str(self.ttl_ms), str(self.max_exact), str(len(specs))]
        for limit, period, width, _kind in specs:
            args += [str(limit), str(period), str(width)]
        #: ARGV tail of the Redis script (after now, cost, consume).
        self.redis_args: tuple[str, ...] = tuple(args)
        #: ``run(state, now_us, cost, consume) -> RateDecision``: the decision, specialised.
        self.run: _Runner = _compile(self)

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


def _ring_wait(buckets: Sequence[int], need: int, now: int, period: int) -> int:
    """Seconds until ``need`` units of a ring (its flat ``last, units`` pairs) have left its
    window: the oldest buckets leave first, each when its latest unit does (at ``last +
    period``)."""
    last = 0
    pairs = iter(buckets)
    for last, units in zip(pairs, pairs):  # noqa: B007, B905 - last is the answer
        need -= units
        if need <= 0:
            break
    return -(-(last + period - now) // _US)


_Runner = Callable[[RateState, int, int, bool], RateDecision]


class _Source(NamedTuple):
    """The decision's source, in pieces, for :func:`_compile` and for
    :func:`keyguard.core.ratelimit.fused.compile_admit` (which fuses the admitted branch with
    the header renderer). Every line reads ``state``, ``now`` and ``cost``."""

    #: Steps 1-3, at function-body indent: ``now``, ``log``, ``n``, ``ring<j>``, ``u<i>``.
    prelude: list[str]
    #: Step 4's admission test (an expression).
    admit: str
    #: Consuming ``cost`` units, unindented (the caller indents).
    consume: list[str]
    #: The flat counts after consuming (``remaining, reset,`` per window).
    taken: list[str]
    #: The counts of a peek (nothing taken).
    peeked: list[str]
    #: A refusal, at function-body indent, ending in its ``return``.
    refusal: list[str]
    #: The globals every piece needs.
    namespace: dict[str, object]


def _source(plan: WindowPlan, *, unit: bool = False) -> _Source:
    """The pieces of :func:`_compile`'s function (see there for the steps).

    ``unit``: for code that runs only with a ``cost`` of 1 (the fused admission's common
    case): the admission test, the counts taken and the consumption say ``1`` where they said
    ``cost`` (``used < limit``, ``limit - 1 - used``), which saves the interpreter a few
    steps per window; a refusal still reads ``cost`` (which holds 1)."""
    ind = "    "
    prelude = [
        "    last = state.last",
        "    if now < last:",
        "        now = last",
        "    else:",
        "        state.last = now",
        "    log = state.log",
        f"    cutoff = now - {plan.max_exact}",
        "    while log and log[0] <= cutoff:",
        "        log.popleft()",
        "    n = len(log)",
        "    rings = state.rings",
    ]
    ring_index = {}
    for j, (period, _width) in enumerate(plan.rings):
        ring_index[period] = j
        prelude += [
            f"    ring{j} = rings.get({period})",
            f"    if ring{j} is None:",
            f"        ring{j} = rings[{period}] = _Ring()",
            f"    if now >= ring{j}.release:",
            f"        _expire(ring{j}, now, {period})",
        ]
    checks = []
    taken = []  # counts after consuming cost
    peeked = []  # counts of a peek (nothing taken)
    refusal = [f"{ind}retry = 0", f"{ind}never = False", f"{ind}mask = 0"]
    refused = []  # counts of a refusal
    for i, (limit, period, _width, kind) in enumerate(plan.specs):
        if kind == _WHOLE_LOG:
            u = "n"
            oldest = "log[0]"
        elif kind == _LOG:
            u = f"u{i}"
            prelude.append(f"    {u} = n - bisect_right(log, now - {period}) if n else 0")
            oldest = f"log[n - {u}]"
        else:
            j = ring_index[period]
            u = f"u{i}"
            prelude.append(f"    {u} = ring{j}.total")
            oldest = f"ring{j}.buckets[0]"
        checks.append(f"{u} < {limit}" if unit else f"{u} + cost <= {limit}")
        left = f"{limit - 1} - {u}" if unit else f"{limit} - cost - {u}"
        # ceil((oldest + period - now) / 1 s): when the oldest counted unit leaves.
        wait = f"-((now - {period} - {oldest}) // {_US})"
        if kind != _RING:
            # Nothing counted before: the unit just taken is the oldest.
            taken.append(f"{left}, {wait} if {u} else {-(-period // _US)},")
            peeked.append(f"{limit} - {u}, {wait} if {u} else 0,")
        else:
            # A consuming run leaves the ring with a bucket.
            taken.append(f"{left}, {wait},")
            peeked.append(f"{limit} - {u}, {wait} if ring{j}.buckets else 0,")
        # Refused: a violated window waits for its (u + cost - limit)-th oldest unit to leave.
        if kind != _RING:
            violated = f"-((now - {period} - log[n - {limit} + cost - 1]) // {_US})"
            room = f"{wait} if {u} else 0"
        else:
            violated = f"_ring_wait(ring{j}.buckets, {u} + cost - {limit}, now, {period})"
            room = f"{wait} if ring{j}.buckets else 0"
        refusal += [
            f"{ind}if {u} + cost > {limit}:",
            f"{ind * 2}mask |= {1 << i}",
            f"{ind * 2}if cost > {limit}:",
            f"{ind * 3}never = True",
            f"{ind * 3}r{i} = {-(-period // _US)}",
            f"{ind * 2}else:",
            f"{ind * 3}r{i} = {violated}",
            f"{ind * 2}if r{i} > retry:",
            f"{ind * 3}retry = r{i}",
            f"{ind}else:",
            f"{ind * 2}r{i} = {room}",
        ]
        refused.append(f"{limit} - {u} if {u} < {limit} else 0, r{i},")
    # The log takes the units only when some window is exact.
    if not plan.max_exact:
        consume = []
    elif unit:
        consume = ["log.append(now)"]
    else:
        consume = [
            "if cost == 1:",
            f"{ind}log.append(now)",
            "else:",
            f"{ind}log.extend([now] * cost)",
        ]
    units = "1" if unit else "cost"
    for j, (period, width) in enumerate(plan.rings):
        consume += [
            f"if now < ring{j}.end:",
            f"{ind}newest = ring{j}.buckets",
            f"{ind}newest[-2] = now",
            f"{ind}newest[-1] += {units}",
            "else:",
            f"{ind}_open_bucket(ring{j}, now, {units}, {period}, {width})",
            f"ring{j}.total += {units}",
        ]
    # Every delay is positive, so retry >= 1 whenever some violated window can ever admit.
    refusal.append(
        f"{ind}return _new_tuple(RateDecision, (False, None if never else retry, plan, ("
    )
    refusal += [f"{ind * 2}{c}" for c in refused]
    refusal.append(f"{ind}), mask, False, False))")
    namespace: dict[str, object] = {
        "plan": plan,
        "bisect_right": bisect_right,
        "_Ring": _Ring,
        "_expire": _expire,
        "_open_bucket": _open_bucket,
        "_ring_wait": _ring_wait,
        "_new_tuple": _new_tuple,
        "RateDecision": RateDecision,
    }
    return _Source(prelude, " and ".join(checks), consume, taken, peeked, refusal, namespace)


def define(lines: list[str], name: str, namespace: dict[str, Any]) -> None:
    """Compile and run generated source (built by this package from integers and indices
    only: no user text reaches ``exec``) in ``namespace``, its text registered with
    :mod:`linecache` under ``name``, so that a traceback, a profiler or a tracer shows the
    generated line rather than nothing."""
    source = "\n".join(lines) + "\n"
    exec(compile(source, name, "exec"), namespace)  # noqa: S102
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)


def _compile(plan: WindowPlan) -> _Runner:
    """Specialise the decision for one window set: straight-line code, constants inlined.

    A loop over the windows, unpacking a spec tuple each time, measured 2.5 µs per decision
    for the three default windows; this straight-line form, 1.2 µs. The steps, in order:

    1. ``now = max(now, last)``, remembered as the new ``last``.
    2. Drop log units at or before ``now - longest exact period``; drop ring buckets whose
       latest unit is at or before ``now - period``.
    3. ``used_i``: the whole log for the longest exact window, the units after
       ``now - period`` for shorter ones, the ring total for long windows.
    4. Admit iff ``used_i + cost <= limit_i`` for all ``i``; if so (and consuming) append
       ``cost`` copies of ``now`` to the log and add ``cost`` to each ring's current bucket
       (whose latest unit is now ``now``), and report ``remaining = limit - used - cost`` and
       ``reset`` per window. Otherwise refuse, consuming nothing: each violated window says
       when it will have room (its ``(used + cost - limit)``-th oldest unit must leave; never,
       when ``cost`` exceeds its limit), and ``retry`` is the latest of those waits.
    """
    ind = "    "
    s = _source(plan)
    src = ["def run(state, now, cost, consume):", *s.prelude, f"    if {s.admit}:"]
    src.append(f"{ind * 2}if consume:")
    src += [f"{ind * 3}{line}" for line in s.consume]
    src.append(f"{ind * 3}return _new_tuple(RateDecision, (True, None, plan, (")
    src += [f"{ind * 4}{c}" for c in s.taken]
    src.append(f"{ind * 3}), 0, False, False))")
    src.append(f"{ind * 2}return _new_tuple(RateDecision, (True, None, plan, (")
    src += [f"{ind * 3}{c}" for c in s.peeked]
    src.append(f"{ind * 2}), 0, False, False))")
    src += s.refusal
    namespace = dict(s.namespace)
    define(src, f"<keyguard.ratelimit {plan!r}>", namespace)
    return namespace["run"]  # type: ignore[return-value]
