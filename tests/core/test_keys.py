"""Key format: generation, parsing, checksum and the never-raises property."""

from __future__ import annotations

import re
import string
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.keys import (
    BASE62,
    CHECKSUM_LENGTH,
    DEFAULT_PREFIX,
    KEY_ID_LENGTH,
    MAX_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    KeyFormat,
    generate_key,
    is_key_id,
    parse_key,
    random_base62,
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


# -- strictness beyond the checksum ---------------------------------------------------------
#
# A string can carry a valid checksum and still be malformed: the checksum is computed over
# whatever precedes it. Each check below must hold on its own, so these strings are built with
# a correct checksum (from an independent implementation of the documented encoding).


def with_checksum(body: str) -> str:
    """``body`` plus the base62 CRC32 of its ASCII bytes, six digits, most significant first."""
    crc = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        crc, d = divmod(crc, 62)
        digits.append(BASE62[d])
    return body + "".join(reversed(digits))


KEY_ID = "AbCdEfGhIjKl"
SECRET = "s" * MIN_SECRET_LENGTH


def test_reference_checksum_agrees_with_generated_keys() -> None:
    for _ in range(50):
        key = FMT.generate().plaintext
        assert with_checksum(key[:-CHECKSUM_LENGTH]) == key
    assert FMT.parse(with_checksum(f"kg_{KEY_ID}_{SECRET}")) is not None


CHECKSUM_VALID_BUT_MALFORMED = [
    pytest.param(f"kg_AbCdEfGhIj-l_{SECRET}", id="bad-character-in-key-id"),
    pytest.param(f"kg_AbCdEfGhIj.l_{SECRET}", id="dot-in-key-id"),
    pytest.param(f"kg_{KEY_ID}x{SECRET}", id="no-second-underscore"),
    pytest.param(f"kg_{KEY_ID}{SECRET}xy", id="no-second-underscore-alnum"),
    pytest.param(f"kg_{KEY_ID}_{SECRET[:-1]}-", id="bad-character-in-secret"),
    pytest.param(f"kg_{KEY_ID}_{SECRET[:-1]}_", id="underscore-in-secret"),
    pytest.param(f"kg_{KEY_ID[:-1]}_{SECRET}x", id="short-key-id"),
    pytest.param(f"kg_{KEY_ID}a_{SECRET[:-1]}", id="long-key-id"),
    pytest.param(f"kg_{KEY_ID}_{SECRET[:-1]}", id="secret-one-short"),
    pytest.param(f"kg_{KEY_ID}_{'s' * (MAX_SECRET_LENGTH + 1)}", id="secret-one-long"),
    pytest.param(f"kgx{KEY_ID}_{SECRET}", id="no-first-underscore"),
    pytest.param(f"zz_{KEY_ID}_{SECRET}", id="unknown-prefix"),
]


@pytest.mark.parametrize("value", CHECKSUM_VALID_BUT_MALFORMED)
def test_checksum_valid_malformed_keys_are_rejected(value: str) -> None:
    key = with_checksum(value)
    assert FMT.parse(key) is None
    assert FMT.parse(key.encode()) is None
    # ...also where every length bound is loose (a 16-character accepted prefix) and the
    # secret may be as long as the format allows.
    loose = KeyFormat("kg", secret_length=MAX_SECRET_LENGTH, accept_prefixes=("p" * 16,))
    assert loose.parse(key) is None


# Bodies built from near-valid pieces: each piece is usually right and sometimes off by one
# character, one length or one separator, so most strings are one mistake away from a key.
near_alnum = st.text(alphabet=BASE62 + "_-.é ", min_size=0, max_size=3)
body_pieces = st.tuples(
    st.sampled_from(["kg", "old", "p" * 16, "k", "KG", "kgx", ""]),
    st.sampled_from(["_", "-", "", "__"]),
    st.one_of(st.text(alphabet=BASE62, min_size=11, max_size=13), near_alnum),
    st.sampled_from(["_", "x", "", "-"]),
    st.one_of(
        st.integers(MIN_SECRET_LENGTH - 2, MAX_SECRET_LENGTH + 2).map(lambda n: "s" * n),
        st.text(alphabet=BASE62 + "_-", min_size=30, max_size=70),
    ),
)


@settings(max_examples=400, deadline=None, database=None)
@given(body_pieces)
def test_parse_accepts_exactly_the_documented_grammar(pieces: tuple[str, ...]) -> None:
    body = "".join(pieces)
    fmt = KeyFormat("kg", accept_prefixes=("old", "p" * 16))
    grammar = re.compile(r"(kg|old|p{16})_[0-9A-Za-z]{12}_[0-9A-Za-z]{32,64}")
    if not body.isascii():
        assert fmt.parse(body + "000000") is None
        return
    key = with_checksum(body)
    parsed = fmt.parse(key)
    assert (parsed is not None) is (grammar.fullmatch(body) is not None), key
    if parsed is not None:
        assert (parsed.prefix, parsed.key_id, parsed.full) == (pieces[0], pieces[2], key)


def test_short_secret_under_a_longer_accepted_prefix_is_rejected() -> None:
    # The length pre-check admits anything as long as the shortest prefix's shortest key;
    # under a longer prefix a short secret fits inside that bound and must still be refused.
    fmt = KeyFormat("kg", accept_prefixes=("longerprefix",))
    for length in range(1, MIN_SECRET_LENGTH):
        assert fmt.parse(with_checksum(f"longerprefix_{KEY_ID}_{'s' * length}")) is None
    assert fmt.parse(with_checksum(f"longerprefix_{KEY_ID}_{SECRET}")) is not None


def test_long_secret_under_a_shorter_accepted_prefix_is_rejected() -> None:
    fmt = KeyFormat("kg", accept_prefixes=("longerprefix",))
    too_long = "s" * (MAX_SECRET_LENGTH + 1)
    assert fmt.parse(with_checksum(f"kg_{KEY_ID}_{too_long}")) is None
    assert fmt.parse(with_checksum(f"kg_{KEY_ID}_{too_long[:-1]}")) is not None


@pytest.mark.parametrize("length", [MIN_SECRET_LENGTH, 33, 48, 63, MAX_SECRET_LENGTH])
def test_every_accepted_secret_length_round_trips(length: int) -> None:
    fmt = KeyFormat(secret_length=length)
    g = fmt.generate()
    assert len(g.plaintext) == len("kg_") + KEY_ID_LENGTH + 1 + length + CHECKSUM_LENGTH
    parsed = fmt.parse(g.plaintext)
    assert parsed is not None
    assert (parsed.prefix, parsed.key_id, parsed.full) == ("kg", g.key_id, g.plaintext)
    # Any format accepts any secret length within the bounds, whatever it generates.
    assert FMT.parse(g.plaintext) is not None


@pytest.mark.parametrize("length", [0, 1, MIN_SECRET_LENGTH - 1, MAX_SECRET_LENGTH + 1, 1000])
def test_secret_length_out_of_bounds_is_refused(length: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyFormat(secret_length=length)
    assert str(info.value) == "secret_length must be between 32 and 64"


@pytest.mark.parametrize(
    ("prefix", "accepted"),
    [
        pytest.param("kg", (), id="default"),
        pytest.param("a", (), id="one-letter"),
        pytest.param("kg", ("p" * 16,), id="longer-accepted-prefix"),
        pytest.param("p" * 16, ("kg",), id="shorter-accepted-prefix"),
    ],
)
def test_max_length_is_exactly_the_longest_key(prefix: str, accepted: tuple[str, ...]) -> None:
    fmt = KeyFormat(prefix, secret_length=MAX_SECRET_LENGTH, accept_prefixes=accepted)
    longest = max((prefix, *accepted), key=len)
    key = with_checksum(f"{longest}_{KEY_ID}_{'s' * MAX_SECRET_LENGTH}")
    assert fmt.max_length == len(key) == len(longest) + 1 + KEY_ID_LENGTH + 1 + 64 + 6
    assert fmt.parse(key) is not None
    assert fmt.parse(with_checksum(key[:-CHECKSUM_LENGTH] + "s")) is None


def test_min_length_key_is_accepted_under_every_prefix() -> None:
    fmt = KeyFormat("kg", accept_prefixes=("a", "p" * 16))
    for prefix in ("kg", "a", "p" * 16):
        key = with_checksum(f"{prefix}_{KEY_ID}_{SECRET}")
        parsed = fmt.parse(key)
        assert parsed is not None
        assert parsed.prefix == prefix
        assert fmt.parse(key[1:]) is None


def test_generate_refuses_a_malformed_key_id() -> None:
    for bad in ("", "short", KEY_ID + "x", "AbCdEfGhIj-l", "AbCdEfGhIjK\n"):
        with pytest.raises(ConfigurationError) as info:
            FMT.generate(bad)
        assert str(info.value) == "key_id must be 12 base62 characters"


def test_bad_prefix_message_names_the_rule() -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyFormat("kg", accept_prefixes=("Old",))
    assert str(info.value) == (
        "key prefix 'Old' must match [a-z][a-z0-9]{0,15} (lower-case, no '_')"
    )


def test_is_key_id_and_random_base62() -> None:
    assert is_key_id(KEY_ID)
    for bad in ("", KEY_ID[:-1], KEY_ID + "a", "AbCdEfGhIj_l", "AbCdEfGhIjK\n", "ÄbCdEfGhIjKl"):
        assert not is_key_id(bad)
    for n in (0, 1, 12, 64):
        text = random_base62(n)
        assert len(text) == n
        assert set(text) <= set(BASE62)


def test_convenience_functions_use_the_default_format() -> None:
    g = generate_key()
    assert g.plaintext.startswith(DEFAULT_PREFIX + "_")
    assert parse_key(g.plaintext) == FMT.parse(g.plaintext)
    assert parse_key(g.plaintext, prefix="zz") is None
    assert parse_key(generate_key("zz").plaintext) is None
    assert repr(FMT) == "KeyFormat(prefix='kg', secret_length=32)"


def test_bytes_like_inputs_are_parsed_like_text() -> None:
    for value in (KEY.encode(), bytearray(KEY.encode()), memoryview(KEY.encode())):
        parsed = FMT.parse(value)
        assert parsed is not None
        assert parsed.full == KEY
        assert isinstance(parsed.full, str)
    assert FMT.parse(KEY.encode("utf-16")) is None
    assert FMT.parse((KEY[:20] + "é" + KEY[21:]).encode()) is None
