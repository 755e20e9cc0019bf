"""The verifier's observed path: the checks of :meth:`Verifier.verify` (and its async and
no-wait forms), step for step, telling a :class:`RequestObserver` what happened.

A verifier built without an observer never comes here: its request path pays one attribute
check (``if self.observer is not None``). With one, the checks below run instead of the
plain ones — the same steps in the same order, so the decisions are the same (the adapter
tests run every case both ways) — and the observer learns, at the moment of the decision, what
the plain path forgets: the route template the policy matched, the principal a scope or rate
refusal concerned, the rate-limit outcome (which window refused, whether a fallback decided),
and how long keyguard took (when the observer is ``timed``). Keep these functions in step
with ``verifier.py``.

Adapters that see the application's response (the ASGI and WSGI middlewares) call these
functions with ``defer=True`` and report the response status themselves
(:meth:`RequestObserver.responded`); the plain entry points (``verify``/``averify``, used by
framework hooks that never see the response) pass ``defer=False``: the observer then counts an
admitted request as answered 200. The observer protocol lives here because ``core`` depends on
it; :class:`keyguard.observability.Observer` implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from keyguard.core import decision as d
from keyguard.core.authn import AuthorizationValue, Peer, read_credential
from keyguard.core.decision import Decision, Principal
from keyguard.core.ratelimit import RateDecision
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import Requirement, as_requirement

if TYPE_CHECKING:
    from keyguard.core.verifier import Verifier

__all__ = [
    "Admission",
    "Outcome",
    "RequestObserver",
    "cached_record",
    "observed_averify",
    "observed_nowait",
    "observed_verify",
    "presented_key_id",
]

#: What an admitted request's adapter hands back to :meth:`RequestObserver.responded` with the
#: response status: (verifier, principal, method, route template or ``None``, peer,
#: forwarded_for, keyguard's own time in seconds — 0.0 unless the observer is ``timed``).
Admission = tuple[Any, Principal, str, str | None, Any, Any, float]
#: What the observed functions return: the decision, and the admission to report when the
#: adapter reports responses (``defer=True``) and a key was admitted (else ``None``).
Outcome = tuple[Decision, Admission | None]


class RequestObserver(Protocol):
    """What the verifier tells whoever observes its requests (all on the request path: keep
    them cheap, never block, never raise)."""

    #: Whether the observer keeps ``last_used_at`` itself (usage counting): the verifier then
    #: stops its own throttled ``touch`` writes.
    owns_last_used: bool
    #: Whether it wants keyguard's own time per request (two clock reads when it does).
    timed: bool
    #: Whether an admitted request that an adapter will report (``defer=True``) is reported
    #: by :meth:`responded` alone: :meth:`admitted` is then called only when there is more to
    #: say (a rate-limit fallback decided).
    merges_admitted: bool

    def admitted(
        self,
        verifier: Verifier,
        principal: Principal,
        method: str,
        template: str | None,
        peer: Peer,
        forwarded_for: str | bytes | None,
        elapsed: float,
        rate: RateDecision | None,
        defer: bool,
    ) -> None:
        """A key was admitted (``defer``: the adapter will report the response status)."""

    def refused(
        self,
        verifier: Verifier,
        decision: Decision,
        principal: Principal | None,
        rate: RateDecision | None,
        authorization: AuthorizationValue,
        method: str,
        template: str | None,
        peer: Peer,
        forwarded_for: str | bytes | None,
        elapsed: float,
    ) -> None:
        """A request was refused. ``principal`` is set for scope and rate-limit refusals;
        ``authorization`` is the raw header, only to find the key id the denial concerns
        (:func:`presented_key_id`) — it must not be kept."""

    def responded(self, admission: Admission, status: int) -> None:
        """The application answered an admitted request with ``status`` (``defer=True``
        adapters: ``admission`` is what the observed function returned)."""


def presented_key_id(verifier: Verifier, authorization: AuthorizationValue) -> str | None:
    """The key id of a well-formed key in ``authorization`` (public by design), or ``None``.
    The credential itself goes no further than this function."""
    credential = read_credential(authorization, verifier.max_header_length)
    if isinstance(credential, Decision):
        return None
    parsed = verifier.key_format.parse(credential)
    return None if parsed is None else parsed.key_id


def cached_record(verifier: Verifier, key_id: str) -> KeyRecord | None:
    """The record the verifier last judged ``key_id`` against, if it is still cached (no store
    read: a denial has just looked it up)."""
    cache = verifier._cache
    with cache.lock:
        entry = cache.records.get(key_id)
    return None if entry is None else entry.record


def observed_verify(
    v: Verifier,
    observer: RequestObserver,
    authorization: AuthorizationValue,
    method: str,
    path: str,
    required: Requirement | str | Sequence[str] | None,
    peer: Peer,
    forwarded_for: str | bytes | None,
    defer: bool,
) -> Outcome:
    """:meth:`Verifier.verify`, observed."""
    timed = observer.timed
    started = perf_counter() if timed else 0.0
    route = v.match(method, path)
    template = route.template
    if route.requirement is None and required is None:
        return d.ALLOW_PUBLIC, None
    result = v.authenticate(authorization, peer=peer, forwarded_for=forwarded_for)
    if not result.allowed:
        elapsed = perf_counter() - started if timed else 0.0
        observer.refused(
            v, result, None, None, authorization, method, template, peer, forwarded_for, elapsed
        )
        return result, None
    principal: Any = result.principal
    result = v._authorize(result, route.requirement)
    if required is not None:
        result = v._authorize(result, as_requirement(required))
    rate = None
    limiter = v.limiter
    if limiter is not None and result.allowed and route.rate_limited:
        rate = v._hit(limiter, principal, route.cost)
        result = v._limited(result, rate)
    elapsed = perf_counter() - started if timed else 0.0
    if not result.allowed:
        observer.refused(
            v, result, principal, rate, None, method, template, peer, forwarded_for, elapsed
        )
        return result, None
    if not (defer and observer.merges_admitted) or (rate is not None and rate.degraded):
        observer.admitted(v, principal, method, template, peer, forwarded_for, elapsed, rate, defer)
    return result, (v, principal, method, template, peer, forwarded_for, elapsed) if defer else None


async def observed_averify(
    v: Verifier,
    observer: RequestObserver,
    authorization: AuthorizationValue,
    method: str,
    path: str,
    required: Requirement | str | Sequence[str] | None,
    peer: Peer,
    forwarded_for: str | bytes | None,
    defer: bool,
) -> Outcome:
    """:meth:`Verifier.averify`, observed (keep in step with :func:`observed_verify`)."""
    timed = observer.timed
    started = perf_counter() if timed else 0.0
    route = v.match(method, path)
    template = route.template
    if route.requirement is None and required is None:
        return d.ALLOW_PUBLIC, None
    result = await v.aauthenticate(authorization, peer=peer, forwarded_for=forwarded_for)
    if not result.allowed:
        elapsed = perf_counter() - started if timed else 0.0
        observer.refused(
            v, result, None, None, authorization, method, template, peer, forwarded_for, elapsed
        )
        return result, None
    principal: Any = result.principal
    result = v._authorize(result, route.requirement)
    if required is not None:
        result = v._authorize(result, as_requirement(required))
    rate = None
    limiter = v.limiter
    if limiter is not None and result.allowed and route.rate_limited:
        rate = await v._ahit(limiter, principal, route.cost)
        result = v._limited(result, rate)
    elapsed = perf_counter() - started if timed else 0.0
    if not result.allowed:
        observer.refused(
            v, result, principal, rate, None, method, template, peer, forwarded_for, elapsed
        )
        return result, None
    if not (defer and observer.merges_admitted) or (rate is not None and rate.degraded):
        observer.admitted(v, principal, method, template, peer, forwarded_for, elapsed, rate, defer)
    return result, (v, principal, method, template, peer, forwarded_for, elapsed) if defer else None


def observed_nowait(
    v: Verifier,
    observer: RequestObserver,
    authorization: AuthorizationValue,
    method: str,
    path: str,
    peer: Peer,
    forwarded_for: str | bytes | None,
    defer: bool,
) -> Outcome | None:
    """:meth:`Verifier.verify_nowait`, observed: ``None`` when I/O is needed (then
    :func:`observed_averify`, which observes the request)."""
    timed = observer.timed
    started = perf_counter() if timed else 0.0
    route = v.match(method, path)
    template = route.template
    if route.requirement is None:
        return d.ALLOW_PUBLIC, None
    hit, _ = v._hot(authorization)
    if hit is None:
        return None
    principal: Any = hit.principal
    record = principal.record
    if record.suspended_at is not None or record.allowed_networks:
        v._cache.index_hits -= 1  # averify() answers it, and counts it, from the index again
        return None
    result = v._authorize(hit, route.requirement)
    rate = None
    limiter = v.limiter
    if limiter is not None and result.allowed and route.rate_limited:
        if not v._limit_inline:
            return None
        rate = v._hit(limiter, principal, route.cost)
        result = v._limited(result, rate)
    elapsed = perf_counter() - started if timed else 0.0
    if not result.allowed:
        observer.refused(
            v, result, principal, rate, None, method, template, peer, forwarded_for, elapsed
        )
        return result, None
    if not (defer and observer.merges_admitted) or (rate is not None and rate.degraded):
        observer.admitted(v, principal, method, template, peer, forwarded_for, elapsed, rate, defer)
    return result, (v, principal, method, template, peer, forwarded_for, elapsed) if defer else None
