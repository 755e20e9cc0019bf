"""Test helper: make a change to a store *as another process would*.

A store tells the caches in its own process about every change at once
(``KeyStore.subscribe_invalidations``). A change made by another process is not pushed by
memory or SQLite stores: caches see it when their freshness bound runs out. Tests of that bound
make their change inside :func:`elsewhere`, which keeps this process's caches uninformed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from keyguard.core.store import KeyStore


@contextlib.contextmanager
def elsewhere(store: KeyStore) -> Iterator[None]:
    subscribers = getattr(store, "_keyguard_local_subscribers", None)
    saved = list(subscribers or ())
    if subscribers is not None:
        subscribers.clear()
    try:
        yield
    finally:
        if subscribers is not None:
            subscribers.extend(saved)
