"""The matcher: every key found once with its line and column, nothing else, at any block size."""

from __future__ import annotations

import io
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.abuse.matching import KEY_REGEX, iter_keys, mask
from keyguard.core.keys import KeyFormat, parse_key
from tests.abuse.support import bad_checksum, forged, key, lookalike


def found(data: bytes, **kw: object) -> list[tuple[int, int, str]]:
    return [(m.line, m.column, m.key.full) for m in iter_keys(io.BytesIO(data).read, **kw)]  # type: ignore[arg-type]


def test_finds_keys_with_line_and_column() -> None:
    k1, k2 = key(), key("acme", secret_length=64)
    text = f"first line\nAPI_KEY={k1}\n\n  x = '{k2}'  # {k1}\n"
    assert found(text.encode()) == [
        (2, 9, k1),
        (4, 8, k2),
        (4, 8 + len(k2) + 5, k1),
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("", "", id="alone"),
        pytest.param('"', '"', id="quoted"),
        pytest.param("KEY=", "\n", id="assignment"),
        pytest.param("Authorization: UserKey ", "\r\n", id="header"),
        pytest.param("xyz", " ", id="glued-to-lowercase"),
        pytest.param("ABC_", ".", id="after-underscore"),
        pytest.param("9", "_tail", id="followed-by-underscore"),
        pytest.param("%20", "%0A", id="url-encoded"),
    ],
)
def test_finds_a_key_whatever_surrounds_it(before: str, after: str) -> None:
    k = key()
    assert [f[2] for f in found(f"{before}{k}{after}".encode())] == [k]


def test_look_alikes_are_not_reported() -> None:
    rng = random.Random(1234)
    k = key()
    noise = [lookalike(rng) for _ in range(2000)]
    noise += [bad_checksum(k), k[:-1], k[:40], k.upper(), k.replace("_", "-")]
    noise += [k + "A", "A" + k.upper()]  # glued on the right: the key is not delimited
    assert found("\n".join(noise).encode()) == []


def test_a_forged_secret_is_still_found_it_is_checked_later() -> None:
    # The matcher cannot know the secret is wrong: a forged key has a valid checksum. The
    # store check (keyguard.abuse.leaks) is what refuses to act on it.
    k = forged(key())
    assert [f[2] for f in found(k.encode())] == [k]


def test_prefix_restriction() -> None:
    kg, acme = key("kg"), key("acme")
    data = f"{kg} {acme}".encode()
    assert [f[2] for f in found(data, prefixes={"acme"})] == [acme]
    assert [f[2] for f in found(data)] == [kg, acme]


def test_mask_shows_id_and_four_secret_characters() -> None:
    k = key()
    parsed = parse_key(k)
    assert parsed is not None
    prefix, key_id, rest = k.split("_")
    assert mask(parsed) == f"{prefix}_{key_id}_{rest[:4]}****"
    assert rest[4:10] not in mask(parsed)


def test_documented_regex_matches_every_key_shape() -> None:
    rx = re.compile(KEY_REGEX)
    for prefix in ("k", "kg", "a1b2c3d4e5f6g7h8"):
        for length in (32, 48, 64):
            k = KeyFormat(prefix, secret_length=length).generate().plaintext
            assert rx.fullmatch(k), (prefix, length)


keys_and_noise = st.lists(
    st.one_of(
        st.builds(lambda: (key(), True)),
        st.builds(lambda: (key("acme", secret_length=64), True)),
        st.tuples(st.text(alphabet="ab_cZ9 \n\t=\"'", max_size=40), st.just(False)),
        st.tuples(st.binary(max_size=30).map(lambda b: b.decode("latin-1")), st.just(False)),
    ),
    max_size=12,
)


@given(parts=keys_and_noise, block=st.integers(min_value=1, max_value=400))
def test_block_boundaries_change_nothing(parts: list[tuple[str, bool]], block: int) -> None:
    data = " ".join(text for text, _ in parts).encode("latin-1")
    whole = found(data, block=1 << 20)
    assert found(data, block=block) == whole
    assert [f[2] for f in whole] == [text for text, is_key in parts if is_key]


def test_long_lines_and_many_blocks_keep_line_numbers() -> None:
    k = key()
    filler = "x" * 5000
    lines = [filler] * 300
    lines[7] = f"{filler} {k}"
    lines[299] = k
    data = "\n".join(lines).encode()
    result = found(data, block=4096)
    assert result == [(8, 5002, k), (300, 1, k)]
