"""The secret-scanning alert receiver: signature first, then each token checked against the
store without revealing which ids exist, and a real leaked key revoked."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keyguard.abuse.alerts import AlertReceiver, LeakReport, RevokeLeaked, SuspendLeaked
from keyguard.abuse.apps import AlertASGIApp, AlertWSGIApp
from keyguard.abuse.signing import GitHubKeySet, HmacVerifier
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.core.records import KeyRecord
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore
from tests.abuse.alert_support import Clock, KeyServer, Signer
from tests.abuse.support import forged, key
from tests.adapters.asgi_driver import call

WEBHOOK_SECRET = "a-shared-webhook-secret-of-32-bytes!!"


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets.append(key_id)
        return super().get(key_id)


class CountingHasher(Hasher):
    __slots__ = ("verifies",)

    def __init__(self) -> None:
        super().__init__(pepper_from_env=False)
        self.verifies = 0

    def verify(self, key: str, stored: str) -> bool:
        self.verifies += 1
        return super().verify(key, stored)


class World:
    def __init__(self, server: KeyServer, signer: Signer) -> None:
        self.server = server
        self.signer = signer
        self.store = CountingStore()
        self.hasher = CountingHasher()
        self.manager = KeyManager(self.store, hasher=self.hasher)
        self.clock = Clock()
        self.keys = GitHubKeySet(
            server.url, ttl=600, min_refresh=60, max_stale=3600, clock=self.clock
        )
        self.invalidated: list[str] = []
        self.receiver = AlertReceiver(
            self.manager,
            github=self.keys,
            webhook=HmacVerifier(WEBHOOK_SECRET),
            on_action=[self.invalidated.append],
        )

    def post(
        self, items: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        body = json.dumps(items).encode()
        response = self.receiver.handle(
            "POST", headers if headers is not None else self.signer.headers(body), body
        )
        return response.status, json.loads(response.body)


@pytest.fixture
def world() -> Iterator[World]:
    signer = Signer("f9525bf080f75b35")
    with KeyServer(signer) as server:
        yield World(server, signer)


def alert(token: str) -> dict[str, str]:
    return {
        "token": token,
        "type": "keyguard_api_key",
        "url": "https://github.com/o/r/blob/x/.env",
        "source": "commit",
    }


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_a_real_leaked_key_is_revoked_and_refused_by_the_middleware(world: World) -> None:
    leaked = world.manager.create("ci", ["agents:read"])
    other = world.manager.create("other", ["agents:read"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = KeyGuardMiddleware(app, store=world.store, hasher=Hasher(pepper_from_env=False))
    world.receiver.on_action = (*world.receiver.on_action, guard.verifier.invalidate)
    header = [("Authorization", f"UserKey {leaked.plaintext}")]
    assert asyncio.run(call(guard, "GET", "/agents", header)).status == 200  # cached now

    body = json.dumps([alert(leaked.plaintext)]).encode()
    receiver_app = AlertASGIApp(world.receiver)
    reply = asyncio.run(_post_asgi(receiver_app, body, world.signer.headers(body)))
    assert reply[0] == 200
    assert json.loads(reply[1]) == [
        {
            "token_hash": sha(leaked.plaintext),
            "token_type": "keyguard_api_key",
            "label": "true_positive",
        }
    ]
    record = world.manager.get(leaked.key_id)
    assert record.revoked_at is not None
    assert record.revoked_reason == (
        "leaked: reported by github secret scanning at https://github.com/o/r/blob/x/.env (commit)"
    )
    assert world.manager.audit(leaked.key_id)[0].actor == "secret-scanning:github"
    assert world.invalidated == [leaked.key_id]
    assert world.manager.get(other.key_id).revoked_at is None

    refused = asyncio.run(call(guard, "GET", "/agents", header))
    assert refused.status == 401
    assert json.loads(refused.body)["code"] == "revoked_api_key"


async def _post_asgi(app: Any, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    chunks = [body[:10], body[10:]]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param("other-signer", id="signed-by-another-key"),
        pytest.param("body-changed", id="body-changed-after-signing"),
        pytest.param("garbage", id="not-base64"),
        pytest.param("missing", id="no-signature-headers"),
        pytest.param("unknown-id", id="unknown-key-identifier"),
    ],
)
def test_bad_signatures_are_refused_before_anything_is_read(world: World, tamper: str) -> None:
    leaked = world.manager.create("ci", ["agents:read"])
    world.store.gets.clear()
    body = json.dumps([alert(leaked.plaintext)]).encode()
    headers = world.signer.headers(body)
    if tamper == "other-signer":
        impostor = Signer(world.signer.identifier)
        headers = impostor.headers(body)
    elif tamper == "body-changed":
        body = body.replace(b"commit", b"commiT")
    elif tamper == "garbage":
        headers["Github-Public-Key-Signature"] = "not base64 at all!"
    elif tamper == "missing":
        headers = {}
    elif tamper == "unknown-id":
        headers["Github-Public-Key-Identifier"] = "0" * 64
    response = world.receiver.handle("POST", headers, body)
    assert response.status == 401
    assert json.loads(response.body)["code"] == "invalid_signature"
    assert world.store.gets == []  # nothing looked up
    assert world.manager.get(leaked.key_id).revoked_at is None


def test_unknown_identifiers_refetch_at_most_once_per_interval(world: World) -> None:
    body = b"[]"
    ok = world.receiver.handle("POST", world.signer.headers(body), body)
    assert ok.status == 200
    assert world.server.hits == 1
    for i in range(20):
        headers = {**world.signer.headers(body), "Github-Public-Key-Identifier": f"made-up-{i}"}
        assert world.receiver.handle("POST", headers, body).status == 401
    assert world.server.hits == 1  # inside min_refresh: no refetch for each made-up id
    world.clock.now += 61
    headers = {**world.signer.headers(body), "Github-Public-Key-Identifier": "made-up-late"}
    assert world.receiver.handle("POST", headers, body).status == 401
    assert world.server.hits == 2


def test_a_rotated_key_is_picked_up_and_a_withdrawn_one_refused(world: World) -> None:
    body = b"[]"
    assert world.receiver.handle("POST", world.signer.headers(body), body).status == 200
    new = Signer("new-key")
    world.server.entries = [new.entry()]  # GitHub rotated and withdrew the old key
    world.clock.now += 61
    assert world.receiver.handle("POST", new.headers(body), body).status == 200  # refetched
    world.clock.now += 601  # past the ttl: the cached set is refreshed, the old key is gone
    assert world.receiver.handle("POST", world.signer.headers(body), body).status == 401


def test_a_stale_key_set_is_not_trusted(world: World) -> None:
    body = b"[]"
    assert world.receiver.handle("POST", world.signer.headers(body), body).status == 200
    world.server.fail = True
    world.clock.now += 700  # past the ttl, refresh fails: the cached set still serves
    assert world.receiver.handle("POST", world.signer.headers(body), body).status == 200
    world.clock.now += 3000  # past max_stale
    response = world.receiver.handle("POST", world.signer.headers(body), body)
    assert response.status == 503
    assert json.loads(response.body)["code"] == "signing_keys_unavailable"
    assert ("retry-after", "60") in response.headers


def test_no_key_set_at_all_is_503(world: World) -> None:
    world.server.fail = True
    body = b"[]"
    assert world.receiver.handle("POST", world.signer.headers(body), body).status == 503


def test_unknown_ids_and_wrong_secrets_look_the_same(world: World) -> None:
    victim = world.manager.create("victim", ["agents:read"])
    guessed = forged(victim.plaintext)  # the victim's public id, a made-up secret
    unknown = key()  # an id that does not exist
    answers = []
    costs = []
    for token in (guessed, unknown):
        world.store.gets.clear()
        world.hasher.verifies = 0
        status, result = world.post([alert(token)])
        assert status == 200
        answers.append(result)
        costs.append((len(world.store.gets), world.hasher.verifies))
    assert answers == [
        [{"token_hash": sha(guessed), "token_type": "keyguard_api_key", "label": "false_positive"}],
        [{"token_hash": sha(unknown), "token_type": "keyguard_api_key", "label": "false_positive"}],
    ]
    assert costs[0] == costs[1] == (1, 2)  # one lookup, two digest comparisons, either way
    assert world.manager.get(victim.key_id).revoked_at is None
    assert world.invalidated == []


def test_tokens_that_are_not_keys_touch_nothing(world: World) -> None:
    k = key()
    bad_checksum = k[:-1] + ("y" if k.endswith("x") else "x")  # never the same character
    world.store.gets.clear()
    status, result = world.post([alert("ghp_notours"), alert(bad_checksum), alert("x" * 5000)])
    assert status == 200
    assert [r["label"] for r in result] == ["false_positive"] * 3
    assert world.store.gets == []


def test_old_secrets(world: World) -> None:
    rotated = world.manager.create("rotated", ["agents:read"])
    world.manager.rotate(rotated.key_id, grace=3600)  # old secret still valid for an hour
    status, result = world.post([alert(rotated.plaintext)])
    assert status == 200
    assert result[0]["label"] == "true_positive"
    assert world.manager.get(rotated.key_id).revoked_at is not None

    dead = world.manager.create("dead", ["agents:read"])
    world.manager.rotate(dead.key_id, grace=3600)
    current = world.manager.get(dead.key_id)
    world.store.update(current.evolve(previous_expires_at=time.time() - 1))
    _, result = world.post([alert(dead.plaintext)])
    assert result[0]["label"] == "true_positive"  # it was ours, but no longer works
    assert world.manager.get(dead.key_id).revoked_at is None


def test_request_shape_errors(world: World) -> None:
    assert world.receiver.handle("GET", {}, b"").status == 405
    assert world.receiver.handle("POST", {}, b"x" * (world.receiver.max_body + 1)).status == 413
    for body in (b"not json", b'{"token": "x"}', b'[{"type": "t"}]'):
        response = world.receiver.handle("POST", world.signer.headers(body), body)
        assert response.status == 400, body
        assert json.loads(response.body)["code"] == "invalid_request"


def test_generic_hmac_webhook(world: World) -> None:
    leaked = world.manager.create("ci", ["agents:read"])
    signer = HmacVerifier(WEBHOOK_SECRET)
    body = json.dumps(
        [{"token": leaked.plaintext, "type": "kg", "url": "", "source": "gitleaks"}]
    ).encode()
    stale = {"X-Keyguard-Timestamp": str(int(time.time()) - 3600)}
    stale["X-Keyguard-Signature"] = signer.signature(stale["X-Keyguard-Timestamp"], body)
    wrong = HmacVerifier("another-secret-also-32-bytes-long!!!").sign(body)
    for headers in (
        stale,
        wrong,
        {"X-Keyguard-Timestamp": "nope", "X-Keyguard-Signature": "sha256=00"},
    ):
        assert world.receiver.handle("POST", headers, body).status == 401
    assert world.manager.get(leaked.key_id).revoked_at is None
    response = world.receiver.handle("POST", signer.sign(body), body)
    assert response.status == 200
    assert json.loads(response.body)[0]["label"] == "true_positive"
    record = world.manager.get(leaked.key_id)
    assert record.revoked_reason == "leaked: reported by webhook secret scanning (gitleaks)"


def test_wsgi_app(world: World) -> None:
    leaked = world.manager.create("ci", ["agents:read"])
    body = json.dumps([alert(leaked.plaintext)]).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in world.signer.headers(body).items()},
    }
    statuses: list[str] = []
    out = AlertWSGIApp(world.receiver)(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    assert json.loads(b"".join(out))[0]["label"] == "true_positive"
    assert world.manager.get(leaked.key_id).revoked_at is not None
    no_length = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(b"")}
    AlertWSGIApp(world.receiver)(no_length, lambda status, headers: statuses.append(status))
    assert statuses[-1] == "411 Length Required"


def test_suspension_is_pluggable() -> None:
    store = MemoryStore()
    manager = KeyManager(store, hasher=Hasher(pepper_from_env=False))
    if not hasattr(manager, "suspend"):
        with pytest.raises(ConfigurationError, match="suspend"):
            SuspendLeaked(manager)

    calls: list[tuple[str, str]] = []

    class Suspending:
        def suspend(self, key_id: str, *, reason: str, actor: str) -> None:
            calls.append((key_id, reason))

    record = manager.create("x", []).record
    report = LeakReport("github", "kg", "https://example.com/x", "commit")
    assert SuspendLeaked(Suspending())(record, report) == (record.key_id,)
    assert calls == [(record.key_id, report.reason())]
    assert RevokeLeaked(manager)(record, report) == [record.key_id]


def test_receiver_needs_a_signature_scheme() -> None:
    with pytest.raises(ConfigurationError):
        AlertReceiver(KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False)))
    with pytest.raises(ConfigurationError):
        HmacVerifier("short")
    with pytest.raises(ConfigurationError, match="https"):
        GitHubKeySet("http://example.com/keys")
