"""Which denial a secret gets, by key state, for the current and the previous secret — records
built directly, so the verifier's rules are pinned whatever key management writes."""

from __future__ import annotations

import asyncio

import pytest

from keyguard.core.errors import ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

NOW = 1_900_000_000.0
HASHER = Hasher(pepper_from_env=False)
FMT = KeyFormat()

ALLOWED = None
INVALID = ErrorCode.INVALID_API_KEY
REVOKED = ErrorCode.REVOKED_API_KEY
EXPIRED = ErrorCode.EXPIRED_API_KEY

# (record fields, code for the current secret, for the previous secret, for a wrong secret)
CASES = {
    "active": ({}, ALLOWED, INVALID, INVALID),
    "rotated, in grace": (
        {"previous_expires_at": NOW + 60},
        ALLOWED,
        ALLOWED,
        INVALID,
    ),
    "rotated, grace at its end": ({"previous_expires_at": NOW}, ALLOWED, INVALID, INVALID),
    "rotated, grace over": ({"previous_expires_at": NOW - 60}, ALLOWED, INVALID, INVALID),
    "rotated, no grace time": ({"previous_expires_at": None}, ALLOWED, INVALID, INVALID),
    "revoked": ({"revoked_at": NOW - 1, "keep_previous": False}, REVOKED, INVALID, INVALID),
    # Key management keeps the previous digest on revoke: the old secret says "revoked".
    "rotated then revoked, in grace": (
        {"previous_expires_at": NOW + 60, "revoked_at": NOW - 1},
        REVOKED,
        REVOKED,
        INVALID,
    ),
    "rotated then revoked, grace ended by the revocation": (
        {"previous_expires_at": None, "revoked_at": NOW - 1},
        REVOKED,
        REVOKED,
        INVALID,
    ),
    "rotated then revoked, grace over": (
        {"previous_expires_at": NOW - 60, "revoked_at": NOW - 1},
        REVOKED,
        REVOKED,
        INVALID,
    ),
    "expired": ({"expires_at": NOW - 1, "keep_previous": False}, EXPIRED, INVALID, INVALID),
    "expiring at this instant": (
        {"expires_at": NOW, "keep_previous": False},
        EXPIRED,
        INVALID,
        INVALID,
    ),
    "rotated, in grace, expired": (
        {"previous_expires_at": NOW + 60, "expires_at": NOW - 1},
        EXPIRED,
        EXPIRED,
        INVALID,
    ),
    "rotated, grace over, expired": (
        {"previous_expires_at": NOW - 60, "expires_at": NOW - 1},
        EXPIRED,
        INVALID,
        INVALID,
    ),
    "revoked and expired": (
        {"revoked_at": NOW - 1, "expires_at": NOW - 1, "previous_expires_at": NOW + 60},
        REVOKED,
        REVOKED,
        INVALID,
    ),
}


def build(fields: dict[str, object]) -> tuple[MemoryStore, str, str, str]:
    fields = dict(fields)
    keep_previous = fields.pop("keep_previous", True)
    current = FMT.generate()
    previous = FMT.generate(current.key_id)
    wrong = FMT.generate(current.key_id)
    store = MemoryStore()
    store.create(
        KeyRecord(
            key_id=current.key_id,
            name="k",
            digest=HASHER.digest(current.plaintext),
            previous_digest=HASHER.digest(previous.plaintext) if keep_previous else None,
            **fields,  # type: ignore[arg-type]
        )
    )
    return store, current.plaintext, previous.plaintext, wrong.plaintext


@pytest.mark.parametrize("case", list(CASES))
def test_denial_by_state(case: str) -> None:
    fields, for_current, for_previous, for_wrong = CASES[case]
    store, current, previous, wrong = build(fields)
    v = Verifier(store, hasher=HASHER, rate_limits=None, clock=lambda: NOW)
    for plaintext, expected in (
        (current, for_current),
        (previous, for_previous),
        (wrong, for_wrong),
    ):
        header = "UserKey " + plaintext
        for result in (
            v.verify(header),
            asyncio.run(v.averify(header)),
            v.authenticate(header),
            v.verify(header),  # again, from the cache (or the fast path)
        ):
            assert result.code is expected, (case, plaintext is previous)
            assert result.allowed is (expected is None)
