"""Offline key checks: each kind of mistake names its part, and no message repeats the key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.client.keycheck import KEY_LIKE, PARTS, check_key, parse_any_prefix, redact
from keyguard.core.keys import BASE62, KeyFormat

KEY = KeyFormat().generate().plaintext
PREFIX, KEY_ID, TAIL = KEY.split("_")
OTHER = KeyFormat("acme").generate().plaintext


def _swap(value: str, index: int) -> str:
    char = value[index]
    return value[:index] + ("A" if char != "A" else "B") + value[index + 1 :]


MISTAKES = [
    pytest.param("", "empty", id="empty"),
    pytest.param("   ", "empty", id="blank"),
    pytest.param(KEY + "\n", "characters", id="trailing-newline"),
    pytest.param("UserKey " + KEY, "scheme", id="scheme-included"),
    pytest.param("Bearer " + KEY, "scheme", id="bearer-scheme"),
    pytest.param(f'"{KEY}"', "quotes", id="quoted"),
    pytest.param(KEY[:20] + "-" + KEY[21:], "characters", id="dash"),
    pytest.param(KEY[:20] + "é" + KEY[21:], "characters", id="non-ascii"),
    pytest.param(KEY.replace("_", "", 1), "structure", id="one-underscore"),
    pytest.param(KEY + "_x", "structure", id="three-underscores"),
    pytest.param("KG_" + KEY_ID + "_" + TAIL, "prefix", id="upper-case-prefix"),
    pytest.param("9kg_" + KEY_ID + "_" + TAIL, "prefix", id="prefix-starts-with-digit"),
    pytest.param(f"{PREFIX}_{KEY_ID[:-1]}_{TAIL}", "key_id", id="short-key-id"),
    pytest.param(f"{PREFIX}_{KEY_ID}X_{TAIL}", "key_id", id="long-key-id"),
    pytest.param(KEY[:-10], "length", id="truncated"),
    pytest.param(KEY + "A" * 40, "length", id="too-long"),
    pytest.param(_swap(KEY, 30), "checksum", id="typo-in-secret"),
    pytest.param(_swap(KEY, len(KEY) - 1), "checksum", id="typo-in-checksum"),
    pytest.param(_swap(KEY, 5), "checksum", id="typo-in-key-id"),
    pytest.param(KEY[:-7] + KEY[-6:], "length", id="dropped-character"),
]


@pytest.mark.parametrize(("value", "part"), MISTAKES)
def test_each_mistake_names_its_part_and_never_the_key(value: str, part: str) -> None:
    problem = check_key(value)
    assert problem is not None
    assert problem.part == part
    assert problem.part in PARTS
    text = str(problem)
    for fragment in (KEY, TAIL[:8], TAIL[-8:], KEY_ID):
        assert fragment not in text


def test_a_key_of_any_valid_prefix_is_accepted() -> None:
    assert check_key(KEY) is None
    assert check_key(OTHER) is None
    assert parse_any_prefix(OTHER) is not None


def test_a_deployment_can_restrict_the_prefixes_and_the_message_names_the_public_prefix() -> None:
    assert check_key(KEY, prefixes={"kg"}) is None
    problem = check_key(OTHER, prefixes={"kg"})
    assert problem is not None
    assert problem.part == "prefix"
    assert "'acme'" in problem.message
    assert "'kg'" in problem.message
    # A prefix is printed only for a key that passed its checksum (a real, public prefix).
    broken = check_key(_swap(OTHER, 30), prefixes={"kg"})
    assert broken is not None
    assert broken.part == "checksum"
    assert "acme" not in broken.message


def test_non_text_is_a_problem_not_a_crash() -> None:
    problem = check_key(12345)
    assert problem is not None
    assert problem.part == "empty"


@given(index=st.integers(min_value=0), char=st.sampled_from(BASE62))
def test_any_single_character_change_is_caught_offline(index: int, char: str) -> None:
    index %= len(KEY)
    if KEY[index] == "_" or KEY[index] == char:
        return
    changed = KEY[:index] + char + KEY[index + 1 :]
    problem = check_key(changed)
    # CRC32 catches every single-character substitution.
    assert problem is not None
    assert KEY not in str(problem)


@given(st.text(max_size=120))
def test_any_text_gets_an_answer(value: str) -> None:
    problem = check_key(value)
    if problem is None:
        assert parse_any_prefix(value) is not None
    else:
        assert problem.part in PARTS


def test_redact_hides_the_given_secret_and_anything_key_shaped() -> None:
    text = f"got {KEY} and {OTHER} and secret-word"
    out = redact(text, "secret-word")
    assert KEY not in out
    assert OTHER not in out
    assert "secret-word" not in out
    assert KEY_LIKE.search(out) is None


def test_redact_hides_fragments_of_a_secret_but_not_the_public_key_id() -> None:
    text = f"id {KEY_ID}, tail {TAIL[-20:]}, head {TAIL[:9]}, short {TAIL[10:16]}"
    out = redact(text, TAIL)
    assert KEY_ID in out
    assert TAIL[-20:] not in out
    assert TAIL[:9] not in out
    assert out.count("<redacted>") == 2
    assert TAIL[10:16] in out  # 6 characters: not a fragment worth hiding
