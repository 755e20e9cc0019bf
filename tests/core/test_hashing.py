"""Tagged digests: sha256 / hmac-sha256, constant-time verify, re-hash detection."""

from __future__ import annotations

import pathlib

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
    # A peppered deployment refuses plain digests: anyone able to write the store could plant
    # one for a key of their choice. Only an explicit migration setting accepts them.
    assert not peppered.verify("k", plain.digest("k"))
    migrating = Hasher(PEPPER, accept_unpeppered=True)
    assert migrating.verify("k", plain.digest("k"))
    assert migrating.needs_rehash(plain.digest("k"))
    assert not migrating.verify("j", plain.digest("k"))


def test_accept_unpeppered_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Hasher(pepper_from_env=False).digest("k")
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    assert not Hasher().verify("k", plain)
    monkeypatch.setenv("KEYGUARD_ACCEPT_UNPEPPERED", "1")
    assert Hasher().verify("k", plain)
    # Without a pepper the setting means nothing.
    monkeypatch.delenv(PEPPER_ENV)
    assert Hasher().accept_unpeppered is False


def test_pepper_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "pepper"
    secret.write_bytes(PEPPER.encode() + b"\n")
    monkeypatch.delenv(PEPPER_ENV, raising=False)
    monkeypatch.setenv("KEYGUARD_PEPPER_FILE", str(secret))
    assert Hasher().fingerprint == Hasher(PEPPER).fingerprint
    monkeypatch.setenv("KEYGUARD_PEPPER_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Hasher()


def test_fingerprint_identifies_the_pepper_without_revealing_it() -> None:
    assert Hasher(pepper_from_env=False).fingerprint == "none"
    a, b = Hasher(PEPPER).fingerprint, Hasher("q" * 32).fingerprint
    assert a != b
    assert a.startswith("hmac-sha256:")
    assert PEPPER not in a
    assert a == Hasher(PEPPER.encode()).fingerprint


def test_dummy_digest_uses_the_configured_algorithm() -> None:
    assert Hasher(pepper_from_env=False).dummy_digest.startswith("sha256$")
    assert Hasher(PEPPER).dummy_digest.startswith("hmac-sha256$")
    assert not Hasher(PEPPER).verify("k", Hasher(PEPPER).dummy_digest)


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
