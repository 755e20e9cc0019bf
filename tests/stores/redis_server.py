"""Redis for the rate-limit tests: the driver (a failure, not a skip, under CI=true), the shared
server of ``tests/conftest.py``, a throwaway ``redis-server`` that a test may stop, pause,
freeze or kill, and a proxy that delivers its replies late."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from types import ModuleType

import pytest

from tests.conftest import REDIS_URL, _redis_or_skip
from tests.redis_servers import Server

__all__ = ["REDIS_URL", "SlowReplies", "ThrowawayRedis", "import_redis", "reachable_or_skip"]


def import_redis() -> tuple[ModuleType, ModuleType]:
    """``redis`` and ``redis.asyncio``; skips the calling module without them, except under
    CI=true, where a missing driver fails."""
    try:
        import redis
        import redis.asyncio
    except ImportError:  # pragma: no cover - the test extra installs it
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(
            "redis-py not installed (pip install 'keyguard[redis]')", allow_module_level=True
        )
    return redis, redis.asyncio


def reachable_or_skip() -> None:
    """The shared Redis answers, or the test is skipped (a failure under CI=true)."""
    _redis_or_skip()


class ThrowawayRedis(Server):
    """A private redis-server on a free port (see :class:`tests.redis_servers.Server`), which
    a test may also stop politely, freeze for a while, or pause with ``CLIENT PAUSE``."""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def freeze(self, seconds: float) -> threading.Timer:
        """SIGSTOP now, SIGCONT after ``seconds``: a healthy server that stops answering for a
        moment (connections stay open, requests queue in the kernel)."""
        self.pause()
        timer = threading.Timer(seconds, self.resume)
        timer.start()
        return timer

    def client_pause(self, seconds: float) -> None:
        """``CLIENT PAUSE``: the server keeps accepting but runs no command for ``seconds``."""
        import redis

        admin = redis.Redis(port=self.port)
        try:
            admin.client_pause(round(seconds * 1000))
        finally:
            admin.close()


class SlowReplies:
    """A TCP proxy in front of a Redis that passes requests on at once but holds every reply
    for ``delay`` seconds: Redis has run the command, the client just hears of it late (the
    case where a retry could count a request twice)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
