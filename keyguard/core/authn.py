"""The pure steps of authenticating one request: reading the ``Authorization`` header, judging a
secret against a record, and the scope check. No I/O, no state: the
:class:`~keyguard.core.verifier.Verifier` supplies the record (from its cache or its store) and
acts on the outcome."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from keyguard.core import decision as d
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import Requirement

__all__ = [
    "CANONICAL",
    "GUESSES",
    "AuthorizationValue",
    "Peer",
    "authorize",
    "blocked",
    "is_canonical",
    "judge",
    "read_credential",
]

AuthorizationValue = str | bytes | Sequence[str | bytes] | None
Peer = str | tuple[object, ...] | list[object] | None

_SCHEME: Final = "userkey"
#: The one spelling of the header that the fast-path index holds.
CANONICAL: Final = "UserKey "
_CANONICAL_BYTES: Final = CANONICAL.encode("ascii")
_FOREVER: Final = math.inf

#: Denials that count as a guess for the brute-force guard (expired/revoked keys are real keys).
GUESSES: Final = frozenset({ErrorCode.INVALID_API_KEY, ErrorCode.INVALID_API_KEY_FORMAT})


def read_credential(authorization: AuthorizationValue, max_length: int) -> str | Decision:
    """The credential of an ``Authorization`` value, or the denial for a malformed header:
    absent → ``missing_api_key``; duplicated, longer than ``max_length`` or with control
    characters → ``invalid_request``; another scheme → ``missing_api_key`` (the scheme is
    case-insensitive, spaces around and between are ignored)."""
    if authorization is None:
        return d.MISSING
    if not isinstance(authorization, str | bytes):
        values = list(authorization)
        if len(values) != 1:
            return d.MISSING if not values else d.DUPLICATE_HEADER
        authorization = values[0]
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    if len(authorization) > max_length:
        return d.HEADER_TOO_LONG
    if not authorization.isprintable():
        return d.CONTROL_CHARACTERS
    scheme, _, credential = authorization.strip(" ").partition(" ")
    if scheme.lower() != _SCHEME:
        return d.MISSING
    credential = credential.strip(" ")
    if not credential:
        return d.MISSING
    return credential


def is_canonical(authorization: AuthorizationValue, credential: str) -> bool:
    """Whether the header is spelled exactly ``UserKey <credential>`` (the only indexed form;
    ``credential`` is a well-formed key, hence ASCII)."""
    if type(authorization) is str:
        return authorization == CANONICAL + credential
    return authorization == _CANONICAL_BYTES + credential.encode("latin-1")


def judge(
    hasher: Hasher, credential: str, record: KeyRecord, now: float
) -> tuple[Decision | None, float]:
    """The denial for ``credential`` against ``record`` at wall time ``now`` — or ``None`` and
    until when (wall clock) the secret holds.

    Every record costs the same, so that timing reveals neither whether a key id exists nor
    what state its key is in: two digest computations and two constant-time comparisons,
    against the current digest and against the previous one or the hasher's dummy digest
    (which nothing matches; an unknown id is judged against a record holding only dummies).
    Only a matching secret takes another branch, and then: revoked (also for a revoked key's
    previous secret, whatever its grace), the previous secret's grace, expired.
    """
    previous = record.previous_digest
    current_ok = hasher.verify(credential, record.digest)
    previous_ok = hasher.verify(
        credential, previous if previous is not None else hasher.dummy_digest
    )
    if current_ok:
        until = _FOREVER
    elif previous_ok:
        if record.revoked_at is not None:
            return d.REVOKED, 0.0
        grace = record.previous_expires_at
        if grace is None or now >= grace:
            return d.INVALID, 0.0
        until = grace
    else:
        return d.INVALID, 0.0
    if record.revoked_at is not None:
        return d.REVOKED, 0.0
    expires = record.expires_at
    if expires is not None:
        if now >= expires:
            return d.EXPIRED, 0.0
        until = min(until, expires)
    return None, until


def authorize(principal: Principal | None, requirement: Requirement) -> Decision | None:
    """The denial for ``principal`` against ``requirement``, or ``None`` when it is allowed.

    No principal is ``missing_api_key``; an unmet requirement is ``insufficient_scope`` naming
    the required scopes (never the key's own); a requirement nothing satisfies (deny by
    default) is ``insufficient_scope`` without scopes. Adapters' per-view checks use this too.
    """
    if principal is None:
        return d.MISSING
    if requirement.is_satisfied_by(principal.grants):
        return None
    if not requirement.scopes:
        return d.NO_ROUTE
    # The denial depends only on the requirement: built once per requirement object (keyed
    # by id, the entry holding the object so that its id cannot be reused while cached).
    cached = _SCOPE_DENIALS.get(id(requirement))
    if cached is not None and cached[0] is requirement:
        return cached[1]
    denial = d.insufficient_scope(requirement.scopes, requirement.describe())
    if len(_SCOPE_DENIALS) >= _SCOPE_DENIALS_MAX:
        _SCOPE_DENIALS.clear()
    _SCOPE_DENIALS[id(requirement)] = (requirement, denial)
    return denial


_SCOPE_DENIALS: dict[int, tuple[Requirement, Decision]] = {}
_SCOPE_DENIALS_MAX: Final = 1024


def blocked(retry_after: int | None, failure: Decision) -> Decision:
    """The failure itself, or 429 once the client address is over the guard's threshold."""
    if retry_after is None:
        return failure
    return Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "Too many failed authentication attempts from this address.",
        retry_after=max(1, retry_after),
    )
