"""End to end: requests through a real adapter, events from the verifier through keyguard's
event bus into the detectors, and back: twenty wrong secrets for a real key id give its owner
an ANOMALY event and (configured so) a suspended key answered 401 ``suspended_api_key`` —
then resumed, audited, and working again. Also across two "processes" sharing one store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyguard.abuse.detectors import Detectors, NewNetworkDetector, WrongSecretDetector
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.management import KeyManager
from keyguard.observability import Emitter, EventKind, ListSink
from keyguard.stores import from_url
from keyguard.stores.base import KeyStore
from keyguard.stores.detector_counters import detector_counters_from_url

HASHER = Hasher(pepper_from_env=False)
POLICY = RoutePolicy({"GET /agents": "agents:read"})


async def asgi_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


class Deployment:
    """One process: an app behind keyguard, its event bus, and detectors attached to it."""

    def __init__(self, store: KeyStore, manager: KeyManager, counters: Any = None) -> None:
        self.anomalies = ListSink(kinds=[EventKind.ANOMALY])
        self.emitter = Emitter([self.anomalies])
        self.detectors = Detectors(
            self.emitter.emit,  # anomalies go back on the bus, to every sink
            detectors=[WrongSecretDetector(suspend=True), NewNetworkDetector(warmup=5)],
            manager=manager,
            counters=counters,
        )
        self.emitter.subscribe(self.detectors)
        self.app = KeyGuardMiddleware(
            asgi_ok, store=store, policy=POLICY, events=self.emitter, hasher=HASHER
        )

    def get(self, key: str, client: str = "203.0.113.5") -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(client, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get("/agents", headers={"Authorization": f"UserKey {key}"})

        return asyncio.run(go())

    def settle(self) -> None:
        # The bus delivers to the detectors, which may emit an anomaly onto the bus again.
        for _ in range(2):
            assert self.emitter.flush(30)
            assert self.detectors.flush(30)

    def close(self) -> None:
        self.emitter.close()  # closes its sinks, the detectors among them
        self.detectors.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[KeyStore, KeyManager]]:
    store = from_url(f"sqlite:///{tmp_path / 'keyguard.db'}")
    with KeyManager(store, hasher=HASHER) as manager:
        yield store, manager


def test_twenty_wrong_secrets_through_an_adapter_suspend_the_key(
    world: tuple[KeyStore, KeyManager],
) -> None:
    store, manager = world
    created = manager.create("ci", ["agents:read"], owner="acme")
    key_id, real = created.record.key_id, created.plaintext
    forged = KeyFormat().generate(key_id).plaintext  # the id is public; the secret is a guess
    process = Deployment(store, manager)
    try:
        assert process.get(real).status_code == 200
        for _ in range(19):
            assert process.get(forged, client="198.51.100.7").json()["code"] == "invalid_api_key"
        process.settle()
        assert process.anomalies.events == []
        assert process.get(forged, client="198.51.100.7").status_code == 401  # the 20th
        process.settle()
        (anomaly,) = process.anomalies.events
        assert (anomaly.detail["detector"], anomaly.key_id, anomaly.owner) == (
            "wrong_secret",
            key_id,
            "acme",
        )
        assert anomaly.detail["observed"] == "20"
        denied = process.get(real)
        assert (denied.status_code, denied.json()["code"]) == (401, "suspended_api_key")
        (audit,) = [a for a in manager.audit(key_id=key_id) if a.action == "suspend"]
        assert audit.actor == "keyguard:detector:wrong_secret"
        manager.resume(key_id, actor="cli")  # reversible
        assert process.get(real).status_code == 200
    finally:
        process.close()


def test_a_new_network_through_an_adapter_is_reported(
    world: tuple[KeyStore, KeyManager],
) -> None:
    store, manager = world
    created = manager.create("svc", ["agents:read"], owner="acme")
    process = Deployment(store, manager)
    try:
        for _ in range(6):
            assert process.get(created.plaintext, client="10.1.2.3").status_code == 200
        process.settle()
        assert process.get(created.plaintext, client="192.0.2.77").status_code == 200
        process.settle()
        (anomaly,) = process.anomalies.events
        assert (anomaly.detail["detector"], anomaly.detail["network"]) == (
            "new_network",
            "192.0.2.0/24",
        )
        assert anomaly.client == "192.0.2.77"
    finally:
        process.close()


def test_two_processes_sharing_the_store_count_wrong_secrets_together(
    world: tuple[KeyStore, KeyManager], tmp_path: Path
) -> None:
    _, manager = world
    created = manager.create("ci", ["agents:read"], owner="acme")
    forged = KeyFormat().generate(created.record.key_id).plaintext
    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    processes = []
    for _ in range(2):
        own_store = from_url(url)
        counters = detector_counters_from_url(url)
        processes.append((Deployment(own_store, manager, counters), own_store, counters))
    try:
        for i in range(20):
            processes[i % 2][0].get(forged, client="198.51.100.7")
            processes[i % 2][0].settle()
        fired = [e for p, _, _ in processes for e in p.anomalies.events]
        assert [e.detail["observed"] for e in fired] == ["20"]
        assert manager.get(created.record.key_id).suspended_at is not None
    finally:
        for process, own_store, counters in processes:
            process.close()
            counters.close()
            own_store.close()


def test_through_the_wsgi_adapter_too(world: tuple[KeyStore, KeyManager]) -> None:
    store, manager = world
    created = manager.create("ci", ["agents:read"], owner="acme")
    forged = KeyFormat().generate(created.record.key_id).plaintext
    anomalies = ListSink(kinds=[EventKind.ANOMALY])
    emitter = Emitter([anomalies])
    detectors = Detectors(emitter.emit, detectors=[WrongSecretDetector()])
    emitter.subscribe(detectors)
    app = KeyGuardWSGIMiddleware(wsgi_ok, store=store, policy=POLICY, events=emitter, hasher=HASHER)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
            for _ in range(20):
                c.get("/agents", headers={"Authorization": f"UserKey {forged}"})
        for _ in range(2):
            assert emitter.flush(30)
            assert detectors.flush(30)
        assert [e.detail["detector"] for e in anomalies.events] == ["wrong_secret"]
    finally:
        emitter.close()
        detectors.close()
