"""The detectors that learn a key first: a new network (or country), and usage far above the
key's own baseline — warm-up, what counts as new, roaming keys, batch jobs."""

from __future__ import annotations

import pytest

from keyguard.abuse.detectors import NewNetworkDetector, VolumeDetector, network_of
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import EventKind
from tests.abuse.detector_support import KEY, OTHER, T0, Run, ev, ok


# -- networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),
        ("[2001:db8::1]", "2001:db8::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("testclient", None),
        ("", None),
        ("999.1.1.1", None),
    ],
)
def test_network_of(address: str, network: str | None) -> None:
    assert network_of(address) == network


def test_network_prefixes_are_configurable() -> None:
    assert network_of("203.0.113.77", ipv4_prefix=16) == "203.0.0.0/16"
    assert network_of("2001:db8:abcd:12::1", ipv6_prefix=64) == "2001:db8:abcd:12::/64"


# -- new network ------------------------------------------------------------------------------
def _warm(run: Run, n: int, client: str = "10.1.2.3", key_id: str = KEY) -> float:
    """``n`` uses from ``client``; returns the time after them."""
    assert run.feed(ok(T0 + i, client, key_id) for i in range(n)) == []
    return T0 + n


def test_a_new_network_after_the_warm_up_fires_once() -> None:
    run = Run(NewNetworkDetector(warmup=50))
    at = _warm(run, 50)
    assert run.feed([ok(at, "10.1.2.99")]) == []  # another host of a known /24
    (anomaly,) = run.feed([ok(at + 1, "198.51.100.7")])
    assert (anomaly.reason, anomaly.key_id, anomaly.client) == ("new_network", KEY, "198.51.100.7")
    assert (anomaly.detail["network"], anomaly.detail["known"]) == ("198.51.100.0/24", "1")
    assert "198.51.100.0/24" in anomaly.detail["message"]
    # Learned: the same network again is not news, nor another host in it.
    assert run.feed([ok(at + 2, "198.51.100.7"), ok(at + 3, "198.51.100.200")]) == []
    assert len(run.feed([ok(at + 4, "2001:db8:9::1")])) == 1  # a new /48


def test_networks_met_during_the_warm_up_are_learned_silently() -> None:
    run = Run(NewNetworkDetector(warmup=50))
    uses = [ok(T0 + i, "10.1.2.3" if i < 30 else "10.9.9.9") for i in range(50)]
    assert run.feed(uses) == []
    assert run.feed([ok(T0 + 100, "10.9.9.1"), ok(T0 + 101, "10.1.2.1")]) == []


def test_keys_are_learned_separately() -> None:
    run = Run(NewNetworkDetector(warmup=10))
    at = _warm(run, 10)
    at = _warm(run, 10, client="198.51.100.7", key_id=OTHER)
    assert len(run.feed([ok(at, "198.51.100.7")])) == 1  # OTHER's network is new to KEY


def test_a_network_unused_for_the_horizon_is_new_again() -> None:
    run = Run(NewNetworkDetector(warmup=5, horizon=3600))
    _warm(run, 5)
    assert len(run.feed([ok(T0 + 10, "198.51.100.7")])) == 1
    later = T0 + 2 * 3600  # both networks forgotten: the key learns again (a new warm-up)
    assert run.feed(ok(later + i, "192.0.2.1") for i in range(5)) == []
    assert len(run.feed([ok(later + 10, "198.51.100.8")])) == 1


def test_a_roaming_key_is_no_longer_judged() -> None:
    run = Run(NewNetworkDetector(warmup=5, max_networks=4, cooldown=1))
    _warm(run, 5)
    fired = run.feed(ok(T0 + 10 + i, f"198.51.{i}.1") for i in range(10))
    assert len(fired) == 3  # networks 2 to 4; the fifth makes it a roaming key
    assert run.feed(ok(T0 + 30 + i, f"192.0.{i}.1") for i in range(5)) == []


def test_scope_denials_and_rate_limits_count_as_uses_but_other_events_do_not() -> None:
    run = Run(NewNetworkDetector(warmup=3))
    uses = [
        ev(EventKind.SCOPE_DENIED, T0, key_id=KEY, client="10.1.2.3"),
        ev(EventKind.RATE_LIMITED, T0 + 1, key_id=KEY, client="10.1.2.3"),
        ok(T0 + 2, "10.1.2.3"),
        ev(EventKind.KEY_REFUSED, T0 + 3, key_id=KEY, client="192.0.2.1", code="revoked_api_key"),
        ok(T0 + 4, "testclient"),  # not an address: ignored
        ev(EventKind.AUTHENTICATED, T0 + 5, key_id=KEY),  # no address
    ]
    assert run.feed(uses) == []
    assert len(run.feed([ok(T0 + 6, "192.0.2.1")])) == 1


def test_with_a_resolver_countries_are_learned_instead() -> None:
    countries = {"10.1.2.3": "fr", "10.7.7.7": "FR", "198.51.100.7": "NZ", "192.0.2.1": None}

    def resolve(address: str) -> str | None:
        if address == "203.0.113.1":
            raise RuntimeError("GeoIP database missing")
        return countries.get(address, "bad country!")

    run = Run(NewNetworkDetector(warmup=5, resolver=resolve))
    _warm(run, 5)
    assert run.feed([ok(T0 + 10, "10.7.7.7")]) == []  # a new /24, same country
    assert run.feed([ok(T0 + 11, "192.0.2.1"), ok(T0 + 12, "203.0.113.1")]) == []  # unknown
    assert run.feed([ok(T0 + 13, "10.9.9.9")]) == []  # a resolver answer that is no code
    (anomaly,) = run.feed([ok(T0 + 14, "198.51.100.7")])
    assert (anomaly.reason, anomaly.detail["country"]) == ("new_country", "NZ")


def test_new_network_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="ipv4_prefix"):
        NewNetworkDetector(ipv4_prefix=33)
    with pytest.raises(ConfigurationError, match="resolver"):
        NewNetworkDetector(resolver="geoip")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="horizon"):
        NewNetworkDetector(horizon=10)
    assert "warmup=200" in repr(NewNetworkDetector())


# -- volume -----------------------------------------------------------------------------------
def _minutes(run: Run, per_minute: list[int], start: float = T0, key_id: str = KEY) -> list[str]:
    """Feed ``per_minute[i]`` requests in minute ``i``; returns the detectors that fired."""
    fired = []
    for minute, n in enumerate(per_minute):
        t0 = start + minute * 60
        events = [ok(t0 + j * 59 / max(n, 1), "10.1.2.3", key_id) for j in range(n)]
        fired += [e.detail["detector"] for e in run.feed(events)]
    return fired


def test_usage_far_above_the_baseline_fires_as_it_happens() -> None:
    run = Run(VolumeDetector())
    assert _minutes(run, [10] * 120) == []
    start = T0 + 120 * 60
    spike = [ok(start + j * 0.1, "10.1.2.3") for j in range(300)]
    fired = run.feed(spike)
    assert len(fired) == 1
    (anomaly,) = fired
    assert anomaly.reason == "volume_spike"
    # It fires when the count passes both bars: over 5x the baseline of 10, and >= 100.
    assert anomaly.detail["observed"] == "100"
    assert anomaly.detail["baseline"] == "10"
    assert anomaly.detail["period"] == "1m"


def test_a_spike_below_the_minimum_or_within_the_factor_does_not_fire() -> None:
    run = Run(VolumeDetector())
    assert _minutes(run, [1] * 90 + [60]) == []  # 60x the baseline but under 100
    run = Run(VolumeDetector())
    assert _minutes(run, [40] * 90 + [190]) == []  # over 100 but under 5x


def test_a_recurring_batch_job_sets_a_peak_the_next_batch_does_not_exceed() -> None:
    run = Run(VolumeDetector())
    hour = [300] + [1] * 59
    assert _minutes(run, hour * 6) == []


def test_nothing_fires_during_the_warm_up_or_after_a_long_idle_the_baseline_decays() -> None:
    run = Run(VolumeDetector(warmup=60))
    assert _minutes(run, [2] * 30 + [500]) == []  # minute 30: still warming up
    run = Run(VolumeDetector(warmup=10, half_life=10))
    assert _minutes(run, [50] * 20) == []
    # A day idle, then the same rate as before: the baseline has decayed, the peak has not.
    assert _minutes(run, [50] * 3, start=T0 + 86400) == []
    assert _minutes(run, [1000], start=T0 + 86400 + 180) == ["volume"]


def test_volume_is_counted_per_key() -> None:
    run = Run(VolumeDetector(warmup=5))
    assert _minutes(run, [10] * 10) == []
    assert _minutes(run, [10] * 10, key_id=OTHER) == []
    assert _minutes(run, [200], start=T0 + 600, key_id=OTHER) == ["volume"]


def test_volume_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="factor"):
        VolumeDetector(factor=1)
    with pytest.raises(ConfigurationError, match="lookback"):
        VolumeDetector(lookback=33)
    with pytest.raises(ConfigurationError, match="warmup"):
        VolumeDetector(warmup=0)
