"""Tagged digests: sha256 / hmac-sha256, constant-time verify, re-hash detection."""

from __future__ import annotations

import hashlib
import hmac
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import (
    ACCEPT_UNPEPPERED_ENV,
    DUMMY_DIGEST,
    PEPPER_ENV,
    PEPPER_FILE_ENV,
    Hasher,
)

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


# -- exactness, with and without a pepper ------------------------------------------------------

PROPS = settings(database=None, deadline=None, max_examples=200)
keys = st.text(max_size=80)


@pytest.fixture(autouse=True)
def _no_pepper_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (PEPPER_ENV, PEPPER_FILE_ENV, ACCEPT_UNPEPPERED_ENV):
        monkeypatch.delenv(name, raising=False)


@PROPS
@given(keys, keys)
def test_peppered_verify_is_exact(a: str, b: str) -> None:
    # With a pepper, a digest must still depend on the key: a wrong key never verifies.
    h = Hasher(PEPPER)
    assert h.verify(a, h.digest(b)) is (a == b)


@PROPS
@given(keys)
def test_digests_are_the_documented_functions_of_the_key(key: str) -> None:
    data = key.encode("utf-8")
    plain = "sha256$" + hashlib.sha256(data).hexdigest()
    peppered = "hmac-sha256$" + hmac.new(PEPPER.encode(), data, hashlib.sha256).hexdigest()
    assert Hasher(pepper_from_env=False).digest(key) == plain
    assert Hasher(PEPPER).digest(key) == peppered
    assert Hasher(PEPPER, accept_unpeppered=True).digest(key) == peppered


def test_a_wrong_key_fails_once_a_pepper_is_set() -> None:
    h = Hasher(PEPPER)
    stored = h.digest("kg_right")
    assert h.verify("kg_right", stored)
    for wrong in ("kg_wrong", "", "kg_righ", "kg_right ", "KG_RIGHT"):
        assert not h.verify(wrong, stored)
    migrating = Hasher(PEPPER, accept_unpeppered=True)
    assert not migrating.verify("kg_wrong", migrating.digest("kg_right"))


def test_non_ascii_keys_are_hashed_as_utf8() -> None:
    for h in (Hasher(pepper_from_env=False), Hasher(PEPPER)):
        assert h.verify("kg_é", h.digest("kg_é"))
        assert not h.verify("kg_e", h.digest("kg_é"))


REFUSED = [
    pytest.param(Hasher(pepper_from_env=False), "hmac-sha256", id="hmac-without-pepper"),
    pytest.param(Hasher(PEPPER), "sha256", id="plain-under-pepper"),
    pytest.param(Hasher(PEPPER), "md5", id="unknown-tag-peppered"),
    pytest.param(Hasher(pepper_from_env=False), "md5", id="unknown-tag"),
    pytest.param(Hasher(pepper_from_env=False), "", id="no-tag"),
]


@pytest.mark.parametrize(("hasher", "tag"), REFUSED)
def test_a_refused_digest_never_matches(hasher: Hasher, tag: str) -> None:
    # Whatever the refusal computes internally, storing exactly that must not let a key in:
    # the refusal value must be unmatchable, not merely unlikely.
    data = b"kg_key"
    sentinel = hasher._hex(tag, data)
    assert not hasher.verify("kg_key", f"{tag}${sentinel}")
    for other in ("", "0" * 64, "-" * 64, hashlib.sha256(data).hexdigest()):
        assert not hasher.verify("kg_key", f"{tag}${other}")


@pytest.mark.parametrize(
    "stored", ["sha256$abc$def", "sha256$$", "$sha256$", "hmac-sha256$x$" + "0" * 64]
)
def test_extra_dollar_signs_never_match(stored: str) -> None:
    for h in (Hasher(pepper_from_env=False), Hasher(PEPPER)):
        assert not h.verify("kg_key", stored)


# -- configuration -----------------------------------------------------------------------------


def test_pepper_length_boundary() -> None:
    assert Hasher("p" * 16).tag == "hmac-sha256"
    assert Hasher(b"p" * 16).tag == "hmac-sha256"
    for short in ("p" * 15, b"p" * 15, "", "é" * 7):
        with pytest.raises(ConfigurationError) as info:
            Hasher(short)
        assert str(info.value) == "the pepper must be at least 16 bytes long"
    # The bound is in bytes, not characters: eight two-byte characters are enough.
    assert Hasher("é" * 8).tag == "hmac-sha256"


def test_str_and_bytes_peppers_are_the_same_pepper() -> None:
    text = "pépper-" + "x" * 16
    a, b = Hasher(text), Hasher(text.encode("utf-8"))
    assert a.fingerprint == b.fingerprint
    assert b.verify("kg_k", a.digest("kg_k"))


def test_fingerprint_is_stable_across_releases() -> None:
    # Stores keep this value: a change would make every existing peppered store refuse to
    # start. It is HMAC-SHA256(pepper, fixed label), truncated to 32 hex digits.
    expected = hmac.new(PEPPER.encode(), b"keyguard pepper fingerprint v1", hashlib.sha256)
    assert Hasher(PEPPER).fingerprint == "hmac-sha256:" + expected.hexdigest()[:32]


def test_dummy_digest_has_the_shape_of_a_real_digest() -> None:
    for h in (Hasher(pepper_from_env=False), Hasher(PEPPER)):
        assert h.dummy_digest == h.tag + "$" + "0" * 64
        assert len(h.dummy_digest) == len(h.digest("kg_anything"))
        assert not h.needs_rehash(h.dummy_digest)
    assert Hasher(pepper_from_env=False).dummy_digest == DUMMY_DIGEST


def test_repr_names_the_algorithm_only() -> None:
    assert repr(Hasher(PEPPER)) == "Hasher(tag='hmac-sha256')"
    assert PEPPER not in repr(Hasher(PEPPER))
    assert repr(Hasher(pepper_from_env=False)) == "Hasher(tag='sha256')"


def test_pepper_from_env_false_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    monkeypatch.setenv(ACCEPT_UNPEPPERED_ENV, "1")
    h = Hasher(pepper_from_env=False)
    assert (h.tag, h.fingerprint, h.accept_unpeppered) == ("sha256", "none", False)
    peppered = Hasher(PEPPER, pepper_from_env=False)
    assert peppered.accept_unpeppered is False
    # An explicit argument wins over the environment.
    assert Hasher(PEPPER, accept_unpeppered=False).accept_unpeppered is False


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", " yes ", "YES", "on", "On\n"])
def test_accept_unpeppered_truthy_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    monkeypatch.setenv(ACCEPT_UNPEPPERED_ENV, value)
    assert Hasher().accept_unpeppered is True


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "2", "y", "truee", "xxxx"])
def test_accept_unpeppered_other_values_are_off(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    monkeypatch.setenv(ACCEPT_UNPEPPERED_ENV, value)
    h = Hasher()
    assert h.accept_unpeppered is False
    assert not h.verify("k", Hasher(pepper_from_env=False).digest("k"))


def test_empty_pepper_variable_means_no_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEPPER_ENV, "")
    assert Hasher().tag == "sha256"


# -- the pepper file ---------------------------------------------------------------------------


def _file_hasher(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, content: bytes) -> Hasher:
    secret = tmp_path / "pepper"
    secret.write_bytes(content)
    monkeypatch.setenv(PEPPER_FILE_ENV, str(secret))
    return Hasher()


@pytest.mark.parametrize(
    ("content", "pepper"),
    [
        pytest.param(PEPPER.encode(), PEPPER.encode(), id="no-newline"),
        pytest.param(PEPPER.encode() + b"\n", PEPPER.encode(), id="newline"),
        pytest.param(PEPPER.encode() + b"\r\n", PEPPER.encode(), id="crlf"),
        pytest.param(PEPPER.encode() + b"\n\n", PEPPER.encode() + b"\n", id="only-one-newline"),
        pytest.param(PEPPER.encode() + b"\r", PEPPER.encode() + b"\r", id="lone-cr-kept"),
        pytest.param(b" " + PEPPER.encode() + b" ", b" " + PEPPER.encode() + b" ", id="spaces"),
    ],
)
def test_pepper_file_contents(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, content: bytes, pepper: bytes
) -> None:
    h = _file_hasher(monkeypatch, tmp_path, content)
    assert h.fingerprint == Hasher(pepper).fingerprint
    assert h.verify("kg_k", Hasher(pepper).digest("kg_k"))


def test_pepper_file_is_read_up_to_4096_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # A file named by mistake (a log, a device) must not be read whole.
    content = bytes(range(256)) * 20
    h = _file_hasher(monkeypatch, tmp_path, content)
    assert h.fingerprint == Hasher(content[:4096]).fingerprint


def test_environment_variable_wins_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv(PEPPER_ENV, PEPPER)
    h = _file_hasher(monkeypatch, tmp_path, b"q" * 32)
    assert h.fingerprint == Hasher(PEPPER).fingerprint


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_pepper_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, content: bytes
) -> None:
    with pytest.raises(ConfigurationError) as info:
        _file_hasher(monkeypatch, tmp_path, content)
    path = str(tmp_path / "pepper")
    assert str(info.value) == f"the pepper file {path!r} (KEYGUARD_PEPPER_FILE) is empty"


def test_short_pepper_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        _file_hasher(monkeypatch, tmp_path, b"short\n")


def test_unreadable_pepper_file_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setenv(PEPPER_FILE_ENV, str(missing))
    with pytest.raises(ConfigurationError) as info:
        Hasher()
    assert str(info.value) == (
        f"KEYGUARD_PEPPER_FILE names {str(missing)!r}, which cannot be read: "
        "No such file or directory"
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
