"""The detectors with the rest of keyguard: their ANOMALY events counted by the Prometheus sink,
and no key material in anything they emit."""

from __future__ import annotations

import pytest

from keyguard.abuse.detectors import Detectors
from keyguard.observability.model import Event, EventKind
from tests.abuse.detector_support import T0, ev, wrong

pytest.importorskip("prometheus_client")


def test_anomalies_are_counted_by_detector_in_prometheus() -> None:
    from keyguard.observability.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()
    detectors = Detectors(metrics, background=False)
    try:
        for i in range(20):
            detectors(wrong(T0 + i))
        detectors(ev(EventKind.KEY_REFUSED, T0, code="revoked_api_key", key_id="ZyXwVu987654"))
    finally:
        detectors.close()
    for name in ("wrong_secret", "refused_key"):
        value = metrics.registry.get_sample_value("keyguard_anomalies_total", {"detector": name})
        assert value == 1, name


def test_no_anomaly_event_carries_key_material() -> None:
    from keyguard.core.keys import generate_key

    key = generate_key()
    secret = key.plaintext.rsplit("_", 1)[1]
    events: list[Event] = []
    detectors = Detectors(events.append, background=False)
    try:
        for i in range(30):
            detectors(wrong(T0 + i, key_id=key.key_id))
    finally:
        detectors.close()
    assert {e.detail["detector"] for e in events} == {"wrong_secret", "failed_auth"}
    for anomaly in events:
        text = repr(anomaly) + repr(anomaly.fields())
        for i in range(len(secret) - 7):
            assert secret[i : i + 8] not in text
