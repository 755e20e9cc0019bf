"""The admitted path fused: one generated function decides, consumes and renders the headers.

:func:`admit_function` compiles, per window plan, ``admit(state, now, cost, ietf, legacy)``:
the plan's decision (``plan.run(state, now, cost, True)``) and, when it admits, the plan's
header renderer run on its counts, as one straight-line function. On the default path (an
admitted request) the rate-limit headers come out of one call, with no decision tuple built,
passed and unpacked on the way. It returns the headers (a list of ASGI byte pairs, or a tuple
of text pairs: what :func:`~keyguard.core.ratelimit.headers.admitted_headers_asgi` /
:func:`~keyguard.core.ratelimit.headers.admitted_headers` render) when the request is admitted,
and the refusal's :class:`~keyguard.core.ratelimit.plan.RateDecision` when it is not.

Both halves are generated from the very source pieces the plan's ``run`` and renderers are
built from (:func:`keyguard.core.ratelimit.plan._source`,
:func:`keyguard.core.ratelimit.headers._render_source`), so the fused function cannot decide
or render differently from them; a differential test holds it to ``render(run(...))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.headers import _render_source
from keyguard.core.ratelimit.plan import RateDecision, WindowPlan, _source, define
from keyguard.core.ratelimit.state import RateState

#: ``admit(state, now_us, cost, ietf, legacy)`` -> the admitted headers, or the refusal.
Admit = Callable[[RateState, int, int, bool, bool], "list[Any] | tuple[Any, ...] | RateDecision"]


def admit_function(plan: WindowPlan, *, text: bool = False) -> Admit:
    """``plan``'s fused admission (ASGI headers, or text headers with ``text``), compiled on
    first use and kept on the plan."""
    fused = plan.text_admit if text else plan.asgi_admit
    if fused is None:
        fused = _compile(plan, text=text)
        if text:
            plan.text_admit = fused
        else:
            plan.asgi_admit = fused
    return fused


def _body(plan: WindowPlan, *, text: bool, unit: bool = False) -> tuple[list[str], dict[str, Any]]:
    """The fused function's body (at function-body indent, reading ``state``, ``now``,
    ``cost``, ``ietf`` and ``legacy``; every path returns) and its globals. ``unit``: for a
    ``cost`` of 1 only (see :func:`~keyguard.core.ratelimit.plan._source`)."""
    ind = "    "
    decision = _source(plan, unit=unit)
    render, render_globals = _render_source(plan, text=text, admitted=True)
    src = [*decision.prelude, f"{ind}if {decision.admit}:"]
    src += [f"{ind * 2}{line}" for line in decision.consume]
    # Headers off: nothing to count for them (the default, both on, pays one test).
    src += [f"{ind * 2}if not ietf and not legacy:", f"{ind * 3}return {'()' if text else '[]'}"]
    src.append(f"{ind * 2}c = (")
    src += [f"{ind * 3}{count}" for count in decision.taken]
    src.append(f"{ind * 2})")
    # The renderer's body, one level deeper: every one of its paths returns.
    src += [f"{ind}{line}" for line in render]
    src += decision.refusal
    namespace: dict[str, Any] = {**decision.namespace, **render_globals}
    if len(namespace) != len(decision.namespace) + len(render_globals):
        raise AssertionError("the decision's and the renderer's globals collide")
    return src, namespace


def _compile(plan: WindowPlan, *, text: bool) -> Admit:
    body, namespace = _body(plan, text=text)
    src = ["def admit(state, now, cost, ietf, legacy):", *body]
    kind = "text" if text else "asgi"
    define(src, f"<keyguard.ratelimit {kind} admit {plan!r}>", namespace)
    return namespace["admit"]  # type: ignore[no-any-return]


#: ``admit(bucket, cost, ietf, legacy)`` -> the admitted headers, or the refusal.
BoundAdmit = Callable[[str, int, bool, bool], "list[Any] | tuple[Any, ...] | RateDecision"]


def bound_admit_function(plan: WindowPlan, limiter: Any, *, text: bool) -> BoundAdmit:
    """``plan``'s fused admission bound to one :class:`~keyguard.core.ratelimit.memory.
    MemoryRateLimiter`: ``admit(bucket, cost, ietf, legacy)``, the limiter's own steps (the
    clock, the bucket's stripe and lock, its state created or moved to the LRU end: what
    ``MemoryRateLimiter.hit`` does) and :func:`admit_function`'s body in one function, so the
    verifier's fast path makes one call where it made two. The limiter's stripes, locks and
    sizes are fixed when it is built; its clock is read from it on every call.

    Two functions in fact: ``admit`` itself runs the body generated for a cost of 1 (nearly
    every request's), and hands any other cost, once checked, to ``any_cost``, the same steps
    generated for any cost."""
    ind = "    "

    def steps(body: list[str]) -> list[str]:
        """The limiter's steps around ``body``: its clock, the stripe, lock and LRU touch."""
        return [
            f"{ind}now = _floor(LIMITER._clock() * 1e6 + 0.5)",
            f"{ind}i = hash(bucket) & MASK",
            f"{ind}lock = LOCKS[i]",
            f"{ind}lock.acquire()",
            f"{ind}try:",
            f"{ind * 2}states = STRIPES[i]",
            f"{ind * 2}state = states.get(bucket)",
            f"{ind * 2}if state is None:",
            f"{ind * 3}state = states[bucket] = RateState()",
            f"{ind * 3}if len(states) > PER_STRIPE:",
            f"{ind * 4}states.popitem(last=False)",
            f"{ind * 2}else:",
            f"{ind * 3}states.move_to_end(bucket)",
            *[f"{ind}{line}" for line in body],
            f"{ind}finally:",
            f"{ind * 2}lock.release()",
        ]

    body, namespace = _body(plan, text=text)
    unit_body, unit_namespace = _body(plan, text=text, unit=True)
    if unit_namespace.keys() != namespace.keys():
        raise AssertionError("the unit and any-cost bodies need different globals")
    src = [
        "def any_cost(bucket, cost, ietf, legacy):",
        *steps(body),
        "def admit(bucket, cost, ietf, legacy):",
        # The common cost, 1, is CPython's one cached 1: an identity test passes it (a bool
        # or a float equal to 1 is not that object, and meets the full check).
        f"{ind}if cost is not ONE:",
        f"{ind * 2}if cost.__class__ is not int or cost < 1:",
        f"{ind * 3}_bad_cost(cost)",
        f"{ind * 2}return any_cost(bucket, cost, ietf, legacy)",
        *steps(unit_body),
    ]
    bound = {
        "LIMITER": limiter,
        "MASK": limiter._mask,
        "LOCKS": limiter._locks,
        "STRIPES": limiter._stripes,
        "PER_STRIPE": limiter._per_stripe,
        "RateState": RateState,
        "_floor": math.floor,
        "_bad_cost": _bad_cost,
        "ONE": 1,
    }
    if bound.keys() & namespace.keys():
        raise AssertionError("the limiter's and the decision's globals collide")
    namespace.update(bound)
    kind = "text" if text else "asgi"
    define(src, f"<keyguard.ratelimit bound {kind} admit {plan!r}>", namespace)
    return namespace["admit"]  # type: ignore[no-any-return]


def _bad_cost(cost: object) -> None:
    raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")
