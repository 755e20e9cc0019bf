"""Brute-force guard: limit *failed* authentications per client address.

A client address is blocked while it has at least ``threshold`` failed authentications in
the last ``window`` seconds (a sliding window); ``Retry-After`` is when the oldest of those
failures leaves the window.

**Never locking out the real key owner.** The guard counts and blocks *addresses*, never
keys: failures with a key id sent from address A do nothing to requests from address B, so an
attacker who knows (or guesses) a public key id cannot lock its owner out from anywhere else.
(Counting per key id would hand every attacker that denial of service.) The integration is:

1. Verify the credentials as usual.
2. On success, proceed. The guard is not consulted: a blocked address that presents a valid
   key still gets in, so even an owner behind the same NAT as an attacker keeps working.
3. On failure, :meth:`BruteForceGuard.record_failure`; if the address is (now) blocked,
   answer 429 ``rate_limited`` with ``Retry-After`` instead of 401, so a guessing client is
   told to stop and gets no signal about why its guess failed.

:meth:`BruteForceGuard.is_blocked` may be used *before* verification only to skip work that
a failing request would cause (a store lookup for a key id that is not cached), never to
refuse a key that verifies. Successes never reset the count: otherwise an attacker holding
any valid key could interleave successes to keep guessing.

:func:`client_address` picks the address to count, trusting ``X-Forwarded-For`` only as far
as the deployment says proxies append to it.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

from keyguard.core.errors import ConfigurationError

__all__ = ["BruteForceGuard", "client_address"]

_MAX_ADDRESS_LEN: Final = 64


def _normalize(address: str) -> str | None:
    address = address.strip()
    if not address or len(address) > _MAX_ADDRESS_LEN:
        return None
    candidates = [address]
    # "[v6]:port" and "v4:port" forms, as some proxies write them.
    if address.startswith("["):
        candidates.append(address[1:].partition("]")[0])
    elif address.count(":") == 1:
        candidates.append(address.partition(":")[0])
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        # One host, one counter: "::ffff:1.2.3.4" is 1.2.3.4.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    return None


def client_address(
    peer: str | None, forwarded_for: str | None, *, trusted_proxies: int = 0
) -> str | None:
    """The client address to attribute a request to, canonicalised (``None``: unknown).

    ``peer`` is the transport's remote address (ASGI ``scope["client"][0]``, WSGI
    ``REMOTE_ADDR``). ``forwarded_for`` is the ``X-Forwarded-For`` value (several fields
    joined with ``", "``). With ``trusted_proxies=0`` (the default) the header is ignored:
    anyone can write it, so trusting it would let an attacker pick a fresh address per
    guess. With ``n > 0`` proxies in front of the app, each appending the address it saw,
    the client is the ``n``-th entry from the right; entries further left were written by
    the client and are ignored. A header with fewer than ``n`` entries did not come through
    all the proxies, and the peer is used.

    A peer that is not an IP address (a Unix socket, a test client) is returned as given.
    """
    if isinstance(trusted_proxies, bool) or not isinstance(trusted_proxies, int):
        raise ConfigurationError("trusted_proxies must be an integer >= 0")
    if trusted_proxies < 0:
        raise ConfigurationError("trusted_proxies must be an integer >= 0")
    if trusted_proxies and forwarded_for:
        entries = forwarded_for.split(",")
        if len(entries) >= trusted_proxies:
            return _normalize(entries[-trusted_proxies])
    if peer is None:
        return None
    normalized = _normalize(peer)
    if normalized is not None:
        return normalized
    peer = peer.strip()
    return peer[:_MAX_ADDRESS_LEN] or None


class BruteForceGuard:
    """Counts failed authentications per client address, in memory (one process).

    ``threshold`` failures within ``window`` seconds block the address until the oldest of
    them is ``window`` old. At most ``max_clients`` addresses are tracked (least recently
    failing evicted first); only the last ``threshold`` failure times of each are kept, which
    is all the sliding window needs. A ``None`` client (unknown address) is never blocked.
    See the module docstring for how to use it without locking out a key's owner.
    """

    __slots__ = ("_clock", "_failures", "_lock", "max_clients", "threshold", "window")

    def __init__(
        self,
        threshold: int = 10,
        window: float = 60.0,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(f"threshold must be an integer >= 1, got {threshold!r}")
        if not isinstance(window, int | float) or not window > 0 or not math.isfinite(window):
            raise ConfigurationError(f"window must be a number of seconds > 0, got {window!r}")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigurationError("max_clients must be an integer >= 1")
        self.threshold = threshold
        self.window = float(window)
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _retry_after(self, times: deque[float], now: float) -> int | None:
        if len(times) < self.threshold:
            return None
        wait = times[0] + self.window - now
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def is_blocked(self, client: str | None) -> int | None:
        """Seconds until ``client`` is unblocked (``Retry-After``), or ``None`` if it is not."""
        if client is None or client not in self._failures:
            return None
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            return None if times is None else self._retry_after(times, now)

    def record_failure(self, client: str | None) -> int | None:
        """Count a failed authentication; returns :meth:`is_blocked` after counting it."""
        if client is None:
            return None
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                times = self._failures[client] = deque(maxlen=self.threshold)
                if len(self._failures) > self.max_clients:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(client)
            # max() keeps the times ordered if the clock steps back.
            times.append(max(now, times[-1]) if times else now)
            return self._retry_after(times, now)

    def reset(self, client: str) -> None:
        """Forget ``client``'s failures (an operator unblocking an address)."""
        with self._lock:
            self._failures.pop(client, None)

    async def ais_blocked(self, client: str | None) -> int | None:
        """:meth:`is_blocked` for async callers (in memory: runs inline)."""
        return self.is_blocked(client)

    async def arecord_failure(self, client: str | None) -> int | None:
        """:meth:`record_failure` for async callers (in memory: runs inline)."""
        return self.record_failure(client)

    async def areset(self, client: str) -> None:
        """:meth:`reset` for async callers."""
        self.reset(client)

    def __len__(self) -> int:
        return len(self._failures)
