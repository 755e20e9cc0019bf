"""The request observer: turns what the verifier saw into events and usage counts.

:class:`Observer` implements :class:`keyguard.core.observe.RequestObserver`. On the request
path it does as little as it can: for an admitted request, one deferred event (built on the
emitter's thread, and only if some sink wants ``authenticated`` events) and one usage count;
a refusal is worked out a little further (which key a wrong secret or a revoked key was for,
which window refused) — refusals are the rare path. Text that came from the request (method,
client address) is escaped when the event is built; the header itself never leaves the
request path (the key id is read from it and the rest forgotten).

Each request yields exactly one outcome event — ``authenticated``, ``denied``,
``scope_denied``, ``rate_limited`` or ``key_refused`` — and infrastructure trouble adds its
own: ``store_unavailable`` when a store read failed, ``limiter_fallback`` when the rate
limiter's fallback decided. Requests to public routes yield none.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.errors import ErrorCode
from keyguard.core.observe import Admission, cached_record, presented_key_id
from keyguard.observability.model import Event, EventKind, escape

if TYPE_CHECKING:
    from keyguard.core.authn import AuthorizationValue, Peer
    from keyguard.core.decision import Decision, Principal
    from keyguard.core.ratelimit import RateDecision
    from keyguard.core.verifier import Verifier
    from keyguard.observability.events import Emitter
    from keyguard.observability.usage import UsageCounter

__all__ = ["Observer"]

_AUTHENTICATED: Final = EventKind.AUTHENTICATED
_FALLBACK: Final = EventKind.LIMITER_FALLBACK
#: Refusals that name a real key whose secret matched (counted in its usage).
_KEY_STATES: Final = {
    ErrorCode.REVOKED_API_KEY: EventKind.KEY_REFUSED,
    ErrorCode.EXPIRED_API_KEY: EventKind.KEY_REFUSED,
    ErrorCode.SUSPENDED_API_KEY: EventKind.KEY_REFUSED,
    ErrorCode.NETWORK_NOT_ALLOWED: EventKind.DENIED,
}
_NO_DETAIL: Final[Mapping[str, str]] = MappingProxyType({})


def _request_event(
    kind: EventKind,
    at: float,
    code: str | None,
    key_id: str | None,
    owner: str | None,
    method: str,
    template: str | None,
    status: int | None,
    peer: Any,
    forwarded_for: Any,
    verifier: Verifier,
    elapsed: float | None,
    reason: str | None,
    detail: Mapping[str, str] | None,
) -> Event:
    """Built on the emitter's thread: the client address resolved and everything from the
    request escaped."""
    try:
        client = verifier._client(peer, forwarded_for)
    except Exception:
        client = None
    return Event(
        kind=kind,
        at=at,
        code=code,
        key_id=key_id,
        owner=None if owner is None else escape(owner),
        route=None if template is None else escape(template),
        method=escape(method, 16),
        status=status,
        client=None if client is None else escape(client, 64),
        elapsed=elapsed,
        reason=reason,
        detail=_NO_DETAIL if detail is None else detail,
    )


def _fallback_detail(rate: RateDecision) -> Mapping[str, str]:
    return {"outcome": "refused" if rate.unavailable else "decided"}


def _window_detail(rate: RateDecision | None) -> Mapping[str, str] | None:
    if rate is None:
        return None
    violated = rate.violated
    if not violated:
        return None
    window = violated[0]
    return {"window": window.name, "limit": str(window.limit)}


class Observer:
    """Events (``events``, an :class:`~keyguard.observability.events.Emitter`) and usage
    counts (``usage``, a :class:`~keyguard.observability.usage.UsageCounter`) for the requests
    of one or more verifiers: ``Verifier(store, observer=Observer(events=..., usage=...))``.
    Either may be ``None``. :meth:`close` closes both (pending counts written, pending events
    delivered).

    With both, an admitted request seen through the ASGI or WSGI middleware is recorded once,
    on the usage counter's queue, and its ``authenticated`` event is built from that record
    when the counter tallies it (within half a second): one ``extend`` per request for both.
    """

    def __init__(
        self,
        *,
        events: Emitter | None = None,
        usage: UsageCounter | None = None,
        clock: Any = time.time,
    ) -> None:
        self.events = events
        self.usage = usage
        self.owns_last_used = usage is not None
        self.timed = events is not None
        self.merges_admitted = usage is not None
        self._clock = clock
        if events is not None:
            self._watch(events)

    # -- the request path ----------------------------------------------------------------------
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
        events = self.events
        usage = self.usage
        if events is not None:
            interested = events.interested
            if _AUTHENTICATED in interested and (
                usage is None or not defer or not self.merges_admitted
            ):
                events.defer(
                    _request_event,
                    _AUTHENTICATED,
                    self._clock(),
                    None,
                    principal.key_id,
                    principal.owner,
                    method,
                    template,
                    None,
                    peer,
                    forwarded_for,
                    verifier,
                    elapsed,
                    None,
                    None,
                )
            if rate is not None and rate.degraded and _FALLBACK in interested:
                self._fallback(verifier, principal, rate, method, template, peer, forwarded_for)
        if not defer and usage is not None:
            usage.count(principal.key_id, method, template, 200, peer, forwarded_for, verifier)

    def responded(self, admission: Admission, status: int) -> None:
        usage = self.usage
        if usage is not None:
            # UsageCounter.count, inlined: this runs once per admitted request. Everything
            # else (the counts, the authenticated event) is made of this record later.
            queue = usage._queue
            if len(queue) < usage._room:
                # Its flat record; a concatenation is cheaper than a starred tuple display.
                queue.extend(admission + (status, usage._clock()))  # noqa: RUF005
            else:
                usage._overflow += 1

    def _admitted_from_usage(
        self,
        verifier: Verifier,
        principal: Principal,
        method: str,
        template: str | None,
        peer: Any,
        forwarded_for: Any,
        elapsed: float,
        at: float,
    ) -> None:
        """The authenticated event of a request the usage counter recorded (its thread): the
        admission's fields, then the time."""
        events = self.events
        if events is None or _AUTHENTICATED not in events.interested or not self.merges_admitted:
            return
        events.defer(
            _request_event,
            _AUTHENTICATED,
            at,
            None,
            principal.key_id,
            principal.owner,
            method,
            template,
            None,
            peer,
            forwarded_for,
            verifier,
            elapsed,
            None,
            None,
        )

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
        code = decision.code
        kind = EventKind.DENIED
        key_id = owner = reason = None
        detail: Mapping[str, str] | None = None
        counted = False  # a request of the key's holder (its secret matched): usage counts it
        if principal is not None:
            key_id, owner, counted = principal.key_id, principal.owner, True
            if code is ErrorCode.INSUFFICIENT_SCOPE:
                kind = EventKind.SCOPE_DENIED
                if decision.required:
                    detail = {"required": " ".join(decision.required)}
                else:
                    reason = "no_rule"  # deny by default: no policy rule covers the route
            elif code is ErrorCode.RATE_LIMITED:
                kind = EventKind.RATE_LIMITED
                detail = _window_detail(rate)
            elif code is ErrorCode.AUTH_UNAVAILABLE:
                reason = "limiter_unavailable"
        elif code is ErrorCode.INVALID_API_KEY:
            found = presented_key_id(verifier, authorization)
            record = None if found is None else cached_record(verifier, found)
            if record is None:
                reason = "unknown_key"
            else:
                key_id, owner, reason = record.key_id, record.owner, "wrong_secret"
        elif code in _KEY_STATES:
            kind = _KEY_STATES[code]
            found = presented_key_id(verifier, authorization)
            record = None if found is None else cached_record(verifier, found)
            if record is not None:
                key_id, owner, counted = record.key_id, record.owner, True
        elif code is ErrorCode.RATE_LIMITED:
            reason = "address_blocked"  # the brute-force guard: too many failures from there
        elif code is ErrorCode.AUTH_UNAVAILABLE:
            reason = "store_unavailable"
        status = decision.status
        events = self.events
        if events is not None:
            interested = events.interested
            if kind in interested:
                events.defer(
                    _request_event,
                    kind,
                    self._clock(),
                    None if code is None else str(code),
                    key_id,
                    owner,
                    method,
                    template,
                    status,
                    peer,
                    forwarded_for,
                    verifier,
                    elapsed,
                    reason,
                    detail,
                )
            if rate is not None and (rate.degraded or rate.unavailable) and _FALLBACK in interested:
                self._fallback(verifier, principal, rate, method, template, peer, forwarded_for)
        if counted and key_id is not None:
            usage = self.usage
            if usage is not None:
                usage.count(key_id, method, template, status, peer, forwarded_for, verifier)

    def _fallback(
        self,
        verifier: Verifier,
        principal: Principal | None,
        rate: RateDecision,
        method: str,
        template: str | None,
        peer: Peer,
        forwarded_for: str | bytes | None,
    ) -> None:
        assert self.events is not None
        self.events.defer(
            _request_event,
            _FALLBACK,
            self._clock(),
            str(ErrorCode.AUTH_UNAVAILABLE) if rate.unavailable else None,
            None if principal is None else principal.key_id,
            None if principal is None else principal.owner,
            method,
            template,
            503 if rate.unavailable else None,
            peer,
            forwarded_for,
            verifier,
            None,
            None,
            _fallback_detail(rate),
        )

    # -- infrastructure ------------------------------------------------------------------------
    def store_failed(self, exc: BaseException) -> None:
        """A key-store read failed (the verifier's incident hook)."""
        events = self.events
        if events is not None and EventKind.STORE_UNAVAILABLE in events.interested:
            events.emit(
                Event(
                    kind=EventKind.STORE_UNAVAILABLE,
                    at=self._clock(),
                    code=str(ErrorCode.AUTH_UNAVAILABLE),
                    reason=type(exc).__name__,
                )
            )

    # -- lifecycle -----------------------------------------------------------------------------
    def subscribe(self, sink: Any, *, inline: bool = False) -> None:
        """Deliver events to ``sink`` too (an :class:`Emitter` is made if there was none);
        ``inline`` as in :meth:`Emitter.subscribe`."""
        if self.events is None:
            from keyguard.observability.events import Emitter

            self.events = Emitter()
            self.timed = True
            self._watch(self.events)
        self.events.subscribe(sink, inline=inline)

    def _watch(self, events: Emitter) -> None:
        if self.usage is not None:
            self.usage.on_admitted = self._admitted_from_usage
        events.on_change(self._sinks_changed)
        self._sinks_changed()

    def _sinks_changed(self) -> None:
        # An inline sink wanting "authenticated" must get it on the request path, in its
        # context: then admitted requests are not merged into their usage record.
        events = self.events
        self.merges_admitted = self.usage is not None and (
            events is None or _AUTHENTICATED not in events.inline_interested
        )

    def flush(self) -> bool:
        """Write the pending usage counts and deliver the pending events now (what the
        background threads do within a few seconds); ``True`` when both succeeded."""
        written = True if self.usage is None else self.usage.flush()
        delivered = True if self.events is None else self.events.flush()
        return written and delivered

    def close(self) -> None:
        """Write pending usage counts and deliver pending events, then stop both."""
        if self.usage is not None:
            self.usage.close()
        if self.events is not None:
            self.events.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Observer(events={self.events!r}, usage={self.usage!r})"
