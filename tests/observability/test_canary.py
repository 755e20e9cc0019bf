"""Canary: with every sink attached and usage counted into SQLite, the whole flow — create,
use, fail every way, rotate, suspend, resume, revoke — leaves no key, no secret and no
8-character piece of a secret in any event, log line (message or structured fields), queued
event, callback argument, usage row, usage report or the store's files."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
from pathlib import Path
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.management.manager import KeyManager
from keyguard.observability import (
    CallbackSink,
    Emitter,
    Event,
    ListSink,
    LoggingSink,
    Observer,
    QueueSink,
    UsageCounter,
)
from keyguard.stores.sqlite import SQLiteStore
from tests.adapters import asgi_driver, wsgi_driver
from tests.observability.support import asgi_app, wsgi_app

PIECE = 8


def pieces(plaintext: str) -> list[str]:
    """The key, and every 8-character piece of its secret (checksum included)."""
    secret = plaintext.split("_", 2)[2]
    return [plaintext, *(secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1))]


def test_no_secret_in_any_event_log_line_or_usage_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hasher = Hasher(pepper_from_env=False)
    listed = ListSink()
    queued: queue.Queue[Event] = queue.Queue()
    called: list[Event] = []
    async_called: list[Event] = []

    async def on_event(e: Event) -> None:
        async_called.append(e)

    emitter = Emitter(
        [
            listed,
            LoggingSink(),
            QueueSink(queued),
            CallbackSink(called.append),
            CallbackSink(on_event),
        ]
    )
    plaintexts: list[str] = []
    with SQLiteStore(tmp_path / "keys.db") as store:
        manager = KeyManager(store, hasher=hasher, events=emitter)
        counter = UsageCounter(store, start=False)
        verifier_options: dict[str, Any] = {
            "policy": RoutePolicy(
                {"GET /agents": "agents:read", "POST /agents": "agents:write"}, public=["/health"]
            ),
            "rate_limits": "4/minute",
            "hasher": hasher,
            "brute_force": BruteForceGuard(threshold=3, window=60.0),
            "observer": Observer(events=emitter, usage=counter),
        }
        asgi = KeyGuardMiddleware(asgi_app(), store=store, **verifier_options)
        wsgi = KeyGuardWSGIMiddleware(wsgi_app(), verifier=asgi.verifier)

        def send(method: str, path: str, value: str | None, **extra: str) -> int:
            headers = [] if value is None else [("Authorization", value)]
            headers += list(extra.items())
            status = asyncio.run(asgi_driver.call(asgi, method, path, headers)).status
            wsgi_driver.call(wsgi, method, path, headers)  # (the brute-force guard may differ)
            return status

        admin = manager.create("admin", ["admin"], owner="acme")
        reader = manager.create("reader", ["agents:read"], owner="acme", parent=admin.record)
        fenced = manager.create("fenced", ["agents:read"], allowed_networks=["10.0.0.0/8"])
        plaintexts += [admin.plaintext, reader.plaintext, fenced.plaintext]
        good = f"UserKey {reader.plaintext}"
        assert send("GET", "/agents", good) == 200
        assert send("POST", "/agents", good) == 403  # scope
        assert send("GET", "/agents", good) == 200
        assert send("GET", "/agents", good) == 429  # two transports, twice each: 4/minute
        assert send("GET", "/health", good) == 200
        assert send("GET", "/agents", f"UserKey {fenced.plaintext}") == 403
        wrong = KeyFormat().generate(reader.key_id).plaintext
        unknown = KeyFormat().generate().plaintext
        plaintexts += [wrong, unknown]
        for value in (
            f"UserKey {wrong}",
            f"UserKey {unknown}",
            f"UserKey {reader.plaintext[:-1]}x",
            f"Bearer {reader.plaintext}",
            f"UserKey {reader.plaintext}\r\nX-Evil: 1",
            f"userkey  {reader.plaintext} ",
            None,
        ):
            send("GET", "/agents", value, **{"X-Forwarded-For": reader.plaintext})
        rotated = manager.rotate(reader.key_id, grace=0)
        plaintexts.append(rotated.plaintext)
        send("GET", "/agents", f"UserKey {reader.plaintext}")  # the old secret
        manager.suspend(reader.key_id, reason=f"suspended, was {reader.key_id}")
        send("GET", "/agents", f"UserKey {rotated.plaintext}")
        manager.resume(reader.key_id)
        manager.update(reader.key_id, name="renamed")
        manager.revoke(admin.key_id, reason="end of test")
        asgi.verifier.invalidate()
        send("GET", "/agents", f"UserKey {rotated.plaintext}")
        send("GET", "/agents", f"UserKey {admin.plaintext}")
        counter.close()
        assert emitter.flush()
        emitter.close()

        seen: list[str] = []
        events = listed.events
        assert len(events) > 30
        seen += [repr(e) for e in events]
        seen += [json.dumps(e.fields()) for e in events]
        while not queued.empty():
            seen.append(repr(queued.get_nowait()))
        seen += [repr(e) for e in called + async_called]
        for record in caplog.records:
            seen.append(record.getMessage())
            seen.append(json.dumps(getattr(record, "keyguard", {}), default=str))
        for key_id in (admin.key_id, reader.key_id, fenced.key_id):
            seen.append(repr(manager.usage(key_id, days=2)))
        seen.append(repr(manager.owner_usage("acme", days=2)))
        seen.append(repr(store.usage_totals(owner="acme", since="2000-01-01")))
        kinds = {e.kind for e in events}
        assert len(kinds) >= 9, kinds  # every sink saw requests and key changes alike
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"keyguard_usage" in raw  # the usage tables are in the files searched
    for plaintext in plaintexts:
        for piece in pieces(plaintext):
            assert piece.encode() not in raw, "key material in the SQLite files"
            for text in seen:
                assert piece not in text, f"key material leaked into: {text[:160]}"
