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
window's limit). A longer window (the day) counts units in at most ``LONG_WINDOW_BUCKETS``
(96) buckets, one per ``period / 96`` slice of time (15 min for a day) that saw admissions.
A bucket remembers its units and the time of its latest admission, and all its units leave
the window together, ``W`` after that latest one. So a bucketed window never admits more than
the exact formula would; a unit admitted at ``s`` stops counting before ``s + W + W/96``
instead of at ``s + W`` (less than one bucket late), so it refuses only requests that the
exact rule would refuse over the slightly longer window ``(t - W - W/96, t]``; its
Retry-After is exact for its buckets, and the reset it reports never exceeds ``W``.

**Time.** All arithmetic is on integer microseconds (``round(now * 1e6)``), so the Redis
Lua script, which implements the same steps, reaches identical decisions (a differential
test holds it to :func:`decide`, the reference). A clock that goes backwards never admits
extra requests: the decision uses ``max(now, last now seen)``. The in-process backend reads a
monotonic clock (a wall-clock step grants no fresh burst); Redis uses its own ``TIME``.

**Headers.** :func:`rate_limit_headers` renders a decision as ``Retry-After`` (refusals),
the IETF ``RateLimit-Policy``/``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-10
and -11 syntax) and the legacy ``X-RateLimit-*`` trio.

**Owner (tenant) limits.** :func:`decide_pair` decides a request against two buckets at once,
a key's and its owner's, each with its own windows: it is admitted iff every window of *both*
has room, a refusal consumes nothing in either, and Retry-After is the latest moment any
violated window of either frees up. Each bucket keeps its own last-seen time. The decision
reports the combined window set of :func:`pair_plan` (the owner's windows renamed
``owner-<name>``), so the headers show both.

**Backends.** :class:`MemoryRateLimiter` (in-process) and
:class:`keyguard.stores.redis_ratelimit.RedisRateLimiter` (distributed) satisfy
:class:`RateLimiter`; :class:`ResilientLimiter` wraps a remote backend with a circuit breaker
and a fail-local, fail-open or fail-closed mode.

**Modules.** :mod:`.windows` (the window grammar), :mod:`.state` (one bucket's state),
:mod:`.plan` (the decision compiled per window set), :mod:`.decide` (the pure decision
functions), :mod:`.headers` (header rendering), :mod:`.protocol` (the backend contract),
:mod:`.memory` (the in-process backend), :mod:`.resilient` (the resilient wrapper) with
:mod:`.breaker` (its circuit breaker and fallback log) and :mod:`.stats` (counters). Import
from this package: the module layout is not part of the API.
"""

from __future__ import annotations

from keyguard.core.ratelimit.decide import decide, decide_pair, pair_plan
from keyguard.core.ratelimit.headers import (
    admitted_headers,
    admitted_headers_asgi,
    rate_limit_headers,
    refused_headers,
)
from keyguard.core.ratelimit.memory import MemoryRateLimiter
from keyguard.core.ratelimit.plan import RateDecision, WindowPlan, WindowStatus, plan_for
from keyguard.core.ratelimit.protocol import BackendDown, BackendSlow, RateLimiter
from keyguard.core.ratelimit.resilient import Mode, ResilientLimiter
from keyguard.core.ratelimit.state import RateState
from keyguard.core.ratelimit.stats import Counters
from keyguard.core.ratelimit.windows import (
    DEFAULT_WINDOWS,
    EXACT_MAX_LIMIT,
    EXACT_MAX_PERIOD,
    LONG_WINDOW_BUCKETS,
    MAX_LIMIT,
    MAX_PERIOD,
    Window,
    check_windows,
    format_windows,
    parse_windows,
    validate_cost,
)

__all__ = [
    "DEFAULT_WINDOWS",
    "EXACT_MAX_LIMIT",
    "EXACT_MAX_PERIOD",
    "LONG_WINDOW_BUCKETS",
    "MAX_LIMIT",
    "MAX_PERIOD",
    "BackendDown",
    "BackendSlow",
    "Counters",
    "MemoryRateLimiter",
    "Mode",
    "RateDecision",
    "RateLimiter",
    "RateState",
    "ResilientLimiter",
    "Window",
    "WindowPlan",
    "WindowStatus",
    "admitted_headers",
    "admitted_headers_asgi",
    "check_windows",
    "decide",
    "decide_pair",
    "format_windows",
    "pair_plan",
    "parse_windows",
    "plan_for",
    "rate_limit_headers",
    "refused_headers",
    "validate_cost",
]
