"""Anomaly detectors for a deployment of several processes sharing one key store.

``build(store_url, emit)`` returns the sink to attach to keyguard's event emitter: detectors
configured from a settings mapping, counting in the key store itself (so every process counts
together: twenty wrong secrets spread over four workers are twenty), suspending keys through a
KeyManager on the same store, and emitting their ANOMALY events through ``emit``. Closing the
sink closes the counters and the manager it built.

Needs nothing beyond keyguard (``pip install keyguard``; ``keyguard[redis]`` for a Redis store).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keyguard.abuse.detectors import Detectors, detectors_from_config
from keyguard.management import KeyManager
from keyguard.observability.model import Event
from keyguard.stores.detector_counters import detector_counters_from_url

# As it would come from a settings file; every detector not named runs with its defaults.
SETTINGS: dict[str, Any] = {
    "wrong_secret": {"threshold": 20, "window": "10m", "suspend": True},
    "new_network": {"warmup": 500},
    "volume": {"factor": 8, "minimum": 200},
    "failed_auth": {"threshold": 50, "window": "5m"},
}


def build(store_url: str, emit: Callable[[Event], object]) -> Detectors:
    manager = KeyManager(store_url)  # suspends keys (audited as keyguard:detector:<name>)
    counters = detector_counters_from_url(store_url)  # the store's own SQLite file or Redis
    return detectors_from_config(
        SETTINGS, emit=emit, manager=manager, counters=counters, closing=[counters, manager]
    )
