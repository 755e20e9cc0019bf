"""Rate-limit response headers: ``Retry-After``, the IETF ``RateLimit-Policy``/``RateLimit``
fields and the legacy ``X-RateLimit-*`` trio, rendered from a decision and its plan's
preformatted fragments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from keyguard.core.ratelimit.plan import RateDecision, WindowPlan, define


def _most_constraining(counts: tuple[int, ...]) -> int:
    """Index of the window with the lowest remaining; on a tie, the longer wait."""
    best = 0
    r = counts[0]
    t = counts[1]
    for i in range(2, len(counts), 2):
        x = counts[i]
        if x < r or (x == r and counts[i + 1] > t):
            best, r, t = i >> 1, x, counts[i + 1]
    return best


def admitted_headers(
    plan: WindowPlan, counts: tuple[int, ...], ietf: bool = True, legacy: bool = True
) -> tuple[tuple[str, str], ...]:
    """The headers of an admitted request (what :func:`rate_limit_headers` returns for one),
    by the plan's text renderer (compiled on first use, see :func:`_compile`)."""
    render = plan.text_render
    if render is None:
        render = plan.text_render = _compile(plan, text=True)
    return render(counts, ietf, legacy)


def admitted_headers_asgi(
    plan: WindowPlan, counts: tuple[int, ...], ietf: bool = True, legacy: bool = True
) -> list[tuple[bytes, bytes]]:
    """:func:`admitted_headers` as ASGI header pairs (lower-case names, latin-1 bytes), by the
    plan's renderer (compiled on first use, see :func:`_compile_asgi`)."""
    render = plan.asgi_render
    if render is None:
        render = plan.asgi_render = _compile(plan, text=False)
    return render(counts, ietf, legacy)


#: ``b"%d" % i`` / ``str(i)`` for small counts: remaining units and seconds to reset are
#: mostly small, and a tuple index costs a fraction of formatting an integer.
_DIGITS: Final = tuple(b"%d" % i for i in range(1024))
_TEXT_DIGITS: Final = tuple(str(i) for i in range(1024))


def _render_source(
    plan: WindowPlan, *, text: bool, admitted: bool = False
) -> tuple[list[str], dict[str, Any]]:
    """The body of :func:`_compile`'s renderer (at function-body indent, reading the flat
    counts ``c`` and the flags ``ietf``, ``legacy``; every path returns) and its globals.

    ``admitted``: the counts are those the plan's own decision just took for an admitted
    request (the fused admission), so each window's remaining is ``limit - cost - used`` with
    ``used + cost <= limit``: from 0 to ``limit - 1``. The legacy remaining, the lowest of
    them, is then below the smallest limit, and when that is within the table it is looked up
    without a range test. (Counts from elsewhere — a Redis reply, a caller — keep the test.)"""
    table = len(_TEXT_DIGITS if text else _DIGITS)
    proven = admitted and min(spec[0] for spec in plan.specs) <= table
    src = ["    if legacy:", "        r = c[0]", "        t = c[1]", "        lim = LIMITS[0]"]
    for i in range(1, len(plan.windows)):
        src += [
            f"        x = c[{2 * i}]",
            f"        if x < r or (x == r and c[{2 * i + 1}] > t):",
            f"            r = x; t = c[{2 * i + 1}]; lim = LIMITS[{i}]",
        ]
    fmt = "str(%s)" if text else "b'%%d' %% %s"
    open_, close = ("(", ")") if text else ("[", "]")
    remaining = "DIGITS[r]" if proven else f"DIGITS[r] if 0 <= r < {table} else {fmt % 'r'}"
    src += [
        f"        rem = (REMAINING, {remaining})",
        f"        rst = (RESET, DIGITS[t] if 0 <= t < {table} else {fmt % 't'})",
        "        if ietf:",
        f"            return {open_}POLICY, (RATELIMIT, FORMAT % c), lim, rem, rst{close}",
        f"        return {open_}lim, rem, rst{close}",
        "    if ietf:",
        f"        return {open_}POLICY, (RATELIMIT, FORMAT % c){close}",
        f"    return {open_}{close}",
    ]
    if text:
        namespace: dict[str, Any] = {
            "POLICY": plan.header_policy,
            "RATELIMIT": "RateLimit",
            "FORMAT": plan.header_ratelimit,
            "LIMITS": tuple(("X-RateLimit-Limit", limit) for limit in plan.header_limits),
            "REMAINING": "X-RateLimit-Remaining",
            "RESET": "X-RateLimit-Reset",
            "DIGITS": _TEXT_DIGITS,
        }
    else:
        namespace = {
            "POLICY": plan.asgi_policy,
            "RATELIMIT": b"ratelimit",
            "FORMAT": plan.asgi_ratelimit,
            "LIMITS": tuple((b"x-ratelimit-limit", limit) for limit in plan.asgi_limits),
            "REMAINING": b"x-ratelimit-remaining",
            "RESET": b"x-ratelimit-reset",
            "DIGITS": _DIGITS,
        }
    return src, namespace


def _compile(plan: WindowPlan, *, text: bool) -> Callable[[tuple[int, ...], bool, bool], Any]:
    """A plan's header renderer: straight-line code that picks the most constraining window
    (as :func:`_most_constraining`) and returns the headers — ASGI byte pairs in a list, or
    text pairs in a tuple — every constant part (names, the policy, each window's limit)
    prebuilt. Only the three numbers and the ``RateLimit`` field are formatted per call."""
    body, namespace = _render_source(plan, text=text)
    src = ["def render(c, ietf, legacy):", *body]
    define(src, f"<keyguard.ratelimit {'text' if text else 'asgi'} headers {plan!r}>", namespace)
    return namespace["render"]  # type: ignore[no-any-return]


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

    A decision with ``unavailable`` set carries only ``Retry-After``. Runs on every
    response, so the constant parts come preformatted from the decision's plan.
    """
    allowed, retry, plan, counts, mask, _degraded, unavailable = decision
    if allowed and plan is not None and counts and not unavailable:
        return list(admitted_headers(plan, counts, ietf, legacy))
    headers: list[tuple[str, str]] = []
    if not allowed and retry is not None:
        headers.append(("Retry-After", str(retry)))
    if plan is None or unavailable:
        return headers
    if ietf:
        headers.append(plan.header_policy)
    if not counts:
        return headers
    # A refusal (admitted decisions returned above): report the violated windows only.
    headers.extend(_refusal(plan, counts, mask, ietf, legacy))
    return headers


#: (plan, counts, mask, ietf, legacy) -> the refusal's rate-limit headers: a flood of refused
#: requests repeats the same few, so each is formatted once.
_REFUSALS: dict[tuple[object, ...], tuple[tuple[str, str], ...]] = {}


def refused_headers(
    decision: RateDecision, ietf: bool = True, legacy: bool = True
) -> tuple[tuple[str, str], ...]:
    """:func:`rate_limit_headers` of a refusal without ``Retry-After`` (which the 429
    carries on its own), memoised."""
    _allowed, _retry, plan, counts, mask, _degraded, unavailable = decision
    if plan is None or unavailable:
        return ()
    if not counts:
        return (plan.header_policy,) if ietf else ()
    key = (plan, counts, mask, ietf, legacy)
    headers = _REFUSALS.get(key)
    if headers is None:
        headers = tuple(_refusal(plan, counts, mask, ietf, legacy))
        if ietf:
            headers = (plan.header_policy, *headers)
        if len(_REFUSALS) >= 4096:
            _REFUSALS.clear()
        _REFUSALS[key] = headers
    return headers


def _refusal(
    plan: WindowPlan, counts: tuple[int, ...], mask: int, ietf: bool, legacy: bool
) -> list[tuple[str, str]]:
    """The ``RateLimit`` and ``X-RateLimit-*`` headers of a refusal (violated windows)."""
    headers: list[tuple[str, str]] = []
    picked = [i for i in range(len(plan.header_items)) if mask >> i & 1]
    if ietf:
        value = ", ".join([plan.header_items[i] % counts[2 * i : 2 * i + 2] for i in picked])
        headers.append(("RateLimit", value))
    if legacy:
        best = min(picked, key=lambda i: (counts[2 * i], -counts[2 * i + 1]))
        headers.append(("X-RateLimit-Limit", plan.header_limits[best]))
        headers.append(("X-RateLimit-Remaining", str(counts[2 * best])))
        headers.append(("X-RateLimit-Reset", str(counts[2 * best + 1])))
    return headers
