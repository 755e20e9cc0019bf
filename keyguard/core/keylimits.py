"""Rate limits on an authenticated request: the key's windows (and its owner's), one limiter
check, and the decision with its headers. A mixin of :class:`~keyguard.core.verifier.Verifier`,
kept apart because it is a job of its own (the limiter itself lives in
:mod:`keyguard.core.ratelimit`)."""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Final
from urllib.parse import quote

from keyguard.core import decision as d
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.core.ratelimit import (
    RateDecision,
    RateLimiter,
    Window,
    parse_windows,
    refused_headers,
)

__all__ = ["KeyLimits", "owner_bucket"]

logger = logging.getLogger("keyguard.verifier")

_new_tuple = tuple.__new__


@lru_cache(maxsize=4096)
def owner_bucket(owner: str) -> str:
    """The rate-limit bucket of an owner's shared limits: ``"owner:" + owner``, with every
    character but letters, digits and ``_.-~`` percent-encoded (an injective mapping that keeps
    braces and whitespace out of Redis key names). Key ids have no ``:``, so never clash."""
    return "owner:" + quote(owner, safe="")


class KeyLimits:
    """The rate-limit half of the verifier (see :class:`~keyguard.core.verifier.Verifier` for
    the options these attributes come from)."""

    limiter: RateLimiter | None
    rate_limits: tuple[Window, ...] | None
    owner_rate_limits: tuple[Window, ...] | None
    ietf_headers: bool
    legacy_headers: bool

    def rate_limit(self, decision: Decision, cost: int = 1) -> Decision:
        """Apply the per-key rate limit to an allowed decision (for adapters that authenticate
        with :meth:`authenticate` and check scopes themselves, such as DRF)."""
        limiter = self.limiter
        principal = decision.principal
        if limiter is None or not decision.allowed or principal is None:
            return decision
        return self._limited(decision, self._hit(limiter, principal, cost))

    async def arate_limit(self, decision: Decision, cost: int = 1) -> Decision:
        """Async :meth:`rate_limit`."""
        limiter = self.limiter
        principal = decision.principal
        if limiter is None or not decision.allowed or principal is None:
            return decision
        return self._limited(decision, await self._ahit(limiter, principal, cost))

    def _hit(self, limiter: RateLimiter, principal: Principal, cost: int) -> RateDecision:
        """One limiter check for the key — and, with owner limits, its owner, atomically."""
        windows = self.rate_limits if not principal.record.rate_limit else None
        if windows is None:
            windows = self._windows(principal)
        owner_windows = self.owner_rate_limits
        if owner_windows is not None and principal.owner:
            return limiter.hit_pair(
                principal.key_id, windows, owner_bucket(principal.owner), owner_windows, cost
            )
        return limiter.hit(principal.key_id, windows, cost)

    async def _ahit(self, limiter: RateLimiter, principal: Principal, cost: int) -> RateDecision:
        """Async :meth:`_hit`."""
        windows = self._windows(principal)
        owner_windows = self.owner_rate_limits
        if owner_windows is not None and principal.owner:
            return await limiter.ahit_pair(
                principal.key_id, windows, owner_bucket(principal.owner), owner_windows, cost
            )
        return await limiter.ahit(principal.key_id, windows, cost)

    def _windows(self, principal: Principal) -> tuple[Window, ...]:
        override = principal.record.rate_limit
        if override:
            try:
                return parse_windows(override)  # cached by spec string
            except ConfigurationError:
                logger.warning(
                    "key %s has an invalid rate_limit; using the default", principal.key_id
                )
        assert self.rate_limits is not None
        return self.rate_limits

    def _limited(self, result: Decision, rd: RateDecision) -> Decision:
        """Turn a limiter outcome into the request's decision (with its headers)."""
        allowed, _retry, plan, counts, _mask, _degraded, unavailable = rd
        if unavailable:
            return d.UNAVAILABLE
        ietf, legacy = self.ietf_headers, self.legacy_headers
        if allowed:
            if plan is None or not counts or not (ietf or legacy):
                return result
            # tuple.__new__ rather than Decision(...): this runs on every admitted request,
            # and the named tuple's generated __new__ (keyword defaults) costs twice as much.
            return _new_tuple(
                Decision,
                (
                    True,
                    result.principal,
                    None,
                    "",
                    (),
                    None,
                    result.extra_headers,  # e.g. API-Key-Expires
                    (plan, counts, ietf, legacy),
                ),
            )
        principal = result.principal
        assert principal is not None
        headers = refused_headers(rd, ietf, legacy)
        retry = rd.retry_after
        # A pair decision (key and owner) lists the key's windows first, then the owner's.
        by_owner = (
            self.owner_rate_limits is not None
            and bool(principal.owner)
            and rd.violated_mask >> len(self._windows(principal)) != 0
        )
        if retry is None:
            # The request costs more than a window allows: it can never pass. Say so, and
            # tell the client not to retry before the longest window has passed.
            every = rd.plan.windows if rd.plan is not None else self._windows(principal)
            retry = max(1, math.ceil(max(w.period for w in every)))
            detail = _OVER_COST[by_owner]
        else:
            # A flood of refusals repeats the same memoised headers and wait: the same 429
            # decision (so its rendering is found by identity too).
            known = _REFUSED.get(id(headers))
            if known is not None and known[0] is headers and known[1] == (by_owner, retry):
                return known[2]
            cached = _DETAILS.get((by_owner, retry))
            detail = cached if cached is not None else _detail(by_owner, retry)
            refusal = _new_tuple(
                Decision, (False, None, ErrorCode.RATE_LIMITED, detail, (), retry, headers, None)
            )
            if len(_REFUSED) >= 4096:
                _REFUSED.clear()
            _REFUSED[id(headers)] = (headers, (by_owner, retry), refusal)
            return refusal
        return _new_tuple(
            Decision, (False, None, ErrorCode.RATE_LIMITED, detail, (), retry, headers, None)
        )


def _whose(by_owner: bool) -> str:
    return "this API key's owner" if by_owner else "this API key"


_OVER_COST: Final = {
    by_owner: f"This request costs more than {_whose(by_owner)}'s rate limit allows."
    for by_owner in (False, True)
}
#: (by the owner's limits, Retry-After) -> the 429's detail: a few hundred distinct strings
#: at most (waits above a day are rare), built once rather than per refusal.
_DETAILS: dict[tuple[bool, int], str] = {}
#: id(refusal headers) -> (those headers, (by owner, Retry-After), the 429 decision).
_REFUSED: dict[int, tuple[tuple[tuple[str, str], ...], tuple[bool, int], Decision]] = {}


def _detail(by_owner: bool, retry: int) -> str:
    detail = f"Rate limit exceeded for {_whose(by_owner)}; retry in {retry} s."
    if len(_DETAILS) >= 4096:
        _DETAILS.clear()
    _DETAILS[by_owner, retry] = detail
    return detail
