"""What a key's own restrictions refuse after its secret matched: suspension and networks.

:func:`record_denial` is the one pure check, for the verifier to call once a key's secret has
matched and revocation and expiry were checked (so neither answer tells anything to someone
without the key): a suspended key is refused with ``suspended_api_key`` (401), a key used from
outside its ``allowed_networks`` with ``network_not_allowed`` (403). Suspension is checked
first, so a suspended key says so wherever it is used from. ``client`` is the address as the
brute-force guard resolves it (:func:`keyguard.core.addresses.client_address`, which honours
``trusted_proxies``); an unknown address never satisfies a restriction.

Unlike revocation and expiry, the network answer depends on the request, not only on the
record: a verifier that answers repeated requests from an index (its fast path) must run this
check on every request of a restricted key, not once per cached verification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from keyguard.core.decision import Decision, deny
from keyguard.core.errors import ErrorCode
from keyguard.core.networks import address_allowed

if TYPE_CHECKING:
    from keyguard.core.records import KeyRecord

__all__ = ["NETWORK_NOT_ALLOWED", "SUSPENDED", "is_restricted", "record_denial"]

SUSPENDED: Final = deny(ErrorCode.SUSPENDED_API_KEY, "The API key is suspended.")
NETWORK_NOT_ALLOWED: Final = deny(
    ErrorCode.NETWORK_NOT_ALLOWED,
    "The API key may not be used from this network.",
)


def is_restricted(record: KeyRecord) -> bool:
    """Whether :func:`record_denial` can refuse this record at all (cheap; lets a hot path
    skip resolving the client address for the common, unrestricted key)."""
    return record.suspended_at is not None or bool(record.allowed_networks)


def record_denial(record: KeyRecord, client: str | None, now: float) -> Decision | None:
    """The denial for a request made with ``record``'s (matched) secret from ``client``, or
    ``None`` when its restrictions allow it.

    ``now`` is accepted for symmetry with the other record checks and future time-bound
    restrictions; a suspension has no end time of its own (it lasts until resumed).
    """
    del now
    if record.suspended_at is not None:
        return SUSPENDED
    networks = record.allowed_networks
    if networks and not address_allowed(networks, client):
        return NETWORK_NOT_ALLOWED
    return None
