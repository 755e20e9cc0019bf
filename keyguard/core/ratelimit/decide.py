"""The pure decision functions: :func:`decide` for one bucket and :func:`decide_pair` for a key
and its owner at once, on a state the caller owns (the reference the backends are held to)."""

from __future__ import annotations

from collections.abc import Sequence

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.plan import RateDecision, WindowPlan, _new_tuple, plan_for
from keyguard.core.ratelimit.state import RateState
from keyguard.core.ratelimit.windows import DEFAULT_WINDOWS, Window, _to_us, check_windows


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
    ``consume=False`` answers whether the request *would* be admitted and leaves ``state``
    untouched.
    """
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")
    if state is None:
        state = RateState()
    if not consume:
        # A peek must not move `last` or trim: a later hit with an earlier clock would then
        # miss units still inside its windows.
        return plan_for(windows).run(state.copy(), _to_us(now), cost, False), state
    return plan_for(windows).run(state, _to_us(now), cost, True), state


def _owner_names(key_windows: tuple[Window, ...], owner_windows: tuple[Window, ...]) -> list[str]:
    taken = {w.name for w in key_windows}
    names = []
    for i, w in enumerate(owner_windows):
        name = f"owner-{w.name}"
        n = 0
        # Too long for a window name, or clashing with a key window named "owner-...": fall
        # back to positional names, which are unique by construction.
        while len(name) > 32 or name in taken:
            n += 1
            name = f"owner-{i}" if n == 1 else f"owner-{i}-{n}"
        taken.add(name)
        names.append(name)
    return names


_PAIR_PLANS: dict[tuple[tuple[Window, ...], tuple[Window, ...]], WindowPlan] = {}


def pair_plan(key_windows: Sequence[Window], owner_windows: Sequence[Window]) -> WindowPlan:
    """The window set a key+owner decision reports: the key's windows, then the owner's
    renamed ``owner-<name>`` (``owner-<i>`` if that would clash or exceed 32 characters).

    Used for the decision's ``counts``/headers only; each bucket is decided with its own
    plan. Cached by value.
    """
    key = (tuple(key_windows), tuple(owner_windows))
    plan = _PAIR_PLANS.get(key)
    if plan is None:
        kw, ow = check_windows(key[0]), check_windows(key[1])
        renamed = tuple(
            Window(w.limit, w.period, name)
            for w, name in zip(ow, _owner_names(kw, ow), strict=True)
        )
        if len(_PAIR_PLANS) >= 1024:
            _PAIR_PLANS.clear()
        plan = _PAIR_PLANS[key] = plan_for(kw + renamed)
    return plan


def _run_pair(
    kplan: WindowPlan,
    oplan: WindowPlan,
    pplan: WindowPlan,
    kstate: RateState,
    ostate: RateState,
    now: int,
    cost: int,
) -> RateDecision:
    """Both buckets, all-or-nothing. Each is first decided without consuming (which, like a
    refused hit, only records its time and drops expired units); both consume only when both
    admit. A bucket's second run sees exactly the state of its first, so it admits again."""
    k = kplan.run(kstate, now, cost, False)
    if k[0]:
        o = oplan.run(ostate, now, cost, True)
        if o[0]:
            k = kplan.run(kstate, now, cost, True)
            return _new_tuple(RateDecision, (True, None, pplan, k[3] + o[3], 0, False, False))
    else:
        o = oplan.run(ostate, now, cost, False)
    retry = 0
    never = False
    for part in (k, o):
        if not part[0]:
            r = part[1]
            if r is None:
                never = True
            elif r > retry:
                retry = r
    mask = k[4] | o[4] << len(kplan.specs)
    return _new_tuple(
        RateDecision,
        (False, None if never else retry, pplan, k[3] + o[3], mask, False, False),
    )


def decide_pair(
    key_state: RateState | None,
    owner_state: RateState | None,
    now: float,
    cost: int,
    key_windows: Sequence[Window] = DEFAULT_WINDOWS,
    owner_windows: Sequence[Window] = DEFAULT_WINDOWS,
) -> tuple[RateDecision, RateState, RateState]:
    """:func:`decide` for a key and its owner at once: ``(decision, key_state, owner_state)``.

    Admitted iff every window of both buckets has room; then both consume ``cost``. A refusal
    consumes nothing in either; ``retry_after`` is the latest of the violated windows' waits
    (``None`` when some violated window's limit is below ``cost``). The decision's plan is
    :func:`pair_plan`: ``counts`` and ``violated_mask`` cover the key's windows, then the
    owner's. States are updated in place, as in :func:`decide`.
    """
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")
    if key_state is None:
        key_state = RateState()
    if owner_state is None:
        owner_state = RateState()
    if key_state is owner_state:
        raise ConfigurationError("a key and its owner need two distinct rate-limit states")
    kplan, oplan = plan_for(key_windows), plan_for(owner_windows)
    pplan = pair_plan(key_windows, owner_windows)
    return (
        _run_pair(kplan, oplan, pplan, key_state, owner_state, _to_us(now), cost),
        key_state,
        owner_state,
    )
