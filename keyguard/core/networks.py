"""Per-key network restrictions: CIDR lists parsed, normalised, compared and matched.

A key's ``allowed_networks`` is a tuple of canonical CIDR strings (``"10.0.0.0/8"``,
``"2001:db8::/32"``): :func:`parse_networks` turns what an operator wrote into that form and
refuses anything ambiguous — a network with host bits set (``10.0.0.1/8`` is a typo for
``10.0.0.0/8`` or for ``10.0.0.1/32``, and guessing either would be wrong half the time), a
prefix out of range, a name. A bare address is its own /32 or /128, and an IPv4-mapped IPv6
network is the IPv4 network it maps, because :func:`keyguard.core.addresses.client_address`
reports an IPv4-mapped client as the IPv4 host. An empty tuple means "anywhere".

:func:`networks_within` is the authority rule's question (may a key hand out these networks?)
and :func:`address_allowed` the request-time one; it fails closed: a request whose client
address is unknown (a Unix socket) or not an IP address is not in any network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from keyguard.core.errors import ConfigurationError

__all__ = ["MAX_NETWORKS", "address_allowed", "networks_within", "parse_networks"]

#: The most networks one key may list (a restriction is a short allow-list, not a routing table).
MAX_NETWORKS: Final = 64
_MAX_TEXT: Final = 64  # longer than any CIDR: refuse before parsing

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _one(value: object) -> Network:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"a network must be a CIDR string such as '10.0.0.0/8', not {type(value).__name__}"
        )
    text = value.strip()
    shown = text[:_MAX_TEXT] if text.isprintable() else repr(text[:_MAX_TEXT])
    if not text or len(text) > _MAX_TEXT:
        raise ConfigurationError(f"invalid network {shown!r}: expected a CIDR such as 10.0.0.0/8")
    try:
        network: Network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise ConfigurationError(
                f"invalid network {shown!r}: host bits are set (did you mean {loose} "
                f"or {text.partition('/')[0]}/{loose.max_prefixlen}?)"
            ) from None
        raise ConfigurationError(
            f"invalid network {shown!r}: expected an IPv4 or IPv6 CIDR such as 10.0.0.0/8 "
            "or 2001:db8::/32"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        network = ipaddress.IPv4Network(f"{v4}/{network.prefixlen - 96}")
    return network


def parse_networks(values: Iterable[object] | None) -> tuple[str, ...]:
    """Canonical, sorted, de-duplicated CIDRs (IPv4 first); ``ConfigurationError`` naming the
    first bad entry. ``None`` or an empty list is ``()``: no restriction."""
    if values is None:
        return ()
    if isinstance(values, str | bytes):
        raise ConfigurationError("allowed_networks must be a list of CIDR strings")
    items = list(values)
    if len(items) > MAX_NETWORKS:
        raise ConfigurationError(f"allowed_networks may list at most {MAX_NETWORKS} networks")
    networks = {_one(v) for v in items}
    ordered = sorted(networks, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n) for n in ordered)


@lru_cache(maxsize=4096)
def _compiled(networks: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def networks_within(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    """Whether every address ``child`` admits, ``parent`` admits too.

    An empty ``parent`` admits everything; an empty ``child`` admits everything, so it is
    within a restricted parent only if that parent is unrestricted.
    """
    if not parent:
        return True
    if not child:
        return False
    mine = _compiled(parent)
    return all(
        any(c.version == p.version and c.subnet_of(p) for p in mine)  # type: ignore[arg-type]
        for c in _compiled(child)
    )


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def address_allowed(networks: tuple[str, ...], address: str | None) -> bool:
    """Whether a request from ``address`` (canonical, as
    :func:`~keyguard.core.addresses.client_address` returns it) may use a key restricted to
    ``networks``. No restriction admits anything; otherwise an unknown or non-IP address is
    refused."""
    if not networks:
        return True
    if address is None:
        return False
    ip = _address(address)
    if ip is None:
        return False
    return any(ip.version == n.version and ip in n for n in _compiled(networks))
