"""The Detectors sink: suspension through a real KeyManager (reversible, audited, off the request
path, once per condition), the background queue, failures that must not reach the emitter,
several processes sharing counters, and building it all from configuration."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyguard.abuse.detectors import (
    Detector,
    Detectors,
    NewNetworkDetector,
    RefusedKeyDetector,
    WrongSecretDetector,
    build_detector,
    detectors_from_config,
)
from keyguard.abuse.detectors.catalog import parse_seconds
from keyguard.core.detector_counters import DetectorCounters, MemoryDetectorCounters
from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.records import KeyStatus
from keyguard.management import KeyManager
from keyguard.observability.model import Event, EventKind
from keyguard.stores.detector_counters import detector_counters_from_url
from keyguard.stores.memory import MemoryStore
from tests.abuse.detector_support import KEY, T0, Run, ev, ok, wrong


@pytest.fixture
def manager() -> Iterator[KeyManager]:
    with KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False)) as keys:
        yield keys


# -- suspension -------------------------------------------------------------------------------
def test_twenty_wrong_secrets_suspend_the_key_reversibly_and_audited(manager: KeyManager) -> None:
    created = manager.create("ci", ["agents:read"], owner="acme")
    key_id = created.record.key_id
    events: list[Event] = []
    with Detectors(
        events.append, detectors=[WrongSecretDetector(suspend=True)], manager=manager
    ) as detectors:
        for i in range(20):
            detectors(wrong(T0 + i, key_id))
        assert detectors.flush(30)
        (anomaly,) = events
        assert (anomaly.owner, anomaly.detail["suspend"]) == ("acme", "requested")
        record = manager.get(key_id)
        assert record.status(T0) is KeyStatus.SUSPENDED
        assert "wrong_secret" in (record.suspended_reason or "")
        (audit,) = [a for a in manager.audit(key_id=key_id) if a.action == "suspend"]
        assert audit.actor == "keyguard:detector:wrong_secret"
        assert audit.details["reason"].startswith("anomaly detector wrong_secret: 20 wrong")
        # The operator looks, and resumes the key: the attack goes on within the cooldown, and
        # the key is not suspended again (once per key and condition).
        manager.resume(key_id, actor="cli")
        for i in range(40):
            detectors(wrong(T0 + 30 + i, key_id))
        assert detectors.flush(30)
        assert manager.get(key_id).suspended_at is None
        assert detectors.suspender is not None
        assert detectors.suspender.stats["suspended"] == 1
    assert [a.action for a in manager.audit(key_id=key_id)][:2] == ["resume", "suspend"]


def test_a_revoked_key_cannot_be_suspended_and_that_is_only_logged(
    manager: KeyManager, caplog: pytest.LogCaptureFixture
) -> None:
    key_id = manager.create("old", ["agents:read"]).record.key_id
    manager.revoke(key_id, reason="leaked")
    events: list[Event] = []
    with (
        Detectors(
            events.append, detectors=[RefusedKeyDetector(suspend=True)], manager=manager
        ) as detectors,
        caplog.at_level(logging.INFO, "keyguard.abuse.detectors"),
    ):
        detectors(ev(EventKind.KEY_REFUSED, T0, code="revoked_api_key", key_id=key_id))
        assert detectors.flush(30)
        assert detectors.suspender is not None
        assert detectors.suspender.stats["refused"] == 1
    assert len(events) == 1
    assert "not suspended" in caplog.text


def test_suspension_needs_a_manager_and_a_store_outage_is_retried() -> None:
    with pytest.raises(ConfigurationError, match="manager"):
        Detectors(detectors=[WrongSecretDetector(suspend=True)])

    class Flaky:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str | None]] = []

        def suspend(self, key_id: str, *, reason: str, actor: str | None = None) -> None:
            self.calls.append((key_id, actor))
            if len(self.calls) < 3:
                raise StoreUnavailable("down for a moment")

    flaky = Flaky()
    with Detectors(detectors=[WrongSecretDetector(threshold=1, suspend=True)], manager=flaky) as d:
        assert d.suspender is not None
        d.suspender.backoff = 0.01
        d(wrong(T0))
        assert d.flush(30)
        assert d.suspender.stats.snapshot()["suspended"] == 1
    assert flaky.calls == [(KEY, "keyguard:detector:wrong_secret")] * 3


def test_the_request_path_never_waits_for_a_suspension() -> None:
    release = threading.Event()

    class Slow:
        def suspend(self, key_id: str, *, reason: str, actor: str | None = None) -> None:
            release.wait(30)

    detectors = Detectors(
        detectors=[WrongSecretDetector(threshold=1, suspend=True)],
        manager=Slow(),
        background=False,  # even inline, the suspension runs on the suspender's thread
    )
    try:
        detectors(wrong(T0))  # returns although the store is "stuck"
        assert detectors.flush(0.05) is False
    finally:
        release.set()
        detectors.close()


# -- the sink ---------------------------------------------------------------------------------
def test_background_mode_queues_and_flush_waits() -> None:
    events: list[Event] = []
    with Detectors(events.append, detectors=[WrongSecretDetector()]) as detectors:
        assert detectors.background
        for i in range(25):
            detectors(wrong(T0 + i))
        assert detectors.flush(30)
        assert len(events) == 1
        assert detectors.stats["events"] == 25
    detectors(wrong(T0 + 100))  # after close: dropped, counted, no error
    assert detectors.stats["dropped"] == 1
    detectors.close()  # twice is fine


def test_a_full_queue_drops_and_counts() -> None:
    detectors = Detectors(detectors=[WrongSecretDetector()], max_pending=0)
    try:
        detectors(wrong(T0))
        assert detectors.stats["dropped"] == 1
    finally:
        detectors.close()


def test_events_no_detector_reads_cost_nothing() -> None:
    run = Run(WrongSecretDetector())
    assert run.detectors.kinds == {EventKind.DENIED}  # what an event bus delivers to it
    run.feed([ev(EventKind.KEY_CREATED, T0), ev(EventKind.ANOMALY, T0)])
    assert run.detectors.stats["events"] == 0


def test_failures_are_counted_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Detector):
        name = "broken"
        kinds = frozenset({EventKind.DENIED})

        def observe(self, event: Event) -> None:
            raise StoreUnavailable("Redis is unreachable (ConnectionError)")

    def emit(event: Event) -> None:
        raise RuntimeError("a sink that raises")

    run = Run(Broken(), WrongSecretDetector(threshold=1))
    run.detectors.emit = emit
    with caplog.at_level(logging.WARNING, "keyguard.abuse.detectors"):
        run.feed([wrong(T0), wrong(T0 + 1)])
    stats = run.detectors.stats.snapshot()
    assert (stats["errors"], stats["emit_errors"], stats["anomalies"]) == (2, 1, 1)
    assert caplog.text.count("skipped an event") == 1  # at most once a minute


def test_without_emit_anomalies_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    detectors = Detectors(detectors=[WrongSecretDetector(threshold=1)], background=False)
    with caplog.at_level(logging.WARNING, "keyguard.abuse.detectors"):
        detectors(wrong(T0))
    assert "anomaly:" in caplog.text
    assert "wrong_secret_burst" in caplog.text


def test_detectors_must_have_distinct_names_and_counters_must_be_counters() -> None:
    with pytest.raises(ConfigurationError, match="share a name"):
        Detectors(detectors=[WrongSecretDetector(), WrongSecretDetector()])
    with pytest.raises(ConfigurationError, match="DetectorCounters"):
        Detectors(counters=object())  # type: ignore[arg-type]


def test_state_size_reports_what_is_held() -> None:
    run = Run(WrongSecretDetector(), NewNetworkDetector(), max_counters=10)
    run.feed(wrong(T0 + i, key_id=f"key{i:09d}") for i in range(50))
    run.feed(ok(T0, f"10.0.0.{i}", key_id=f"key{i:09d}") for i in range(50))
    sizes = run.detectors.state_size()
    assert sizes["wrong_secret"] == 10  # the cap
    assert sizes["new_network"] == 50 + 10  # 50 keys remembered, counters capped at 10
    assert "wrong_secret" in repr(run.detectors)


# -- several processes ------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


def test_two_processes_sharing_counters_fire_once_at_the_shared_threshold(shared_url: str) -> None:
    backends: list[DetectorCounters] = [detector_counters_from_url(shared_url) for _ in range(2)]
    runs = [Run(WrongSecretDetector(), counters=c) for c in backends]
    try:
        # Ten wrong secrets through each "process": twenty in all.
        for i in range(9):
            assert runs[0].feed([wrong(T0 + 2 * i)]) == []
            assert runs[1].feed([wrong(T0 + 2 * i + 1)]) == []
        assert runs[0].feed([wrong(T0 + 18)]) == []
        assert len(runs[1].feed([wrong(T0 + 19)])) == 1  # the 20th, whichever process sees it
        assert runs[0].feed([wrong(T0 + 20)]) == []  # the other process knows it fired
    finally:
        for run in runs:
            run.close()
        for backend in backends:
            backend.close()


# -- configuration ----------------------------------------------------------------------------
def test_configuration_builds_detectors_with_durations_and_defaults(manager: KeyManager) -> None:
    detectors = detectors_from_config(
        {
            "wrong_secret": {"threshold": 5, "window": "5m", "suspend": True, "cooldown": "1h30m"},
            "volume": False,
            "new_network": {"horizon": "7d", "warmup": 10},
        },
        manager=manager,
        background=False,
    )
    try:
        by_name = {d.name: d for d in detectors.detectors}
        assert "volume" not in by_name
        assert set(by_name) == {
            "wrong_secret",
            "refused_key",
            "new_network",
            "scope_probe",
            "failed_auth",
        }
        ws = by_name["wrong_secret"]
        assert isinstance(ws, WrongSecretDetector)
        assert (ws.threshold, ws.window.seconds, ws.suspend, ws.cooldown) == (5, 300, True, 5400)
        nn = by_name["new_network"]
        assert isinstance(nn, NewNetworkDetector)
        assert (nn.horizon.seconds, nn.warmup) == (7 * 86400, 10)
    finally:
        detectors.close()


def test_configuration_without_defaults_and_with_a_resolver() -> None:
    def resolver(address: str) -> str:
        return "NZ"

    detectors = detectors_from_config(
        {"new_network": True, "failed_auth": None}, defaults=False, resolver=resolver
    )
    try:
        assert [d.name for d in detectors.detectors] == ["new_network", "failed_auth"]
        nn = detectors.detectors[0]
        assert isinstance(nn, NewNetworkDetector)
        assert nn.resolver is resolver
    finally:
        detectors.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"wrong_secrets": True}, "unknown detector 'wrong_secrets'", id="typo"),
        pytest.param({"volume": {"factr": 3}}, "unknown option 'factr'", id="option"),
        pytest.param({"volume": "on"}, "true, false or a mapping", id="shape"),
        pytest.param({"volume": {"period": "soon"}}, "volume.period", id="duration"),
        pytest.param({"volume": {"minimum": -1}}, "minimum", id="value"),
        pytest.param([("volume", True)], "must be a mapping", id="not-a-mapping"),
    ],
)
def test_bad_configuration_is_refused_clearly(config: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        detectors_from_config(config)  # type: ignore[arg-type]


def test_durations_and_single_detectors() -> None:
    assert [parse_seconds(v, "x") for v in (30, 2.5, "45s", "10m", "1d12h", "2w", "90")] == [
        30,
        2.5,
        45,
        600,
        129_600,
        1_209_600,
        90,
    ]
    with pytest.raises(ConfigurationError, match="duration"):
        parse_seconds(True, "x")
    assert build_detector("volume", False) is None
    with pytest.raises(ConfigurationError, match="unknown detector"):
        build_detector("nope")
    assert isinstance(build_detector("refused_key", {"codes": ["revoked_api_key"]}), Detector)
    assert isinstance(MemoryDetectorCounters(), DetectorCounters)


def test_close_closes_what_it_was_given_to_close(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []

    class Resource:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        def close(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise OSError("already gone")

    detectors = Detectors(closing=[Resource("counters", fail=True), Resource("manager")])
    with caplog.at_level(logging.ERROR, "keyguard.abuse.detectors"):
        detectors.close()
        detectors.close()
    assert closed == ["counters", "manager"]  # each once, a failure does not stop the next
    assert "closing" in caplog.text


def test_the_worker_survives_a_failure_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    detectors = Detectors(events.append, detectors=[WrongSecretDetector(threshold=1)])
    real = detectors.process
    calls = 0

    def once_broken(event: Event) -> list[Event]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real(event)

    detectors.process = once_broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, "keyguard.abuse.detectors"):
            detectors(wrong(T0, key_id="Aaaaaaaaaaa1"))
            detectors(wrong(T0, key_id="Aaaaaaaaaaa2"))
            assert detectors.flush(30)
    finally:
        detectors.close()
    assert [e.key_id for e in events] == ["Aaaaaaaaaaa2"]
    assert detectors.stats["errors"] == 1
    assert "failed on an event" in caplog.text
