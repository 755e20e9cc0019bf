"""The threshold detectors, each on its pattern and on what must not trip it: wrong secrets for
a real key id, refused keys used, scope probing, failed authentications from one address."""

from __future__ import annotations

import pytest

from keyguard.abuse.detectors import (
    FailedAuthDetector,
    RefusedKeyDetector,
    ScopeProbeDetector,
    WrongSecretDetector,
)
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import EventKind
from tests.abuse.detector_support import KEY, OTHER, T0, Run, ev, wrong


# -- wrong secrets ----------------------------------------------------------------------------
def test_twenty_wrong_secrets_for_a_real_key_id_fire_once_with_the_owner() -> None:
    run = Run(WrongSecretDetector())
    assert run.feed(wrong(T0 + i * 10) for i in range(19)) == []
    (anomaly,) = run.feed([wrong(T0 + 190)])
    assert anomaly.kind is EventKind.ANOMALY
    assert (anomaly.key_id, anomaly.owner, anomaly.reason) == (KEY, "acme", "wrong_secret_burst")
    assert anomaly.actor == "keyguard:detector:wrong_secret"
    d = anomaly.detail
    assert (d["detector"], d["key_id"], d["owner"]) == ("wrong_secret", KEY, "acme")
    assert (d["threshold"], d["observed"], d["window"], d["suspend"]) == ("20", "20", "10m", "off")
    assert "20 wrong secrets" in d["message"]
    # The attack goes on: one event per condition within the cooldown, not one per request.
    assert run.feed(wrong(T0 + 200 + i) for i in range(100)) == []
    assert run.detectors.stats["suppressed"] > 0


def test_the_same_burst_fires_again_after_the_cooldown() -> None:
    run = Run(WrongSecretDetector(cooldown=600))
    assert len(run.feed(wrong(T0 + i) for i in range(20))) == 1
    assert run.feed(wrong(T0 + 100 + i) for i in range(20)) == []
    assert len(run.feed(wrong(T0 + 1000 + i) for i in range(20))) == 1


def test_wrong_secrets_spread_beyond_the_window_and_other_denials_do_not_fire() -> None:
    run = Run(WrongSecretDetector())
    assert run.feed(wrong(T0 + i * 60) for i in range(40)) == []  # one a minute: 10 per 10 min
    unknown = [
        ev(EventKind.DENIED, T0 + i, code="invalid_api_key", reason="unknown_key", client="x")
        for i in range(50)
    ]
    no_id = [  # a wrong secret without a key id is not about any key
        ev(EventKind.DENIED, T0 + i, code="invalid_api_key", reason="wrong_secret")
        for i in range(50)
    ]
    assert run.feed(unknown + no_id) == []


def test_each_key_id_is_counted_on_its_own() -> None:
    run = Run(WrongSecretDetector(threshold=5))
    events = [wrong(T0 + i, KEY if i % 2 else OTHER) for i in range(8)]  # 4 each
    assert run.feed(events) == []
    (anomaly,) = run.feed([wrong(T0 + 10, OTHER)])
    assert anomaly.key_id == OTHER


# -- refused keys -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("revoked_api_key", "revoked_key_used"),
        ("expired_api_key", "expired_key_used"),
        ("suspended_api_key", "suspended_key_used"),
    ],
)
def test_a_refused_key_used_fires_once_per_key_and_code(code: str, reason: str) -> None:
    run = Run(RefusedKeyDetector())
    use = ev(EventKind.KEY_REFUSED, T0, code=code, key_id=KEY, owner="acme", client="10.0.0.1")
    (anomaly,) = run.feed([use])
    assert (anomaly.reason, anomaly.detail["code"], anomaly.key_id) == (reason, code, KEY)
    assert run.feed([use] * 5) == []
    other = ev(EventKind.KEY_REFUSED, T0, code=code, key_id=OTHER)
    assert len(run.feed([other])) == 1


def test_a_key_used_outside_its_networks_fires_and_other_denials_do_not() -> None:
    run = Run(RefusedKeyDetector())
    denied = ev(EventKind.DENIED, T0, code="network_not_allowed", key_id=KEY, client="192.0.2.1")
    (anomaly,) = run.feed([denied])
    assert anomaly.reason == "key_used_outside_its_networks"
    assert run.feed([ev(EventKind.DENIED, T0, code="revoked_api_key", key_id=OTHER)]) == []
    assert run.feed([ev(EventKind.KEY_REFUSED, T0, code="revoked_api_key")]) == []  # no key


def test_refused_key_threshold_and_codes() -> None:
    run = Run(RefusedKeyDetector(codes=["expired_api_key"], threshold=3, window=600))
    expired = [
        ev(EventKind.KEY_REFUSED, T0 + i, code="expired_api_key", key_id=KEY) for i in (0, 1)
    ]
    revoked = ev(EventKind.KEY_REFUSED, T0, code="revoked_api_key", key_id=KEY)
    assert run.feed([*expired, revoked]) == []
    (anomaly,) = run.feed([ev(EventKind.KEY_REFUSED, T0 + 2, code="expired_api_key", key_id=KEY)])
    assert anomaly.detail["observed"] == "3"
    with pytest.raises(ConfigurationError, match="codes"):
        RefusedKeyDetector(codes=["invalid_api_key"])
    with pytest.raises(ConfigurationError, match="codes"):
        RefusedKeyDetector(codes=[])
    assert RefusedKeyDetector(codes="revoked_api_key").codes == {"revoked_api_key"}


# -- scope probing ----------------------------------------------------------------------------
def _denied(at: float, route: str, method: str = "GET", key_id: str = KEY):  # type: ignore[no-untyped-def]
    return ev(
        EventKind.SCOPE_DENIED,
        at,
        code="insufficient_scope",
        key_id=key_id,
        route=route,
        method=method,
        client="10.0.0.1",
    )


def test_denials_on_five_routes_are_probing() -> None:
    run = Run(ScopeProbeDetector())
    routes = ["/agents", "/tasks", "/models", "/api-keys"]
    assert run.feed(_denied(T0 + i * 30, r) for i, r in enumerate(routes)) == []
    assert run.feed([_denied(T0 + 130, "/agents")]) == []  # the same route again
    (anomaly,) = run.feed([_denied(T0 + 140, "/agents", method="POST")])  # a fifth (method, route)
    assert anomaly.reason == "scope_probe"
    assert (anomaly.detail["routes"], anomaly.detail["observed"]) == ("5", "5")
    assert "probing" in anomaly.detail["message"]


def test_one_forbidden_call_retried_trips_only_the_higher_bar() -> None:
    run = Run(ScopeProbeDetector(threshold=50))
    assert run.feed(_denied(T0 + i, "/agents") for i in range(49)) == []
    (anomaly,) = run.feed([_denied(T0 + 49, "/agents")])
    assert (anomaly.detail["denials"], anomaly.detail["threshold"]) == ("50", "50")


def test_routes_are_counted_per_key_and_unmatched_routes_count_once() -> None:
    run = Run(ScopeProbeDetector(distinct=4))
    # Two routes for KEY, three for OTHER.
    events = [_denied(T0 + i, f"/r{i}", key_id=KEY if i % 2 else OTHER) for i in range(5)]
    assert run.feed(events) == []
    unmatched = ev(EventKind.SCOPE_DENIED, T0 + 5, key_id=KEY)  # no method, no route
    assert run.feed([unmatched, unmatched]) == []
    (anomaly,) = run.feed([_denied(T0 + 6, "/another", key_id=KEY)])
    assert anomaly.key_id == KEY


# -- failed authentications from one address --------------------------------------------------
def _guess(at: float, client: str | None, code: str = "invalid_api_key"):  # type: ignore[no-untyped-def]
    return ev(EventKind.DENIED, at, code=code, reason="unknown_key", client=client, status=401)


def test_thirty_failures_from_one_address_fire_without_a_key() -> None:
    run = Run(FailedAuthDetector())
    codes = ["invalid_api_key", "invalid_api_key_format", "rate_limited"]
    assert run.feed(_guess(T0 + i, "203.0.113.9", codes[i % 3]) for i in range(29)) == []
    (anomaly,) = run.feed([_guess(T0 + 29, "203.0.113.9")])
    assert anomaly.key_id is None
    assert anomaly.client == "203.0.113.9"
    assert (anomaly.reason, anomaly.detail["source"]) == ("failed_auth_burst", "203.0.113.9")
    assert "key_id" not in anomaly.detail


def test_an_ipv6_subscriber_is_one_address_and_others_are_separate() -> None:
    run = Run(FailedAuthDetector(threshold=10))
    spread = [_guess(T0 + i, f"2001:db8:1:2::{i + 1:x}") for i in range(9)]
    assert run.feed(spread) == []
    others = [_guess(T0 + i, f"198.51.100.{i}") for i in range(20)]
    missing = [_guess(T0 + i, "192.0.2.1", code="missing_api_key") for i in range(20)]
    nowhere = [_guess(T0 + i, None) for i in range(20)]
    assert run.feed(others + missing + nowhere) == []
    (anomaly,) = run.feed([_guess(T0 + 30, "2001:db8:1:2:ffff::1")])
    assert anomaly.detail["source"] == "2001:db8:1:2::/64"


def test_failed_auth_has_no_key_to_suspend() -> None:
    with pytest.raises(ConfigurationError, match="no key to suspend"):
        FailedAuthDetector(suspend=True)
    with pytest.raises(ConfigurationError, match="codes"):
        FailedAuthDetector(codes=["revoked_api_key"])
    assert FailedAuthDetector(codes="missing_api_key").codes == {"missing_api_key"}


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        pytest.param(WrongSecretDetector, {"threshold": 0}, "threshold", id="threshold-zero"),
        pytest.param(WrongSecretDetector, {"threshold": 2.5}, "threshold", id="threshold-float"),
        pytest.param(WrongSecretDetector, {"window": 0}, "window", id="window-zero"),
        pytest.param(WrongSecretDetector, {"window": "10m"}, "window", id="window-text"),
        pytest.param(WrongSecretDetector, {"cooldown": 0.1}, "cooldown", id="cooldown-short"),
        pytest.param(WrongSecretDetector, {"cooldown": 1e9}, "cooldown", id="cooldown-long"),
        pytest.param(WrongSecretDetector, {"suspend": "yes"}, "suspend", id="suspend-text"),
        pytest.param(ScopeProbeDetector, {"distinct": 0}, "distinct", id="distinct-zero"),
        pytest.param(FailedAuthDetector, {"ipv6_prefix": 129}, "ipv6_prefix", id="v6-prefix"),
    ],
)
def test_bad_settings_are_refused(cls: type, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        cls(**kwargs)
