"""The pure authority rule (keyguard.management.authority), verdict by verdict: every refusal
with its exact reason (it is what the caller is told and what the audit log keeps), the
fields an admin may widen only up to its own, and networks, for both kinds of acting key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from keyguard.core.ratelimit import DEFAULT_WINDOWS
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import ScopeCatalog
from keyguard.management.authority import Verdict, authorize, may_manage

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0
CATALOG = ScopeCatalog.platform()
MANAGE = frozenset({"keys:manage", "agents:read"})


def rec(key_id: str, created_by: str | None = None, **fields: Any) -> KeyRecord:
    fields.setdefault("scopes", MANAGE)
    fields.setdefault("owner", "acme")
    return KeyRecord(
        key_id=key_id.ljust(12, "0"), name=key_id, digest="x", created_by=created_by, **fields
    )


def decide(
    actor: KeyRecord, before: KeyRecord | None, after: KeyRecord, *others: KeyRecord
) -> Verdict:
    index = {r.key_id: r for r in (actor, after, *others)}
    if before is not None:
        index[before.key_id] = before
    return authorize(
        actor, before, after, index.get, catalog=CATALOG, default_windows=DEFAULT_WINDOWS
    )


MGR = rec("mgr", expires_at=T0 + DAY, rate_limit="10/minute")
ADMIN = rec("admin", scopes=frozenset({"admin"}), expires_at=T0 + DAY, rate_limit="10/minute")
CHILD = rec("child", MGR.key_id, expires_at=T0 + DAY / 2, rate_limit="5/minute")


# -- may_manage ----------------------------------------------------------------------------------


def test_may_manage_verdicts() -> None:
    kw: dict[str, Any] = {"catalog": CATALOG, "manage_scope": "keys:manage"}
    assert may_manage(MGR, T0, **kw) == Verdict(True, "may manage keys")
    assert may_manage(ADMIN, T0, **kw) == Verdict(True, "may manage keys")
    plain = rec("plain", scopes=frozenset({"agents:*"}))
    assert may_manage(plain, T0, **kw) == Verdict(
        False,
        f"the acting key {plain.key_id} needs the 'admin' or 'keys:manage' scope to manage keys",
    )
    assert may_manage(MGR, T0 + DAY, **kw) == Verdict(
        False, f"the acting key {MGR.key_id} is expired"
    )


# -- a key that is not admin ---------------------------------------------------------------------


def test_a_manager_acts_on_itself_and_its_descendants() -> None:
    assert decide(MGR, MGR, MGR) == Verdict(True, "itself")
    assert decide(MGR, CHILD, CHILD) == Verdict(True, "created by the acting key")
    grandchild = rec(
        "grandchild",
        CHILD.key_id,
        scopes=frozenset({"agents:read"}),
        expires_at=T0,
        rate_limit="1/minute",
    )
    assert decide(MGR, grandchild, grandchild, CHILD) == Verdict(True, "created by the acting key")
    assert decide(MGR, None, replace(CHILD, key_id="new000000000")) == Verdict(
        True, "created by the acting key"
    )


def test_a_stranger_is_refused_with_the_reason() -> None:
    stranger = rec("stranger")
    assert decide(MGR, stranger, stranger) == Verdict(
        False,
        f"key {stranger.key_id} was not created by the acting key {MGR.key_id}, "
        "directly or indirectly",
    )


def test_a_cycle_away_from_the_target_is_named() -> None:
    """target -> a -> b -> a: the chain loops without coming back to the target; the rule
    says so at once (not after max_depth links)."""
    a = rec("a", "b00000000000")
    b = rec("b", a.key_id)
    target = rec("target", a.key_id)
    assert decide(MGR, target, target, a, b) == Verdict(
        False, f"the creation chain of key {target.key_id} has a cycle at {a.key_id}"
    )


def test_the_target_is_judged_as_stored_not_as_it_would_be() -> None:
    """Owner and lineage come from the stored record: a change cannot move a key from
    another tenant, or out of another key's tree, into the acting key's reach."""
    theirs = replace(CHILD, owner="globex")
    assert decide(MGR, theirs, CHILD) == Verdict(
        False, f"key {CHILD.key_id} does not belong to the acting key's owner"
    )
    foreign = replace(CHILD, created_by="stranger0000")
    assert not decide(MGR, foreign, CHILD, rec("stranger"))


def test_a_key_made_more_powerful_than_the_manager_is_out_of_its_reach() -> None:
    """An admin widened the child beyond its manager: the manager may not act on it, not
    even to narrow it back (an admin must)."""
    widened = replace(CHILD, scopes=MANAGE | {"tasks:read"})
    assert decide(MGR, widened, CHILD) == Verdict(
        False, f"key {CHILD.key_id} holds scopes beyond the acting key's: tasks:read"
    )
    later = replace(CHILD, expires_at=T0 + 2 * DAY)
    assert decide(MGR, later, CHILD) == Verdict(
        False,
        f"key {CHILD.key_id} holds an expiry later than the acting key's "
        "(2027-01-16T08:00:00Z): 2027-01-17T08:00:00Z",
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            {"scopes": MANAGE | {"tasks:read", "tasks:write", "agents:write"}},
            "scopes beyond the acting key's: agents:write, tasks:read, tasks:write",
            id="scopes-only-the-extra-ones-named",
        ),
        pytest.param(
            {"scopes": frozenset({"admin"})}, "scopes beyond the acting key's: admin", id="admin"
        ),
        pytest.param(
            {"expires_at": None},
            "an expiry later than the acting key's (2027-01-16T08:00:00Z): never",
            id="no-expiry",
        ),
        pytest.param(
            {"expires_at": T0 + DAY + 1},
            "an expiry later than the acting key's (2027-01-16T08:00:00Z): 2027-01-16T08:00:01Z",
            id="later-expiry",
        ),
        pytest.param(
            {"rate_limit": None},
            "a rate limit (the default policy) looser than the acting key's (10/minute)",
            id="default-limits",
        ),
        pytest.param(
            {"rate_limit": "11/minute"},
            "a rate limit (11/minute) looser than the acting key's (10/minute)",
            id="looser-limit",
        ),
    ],
)
def test_what_a_manager_may_not_hand_out(change: dict[str, Any], reason: str) -> None:
    wider = replace(CHILD, **change)
    assert decide(MGR, CHILD, wider) == Verdict(False, f"key {CHILD.key_id} would get {reason}")
    assert decide(MGR, None, wider) == Verdict(False, f"key {CHILD.key_id} would get {reason}")


def test_a_manager_without_limits_of_its_own_is_named_so() -> None:
    mgr = replace(MGR, rate_limit=None)
    child = replace(CHILD, rate_limit="1000/second")
    assert decide(mgr, None, child) == Verdict(
        False,
        f"key {child.key_id} would get a rate limit (1000/second) looser than the acting "
        "key's (the default policy)",
    )
    # No looser at any period the default limits: 5/minute alone is 7,200 a day (> 5,000).
    assert not decide(mgr, None, replace(child, rate_limit="5/minute"))
    assert decide(mgr, None, replace(child, rate_limit="5/minute, 1000/day"))


# -- networks ------------------------------------------------------------------------------------


NETS = ("10.0.0.0/8", "192.0.2.0/24")


def test_a_restricted_manager_hands_out_only_networks_inside_its_own() -> None:
    mgr = replace(MGR, allowed_networks=NETS)
    inside = replace(CHILD, allowed_networks=("10.1.0.0/16",))
    assert decide(mgr, None, inside) == Verdict(True, "created by the acting key")
    assert decide(mgr, None, CHILD) == Verdict(
        False,
        f"key {CHILD.key_id} would get networks (any) beyond the acting key's "
        "(10.0.0.0/8, 192.0.2.0/24)",
    )
    outside = replace(CHILD, allowed_networks=("10.1.0.0/16", "198.51.100.0/24"))
    assert decide(mgr, inside, outside) == Verdict(
        False,
        f"key {CHILD.key_id} would get networks (10.1.0.0/16, 198.51.100.0/24) beyond the "
        "acting key's (10.0.0.0/8, 192.0.2.0/24)",
    )
    # And a key already outside is out of its reach, even to be narrowed.
    assert not decide(mgr, outside, inside)
    # An unrestricted manager hands out any networks.
    assert decide(MGR, None, outside)


# -- admin ---------------------------------------------------------------------------------------


def test_admin_acts_on_anything_it_does_not_widen() -> None:
    """An admin with an expiry and limits of its own acts on keys with more (no expiry, the
    default limits, wider networks) as long as the change widens none of those fields."""
    big = rec("big", "someone00000", owner="globex", rate_limit="1000/second", allowed_networks=())
    assert decide(ADMIN, big, replace(big, name="renamed")) == Verdict(True, "admin")
    assert decide(ADMIN, big, replace(big, scopes=frozenset({"tasks:read"}))) == Verdict(
        True, "admin"
    )
    later = replace(big, expires_at=T0 + 5 * DAY)
    assert decide(ADMIN, later, replace(later, name="renamed")) == Verdict(True, "admin")
    narrow = replace(ADMIN, allowed_networks=NETS)
    assert decide(narrow, big, replace(big, name="renamed")) == Verdict(True, "admin")


@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        pytest.param(
            {"expires_at": T0 + DAY / 2},
            {"expires_at": None},
            "an expiry later than the acting key's (2027-01-16T08:00:00Z): never",
            id="expiry-removed",
        ),
        pytest.param(
            {"expires_at": T0 + DAY / 2},
            {"expires_at": T0 + 2 * DAY},
            "an expiry later than the acting key's (2027-01-16T08:00:00Z): 2027-01-17T08:00:00Z",
            id="expiry-extended",
        ),
        pytest.param(
            {"rate_limit": "5/minute"},
            {"rate_limit": "1000/second"},
            "a rate limit (1000/second) looser than the acting key's (10/minute)",
            id="limit-loosened",
        ),
    ],
)
def test_admin_widens_a_field_only_up_to_its_own(
    before: dict[str, Any], after: dict[str, Any], reason: str
) -> None:
    key = rec("key", owner="globex", **before)
    verdict = decide(ADMIN, key, replace(key, **after))
    assert verdict == Verdict(False, f"key {key.key_id} would get {reason}")


def test_an_unchanged_expiry_is_not_a_widening() -> None:
    """Expiry later than the admin's already, and not moved by the change: allowed. Moved
    later still, or dropped: refused; moved earlier (still past the admin's): allowed."""
    key = rec("key", owner="globex", expires_at=T0 + 3 * DAY)
    assert decide(ADMIN, key, replace(key, name="renamed"))
    assert not decide(ADMIN, key, replace(key, expires_at=T0 + 4 * DAY))
    assert not decide(ADMIN, key, replace(key, expires_at=None))
    assert decide(ADMIN, key, replace(key, expires_at=T0 + 2 * DAY))


def test_a_restricted_admin_widens_networks_only_up_to_its_own() -> None:
    admin = replace(ADMIN, allowed_networks=NETS)
    key = rec("key", owner="globex", allowed_networks=("10.1.0.0/16",))
    assert decide(admin, key, replace(key, allowed_networks=("10.0.0.0/8",)))
    assert decide(admin, key, replace(key, allowed_networks=())) == Verdict(
        False,
        f"key {key.key_id} would get networks (any) beyond the acting key's "
        "(10.0.0.0/8, 192.0.2.0/24)",
    )
    wide = replace(key, allowed_networks=("198.51.100.0/24",))
    assert decide(admin, wide, replace(wide, name="renamed")) == Verdict(True, "admin")


def test_admin_creates_only_for_its_own_owner() -> None:
    new = rec("new", owner="globex")
    assert decide(ADMIN, None, new) == Verdict(
        False, "a new key must belong to the acting key's owner ('acme')"
    )
    assert decide(
        ADMIN, None, replace(new, owner="acme", expires_at=T0, rate_limit="10/minute")
    ) == Verdict(True, "admin")
