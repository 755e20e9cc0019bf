"""Session tokens: signed, bound to the key's stored digest, never the key; the secret's
sources and their errors."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.dashboard.sessions import (
    MIN_SECRET_BYTES,
    SECRET_ENV,
    SECRET_FILE_ENV,
    SessionSigner,
    load_secret,
)
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore

SECRET = b"s" * MIN_SECRET_BYTES
NOW = 1_800_000_000.0


@pytest.fixture
def made() -> tuple[KeyManager, str, str]:
    manager = KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False))
    created = manager.create("ops", ["admin"])
    return manager, created.key_id, created.plaintext


def test_a_token_round_trips_and_holds_no_key_material(made: tuple[KeyManager, str, str]) -> None:
    manager, key_id, plaintext = made
    record = manager.get(key_id)
    signer = SessionSigner(SECRET)
    token = signer.issue(record, NOW, 3600)
    value = signer.encode(token)
    assert signer.decode(value) == token
    secret_part = plaintext.split("_", 2)[2]
    for piece in (plaintext, secret_part, record.digest, record.digest.split("$")[-1]):
        assert piece not in value
        assert piece not in repr(token)
    assert "<secret>" in repr(signer)
    assert "s" * 8 not in repr(signer)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"), id="signature"),
        pytest.param(lambda v: "v2" + v[2:], id="version"),
        pytest.param(lambda v: v.split(".")[0] + "." + v.split(".")[2], id="missing-part"),
        pytest.param(lambda v: v + "." + v, id="extra-parts"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: "v1.!!.??", id="not-base64"),
        pytest.param(lambda v: v + "x" * 1100, id="too-long"),
        pytest.param(lambda v: v.replace("v1.", "v1.é", 1), id="not-ascii"),
    ],
)
def test_a_tampered_token_is_refused(made: tuple[KeyManager, str, str], mangle: object) -> None:
    manager, key_id, _ = made
    signer = SessionSigner(SECRET)
    value = signer.encode(signer.issue(manager.get(key_id), NOW, 3600))
    assert signer.decode(mangle(value)) is None  # type: ignore[operator]


def test_a_payload_signed_by_another_secret_is_refused(made: tuple[KeyManager, str, str]) -> None:
    manager, key_id, _ = made
    ours, theirs = SessionSigner(SECRET), SessionSigner(b"t" * MIN_SECRET_BYTES)
    forged = theirs.encode(theirs.issue(manager.get(key_id), NOW, 3600))
    assert ours.decode(forged) is None


def test_the_binding_follows_rotation_and_its_grace(made: tuple[KeyManager, str, str]) -> None:
    manager, key_id, _ = made
    signer = SessionSigner(SECRET)
    token = signer.issue(manager.get(key_id), manager.clock(), 3600)
    assert signer.bound(token, manager.get(key_id), manager.clock())
    manager.rotate(key_id, grace=600)
    rotated = manager.get(key_id)
    now = manager.clock()
    assert signer.bound(token, rotated, now)  # the previous secret, within the grace
    assert not signer.bound(token, rotated, rotated.previous_expires_at or 0)  # grace over
    manager.rotate(key_id, grace=0)
    assert not signer.bound(token, manager.get(key_id), manager.clock())
    other = manager.create("other", ["admin"]).record
    assert not signer.bound(replace(token, key_id=other.key_id), other, now)


def test_csrf_tokens_are_bound_to_their_session(made: tuple[KeyManager, str, str]) -> None:
    manager, key_id, _ = made
    signer = SessionSigner(SECRET)
    one = signer.issue(manager.get(key_id), NOW, 3600)
    two = signer.issue(manager.get(key_id), NOW, 3600)
    assert signer.csrf_ok(one, signer.csrf(one))
    assert not signer.csrf_ok(one, signer.csrf(two))
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(one, "")
    nonce = signer.login_nonce()
    assert signer.login_ok(nonce, signer.login_csrf(nonce))
    assert not signer.login_ok(signer.login_nonce(), signer.login_csrf(nonce))
    assert not signer.login_ok(None, signer.login_csrf(nonce))
    # The session's CSRF token is not the sign-in token of a nonce equal to its id.
    assert signer.csrf(one) != signer.login_csrf(one.sid)


def test_secret_sources(tmp_path: Path) -> None:
    good = "k" * MIN_SECRET_BYTES
    assert load_secret(good, {}) == (good.encode(), True)
    assert load_secret(None, {SECRET_ENV: good}) == (good.encode(), True)
    path = tmp_path / "secret"
    path.write_text(good + "\n", encoding="utf-8")
    assert load_secret(None, {SECRET_FILE_ENV: str(path)}) == (good.encode(), True)
    # The variable wins over the file.
    assert load_secret(None, {SECRET_ENV: "v" * 40, SECRET_FILE_ENV: str(path)})[0] == b"v" * 40


def test_secret_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"at least {MIN_SECRET_BYTES} bytes"):
        load_secret("short", {})
    with pytest.raises(ConfigurationError, match=SECRET_ENV):
        load_secret(None, {SECRET_ENV: "short"})
    with pytest.raises(ConfigurationError, match=f"{SECRET_FILE_ENV}: cannot read"):
        load_secret(None, {SECRET_FILE_ENV: str(tmp_path / "missing")})


def test_without_a_secret_a_random_one_is_made_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="keyguard.dashboard"):
        one, configured = load_secret(None, {})
        two, _ = load_secret(None, {})
    assert not configured
    assert len(one) >= MIN_SECRET_BYTES
    assert one != two
    assert SECRET_ENV in caplog.text
