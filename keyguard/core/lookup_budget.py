"""A per-address budget for store lookups of key ids that turn out not to exist.

A key's checksum is public, so anyone can mint well-formed keys with fresh key ids; each is a
cache miss, and without a bound each would be a store read. The verifier caches unknown ids
(the negative cache), but fresh ids defeat any cache. :class:`LookupBudget` gives every client
address a small token bucket: a store lookup takes a token, and gets it back when the id
exists, so only lookups of *unknown* ids spend the budget and clients using real keys never
run out. Past the budget the verifier answers as for an unknown key (``invalid_api_key``)
without reading the store.

Memory is bounded: at most ``max_clients`` addresses are tracked (least recently seen evicted
first), about 250 bytes each with the address string: 2.5 MB at the default bound of 10,000.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from keyguard.core.errors import ConfigurationError

__all__ = ["LookupBudget"]


class LookupBudget:
    """A token bucket per client address: ``lookups`` store lookups of unknown key ids per
    ``per`` seconds, in bursts of up to ``lookups``. A ``None`` client (unknown address) is
    never limited. Thread-safe."""

    __slots__ = ("_buckets", "_clock", "_lock", "_rate", "lookups", "max_clients", "per")

    def __init__(
        self,
        lookups: int = 60,
        per: float = 60.0,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(lookups, bool) or not isinstance(lookups, int) or lookups < 1:
            raise ConfigurationError(f"lookups must be an integer >= 1, got {lookups!r}")
        if not isinstance(per, int | float) or not per > 0 or not math.isfinite(per):
            raise ConfigurationError(f"per must be a number of seconds > 0, got {per!r}")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigurationError("max_clients must be an integer >= 1")
        self.lookups = lookups
        self.per = float(per)
        self.max_clients = max_clients
        self._rate = lookups / self.per
        self._clock = clock
        self._lock = threading.Lock()
        # address -> [tokens, time of the last update]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, client: str | None) -> bool:
        """Spend one lookup of ``client``'s budget; ``False`` (nothing spent) when it is empty."""
        if client is None:
            return True
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                self._buckets[client] = [self.lookups - 1.0, now]
                if len(self._buckets) > self.max_clients:
                    self._buckets.popitem(last=False)
                return True
            self._buckets.move_to_end(client)
            # max(): a clock stepping back refills nothing (and takes nothing away).
            tokens = min(self.lookups, bucket[0] + max(0.0, now - bucket[1]) * self._rate)
            bucket[1] = max(now, bucket[1])
            if tokens < 1.0:
                bucket[0] = tokens
                return False
            bucket[0] = tokens - 1.0
            return True

    def refund(self, client: str | None) -> None:
        """Give back a lookup taken by :meth:`take` (the key id existed)."""
        if client is None:
            return
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None:
                bucket[0] += 1.0  # take() caps the bucket at its size

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"LookupBudget(lookups={self.lookups}, per={self.per:g})"
