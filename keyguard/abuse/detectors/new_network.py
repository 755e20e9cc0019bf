"""A key used from a network it has never used: a copy of the key somewhere new.

Most keys live on a few servers, so the networks a key is used from are a stable fact about
it. This detector learns them — the IPv4 ``/24`` or IPv6 ``/48`` of every request made with the
key's right secret (``AUTHENTICATED``, ``SCOPE_DENIED`` and ``RATE_LIMITED`` events) — and
fires when a key past its warm-up shows up on one it has not used within ``horizon`` (30 days
by default). With a ``resolver`` (a callable from an address to a country code, e.g. over a
GeoIP database) it learns countries instead: a new network in a known country is then not news.

**Warm-up.** A key's first ``warmup`` uses (200 by default) only teach: a new key is being
deployed, and every network it meets is new. A key idle for longer than ``horizon`` forgets
and learns again (a marker renewed while the key is in use says it is past its warm-up).
**Roaming keys.** A key seen on more than ``max_networks`` networks (32)
within the horizon (a mobile app's key, a CI provider's runners) says nothing by its network:
the detector stops judging it until this process forgets the key.

**What is shared.** The counts of uses, of each network and of distinct networks live in the
counters, so with a shared backend a network first used through one process is known to all.
Each process also remembers, per key (at most ``max_keys`` keys, least recently used
forgotten), which networks it has checked in the last ``horizon / 8``, so a key used from a
known network costs no counter call; a forgotten key costs one call per network again, never
an alert (its counters still know it).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import ClassVar, Final

from cachetools import LRUCache

from keyguard.abuse.detectors.base import (
    DEFAULT_COOLDOWN,
    Alarm,
    Detector,
    counter_part,
    positive,
    seconds_text,
    whole,
)
from keyguard.core.detector_counters import Window
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event, EventKind

__all__ = ["NewNetworkDetector", "Resolver", "network_of"]

logger = logging.getLogger("keyguard.abuse.detectors")

#: An address → a region (a country code), or ``None`` when unknown.
Resolver = Callable[[str], "str | None"]

_V4_MAPPED: Final = bytes(10) + b"\xff\xff"
#: Client addresses remembered per key with their network.
_MAX_PLACES: Final = 8
_REGION_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def network_of(address: str, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str | None:
    """The network ``address`` belongs to (``"203.0.113.0/24"``, ``"2001:db8:1::/48"``), or
    ``None`` when it is not an IP address. IPv4-mapped IPv6 counts as IPv4."""
    text = address.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
        family, prefix = socket.AF_INET, ipv4_prefix
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text.partition("%")[0])
        except (OSError, ValueError):
            return None
        if packed.startswith(_V4_MAPPED):
            packed, family, prefix = packed[12:], socket.AF_INET, ipv4_prefix
        else:
            family, prefix = socket.AF_INET6, ipv6_prefix
    bits = len(packed) * 8
    value = int.from_bytes(packed, "big") >> (bits - prefix) << (bits - prefix)
    return f"{socket.inet_ntop(family, value.to_bytes(len(packed), 'big'))}/{prefix}"


class _KeyState:
    """What one process remembers of one key."""

    __slots__ = ("counting", "known", "places", "roaming", "warm_until")

    def __init__(self) -> None:
        #: until when this process trusts that the key is past its warm-up
        self.warm_until = 0.0
        #: whether the key was found cold and its uses are being counted
        self.counting = False
        self.roaming = False
        #: network → until when this process trusts that the counters know it
        self.known: dict[str, float] = {}
        #: the key's recent client addresses → their network (saves parsing them again)
        self.places: dict[str, str | None] = {}


class NewNetworkDetector(Detector):
    """A key past its warm-up used from a network (or country) it did not use within
    ``horizon`` (see the module docstring)."""

    name: ClassVar[str] = "new_network"
    kinds: ClassVar[frozenset[EventKind]] = frozenset(
        {EventKind.AUTHENTICATED, EventKind.SCOPE_DENIED, EventKind.RATE_LIMITED}
    )

    def __init__(
        self,
        *,
        warmup: int = 200,
        horizon: float = 30 * 86400.0,
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 48,
        resolver: Resolver | None = None,
        max_networks: int = 32,
        max_keys: int = 20_000,
        suspend: bool = False,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        self.warmup = whole(warmup, f"{self.name}: warmup", minimum=0)
        self.horizon = Window(positive(horizon, f"{self.name}: horizon", minimum=60))
        self.ipv4_prefix = whole(ipv4_prefix, f"{self.name}: ipv4_prefix", minimum=8)
        self.ipv6_prefix = whole(ipv6_prefix, f"{self.name}: ipv6_prefix", minimum=16)
        if self.ipv4_prefix > 32 or self.ipv6_prefix > 128:
            raise ConfigurationError(
                f"{self.name}: ipv4_prefix is at most 32 and ipv6_prefix at most 128"
            )
        if resolver is not None and not callable(resolver):
            raise ConfigurationError(f"{self.name}: resolver must be a callable")
        self.resolver = resolver
        self.max_networks = whole(max_networks, f"{self.name}: max_networks")
        self.max_keys = whole(max_keys, f"{self.name}: max_keys")
        self._refresh = self.horizon.seconds / 8
        self._keys: LRUCache[str, _KeyState] = LRUCache(maxsize=self.max_keys)
        self._resolver_failed = False

    def _place(self, client: str) -> str | None:
        if self.resolver is None:
            return network_of(client, self.ipv4_prefix, self.ipv6_prefix)
        try:
            region = self.resolver(client)
        except Exception:  # a user's resolver must not stop detection of everything else
            if not self._resolver_failed:
                self._resolver_failed = True
                logger.exception("new_network: the resolver failed (logged once)")
            return None
        if not isinstance(region, str) or not region or len(region) > 16:
            return None
        if not set(region) <= _REGION_CHARS:
            return None
        return region.upper()

    def observe(self, event: Event) -> Alarm | None:
        key_id, client = event.key_id, event.client
        if key_id is None or client is None:
            return None
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState()
        if state.roaming:
            return None
        places = state.places
        if client in places:
            place = places[client]
        else:
            if len(places) >= _MAX_PLACES:
                places.clear()
            place = places[client] = self._place(client)
        if place is None:
            return None
        at = event.at
        learning = state.warm_until <= at and self._learning(state, key_id, at)
        until = state.known.get(place)
        if until is not None and until > at:
            return None
        if until is None and len(state.known) >= self.max_networks:
            state.known = {p: u for p, u in state.known.items() if u > at}
            if len(state.known) >= self.max_networks:
                state.roaming = True
                state.known.clear()
                return None
        seen = self.counters.add(self.counter(key_id, "net", counter_part(place)), self.horizon, at)
        state.known[place] = at + self._refresh
        if seen > 1:
            return None
        distinct = self.counters.add(self.counter(key_id, "distinct"), self.horizon, at)
        if distinct > self.max_networks:
            state.roaming = True
            state.known.clear()
            return None
        if learning or distinct == 1:  # a key's first network is new to nothing
            return None
        what = "country" if self.resolver is not None else "network"
        return Alarm(
            subject=f"{key_id}:{place}",
            reason=f"new_{what}",
            message=(
                f"used from {what} {place}, not used by this key in the last "
                f"{seconds_text(self.horizon.seconds)} ({distinct - 1} known)"
            ),
            threshold=1,
            observed=1,
            key_id=key_id,
            owner=event.owner,
            client=client,
            detail={what: place, "known": str(distinct - 1)},
        )

    def _learning(self, state: _KeyState, key_id: str, at: float) -> bool:
        """Whether the key is still in its warm-up (and count this use of it if so). A key
        past it is marked with a counter that is renewed while the key is used, so every
        process knows, and a key idle for a whole horizon warms up again."""
        warm = self.counter(key_id, "warm")
        if not state.counting:
            if self.counters.count(warm, self.horizon, at) > 0:
                self.counters.add(warm, self.horizon, at)
                state.warm_until = at + self._refresh
                return False
            state.counting = True
        if self.counters.add(self.counter(key_id, "uses"), self.horizon, at) <= self.warmup:
            return True
        self.counters.add(warm, self.horizon, at)
        state.warm_until = at + self._refresh
        state.counting = False
        return False

    def state_size(self) -> int:
        return len(self._keys)

    def describe(self) -> dict[str, object]:
        return {
            "warmup": self.warmup,
            "horizon": self.horizon.seconds,
            "ipv4_prefix": self.ipv4_prefix,
            "ipv6_prefix": self.ipv6_prefix,
            "resolver": self.resolver is not None,
            "max_networks": self.max_networks,
            "max_keys": self.max_keys,
            **super().describe(),
        }
