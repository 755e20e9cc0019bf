"""Where a client's key comes from: argument, variable or file, checked before any use."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from keyguard.client import APIKey, APIKeyFormatError, APIKeyMissing, load_api_key
from keyguard.core.errors import ConfigurationError, KeyFormatError, KeyguardError
from keyguard.core.keys import KeyFormat

KEY = KeyFormat().generate().plaintext
KEY_ID = KEY.split("_")[1]


def test_from_the_argument() -> None:
    key = load_api_key(KEY)
    assert key.get_secret_value() == KEY
    assert key.header_value() == f"UserKey {KEY}"
    assert key.key_id == KEY_ID
    assert key.prefix == "kg"
    assert key.source == "the key argument"


def test_from_the_default_variable_and_a_configurable_one() -> None:
    assert load_api_key(environ={"KEYGUARD_API_KEY": KEY}).get_secret_value() == KEY
    key = load_api_key(env="MY_SERVICE_KEY", environ={"MY_SERVICE_KEY": f"  {KEY}\n"})
    assert key.get_secret_value() == KEY
    assert key.source == "the environment variable MY_SERVICE_KEY"


def test_from_a_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "keyguard_api_key"
    path.write_text(KEY + "\n")
    key = load_api_key(environ={"KEYGUARD_API_KEY_FILE": str(path)})
    assert key.get_secret_value() == KEY
    assert str(path) in key.source
    assert load_api_key(file=path).get_secret_value() == KEY


def test_the_argument_wins(tmp_path: Path) -> None:
    other = KeyFormat().generate().plaintext
    assert load_api_key(KEY, environ={"KEYGUARD_API_KEY": other}).get_secret_value() == KEY


def test_variable_and_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(KEY)
    with pytest.raises(APIKeyMissing, match="both KEYGUARD_API_KEY and KEYGUARD_API_KEY_FILE"):
        load_api_key(environ={"KEYGUARD_API_KEY": KEY, "KEYGUARD_API_KEY_FILE": str(path)})


def test_no_key_says_where_to_put_one() -> None:
    with pytest.raises(APIKeyMissing, match="set KEYGUARD_API_KEY") as info:
        load_api_key(environ={})
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, KeyguardError)


def test_an_unreadable_or_odd_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(APIKeyMissing, match="cannot be read"):
        load_api_key(environ={"KEYGUARD_API_KEY_FILE": str(tmp_path / "missing")})
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(APIKeyFormatError, match="larger than") as info:
        load_api_key(file=big)
    assert info.value.part == "length"
    binary = tmp_path / "binary"
    binary.write_bytes(KEY.encode()[:-1] + b"\xff")
    with pytest.raises(APIKeyFormatError, match="not ASCII") as info:
        load_api_key(file=binary)
    assert KEY[:-1] not in str(info.value)


@pytest.mark.parametrize(
    ("value", "part"),
    [
        (KEY[:-1], "length"),
        (KEY[:-1] + ("A" if KEY[-1] != "A" else "B"), "checksum"),
        (KEY.replace("kg_", "kg-"), "characters"),
        ("UserKey " + KEY, "scheme"),
    ],
)
def test_a_malformed_key_names_the_part_and_its_source_never_the_key(value: str, part: str) -> None:
    with pytest.raises(APIKeyFormatError) as info:
        load_api_key(environ={"KEYGUARD_API_KEY": value})
    error = info.value
    assert error.part == part
    assert isinstance(error, KeyFormatError)
    text = str(error) + repr(error) + repr(error.args)
    assert "KEYGUARD_API_KEY" in text
    assert "No request was sent" in text
    assert KEY[:-1] not in text
    assert KEY.split("_")[2][:10] not in text


def test_prefixes_restrict_which_deployments_keys_are_accepted() -> None:
    acme = KeyFormat("acme").generate().plaintext
    assert load_api_key(acme).prefix == "acme"
    with pytest.raises(APIKeyFormatError) as info:
        load_api_key(acme, prefixes={"kg"})
    assert info.value.part == "prefix"


def test_the_key_object_never_shows_its_secret() -> None:
    key = load_api_key(KEY)
    secret = KEY.split("_")[2]
    for shown in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert secret[:10] not in shown
        assert KEY_ID in shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert load_api_key(key) is key
    assert isinstance(key, APIKey)
