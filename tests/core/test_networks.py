"""Per-key network restrictions: parsing and normalising CIDRs, containment, matching."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.networks import (
    MAX_NETWORKS,
    address_allowed,
    networks_within,
    parse_networks,
)


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        pytest.param(["10.0.0.0/8"], ("10.0.0.0/8",), id="ipv4"),
        pytest.param([" 10.0.0.0/8 "], ("10.0.0.0/8",), id="spaces"),
        pytest.param(["192.168.1.7"], ("192.168.1.7/32",), id="bare-ipv4-host"),
        pytest.param(["2001:DB8::/32"], ("2001:db8::/32",), id="ipv6-lowercased"),
        pytest.param(["2001:db8::1"], ("2001:db8::1/128",), id="bare-ipv6-host"),
        pytest.param(["::ffff:10.0.0.0/104"], ("10.0.0.0/8",), id="ipv4-mapped-is-ipv4"),
        pytest.param(
            ["2001:db8::/32", "10.0.0.0/8", "10.0.0.0/8", "1.2.3.0/24"],
            ("1.2.3.0/24", "10.0.0.0/8", "2001:db8::/32"),
            id="sorted-deduplicated-ipv4-first",
        ),
        pytest.param([], (), id="empty-is-unrestricted"),
        pytest.param(None, (), id="none-is-unrestricted"),
    ],
)
def test_parse_normalises(given_: list[str] | None, expected: tuple[str, ...]) -> None:
    assert parse_networks(given_) == expected


@pytest.mark.parametrize(
    ("given_", "message"),
    [
        pytest.param(["10.0.0.1/8"], "host bits are set .*10.0.0.0/8.*10.0.0.1/32", id="host-bits"),
        pytest.param(["10.0.0.0/33"], "expected an IPv4 or IPv6 CIDR", id="prefix-too-long"),
        pytest.param(["example.com"], "expected an IPv4 or IPv6 CIDR", id="a-name"),
        pytest.param([""], "expected a CIDR", id="empty-string"),
        pytest.param(["1" * 100], "expected a CIDR", id="too-long"),
        pytest.param([10], "not int", id="not-a-string"),
        pytest.param("10.0.0.0/8", "a list of CIDR strings", id="a-bare-string"),
        pytest.param(["10.0.0.0/8\x00"], "expected an IPv4", id="control-character"),
    ],
)
def test_parse_refuses(given_: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_networks(given_)  # type: ignore[arg-type]


def test_parse_bounds_the_list() -> None:
    many = [f"10.0.{i}.0/24" for i in range(MAX_NETWORKS + 1)]
    with pytest.raises(ConfigurationError, match=f"at most {MAX_NETWORKS}"):
        parse_networks(many)
    assert len(parse_networks(many[:MAX_NETWORKS])) == MAX_NETWORKS


@pytest.mark.parametrize(
    ("child", "parent", "within"),
    [
        pytest.param((), (), True, id="both-unrestricted"),
        pytest.param(("10.1.0.0/16",), (), True, id="parent-unrestricted"),
        pytest.param((), ("10.0.0.0/8",), False, id="child-unrestricted-is-wider"),
        pytest.param(("10.1.0.0/16",), ("10.0.0.0/8",), True, id="subnet"),
        pytest.param(("10.0.0.0/8",), ("10.0.0.0/8",), True, id="same"),
        pytest.param(("10.0.0.0/7",), ("10.0.0.0/8",), False, id="supernet"),
        pytest.param(("11.0.0.0/8",), ("10.0.0.0/8",), False, id="disjoint"),
        pytest.param(
            ("10.1.0.0/16", "192.168.0.0/24"),
            ("10.0.0.0/8", "192.168.0.0/16"),
            True,
            id="each-in-some-parent",
        ),
        pytest.param(("10.1.0.0/16", "172.16.0.0/12"), ("10.0.0.0/8",), False, id="one-outside"),
        pytest.param(("2001:db8:1::/48",), ("2001:db8::/32",), True, id="ipv6-subnet"),
        pytest.param(("2001:db8::/32",), ("10.0.0.0/8",), False, id="other-family"),
    ],
)
def test_networks_within(child: tuple[str, ...], parent: tuple[str, ...], within: bool) -> None:
    assert networks_within(child, parent) is within


@pytest.mark.parametrize(
    ("networks", "address", "allowed"),
    [
        pytest.param((), None, True, id="unrestricted-unknown-address"),
        pytest.param((), "203.0.113.9", True, id="unrestricted"),
        pytest.param(("10.0.0.0/8",), "10.2.3.4", True, id="inside"),
        pytest.param(("10.0.0.0/8",), "127.0.0.1", False, id="outside"),
        pytest.param(("10.0.0.0/8",), None, False, id="unknown-address-fails-closed"),
        pytest.param(("10.0.0.0/8",), "testclient", False, id="not-an-address"),
        pytest.param(("2001:db8::/32",), "2001:db8::5", True, id="ipv6-inside"),
        pytest.param(("2001:db8::/32",), "10.0.0.1", False, id="other-family"),
        pytest.param(("fe80::/10",), "fe80::1%eth0", True, id="zone-id-ignored"),
    ],
)
def test_address_allowed(networks: tuple[str, ...], address: str | None, allowed: bool) -> None:
    assert address_allowed(networks, address) is allowed


_v4 = st.builds(
    lambda n, p: ipaddress.IPv4Network((n, p), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)


@given(st.lists(_v4, max_size=5), st.integers(0, 2**32 - 1))
def test_matching_agrees_with_ipaddress(nets: list[ipaddress.IPv4Network], addr: int) -> None:
    parsed = parse_networks([str(n) for n in nets])
    ip = ipaddress.IPv4Address(addr)
    assert address_allowed(parsed, str(ip)) is (not nets or any(ip in n for n in nets))
    # Normalising twice changes nothing.
    assert parse_networks(parsed) == parsed


@given(_v4, _v4)
def test_within_agrees_with_subnet_of(
    child: ipaddress.IPv4Network, parent: ipaddress.IPv4Network
) -> None:
    assert networks_within((str(child),), (str(parent),)) is child.subnet_of(parent)
