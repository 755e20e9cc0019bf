"""The demo runs the anomaly detectors: wrong secrets for one of its keys are reported (logged,
on the bus) and nothing is suspended."""

from __future__ import annotations

import logging

import httpx
import pytest

from keyguard.core.keys import KeyFormat
from keyguard.core.records import KeyStatus
from keyguard.demo import bootstrap, create_app
from keyguard.observability import EventKind, ListSink
from keyguard.stores.memory import MemoryStore


async def test_the_demo_reports_wrong_secrets_and_suspends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    keys = bootstrap(store).created
    app = create_app(store=store)
    verifier = app.state.keyguard
    anomalies = ListSink(kinds=[EventKind.ANOMALY])
    verifier.observer.subscribe(anomalies)
    key_id = keys["read-only"].split("_")[1]
    forged = {"Authorization": f"UserKey {KeyFormat().generate(key_id).plaintext}"}
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5000))
    with caplog.at_level(logging.WARNING, "keyguard.events"):
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            for _ in range(20):
                assert (await client.get("/agents", headers=forged)).status_code == 401
        for _ in range(2):
            assert verifier.observer.events.flush(30)
            assert app.state.detectors.flush(30)
        verifier.observer.events.close()
    (anomaly,) = anomalies.events
    assert (anomaly.detail["detector"], anomaly.key_id) == ("wrong_secret", key_id)
    assert anomaly.detail["suspend"] == "off"
    assert "wrong_secret_burst" in caplog.text
    assert store.get(key_id).status(anomaly.at) is KeyStatus.ACTIVE
