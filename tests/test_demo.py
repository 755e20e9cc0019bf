"""The demo service: key bootstrap, the platform's routes and scopes, and a real uvicorn server."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyguard.core.ratelimit.settings import ENV
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


# -- the rate-limit backend: options, environment, and missing packages ---------------------------


def _run_cli(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str, str]:
    """``python -m keyguard <args>`` in its own session; killed (with any workers it started)
    if it has not exited after 60 s, as a crash-looping server would not."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyguard", *args],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running after 60 s; stderr began: {err[:2000]}")
    return proc.returncode, out, err


def _without_redis(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import redis`` fails, in the server and in every worker it
    spawns: a ``redis`` package first on the path that raises ModuleNotFoundError."""
    fake = tmp_path / "no_redis" / "redis"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n"
    )
    path = os.pathsep.join(p for p in (str(fake.parent), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


@pytest.mark.slow
def test_demo_without_the_redis_package_says_so_in_one_line(tmp_path: Path) -> None:
    """Issue 8: with a Redis URL and no redis package, ``--workers 4`` crash-looped with
    hundreds of tracebacks."""
    env = {
        **_without_redis(tmp_path),
        "KEYGUARD_STORE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "KEYGUARD_RATELIMIT_URL": "redis://127.0.0.1:6379/15",
    }
    code, out, err = _run_cli(
        ["demo", "--workers", "4", "--port", str(_free_port())], env, tmp_path
    )
    assert code == 1
    assert err.splitlines() == [
        "keyguard: error: KEYGUARD_RATELIMIT_URL names a Redis server, but the redis package "
        "is not installed: pip install 'keyguard[redis]'"
    ]
    assert out == "", "nothing started, no keys printed"
    assert not (tmp_path / "demo.db").exists(), "checked before the store is touched"


@pytest.mark.slow
def test_demo_with_a_redis_store_and_no_redis_package_is_one_line(tmp_path: Path) -> None:
    env = {"KEYGUARD_STORE_URL": "redis://127.0.0.1:6379/0", **_without_redis(tmp_path)}
    code, out, err = _run_cli(
        ["demo", "--workers", "4", "--port", str(_free_port())], env, tmp_path
    )
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith("keyguard: error:")
    assert "pip install 'keyguard[redis]'" in line
    assert out == ""


def _isolate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """demo.run() exports the store and limiter settings to ``os.environ`` for its workers:
    make the test's monkeypatch restore every one of them, set or not before."""
    for name in ("KEYGUARD_STORE_URL", *ENV.values()):
        monkeypatch.setenv(name, "placeholder")  # recorded, so restored (or removed) after
        monkeypatch.delenv(name)


def test_demo_limiter_settings_reach_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keyguard demo`` configures the limiter of the server process and of the workers,
    which read the settings back from the environment."""
    pytest.importorskip("redis")
    import uvicorn

    from keyguard.core.ratelimit import ResilientLimiter
    from keyguard.core.ratelimit.settings import LimiterSettings
    from keyguard.demo import run

    _isolate_environment(monkeypatch)
    monkeypatch.setenv("KEYGUARD_STORE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setenv("KEYGUARD_RATELIMIT_BUDGET", "1.5")
    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    settings = LimiterSettings.from_env(url="redis://127.0.0.1:1/0", mode="deny", cooldown=7)
    run(workers=2, ratelimit=settings, out=io.StringIO())
    assert started["workers"] == 2
    # What a worker does: build the app from the environment.
    limiter = create_app().state.keyguard.limiter
    assert isinstance(limiter, ResilientLimiter)
    assert (limiter.mode, limiter.cooldown) == ("deny", 7.0)
    assert limiter.primary.budget == 1.5
    assert limiter.primary.socket_timeout == 0.1


def test_demo_takes_its_limiter_from_the_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8: ``keyguard demo`` hard-coded mode="local"."""
    pytest.importorskip("redis")
    import uvicorn

    from keyguard.core.ratelimit import ResilientLimiter
    from keyguard.demo import run

    _isolate_environment(monkeypatch)
    monkeypatch.setenv("KEYGUARD_STORE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setenv("KEYGUARD_RATELIMIT_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("KEYGUARD_RATELIMIT_MODE", "allow")
    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    shown: list[str] = []
    run(out=io.StringIO(), banner=lambda keys, url, out: shown.append(url))
    assert shown == ["http://127.0.0.1:8000"]
    limiter = started["app"].state.keyguard.limiter
    assert isinstance(limiter, ResilientLimiter)
    assert limiter.mode == "allow"
