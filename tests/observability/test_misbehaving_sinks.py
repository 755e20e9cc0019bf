"""A sink that raises or blocks changes no response and slows no request beyond a bound;
request-derived text reaches log lines escaped (one line per event, whatever was sent)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.policy import RoutePolicy
from keyguard.observability import Emitter, Event, EventKind, ListSink, LoggingSink, Observer
from keyguard.stores.memory import MemoryStore
from tests.adapters import asgi_driver
from tests.keyfactory import KeyFactory
from tests.observability.support import TRANSPORTS, asgi_app

POLICY = {"GET /agents": "agents:read", "POST /agents": "agents:write"}
#: A request of the run below, with the status it must get: every outcome class.
REQUESTS = [("GET", "/agents", "good", 200), ("POST", "/agents", "good", 403)] * 20 + [
    ("GET", "/agents", None, 401)
] * 10


def _run(transport: str, sinks: list[Callable[[Event], object]]) -> tuple[list[int], float]:
    """The statuses of :data:`REQUESTS` and the slowest request's time, with ``sinks``."""
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    emitter = Emitter(sinks, sink_capacity=8)
    from keyguard.core.hashing import Hasher
    from keyguard.core.verifier import Verifier

    verifier = Verifier(
        store,
        policy=RoutePolicy(POLICY),
        rate_limits=None,
        hasher=Hasher(pepper_from_env=False),
        observer=Observer(events=emitter),
    )
    send = TRANSPORTS[transport](verifier)
    statuses = []
    slowest = 0.0
    for method, path, who, _ in REQUESTS:
        headers = [("Authorization", key.header)] if who else []
        started = time.perf_counter()
        statuses.append(send(method, path, headers).status)
        slowest = max(slowest, time.perf_counter() - started)
    emitter.close(timeout=0.5)
    return statuses, slowest


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_raising_and_blocking_sinks_change_no_response_and_no_latency(transport: str) -> None:
    release = threading.Event()

    def raising(e: Event) -> None:
        raise RuntimeError("sink failure")

    def blocking(e: Event) -> None:
        release.wait(60)  # as good as forever for this test

    try:
        baseline, base_slowest = _run(transport, [ListSink()])
        statuses, slowest = _run(transport, [raising, blocking, ListSink()])
    finally:
        release.set()
    assert statuses == baseline == [status for *_, status in REQUESTS]
    # Generous, on a shared machine: no request waited for a sink (a blocked one would wait
    # 60 s); the bound is a tenth of a second on top of the slowest healthy request.
    assert slowest < base_slowest + 0.1


def test_request_derived_text_is_escaped_in_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard.events")
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read", owner="acme")
    sink = ListSink()
    emitter = Emitter([sink, LoggingSink()])
    mw = KeyGuardMiddleware(
        asgi_app(),
        store=store,
        policy=RoutePolicy({"* /agents": "agents:read"}),
        trusted_proxies=1,
        observer=Observer(events=emitter),
    )

    async def send(method: str, forwarded: str) -> int:
        reply = await asgi_driver.call(
            mw,
            method,
            "/agents",
            [("Authorization", key.header), ("X-Forwarded-For", forwarded)],
        )
        return reply.status

    evil_method = "GET\r\nX-Injected: yes\x1b[2J"
    assert asyncio.run(send(evil_method, "203.0.113.5")) == 200
    assert asyncio.run(send("GET", "203.0.113.5\r\nfake line")) == 200
    emitter.flush()
    emitter.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "keyguard.events"]
    assert len(lines) == 2
    for line in lines:
        assert "\r" not in line
        assert "\n" not in line
        assert "\x1b" not in line
        assert line.isprintable()
    assert "method=GET\\r\\nX-Injected:" in lines[0]
    first = sink.of(EventKind.AUTHENTICATED)[0]
    assert first.method is not None
    assert first.method.isprintable()
    assert all(e.client is None or e.client.isprintable() for e in sink.events)


def test_an_event_with_raw_control_characters_is_escaped_by_the_logging_sink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="keyguard.events")
    with Emitter([LoggingSink()]) as emitter:
        emitter.emit(Event(EventKind.ANOMALY, 1.0, reason="two\nlines", detail={"d": "x\ry"}))
        emitter.flush()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "keyguard anomaly reason=two\\nlines d=x\\ry"
