"""Rate-limit response headers: ``Retry-After``, the IETF ``RateLimit-Policy``/``RateLimit``
fields and the legacy ``X-RateLimit-*`` trio, rendered from a decision and its plan's
preformatted fragments."""

from __future__ import annotations

from keyguard.core.ratelimit.plan import RateDecision, WindowPlan


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
    kept lean because it runs on every response."""
    out: tuple[tuple[str, str], ...] = ()
    if ietf:
        out = (plan.header_policy, ("RateLimit", plan.header_ratelimit % counts))
    if legacy:
        i = _most_constraining(counts)
        out += (
            ("X-RateLimit-Limit", plan.header_limits[i]),
            ("X-RateLimit-Remaining", str(counts[2 * i])),
            ("X-RateLimit-Reset", str(counts[2 * i + 1])),
        )
    return out


def admitted_headers_asgi(
    plan: WindowPlan, counts: tuple[int, ...], ietf: bool = True, legacy: bool = True
) -> list[tuple[bytes, bytes]]:
    """:func:`admitted_headers` as ASGI header pairs (lower-case names, latin-1 bytes)."""
    out: list[tuple[bytes, bytes]] = []
    if ietf:
        out.append(plan.asgi_policy)
        out.append((b"ratelimit", plan.asgi_ratelimit % counts))
    if legacy:
        i = _most_constraining(counts)
        out.append((b"x-ratelimit-limit", plan.asgi_limits[i]))
        out.append((b"x-ratelimit-remaining", b"%d" % counts[2 * i]))
        out.append((b"x-ratelimit-reset", b"%d" % counts[2 * i + 1]))
    return out


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
