"""Brute-force guard: limit *failed* authentications per client address.

**Semantics.** An address may fail ``threshold`` times within ``window`` seconds and every
one of those failures is answered normally (401). The next failure within the window — the
``threshold + 1``-th — and every later one while the address stays over the threshold is
answered 429 ``rate_limited``: the address is *blocked* while it has more than ``threshold``
failures in the window, and ``Retry-After`` is the time until it no longer has. Failures are
counted in eight sub-windows of ``window / 8`` seconds, so a failure counts for at least
7/8 of the window and never longer than the window: the guard never blocks an address with
``threshold`` or fewer failures in the last ``window`` seconds, and always blocks one with
more than ``threshold`` failures in the last 7/8 of it. Failures answered 429 count too, so
an address that keeps guessing stays blocked. The defaults are 100 failures per 60 s.

**Which address.** :func:`~keyguard.core.addresses.client_address` gives the exact address;
the guard counts an IPv6 address under its ``/ipv6_prefix`` network (/64 by default: one
subscriber usually holds a whole /64) and an IPv4-mapped IPv6 address as the IPv4 host. A
request without an address (a server on a Unix socket without ``trusted_proxies``) is counted
under one shared bucket, :data:`UNKNOWN_CLIENT`, and a warning is logged once per process:
failing open there would let anyone behind that socket guess without limit.

**Memory.** Each tracked address costs one fixed-size record (a sub-window number and eight
counters in one list of nine integers, counted in place: a failure moves one counter and
rebuilds nothing) plus its key and its slot in the table: measured with ``tracemalloc`` at the
default bound and threshold, 100,000 addresses each failing in every sub-window and far past
the threshold, about 305 bytes per IPv4 address and 312 per IPv6 /64, so the default bound
costs about 31 MB per process (``tests/core/test_bruteforce.py`` asserts under 350 bytes).
Counters up to 256 are integers Python shares; with a threshold above 255, each counter past
256 adds 28 bytes. A packed ``bytes`` record cost about 80 bytes less per address and twice
the time per failure (rebuilt on every one); the list of failure times before it, about 4.3 KB
per blocked address at a threshold of 100: up to 434 MB.

**Never locking out the real key owner.** The guard counts and blocks *addresses*, never
keys: failures with a key id sent from address A do nothing to requests from address B, so an
attacker who knows (or guesses) a public key id cannot lock its owner out from anywhere else.
(Counting per key id would hand every attacker that denial of service.) The integration is:

1. Verify the credentials as usual.
2. On success, proceed. The guard is not consulted: a blocked address that presents a valid
   key still gets in, so even an owner behind the same NAT as an attacker keeps working.
3. On failure, :func:`judge_failure` (:meth:`BruteForceGuard.record_failure` for guesses):
   once the address is over the threshold, answer 429 ``rate_limited`` with ``Retry-After``
   instead of 401, so a guessing client is told to stop and gets no signal about why its
   guess failed.

:meth:`BruteForceGuard.is_blocked` may be used *before* verification only to skip work that
a failing request would cause (a store lookup for a key id that is not cached), never to
refuse a key that verifies. Successes never reset the count: otherwise an attacker holding
any valid key could interleave successes to keep guessing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol

from keyguard.core.addresses import MAX_ADDRESS_LENGTH, client_address, network_key
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, ErrorCode

__all__ = [
    "GUESSES",
    "UNKNOWN_CLIENT",
    "BruteForceGuard",
    "FailureGuard",
    "ajudge_failure",
    "blocked",
    "client_address",
    "client_bucket",
    "judge_failure",
]

logger = logging.getLogger("keyguard.bruteforce")

#: The bucket counting requests that carry no client address.
UNKNOWN_CLIENT: Final = "unknown"

#: Denials that count as a guess: a malformed key, an unknown id, a wrong secret. Expired and
#: revoked keys are real keys; telling their holder so gives a guesser nothing.
GUESSES: Final = frozenset({ErrorCode.INVALID_API_KEY, ErrorCode.INVALID_API_KEY_FORMAT})

DEFAULT_THRESHOLD: Final = 100
DEFAULT_WINDOW: Final = 60.0
DEFAULT_MAX_CLIENTS: Final = 100_000
DEFAULT_IPV6_PREFIX: Final = 64

_SLOTS: Final = 8
# One address's record, counted in place: the number of its newest sub-window, then a ring of
# _SLOTS counters (sub-window n is at index 1 + n % _SLOTS), as one list of nine integers
# (a list rather than an array: its items are read and summed without boxing each one).
_EMPTY: Final = (0,) * _SLOTS


_MAX_COUNT: Final = 2**32 - 1
# What client_bucket() makes of an address without ":" (IPv4 or a name): the address itself,
# cut to this length; spelled out on the per-failure path.
_MAX_KEY: Final = MAX_ADDRESS_LENGTH
_floor = math.floor

_unknown_warned = False


def _warn_unknown() -> None:
    global _unknown_warned
    if not _unknown_warned:
        _unknown_warned = True
        logger.warning(
            "brute-force guard: a request carried no client address (a Unix socket?); all "
            "such requests share one failure counter (%r), so their failures can block each "
            "other. Pass the peer address, or set trusted_proxies behind a proxy that sends "
            "X-Forwarded-For. Logged once per process.",
            UNKNOWN_CLIENT,
        )


def client_bucket(client: str | None, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What a guard counts ``client``'s failures under: its IPv6 ``/ipv6_prefix`` network, the
    IPv4 host for IPv4 and IPv4-mapped IPv6 (:func:`~keyguard.core.addresses.network_key`),
    and :data:`UNKNOWN_CLIENT` for ``None`` (with a warning, once per process). Shared by
    every guard and per-address budget, so they all group addresses alike."""
    if client is None:
        _warn_unknown()
        return UNKNOWN_CLIENT
    return network_key(client, ipv6_prefix)


class FailureGuard(Protocol):
    """What the verifier and the adapters need of a brute-force guard: :class:`BruteForceGuard`
    (one process) and ``keyguard.stores.redis_ratelimit.RedisBruteForceGuard`` (shared)."""

    def is_blocked(self, client: str | None) -> int | None: ...
    def record_failure(self, client: str | None) -> int | None: ...
    async def ais_blocked(self, client: str | None) -> int | None: ...
    async def arecord_failure(self, client: str | None) -> int | None: ...


def blocked(retry_after: int) -> Decision:
    """The 429 ``rate_limited`` answer to a failure from a blocked address."""
    return Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "Too many failed authentication attempts from this address.",
        retry_after=max(1, retry_after),
    )


def judge_failure(guard: FailureGuard, failure: Decision, client: str | None) -> Decision:
    """Step 3 of the integration: count ``failure`` for ``client`` if it is a guess
    (:data:`GUESSES`) and return what to answer — ``failure`` itself, or :func:`blocked` once
    the address is over the threshold."""
    if failure.code not in GUESSES:
        return failure
    retry_after = guard.record_failure(client)
    return failure if retry_after is None else blocked(retry_after)


async def ajudge_failure(guard: FailureGuard, failure: Decision, client: str | None) -> Decision:
    """:func:`judge_failure` for async callers."""
    if failure.code not in GUESSES:
        return failure
    retry_after = await guard.arecord_failure(client)
    return failure if retry_after is None else blocked(retry_after)


class BruteForceGuard:
    """Counts failed authentications per client address, in memory (one process).

    More than ``threshold`` failures within ``window`` seconds block the address until it is
    back to ``threshold``; see the module docstring for the exact semantics, the address
    grouping (``ipv6_prefix``), the memory cost and how to use it without locking out a key's
    owner. At most ``max_clients`` addresses are tracked (least recently failing evicted
    first). ``clock`` is a monotonic clock in seconds; if it ever steps back, the guard keeps
    its own time where it was until the clock catches up, so a block never ends early.
    """

    __slots__ = (
        "_latest",
        "_lock",
        "_records",
        "_slot",
        "_tracked",
        "clock",
        "ipv6_prefix",
        "max_clients",
        "threshold",
        "window",
    )

    def __init__(
        self,
        threshold: int = DEFAULT_THRESHOLD,
        window: float = DEFAULT_WINDOW,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int)
            or not 1 <= threshold < _MAX_COUNT
        ):
            raise ConfigurationError(
                f"threshold must be an integer from 1 to {_MAX_COUNT - 1}, got {threshold!r}"
            )
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not window > 0
            or not math.isfinite(window)
        ):
            raise ConfigurationError(f"window must be a number of seconds > 0, got {window!r}")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigurationError(f"max_clients must be an integer >= 1, got {max_clients!r}")
        if (
            isinstance(ipv6_prefix, bool)
            or not isinstance(ipv6_prefix, int)
            or not 1 <= ipv6_prefix <= 128
        ):
            raise ConfigurationError(
                f"ipv6_prefix must be an integer from 1 to 128, got {ipv6_prefix!r}"
            )
        self.threshold = threshold
        self.window = float(window)
        self.max_clients = max_clients
        self.ipv6_prefix = ipv6_prefix
        self.clock = clock
        self._slot = self.window / _SLOTS
        # A counter never needs to exceed threshold + 1: one such sub-window blocks alone.
        self._tracked = threshold + 1
        self._latest = -math.inf
        self._lock = threading.Lock()
        self._records: OrderedDict[str, list[int]] = OrderedDict()

    #: Counts in memory: callers on an event loop may call the sync methods directly.
    in_process: Final = True

    def bucket(self, client: str | None) -> str:
        """The key ``client``'s failures are counted under (:func:`client_bucket`)."""
        return client_bucket(client, self.ipv6_prefix)

    def _now(self) -> tuple[float, float]:
        """(the clock, the guard's time): the latter never goes back. Call under the lock."""
        now = self.clock()
        latest = self._latest
        if now > latest:
            self._latest = latest = now
        return now, latest

    def _retry_after(self, record: list[int], now: float, latest: float) -> int | None:
        top = record[0]
        # Sub-windows before the first live one have expired; top is never past current.
        first = math.floor(latest / self._slot) - _SLOTS + 1
        live = range(first, top + 1)
        total = sum(record[1 + n % _SLOTS] for n in live)
        if total <= self.threshold:
            return None
        for n in live:  # oldest first: when does enough of the count leave the window?
            total -= record[1 + n % _SLOTS]
            if total <= self.threshold:
                break
        # Sub-window n stops counting when the clock reaches its start + window.
        return max(1, math.ceil((n + _SLOTS) * self._slot - now))

    def is_blocked(self, client: str | None) -> int | None:
        """Seconds until ``client`` is unblocked (``Retry-After``), or ``None`` if it is not."""
        key = self.bucket(client)
        with self._lock:
            now, latest = self._now()
            record = self._records.get(key)
            return None if record is None else self._retry_after(record, now, latest)

    def record_failure(self, client: str | None) -> int | None:
        """Count a failed authentication; returns :meth:`is_blocked` after counting it, so
        ``None`` for the first ``threshold`` failures in the window."""
        key = self.bucket(client) if client is None or ":" in client else client[:_MAX_KEY]
        # acquire()/release() rather than ``with``: on the path of every refused guess, the
        # with statement's __enter__/__exit__ lookups and calls cost more than the lock.
        lock = self._lock
        lock.acquire()
        try:
            now = self.clock()
            latest = self._latest
            if now > latest:
                self._latest = latest = now
            current = _floor(latest / self._slot)
            records = self._records
            record = records.get(key)
            if record is None:
                # The address's first failure on record: counted, and one failure is under
                # any threshold (>= 1), so there is nothing to add up.
                record = [current, *_EMPTY]
                record[1 + current % _SLOTS] = 1
                records[key] = record
                if len(records) > self.max_clients:
                    records.popitem(last=False)
                return None
            records.move_to_end(key)
            top = record[0]
            if top != current:
                # Clear the sub-windows that ended since the newest (all, after a window).
                for n in range(top + 1, min(current, top + _SLOTS) + 1):
                    record[1 + n % _SLOTS] = 0
                record[0] = current
            # Counted in place (another failure in the address's newest sub-window, a client
            # retrying or a guesser, moves one counter and rebuilds nothing).
            i = 1 + current % _SLOTS
            if record[i] < self._tracked:
                record[i] += 1
            # Every slot now holds a live sub-window (current - 7 .. current, the expired ones
            # cleared above), so their sum is the count in the window: the common case, an
            # address under the threshold, needs no per-sub-window walk.
            if sum(record) - current <= self.threshold:
                return None
            return self._retry_after(record, now, latest)
        finally:
            lock.release()

    def reset(self, client: str | None) -> None:
        """Forget the failures counted for ``client``'s bucket (an operator unblocking an
        address; for IPv6 this unblocks its whole network)."""
        key = self.bucket(client)
        with self._lock:
            self._records.pop(key, None)

    async def ais_blocked(self, client: str | None) -> int | None:
        """:meth:`is_blocked` for async callers (in memory: runs inline)."""
        return self.is_blocked(client)

    async def arecord_failure(self, client: str | None) -> int | None:
        """:meth:`record_failure` for async callers (in memory: runs inline)."""
        return self.record_failure(client)

    async def areset(self, client: str | None) -> None:
        """:meth:`reset` for async callers."""
        self.reset(client)

    def __len__(self) -> int:
        return len(self._records)
