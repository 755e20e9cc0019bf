"""The event bus and its sinks: delivery off the request path, kinds, failing and blocking sinks,
queues that fill up, async callbacks, logging lines, flush and close."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.observability import (
    CallbackSink,
    Emitter,
    Event,
    EventKind,
    ListSink,
    LoggingSink,
    QueueSink,
)
from keyguard.observability.sinks import log_line


def event(kind: EventKind = EventKind.DENIED, **fields: Any) -> Event:
    return Event(kind=kind, at=1_900_000_000.0, **fields)


def test_events_reach_every_sink_in_order() -> None:
    a, b = ListSink(), ListSink()
    with Emitter([a, b]) as emitter:
        for i in range(50):
            emitter.emit(event(status=i))
        assert emitter.flush()
    assert [e.status for e in a.events] == list(range(50))
    assert [e.status for e in b.events] == list(range(50))
    assert emitter.stats.emitted == 50
    assert emitter.dropped == 0


def test_a_sink_gets_only_the_kinds_it_asked_for_and_unwanted_kinds_cost_nothing() -> None:
    denials = ListSink(kinds=[EventKind.DENIED])
    with Emitter([denials]) as emitter:
        assert emitter.interested == frozenset({EventKind.DENIED})
        emitter.emit(event(EventKind.AUTHENTICATED))
        emitter.emit(event(EventKind.DENIED))
        emitter.flush()
        assert emitter.stats.emitted == 1  # the authenticated event was never queued
    assert [e.kind for e in denials.events] == [EventKind.DENIED]


def test_deferred_events_are_built_on_the_dispatch_thread() -> None:
    sink = ListSink()
    built_on: list[str] = []

    def build(status: int) -> Event | None:
        built_on.append(threading.current_thread().name)
        return None if status == 0 else event(status=status)

    with Emitter([sink], interval=0.01) as emitter:
        emitter.defer(build, 0)
        emitter.defer(build, 7)
        deadline = time.monotonic() + 10
        while not sink.events and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [e.status for e in sink.events] == [7]
    assert built_on == ["keyguard-events"] * 2  # the dispatch thread, not the caller


def test_a_raising_sink_counts_errors_and_others_still_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = ListSink()

    def bad(e: Event) -> None:
        raise RuntimeError("boom: secret-looking text")

    with Emitter([bad, good], error_log_interval=3600) as emitter:
        for _ in range(20):
            emitter.emit(event())
        emitter.flush()
        assert emitter.errors == 20
        stats = {s.name: s for s in emitter.stats.sinks}
        assert stats[bad.__qualname__].errors == 20
    assert len(good.events) == 20
    failures = [r for r in caplog.records if "event sink" in r.getMessage()]
    assert len(failures) == 1  # one line per interval, not one per failure
    assert "RuntimeError" in failures[0].getMessage()
    assert "boom" not in failures[0].getMessage()  # the type only, never the message


def test_a_blocking_sink_drops_its_own_events_and_never_blocks_emit() -> None:
    release = threading.Event()
    good = ListSink()

    def stuck(e: Event) -> None:
        release.wait(30)

    emitter = Emitter([stuck, good], sink_capacity=50, interval=0.01)
    try:
        for round_ in range(1, 5):
            started = time.perf_counter()
            for _ in range(40):
                emitter.emit(event())
            assert time.perf_counter() - started < 1.0  # nowhere near a blocking call
            deadline = time.monotonic() + 10
            while len(good.events) < 40 * round_ and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(good.events) == 40 * round_  # the healthy sink carries on
        stuck_stats = next(s for s in emitter.stats.sinks if s.name == stuck.__qualname__)
        assert stuck_stats.dropped == 160 - 50 - 1  # its queue (50) and the one in its hands
        assert emitter.dropped == stuck_stats.dropped
    finally:
        release.set()
        emitter.close(timeout=5)


def test_a_full_buffer_drops_and_counts() -> None:
    release = threading.Event()
    sink = ListSink()
    emitter = Emitter([sink], capacity=10, interval=60)  # nothing drains for a minute
    try:
        for _ in range(25):
            emitter.emit(event())
        assert emitter.dropped == 15
        assert emitter.stats.emitted == 10
    finally:
        release.set()
        emitter.close()
    assert len(sink.events) == 10  # close delivered what was buffered


def test_close_delivers_pending_events_and_later_events_are_ignored() -> None:
    sink = ListSink()
    emitter = Emitter([sink], interval=60)
    for _ in range(3):
        emitter.emit(event())
    emitter.close()
    assert len(sink.events) == 3
    emitter.emit(event())
    emitter.defer(lambda: event())
    assert len(sink.events) == 3
    emitter.close()  # idempotent
    with pytest.raises(ConfigurationError):
        emitter.subscribe(ListSink())


def test_close_gives_up_on_a_stuck_sink_within_its_timeout() -> None:
    release = threading.Event()

    def stuck(e: Event) -> None:
        release.wait(30)

    emitter = Emitter([stuck])
    emitter.emit(event())
    emitter.emit(event())
    started = time.monotonic()
    emitter.close(timeout=0.3)
    assert time.monotonic() - started < 5
    assert emitter.dropped >= 1
    release.set()


def test_unsubscribe_stops_delivery() -> None:
    sink = ListSink()
    with Emitter([sink]) as emitter:
        emitter.emit(event())
        emitter.flush()
        emitter.unsubscribe(sink)
        assert emitter.interested == frozenset()
        emitter.emit(event())
        emitter.flush()
    assert len(sink.events) == 1


def test_sync_callback_sink() -> None:
    seen: list[Event] = []
    with Emitter([CallbackSink(seen.append, kinds=[EventKind.KEY_CREATED])]) as emitter:
        emitter.emit(event(EventKind.KEY_CREATED, key_id="k"))
        emitter.emit(event(EventKind.DENIED))
        emitter.flush()
    assert [e.key_id for e in seen] == ["k"]


def test_async_callback_sink_on_its_own_loop() -> None:
    seen: list[str] = []

    async def callback(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e.key_id or "")

    sink = CallbackSink(callback)
    assert sink.is_async
    with Emitter([sink]) as emitter:
        emitter.emit(event(key_id="a"))
        emitter.emit(event(key_id="b"))
        emitter.flush()
    assert seen == ["a", "b"]


def test_async_callback_sink_on_the_applications_loop_is_not_waited_for() -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def callback(e: Event) -> None:
            seen.append(threading.current_thread().name)
            if e.key_id == "fail":
                raise ValueError("counted, not raised")
            done.set()

        sink = CallbackSink(callback, loop=loop)
        emitter = Emitter([sink])
        emitter.emit(event(key_id="fail"))
        emitter.emit(event(key_id="ok"))
        await asyncio.to_thread(emitter.flush)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0)
        await asyncio.to_thread(emitter.close)
        assert sink.failures == 1
        return seen

    seen = asyncio.run(main())
    assert seen == [threading.current_thread().name] * 2  # ran on the app's loop (this thread)


def test_queue_sink_never_waits_and_counts_what_did_not_fit() -> None:
    target: queue.Queue[Event] = queue.Queue(maxsize=3)
    sink = QueueSink(target)
    with Emitter([sink]) as emitter:
        for i in range(10):
            emitter.emit(event(status=i))
        emitter.flush()
    assert [target.get_nowait().status for _ in range(3)] == [0, 1, 2]
    assert sink.dropped == 7


def test_queue_sink_feeds_an_asyncio_queue() -> None:
    async def main() -> list[int | None]:
        target: asyncio.Queue[Event] = asyncio.Queue(maxsize=2)
        sink = QueueSink(target, loop=asyncio.get_running_loop())
        emitter = Emitter([sink])
        for i in range(4):
            emitter.emit(event(status=i))
        await asyncio.to_thread(emitter.flush)
        await asyncio.sleep(0.05)
        await asyncio.to_thread(emitter.close)
        assert sink.dropped == 2
        return [target.get_nowait().status for _ in range(2)]

    assert asyncio.run(main()) == [0, 1]


def test_queue_sink_refuses_what_is_not_a_queue() -> None:
    with pytest.raises(ConfigurationError):
        QueueSink([])
    with pytest.raises(ConfigurationError, match="loop"):
        QueueSink(asyncio.Queue())


def test_logging_sink_writes_one_line_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard.events")
    with Emitter([LoggingSink()]) as emitter:
        emitter.emit(
            event(
                EventKind.RATE_LIMITED,
                code="rate_limited",
                key_id="3F9aQ2xLm7Pw",
                route="/agents/{agent_id}",
                method="GET",
                status=429,
                elapsed=0.0000123,
                detail={"window": "10s", "limit": "20"},
            )
        )
        emitter.flush()
    (record,) = [r for r in caplog.records if r.name == "keyguard.events"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "keyguard rate_limited code=rate_limited key_id=3F9aQ2xLm7Pw route=/agents/{agent_id} "
        "method=GET status=429 window=10s limit=20 elapsed_us=12.3"
    )
    fields = record.keyguard  # type: ignore[attr-defined]
    assert fields["kind"] == "rate_limited"
    assert fields["window"] == "10s"
    json.dumps(fields)  # a JSON formatter can write it as is


def test_logging_sink_skips_levels_its_logger_discards(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keyguard.events")
    sink = LoggingSink()
    assert not sink.accepts(EventKind.AUTHENTICATED)  # DEBUG: never even built
    assert sink.accepts(EventKind.DENIED)
    built: list[EventKind] = []

    def build(kind: EventKind) -> Event:
        built.append(kind)
        return event(kind)

    with Emitter([sink]) as emitter:
        emitter.defer(build, EventKind.DENIED)
        emitter.flush()
    assert [r.getMessage().split()[1] for r in caplog.records] == ["denied"]


@pytest.mark.parametrize(
    "value",
    ["GET\r\nX-Injected: 1", "a\nb", "tab\there", "nul\x00", "esc\x1b[31m", "del\x7f", "c1\x85"],
)
def test_log_lines_stay_one_line_whatever_the_fields_hold(value: str) -> None:
    line = log_line(event(method=value, reason=value, detail={"x": value}))
    assert "\n" not in line
    assert "\r" not in line
    assert line.isprintable()


def test_log_values_with_spaces_are_quoted() -> None:
    assert 'reason="leaked in CI"' in log_line(event(EventKind.KEY_REVOKED, reason="leaked in CI"))


def test_emitter_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        Emitter(capacity=0)
    with pytest.raises(ConfigurationError):
        Emitter(interval=0)
    with Emitter() as emitter, pytest.raises(ConfigurationError):
        emitter.subscribe("not callable")  # type: ignore[arg-type]


def test_an_inline_sink_runs_where_the_event_is_emitted() -> None:
    seen: list[tuple[str, EventKind]] = []

    def inline(e: Event) -> None:
        seen.append((threading.current_thread().name, e.kind))
        if e.kind is EventKind.KEY_REVOKED:
            raise RuntimeError("counted, not raised")

    threaded = ListSink()
    with Emitter([threaded]) as emitter:
        emitter.subscribe(inline, inline=True)
        assert emitter.inline_interested == frozenset(EventKind)
        emitter.emit(event())
        emitter.defer(lambda: event(EventKind.KEY_REVOKED))
        here = threading.current_thread().name
        assert seen == [(here, EventKind.DENIED), (here, EventKind.KEY_REVOKED)]  # at once
        emitter.flush()
        assert emitter.errors == 1
        assert {s.name: s.delivered for s in emitter.stats.sinks}[inline.__qualname__] == 1
    assert [e.kind for e in threaded.events] == [EventKind.DENIED, EventKind.KEY_REVOKED]
