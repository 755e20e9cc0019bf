"""Key format: generation, parsing, checksum and the never-raises property."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.keys import (
    BASE62,
    CHECKSUM_LENGTH,
    KEY_ID_LENGTH,
    KeyFormat,
    generate_key,
    parse_key,
)

FMT = KeyFormat()
KEY = FMT.generate().plaintext


def test_generated_key_has_the_documented_shape() -> None:
    g = FMT.generate()
    prefix, key_id, rest = g.plaintext.split("_")
    assert prefix == "kg"
    assert key_id == g.key_id
    assert len(key_id) == KEY_ID_LENGTH
    assert len(rest) == 32 + CHECKSUM_LENGTH
    assert set(key_id + rest) <= set(BASE62)


def test_keys_are_unique() -> None:
    assert len({FMT.generate().plaintext for _ in range(2000)}) == 2000


def test_generate_for_existing_id_keeps_the_id() -> None:
    g = FMT.generate("AbCdEfGhIjKl")
    assert g.key_id == "AbCdEfGhIjKl"
    assert FMT.parse(g.plaintext) is not None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param("", id="empty"),
        pytest.param(KEY[:-1], id="truncated"),
        pytest.param(KEY + "a", id="extended"),
        pytest.param("xx" + KEY[2:], id="other-prefix"),
        pytest.param(KEY.replace("_", "-"), id="dashes"),
        pytest.param(KEY[:20] + "é" + KEY[21:], id="non-ascii"),
        pytest.param(KEY[:20] + "+" + KEY[21:], id="bad-alphabet"),
        pytest.param(KEY.upper(), id="upper"),
        pytest.param(b"\xff" * 54, id="bad-bytes"),
        pytest.param(" " + KEY, id="leading-space"),
    ],
)
def test_malformed_keys_are_rejected(value: object) -> None:
    assert FMT.parse(value) is None


def test_bytes_are_accepted() -> None:
    parsed = FMT.parse(KEY.encode())
    assert parsed is not None
    assert parsed.full == KEY


def test_repr_hides_the_secret() -> None:
    g = FMT.generate()
    parsed = FMT.parse(g.plaintext)
    secret = g.plaintext.split("_")[2]
    for text in (repr(g), str(g), repr(parsed), str(parsed)):
        assert secret not in text


@pytest.mark.parametrize("prefix", ["", "KG", "k_g", "1kg", "a" * 17, "kg-live"])
def test_bad_prefixes_are_configuration_errors(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        KeyFormat(prefix)


def test_custom_prefix_and_accepted_old_prefix() -> None:
    new = KeyFormat("acme", accept_prefixes=("kg",))
    k = new.generate().plaintext
    assert k.startswith("acme_")
    assert new.parse(k) is not None
    assert new.parse(KEY) is not None
    assert FMT.parse(k) is None
    assert parse_key(generate_key("zz").plaintext, prefix="zz") is not None


def test_longer_secrets() -> None:
    fmt = KeyFormat(secret_length=48)
    assert fmt.parse(fmt.generate().plaintext) is not None
    with pytest.raises(ConfigurationError):
        KeyFormat(secret_length=31)


@given(st.data())
def test_round_trip(data: st.DataObject) -> None:
    prefix = data.draw(st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True))
    fmt = KeyFormat(prefix)
    g = fmt.generate()
    parsed = fmt.parse(g.plaintext)
    assert parsed is not None
    assert parsed.key_id == g.key_id
    assert parsed.prefix == prefix


@given(st.integers(min_value=0, max_value=len(KEY) - 1), st.sampled_from(BASE62 + "_-+/ ."))
def test_every_single_character_change_is_rejected(pos: int, ch: str) -> None:
    if KEY[pos] == ch:
        return
    assert FMT.parse(KEY[:pos] + ch + KEY[pos + 1 :]) is None


@given(st.integers(min_value=0, max_value=len(KEY) - 1))
def test_every_deletion_is_rejected(pos: int) -> None:
    assert FMT.parse(KEY[:pos] + KEY[pos + 1 :]) is None


@given(st.integers(min_value=0, max_value=len(KEY) - 2))
def test_every_adjacent_transposition_is_rejected(pos: int) -> None:
    swapped = KEY[:pos] + KEY[pos + 1] + KEY[pos] + KEY[pos + 2 :]
    if swapped != KEY:
        assert FMT.parse(swapped) is None


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary(), st.text(alphabet=string.ascii_letters + "_", max_size=80)))
def test_arbitrary_input_never_raises(value: str | bytes) -> None:
    assert FMT.parse(value) is None
