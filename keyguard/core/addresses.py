"""Which address a request comes from: the peer, or ``X-Forwarded-For`` as far as it is trusted.

:func:`client_address` returns the real, canonical address of the client (IPv4-mapped IPv6
is the IPv4 host) or ``None`` when the transport reports none (a Unix socket). It trusts
``X-Forwarded-For`` only as far as the deployment says proxies append to it, and falls back to
the peer whenever the entry it would use is not an address, so a malformed header can never
make a request anonymous. Every adapter hands it the header the same way:
:func:`join_field_lines` joins all the ``X-Forwarded-For`` lines of a request in order, as
RFC 9110 §5.3 says a recipient may (WSGI servers — gunicorn, Werkzeug, wsgiref — and Django's
ASGI handler already do this when they build ``HTTP_X_FORWARDED_FOR``).

:func:`network_key` is how the brute-force guard groups addresses: one IPv6 subscriber
usually holds a whole /64, so counting its addresses one by one would give it 2⁶⁴ fresh
starts. The grouping is the guard's business; the address returned here stays exact (per-key
network restrictions need the real one).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Final

from keyguard.core.errors import ConfigurationError

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "client_address",
    "join_field_lines",
    "network_key",
    "peer_address",
]

#: Longer values are not addresses (the longest textual IPv6 address with brackets, an
#: embedded IPv4 address and a port is 53 characters); peers that are not IP addresses are
#: cut to this length.
MAX_ADDRESS_LENGTH: Final = 64

_V4_MAPPED: Final = bytes(10) + b"\xff\xff"
_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
_pton = socket.inet_pton
_ntop = socket.inet_ntop


def _strict_ipv4_parser(parse: Callable[[int, str], bytes] = _pton) -> bool:
    """Whether this platform's ``inet_pton`` (``parse``) reads exactly the canonical dotted
    quad and nothing else (glibc, musl and the BSDs do: no leading zeros, no other radix, no
    spaces, four parts), so that text it reads is canonical as it is. Asked once, at import."""
    lax: tuple[str, ...] = ("01.2.3.4", "1.2.3.04", "1.2.3.00", "0x1.2.3.4", "1.2.3", "1..3.4")
    lax += ("1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1.2.3.256", "1.2.3.4\n", "１.2.3.4")
    for text in lax:
        try:
            parse(_AF_INET, text)
        except (OSError, ValueError):
            continue
        return False
    return True


#: See :func:`_strict_ipv4_parser`; otherwise IPv4 text is read and written back to compare.
_STRICT_IPV4: Final = _strict_ipv4_parser()


def canonical_address(text: str) -> str | None:
    """``text`` as a canonical IP address (``None`` if it is not one).

    Accepts the ``[v6]:port`` and ``v4:port`` forms some proxies write; ``::ffff:1.2.3.4``
    is ``1.2.3.4`` (one host, one address).
    """
    # Fast path, no ipaddress object (microseconds each, on every failed authentication):
    # text that the C parser reads and writes back unchanged is already canonical (for IPv4,
    # with a strict parser, text it reads at all). Dotted IPv6 forms (IPv4-mapped among them)
    # are left to ipaddress, which spells them its way.
    if ":" not in text:
        try:
            if _STRICT_IPV4:
                _pton(_AF_INET, text)
                return text
            if _ntop(_AF_INET, _pton(_AF_INET, text)) == text:
                return text
        except (OSError, ValueError):
            pass
    elif "." not in text:
        try:
            if _ntop(_AF_INET6, _pton(_AF_INET6, text)) == text:
                return text
        except (OSError, ValueError):
            pass
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_LENGTH:
        return None
    candidates = [text]
    if text.startswith("["):
        candidates.append(text[1:].partition("]")[0])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    return None


def client_address(
    peer: str | None, forwarded_for: str | None, *, trusted_proxies: int = 0
) -> str | None:
    """The client address to attribute a request to, canonicalised (``None``: unknown).

    ``peer`` is the transport's remote address (ASGI ``scope["client"][0]``, WSGI
    ``REMOTE_ADDR``). ``forwarded_for`` is the ``X-Forwarded-For`` value, all its lines joined
    in order (:func:`join_field_lines`). With ``trusted_proxies=0`` (the default) the header is
    ignored: anyone can write it, so trusting it would let an attacker pick a fresh address
    per guess. With ``n > 0`` proxies in front of the app, each appending the address it saw,
    the client is the ``n``-th entry from the right; entries further left were written by the
    client and are ignored. The peer is used instead when the header has fewer than ``n``
    entries (the request did not come through all the proxies) or when that entry is not an
    IP address or is longer than :data:`MAX_ADDRESS_LENGTH` (a misconfigured proxy count, or
    a client writing where it should not): a bad header never makes a request anonymous.

    A peer that is not an IP address (a test client's name) is returned as given, cut to
    :data:`MAX_ADDRESS_LENGTH` characters; no peer (a Unix socket) is ``None``.
    """
    if trusted_proxies.__class__ is not int or trusted_proxies < 0:  # a bool's class is bool
        raise ConfigurationError("trusted_proxies must be an integer >= 0")
    if trusted_proxies and forwarded_for:
        # rsplit: a client-written header of any length costs at most n splits.
        entries = forwarded_for.rsplit(",", trusted_proxies)
        if len(entries) >= trusted_proxies:
            forwarded = canonical_address(entries[-trusted_proxies])
            if forwarded is not None:
                return forwarded
    if peer is None:
        return None
    return peer_address(peer)


def peer_address(peer: str) -> str | None:
    """:func:`client_address` of a peer without ``X-Forwarded-For``: the peer canonicalised,
    or as given (stripped, cut to :data:`MAX_ADDRESS_LENGTH`) when it is not an IP address
    (``None`` when nothing is left)."""
    if ":" not in peer and "[" not in peer:
        # Without a colon or a bracket the text is an IPv4 address or no address at all, and
        # either way the answer is the stripped text: canonical_address() returns a dotted
        # quad it reads as it is (inet_pton and ipaddress read exactly the canonical quad,
        # after strip()), and for anything else this function returns the stripped text
        # anyway. So an IPv4 peer, on the path of every refused guess, is not parsed at all.
        return peer.strip()[:MAX_ADDRESS_LENGTH] or None
    address = canonical_address(peer)
    if address is not None:
        return address
    peer = peer.strip()
    return peer[:MAX_ADDRESS_LENGTH] or None


def join_field_lines(lines: Sequence[bytes]) -> bytes | None:
    """One header's field lines as one value: joined in order with ``", "`` (RFC 9110 §5.3).

    ``X-Forwarded-For`` is a list; a proxy may append its entry as a new line instead of
    extending the last one, so reading only the first line (which the client wrote) or only
    the last one attributes the request to the wrong hop. ``None`` when there is no line.
    """
    if not lines:
        return None
    if len(lines) == 1:
        return lines[0]
    return b", ".join(lines)


def network_key(address: str, ipv6_prefix: int = 64) -> str:
    """The network ``address`` is counted under: an IPv6 address's ``/ipv6_prefix`` network
    (``"2001:db8:1:2::/64"``), the address itself otherwise (IPv4, IPv4-mapped IPv6 as IPv4,
    and names that are not addresses, cut to :data:`MAX_ADDRESS_LENGTH`)."""
    if ":" not in address:
        return address[:MAX_ADDRESS_LENGTH]
    try:
        # inet_pton, not ipaddress: a few hundred nanoseconds instead of some 20 µs.
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])
    except (OSError, ValueError):
        return address[:MAX_ADDRESS_LENGTH]
    if packed.startswith(_V4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    shift = 128 - ipv6_prefix
    network = (int.from_bytes(packed, "big") >> shift << shift).to_bytes(16, "big")
    return f"{socket.inet_ntop(socket.AF_INET6, network)}/{ipv6_prefix}"
