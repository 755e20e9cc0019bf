"""The pepper and the store (issue 7, item 8; verifier side): a peppered server refuses planted
plain digests; a verifier whose pepper does not match the store's fingerprint refuses to start
with one clear error; a store unreachable at startup is checked before its first key lookup,
and a mismatch found then fails closed (503) with one ERROR log."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.errors import ConfigurationError, ErrorCode, StoreUnavailable
from keyguard.core.hashing import NO_PEPPER, Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.pepper import PEPPER_SETTING, StoreCheck
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.adapters import asgi_driver, wsgi_driver
from tests.keyfactory import KeyFactory

PEPPER = "a-pepper-of-at-least-16-bytes-long"
OTHER = "another-pepper-of-16-bytes-or-more"


class FlakyStore(MemoryStore):
    """A memory store that can be unreachable, and that counts writes of settings."""

    def __init__(self, *, in_process: bool = True) -> None:
        super().__init__()
        self.down = False
        self.setting_reads = 0
        self.setting_writes = 0
        self.in_process = in_process  # type: ignore[misc]

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")

    def get(self, key_id: str) -> KeyRecord | None:
        self._check()
        return super().get(key_id)

    def get_setting(self, name: str) -> str | None:
        self._check()
        self.setting_reads += 1
        return super().get_setting(name)

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        self._check()
        self.setting_writes += 1
        return super().set_setting(name, value, only_if_absent=only_if_absent)


def peppered() -> Hasher:
    return Hasher(PEPPER, pepper_from_env=False)


def plain() -> Hasher:
    return Hasher(pepper_from_env=False)


def plant_plain_digest(store: MemoryStore) -> str:
    """Someone with write access to the store plants a key of their choice, hashed without
    the pepper. Returns its header."""
    generated = KeyFormat().generate()
    store.create(
        KeyRecord(
            key_id=generated.key_id,
            name="planted",
            digest=plain().digest(generated.plaintext),
            scopes=frozenset({"admin"}),
        )
    )
    return "UserKey " + generated.plaintext


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _wsgi_app(environ: Any, start_response: Any) -> Any:
    start_response("200 OK", [])
    return [b"{}"]


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_a_peppered_server_refuses_a_planted_plain_digest(adapter: str) -> None:
    store = MemoryStore()
    real = KeyFactory(store, peppered()).issue("admin")
    planted = plant_plain_digest(store)
    if adapter == "asgi":
        send = asgi_driver.sync_send(KeyGuardMiddleware(_app, store=store, hasher=peppered()))
    else:
        send = wsgi_driver.sender(KeyGuardWSGIMiddleware(_wsgi_app, store=store, hasher=peppered()))
    assert store.get_setting(PEPPER_SETTING) == peppered().fingerprint
    assert send("GET", "/", [("Authorization", real.header)]).status == 200
    for _ in range(3):  # also once the record is cached
        reply = send("GET", "/", [("Authorization", planted)])
        assert reply.status == 401
        assert json.loads(reply.body)["code"] == "invalid_api_key"


def test_a_migrating_server_still_accepts_plain_digests() -> None:
    store = MemoryStore()
    store.set_setting(PEPPER_SETTING, NO_PEPPER)
    planted = plant_plain_digest(store)
    migrating = Hasher(PEPPER, pepper_from_env=False, accept_unpeppered=True)
    v = Verifier(store, hasher=migrating, rate_limits=None)
    assert v.verify(planted).allowed
    assert store.get_setting(PEPPER_SETTING) == migrating.fingerprint


@pytest.mark.parametrize(
    ("stored", "mine"),
    [
        pytest.param(peppered, plain, id="no-pepper-against-peppered"),
        pytest.param(peppered, lambda: Hasher(OTHER, pepper_from_env=False), id="other-pepper"),
        pytest.param(plain, peppered, id="pepper-against-unpeppered"),
    ],
)
def test_a_pepper_mismatch_refuses_to_start_with_one_clear_error(stored: Any, mine: Any) -> None:
    store = MemoryStore()
    Verifier(store, hasher=stored())  # the first user records the fingerprint
    with pytest.raises(ConfigurationError) as raised:
        Verifier(store, hasher=mine())
    message = str(raised.value)
    assert message.startswith("pepper mismatch: the key store")
    assert "KEYGUARD_PEPPER" in message
    assert PEPPER not in message
    assert OTHER not in message
    # The same through an adapter: the app does not start.
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        KeyGuardMiddleware(_app, store=store, hasher=mine())


def test_the_pepper_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    Verifier(store, hasher=peppered())
    monkeypatch.delenv("KEYGUARD_PEPPER", raising=False)
    monkeypatch.delenv("KEYGUARD_PEPPER_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        Verifier(store)  # hasher from the environment: no pepper
    monkeypatch.setenv("KEYGUARD_PEPPER", PEPPER)
    Verifier(store)


def test_the_first_verifier_records_the_fingerprint_unless_read_only() -> None:
    store = FlakyStore()
    Verifier(store, hasher=peppered(), read_only=True)
    assert store.get_setting(PEPPER_SETTING) is None
    assert store.setting_writes == 0
    Verifier(store, hasher=peppered())
    assert store.get_setting(PEPPER_SETTING) == peppered().fingerprint
    # A read-only verifier is still checked.
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        Verifier(store, hasher=plain(), read_only=True)


def _send(v: Verifier, header: str, how: str) -> Any:
    if how == "sync":
        return v.verify(header)
    if how == "asgi":
        reply = asgi_driver.sync_send(KeyGuardMiddleware(_app, verifier=v))(
            "GET", "/", [("Authorization", header)]
        )
        code = json.loads(reply.body).get("code")
        return type("R", (), {"status": reply.status, "code": code and ErrorCode(code)})
    return asyncio.run(v.averify(header))


HOW = ["sync", "async", "asgi"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "remote"])
def test_an_unreachable_store_at_startup_is_checked_on_first_use(
    how: str, in_process: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(in_process=in_process)
    key = KeyFactory(store, peppered()).issue()
    store.down = True
    caplog.set_level(logging.WARNING, logger="keyguard.pepper")
    v = Verifier(store, hasher=peppered(), rate_limits=None)  # the app still imports
    assert "pepper fingerprint will be checked" in caplog.text
    assert _send(v, key.header, how).status == 503  # fails closed while down
    store.down = False
    assert _send(v, key.header, how).status == 200
    assert store.get_setting(PEPPER_SETTING) == peppered().fingerprint  # recorded
    assert v._pepper.pending is False


@pytest.mark.parametrize("how", HOW)
def test_a_mismatch_found_after_startup_fails_closed_with_one_error_log(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    Verifier(store, hasher=peppered())
    key = KeyFactory(store, peppered()).issue()
    store.down = True
    v = Verifier(store, hasher=plain(), rate_limits=None)  # started without the pepper
    store.down = False
    reads = store.setting_reads
    caplog.set_level(logging.ERROR, logger="keyguard.pepper")
    for _ in range(5):
        reply = _send(v, key.header, how)
        assert reply.status == 503
        assert reply.code is ErrorCode.AUTH_UNAVAILABLE
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert store.setting_reads == reads + 1  # checked once, not again on every request
    assert "pepper mismatch" in errors[0].getMessage()
    assert "503" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line, no traceback
    assert store.get_setting(PEPPER_SETTING) == peppered().fingerprint  # untouched


def test_a_read_only_verifier_checks_lazily_without_writing() -> None:
    store = FlakyStore()
    key = KeyFactory(store, peppered()).issue()
    store.down = True
    v = Verifier(store, hasher=peppered(), rate_limits=None, read_only=True)
    store.down = False
    assert v.verify(key.header).allowed
    assert store.setting_writes == 0
    assert store.get_setting(PEPPER_SETTING) is None


def test_a_mismatch_is_logged_once_even_when_found_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Threads racing through the deferred check may each find the mismatch: one log."""
    store = FlakyStore()
    store.down = True
    check = StoreCheck(store, plain(), write=True)
    caplog.set_level(logging.ERROR, logger="keyguard.pepper")
    for _ in range(3):
        assert check._mismatch(ConfigurationError("pepper mismatch: x")) is False
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]
    assert check.refused is True
