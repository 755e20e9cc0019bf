"""Real keyguard apps served over HTTP for the client tests, and a clock that never waits.

:class:`Served` runs an ASGI app under uvicorn in a thread of this process, on a free loopback
port: the client talks to it over a real socket, and both sides may share a :class:`FakeClock`
(the demo's rate limiter reads it; the client's retry policy sleeps on it), so a test can wait
"ten seconds" for a real 429 to clear without waiting at all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from keyguard.client import RetryPolicy
from keyguard.core.errors import StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.records import KeyRecord
from keyguard.demo import create_app
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeClock:
    """Wall and monotonic time that advance only when something sleeps on them."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def policy(self, **options: Any) -> RetryPolicy:
        """A retry policy that waits on this clock (and draws its jitter from ``random``)."""
        options.setdefault("random", lambda: 0.5)
        return RetryPolicy(
            sleep=self.sleep,
            async_sleep=self.async_sleep,
            clock=self.monotonic,
            wall_clock=self.time,
            **options,
        )


class Served:
    """An ASGI app served by uvicorn in a thread on a free port, stopped on exit."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class FlakyStore(MemoryStore):
    """A store that is unreachable for its next ``failures`` lookups (503 auth_unavailable)."""

    failures = 0

    def get(self, key_id: str) -> KeyRecord | None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("the key store is down (test)")
        return super().get(key_id)


@dataclass
class Demo:
    """The demo service, served for real, with keys of every kind."""

    base: str
    clock: FakeClock
    store: FlakyStore
    keys: dict[str, str]


def demo_keys(store: MemoryStore, now: float) -> dict[str, str]:
    factory = KeyFactory(store, Hasher(pepper_from_env=False))
    return {
        "admin": factory.issue("admin").plaintext,
        "reader": factory.issue("*:read").plaintext,
        "expired": factory.issue("agents:read", expires_at=now - 10).plaintext,
        "revoked": factory.issue(
            "agents:read", revoked_at=now - 10, revoked_reason="leaked"
        ).plaintext,
    }


@pytest.fixture
def demo() -> Iterator[Demo]:
    """The demo app over real HTTP: 2 requests per 10 s per key, on a fake clock."""
    clock = FakeClock()
    store = FlakyStore()
    keys = demo_keys(store, clock.time())
    app = create_app(
        store=store,
        rate_limits="2/10s",
        limiter=MemoryRateLimiter(clock=clock.time),
        hasher=Hasher(pepper_from_env=False),
        clock=clock.time,
        cache_ttl=0,
        negative_cache_ttl=0,
    )
    with Served(app) as served:
        yield Demo(served.base, clock, store, keys)


class Listener:
    """A TCP listener that only counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KEYGUARD_API_KEY", "KEYGUARD_API_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
