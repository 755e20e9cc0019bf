"""The expiry-warning header: present only when the credential used stops working soon."""

from __future__ import annotations

import pytest

from keyguard.core.expiry import (
    DEFAULT_WARNING_WINDOW,
    EXPIRY_HEADER,
    credential_deadline,
    expiry_warning,
)
from keyguard.core.records import KeyRecord

NOW = 1_700_000_000.0
DAY = 86400.0


def rec(**fields: object) -> KeyRecord:
    return KeyRecord(key_id="k0000000000A", name="k", digest="sha256$x", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "previous", "expected"),
    [
        pytest.param(rec(), False, (), id="never-expires"),
        pytest.param(rec(expires_at=NOW + 30 * DAY), False, (), id="far-away"),
        pytest.param(
            rec(expires_at=NOW + 3 * DAY + 0.9),
            False,
            ((EXPIRY_HEADER, "2023-11-17T22:13:20Z"),),
            id="within-window-rounded-down",
        ),
        pytest.param(
            rec(expires_at=NOW + DEFAULT_WARNING_WINDOW),
            False,
            ((EXPIRY_HEADER, "2023-11-21T22:13:20Z"),),
            id="window-edge-included",
        ),
        pytest.param(
            rec(expires_at=NOW + DEFAULT_WARNING_WINDOW + 1), False, (), id="just-outside"
        ),
        pytest.param(rec(expires_at=NOW), False, (), id="already-expired"),
        pytest.param(
            rec(expires_at=NOW + 30 * DAY, previous_expires_at=NOW + 3600),
            True,
            ((EXPIRY_HEADER, "2023-11-14T23:13:20Z"),),
            id="previous-secret-grace-ends-first",
        ),
        pytest.param(
            rec(expires_at=NOW + 30 * DAY, previous_expires_at=NOW + 3600),
            False,
            (),
            id="new-secret-ignores-the-grace",
        ),
        pytest.param(
            rec(previous_expires_at=NOW + 3600),
            True,
            ((EXPIRY_HEADER, "2023-11-14T23:13:20Z"),),
            id="previous-secret-of-a-key-without-expiry",
        ),
    ],
)
def test_expiry_warning(
    record: KeyRecord, previous: bool, expected: tuple[tuple[str, str], ...]
) -> None:
    assert expiry_warning(record, NOW, previous_secret=previous) == expected


def test_window_is_configurable() -> None:
    r = rec(expires_at=NOW + 2 * DAY)
    assert expiry_warning(r, NOW, window=DAY) == ()
    assert expiry_warning(r, NOW, window=3 * DAY) != ()
    assert credential_deadline(r) == NOW + 2 * DAY
