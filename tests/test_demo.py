"""The demo service: key bootstrap, the platform's routes and scopes, and a real uvicorn server."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keyguard.demo import ROUTES, bootstrap, create_app, print_banner
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore


def test_bootstrap_creates_keys_once_and_can_replace_them(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "k.db") as store:
        first = bootstrap(store)
        assert set(first.created) == {"admin", "read-only"}
        second = bootstrap(store)
        assert second.created == {}
        assert set(second.existing) == {"admin", "read-only"}
        third = bootstrap(store, new_keys=True)
        assert set(third.created) == {"admin", "read-only"}
        assert third.created["admin"] != first.created["admin"]


def test_banner_prints_each_key_once_with_its_role() -> None:
    keys = bootstrap(MemoryStore())
    out = io.StringIO()
    print_banner(keys, "http://127.0.0.1:8000", out)
    text = out.getvalue()
    admin_lines = [line for line in text.splitlines() if line.strip().startswith("admin key:")]
    ro_lines = [line for line in text.splitlines() if line.strip().startswith("read-only key:")]
    assert len(admin_lines) == len(ro_lines) == 1
    assert keys.created["admin"] in admin_lines[0]
    assert "curl" in text


@pytest.fixture
async def demo() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    store = MemoryStore()
    keys = bootstrap(store).created
    transport = httpx.ASGITransport(app=create_app(store=store))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        yield client, keys


async def test_routes_follow_the_platform_scopes(
    demo: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, keys = demo
    admin = {"Authorization": f"UserKey {keys['admin']}"}
    reader = {"Authorization": f"UserKey {keys['read-only']}"}
    assert (await client.get("/health")).status_code == 200
    r = await client.get("/agents")
    assert r.status_code == 401
    assert r.json()["code"] == "missing_api_key"
    assert (await client.get("/agents", headers=reader)).status_code == 200
    r = await client.post("/agents", headers=reader, json={"name": "x"})
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient_scope"
    assert r.json()["required_scopes"] == ["agents:write"]
    r = await client.post("/agents", headers=admin, json={"name": "x"})
    assert r.status_code == 201
    assert (await client.post("/tasks/1/execute", headers=admin)).status_code == 202
    r = await client.post("/tasks/1/execute", headers=reader)
    assert r.status_code == 403
    assert r.json()["required_scopes"] == ["tasks:execute"]
    assert (await client.get("/whoami", headers=reader)).json()["scopes"] == ["*:read"]
    assert (await client.get("/nowhere", headers=admin)).status_code == 403  # denied by default


def test_every_platform_scope_guards_a_route() -> None:
    from keyguard.core.scopes import PLATFORM_SCOPES

    used = set(ROUTES.values())
    assert set(PLATFORM_SCOPES) - {"admin"} <= used


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoServer:
    """The demo under uvicorn in a subprocess, on a free port, stopped on exit."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "keyguard.demo:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *extra,
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> httpx.Client:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.base + "/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                    pytest.fail(f"demo server did not start: {out}")
                time.sleep(0.1)
        self.client = httpx.Client(base_url=self.base, timeout=5)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def _demo_keys(db: Path) -> dict[str, str]:
    with SQLiteStore(db) as store:
        return bootstrap(store).created


@pytest.mark.slow
def test_real_server_over_http(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    keys = _demo_keys(db)
    with DemoServer({"KEYGUARD_STORE_URL": f"sqlite:///{db}"}) as client:
        ok = client.get("/agents", headers={"Authorization": f"UserKey {keys['admin']}"})
        assert ok.status_code == 200
        assert "agents" in ok.json()
        missing = client.get("/agents")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"].startswith("UserKey realm=")
        assert missing.headers["cache-control"] == "no-store"
        assert missing.json()["code"] == "missing_api_key"
        forbidden = client.post(
            "/agents",
            headers={"Authorization": f"UserKey {keys['read-only']}"},
            json={"name": "x"},
        )
        assert forbidden.status_code == 403
        assert forbidden.json()["code"] == "insufficient_scope"


@pytest.mark.slow
def test_real_server_rate_limits_the_burst_and_honours_retry_after(tmp_path: Path) -> None:
    """The platform's contract over real HTTP: the 21st request within 10 s is 429 with
    Retry-After; after Retry-After the key is admitted again; refused requests cost nothing."""
    db = tmp_path / "demo.db"
    keys = _demo_keys(db)
    auth = {"Authorization": f"UserKey {keys['read-only']}"}
    with DemoServer({"KEYGUARD_STORE_URL": f"sqlite:///{db}"}) as client:
        admitted = [client.get("/agents", headers=auth) for _ in range(20)]
        last_admitted = time.monotonic()
        assert [r.status_code for r in admitted] == [200] * 20
        assert admitted[-1].headers["x-ratelimit-remaining"] == "0"
        refused = client.get("/agents", headers=auth)
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 10
        for _ in range(5):  # hammering while blocked must not extend the block
            assert client.get("/agents", headers=auth).status_code == 429
        time.sleep(retry)
        assert client.get("/agents", headers=auth).status_code == 200  # as Retry-After said
        # Once every earlier admitted request has left the 10 s window, the full burst is
        # back: the refused requests consumed nothing.
        time.sleep(max(0.0, last_admitted + 10.2 - time.monotonic()))
        again = [client.get("/agents", headers=auth) for _ in range(19)]
        assert [r.status_code for r in again] == [200] * 19
        assert client.get("/agents", headers=auth).status_code == 429


@pytest.mark.slow
@pytest.mark.redis
def test_real_server_workers_share_the_limit_through_redis(tmp_path: Path, redis_url: str) -> None:
    """Two worker processes, one Redis limiter: exactly 20 of 40 requests get through."""
    db = tmp_path / "demo.db"
    keys = _demo_keys(db)
    auth = {"Authorization": f"UserKey {keys['admin']}"}
    env = {"KEYGUARD_STORE_URL": f"sqlite:///{db}", "KEYGUARD_RATELIMIT_URL": redis_url}
    with DemoServer(env, "--workers", "2") as client:
        base = str(client.base_url)
        # A fresh connection per request, so the kernel spreads them over both workers; the
        # second worker may still be starting, so wait (bounded) until both have answered.
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(httpx.get(base + "/health").json()["pid"])
        statuses = [httpx.get(base + "/agents", headers=auth).status_code for _ in range(40)]
    assert len(pids) == 2, "both workers should have served requests"
    assert statuses.count(200) == 20
    assert statuses.count(429) == 20
