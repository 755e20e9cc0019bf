"""``/metrics`` for the demo (and any app that wants the same two lines): Prometheus metrics
when ``prometheus_client`` is installed, nothing otherwise."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["METRICS_PATH", "optional_metrics"]

METRICS_PATH: Final = "/metrics"


def optional_metrics(verifier: Any) -> Any:
    """A :class:`~keyguard.observability.prometheus.PrometheusMetrics` reading ``verifier``'s
    cache and store, or ``None`` when the ``prometheus`` extra is not installed."""
    try:
        from keyguard.observability.prometheus import PrometheusMetrics
    except ImportError:
        return None
    return PrometheusMetrics(verifier=verifier)
