"""Tagged digests: sha256 / hmac-sha256, constant-time verify, re-hash detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import DUMMY_DIGEST, PEPPER_ENV, Hasher

PEPPER = "p" * 32


def test_plain_digest_is_tagged_and_verifies() -> None:
    h = Hasher(pepper_from_env=False)
    digest = h.digest("kg_x")
    assert digest.startswith("sha256$")
    assert h.verify("kg_x", digest)
    assert not h.verify("kg_y", digest)


def test_pepper_switches_to_hmac() -> None:
    h = Hasher(PEPPER)
    digest = h.digest("kg_x")
    assert digest.startswith("hmac-sha256$")
    assert h.verify("kg_x", digest)
    assert not Hasher("q" * 32).verify("kg_x", digest)
    # Without the pepper an HMAC digest can never match.
    assert not Hasher(pepper_from_env=False).verify("kg_x", digest)


def test_pepper_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    assert Hasher().tag == "hmac-sha256"
    assert Hasher(pepper_from_env=False).tag == "sha256"


def test_short_pepper_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Hasher("short")


def test_needs_rehash_follows_the_configured_tag() -> None:
    plain, peppered = Hasher(pepper_from_env=False), Hasher(PEPPER)
    assert peppered.needs_rehash(plain.digest("k"))
    assert not plain.needs_rehash(plain.digest("k"))
    # A peppered deployment still accepts old plain digests (then re-hashes them).
    assert peppered.verify("k", plain.digest("k"))


@pytest.mark.parametrize(
    "stored",
    ["", "sha256", "sha256$", "md5$abc", "sha256$" + "0" * 64, DUMMY_DIGEST, "$$$"],
)
def test_garbage_digests_never_match(stored: str) -> None:
    assert not Hasher(pepper_from_env=False).verify("anything", stored)


@given(st.text(), st.text())
def test_verify_is_exact(a: str, b: str) -> None:
    h = Hasher(pepper_from_env=False)
    assert h.verify(a, h.digest(b)) is (a == b)
