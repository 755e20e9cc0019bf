"""The demo's observability: every request counted per key into the demo's own key store
(flushed every second, and when the server shuts down), read back by its dashboard and by
``keyguard usage``; its events feeding ``/metrics`` when ``prometheus_client`` is installed.
Kept apart from :mod:`keyguard.demo` so that module keeps to routes and serving."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.observability.observer import Observer
from keyguard.observability.usage import UsageCounter

__all__ = ["DEMO_FLUSH_INTERVAL", "attach_metrics", "demo_observer", "lifespan", "usage_source"]

#: Seconds between the demo's usage flushes (short, so that ``keyguard usage`` run right after
#: some traffic shows it; a production service keeps the 5 s default).
DEMO_FLUSH_INTERVAL: Final = 1.0


def demo_observer(store: KeyStore) -> Observer | None:
    """Usage counting into ``store`` (``None`` for a store that keeps no usage)."""
    if not store.keeps_usage:
        return None
    return Observer(usage=UsageCounter(store, interval=DEMO_FLUSH_INTERVAL))


def attach_metrics(verifier: Verifier, metrics: Any) -> None:
    """Feed the demo's Prometheus metrics (an event sink) with the verifier's events."""
    observer = verifier.observer
    if isinstance(observer, Observer):
        observer.subscribe(metrics)


def usage_source(verifier: Verifier) -> Any:
    """The dashboard's usage source: the store's counts when the verifier counts usage (this
    process's pending counts written first, so the charts show them at once)."""
    observer = verifier.observer
    if isinstance(observer, Observer) and observer.usage is not None:
        from keyguard.observability.sources import StoreUsage

        counter = observer.usage
        return StoreUsage(counter.store, before_read=counter.flush)
    return None


def lifespan(verifier: Verifier) -> Any:
    """A Starlette lifespan that writes the pending usage counts when the server stops."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        yield
        observer = verifier.observer
        if isinstance(observer, Observer):
            if observer.usage is not None:
                await observer.usage.aclose()
            if observer.events is not None:
                observer.events.close()

    return run
