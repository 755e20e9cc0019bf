"""Redis for the tests: the driver (a failure, not a skip, under CI=true), the shared server of
``tests/conftest.py``, and a throwaway ``redis-server`` that a test may stop, pause or kill."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from types import ModuleType

import pytest

from tests.conftest import REDIS_URL, _redis_or_skip

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayRedis:
    """A private redis-server on a free port, for tests that stop, pause or count it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is required under CI=true (.ci/run installs it)")
            pytest.skip("redis-server binary not found")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(
            [binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def freeze(self, seconds: float) -> threading.Timer:
        """SIGSTOP now, SIGCONT after ``seconds``: a healthy server that stops answering for a
        moment (connections stay open, requests queue in the kernel)."""
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
        timer.start()
        return timer

    def pause(self, seconds: float) -> None:
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
