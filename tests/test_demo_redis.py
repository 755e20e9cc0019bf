"""The demo on Redis, as an operator runs it: ``KEYGUARD_STORE_URL=redis://… keyguard demo
--workers 4``. One Redis (a private server with persistence, started here) serves keys,
revocations and rate-limit counts to every worker: a key created from the CLI works on all of
them, 8 client processes hammering one key are admitted exactly the burst quota, a revocation
from the CLI is refused everywhere, and with Redis stopped authenticated requests get 503
``auth_unavailable`` with ``Retry-After`` (never 401 or 500), then succeed once it is back."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.redis_servers import Cluster, Server, free_port
from tests.stores.redis_server import import_redis

redis, _ = import_redis()

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(None, "--appendonly", "yes", "--appendfsync", "always", workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(BIN / "keyguard"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _hammer(base: str, header: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    codes = []
    for _ in range(n):
        with httpx.Client() as client:  # a fresh connection: any worker may answer
            codes.append(
                client.get(base + "/agents", headers={"Authorization": header}).status_code
            )
    out.put(codes)


def _fresh_get(base: str, header: str) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.get(base + "/agents", headers={"Authorization": header})


@contextmanager
def _demo(env: dict[str, str], workers: int) -> Iterator[str]:
    """``keyguard demo --workers N`` on a free port, once every worker has started: its base
    URL; stopped on leaving."""
    port = free_port()
    demo = subprocess.Popen(
        [str(BIN / "keyguard"), "demo", "--workers", str(workers), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        ready = 0
        for line in demo.stdout:
            if "Application startup complete" in line:
                ready += 1
                if ready == workers:
                    break
        assert ready == workers, f"the {workers} workers did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.terminate()
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()


def _burst_codes(base: str, header: str) -> list[int]:
    """The statuses of 8 client processes sending 5 requests each with ``header``."""
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_hammer, args=(base, header, 5, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    codes = [c for _ in procs for c in queue.get(timeout=120)]
    for p in procs:
        p.join(30)
    return sorted(codes)


def test_four_workers_share_keys_limits_and_revocations(
    redis_server: Server, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix=kgdemo&timeout=0.3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env.update(KEYGUARD_STORE_URL=url, HOME=str(tmp_path), PATH=f"{BIN}:{env['PATH']}")
    with _demo(env, 4) as base:
        # A key created from the CLI (in another process) works on every worker.
        plaintext = _cli(
            env, "keys", "create", "--name", "shared", "--scope", "agents:read", "--quiet"
        ).strip()
        header = f"UserKey {plaintext}"
        assert {_fresh_get(base, header).status_code for _ in range(12)} == {200}

        # Rate limits are counted in the same Redis: 8 processes, 5 requests each, within
        # the 10 s burst window of a fresh key: exactly 20 are admitted.
        burst = _cli(
            env, "keys", "create", "--name", "burst", "--scope", "agents:read", "--quiet"
        ).strip()
        assert _burst_codes(base, f"UserKey {burst}") == [200] * 20 + [429] * 20

        # A revocation from the CLI reaches every worker at once (pushed, not waited out).
        key_id = plaintext.split("_")[1]
        _cli(env, "keys", "revoke", key_id, "--reason", "test")
        time.sleep(0.5)
        replies = [_fresh_get(base, header) for _ in range(24)]
        assert {(r.status_code, r.json()["code"]) for r in replies} == {(401, "revoked_api_key")}

        # Redis stops: authenticated requests fail closed with 503, never 401 or 500...
        reader = _cli(
            env, "keys", "create", "--name", "reader", "--scope", "agents:read", "--quiet"
        ).strip()
        assert _fresh_get(base, f"UserKey {reader}").status_code == 200
        redis_server.kill()
        time.sleep(1.5)  # past the 1 s cache freshness bound
        down = [_fresh_get(base, f"UserKey {reader}") for _ in range(12)]
        assert {r.status_code for r in down} == {503}
        assert {r.json()["code"] for r in down} == {"auth_unavailable"}
        assert all(int(r.headers["retry-after"]) >= 1 for r in down)
        # ...and succeed again once it is back (same data: the server persists it).
        redis_server.start()
        deadline = time.monotonic() + 30
        while _fresh_get(base, f"UserKey {reader}").status_code != 200:
            assert time.monotonic() < deadline, "the demo did not recover after Redis returned"
            time.sleep(0.2)
        assert {_fresh_get(base, f"UserKey {reader}").status_code for _ in range(12)} == {200}


def test_workers_on_a_redis_cluster_share_keys_and_limits(tmp_path: Path) -> None:
    """``KEYGUARD_STORE_URL=redis+cluster://…``: keys and rate-limit counts both on the
    Cluster (the demo's limiter follows its store), exact across workers and processes."""
    with Cluster() as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
        env.update(
            KEYGUARD_STORE_URL=f"{cluster.url}?prefix=kgdemoc&timeout=0.5",
            HOME=str(tmp_path),
            PATH=f"{BIN}:{env['PATH']}",
        )
        with _demo(env, 2) as base:
            burst = _cli(
                env, "keys", "create", "--name", "burst", "--scope", "agents:read", "--quiet"
            ).strip()
            assert _burst_codes(base, f"UserKey {burst}") == [200] * 20 + [429] * 20
        # The counts live on the Cluster, under the store's prefix.
        counted = []
        for node in cluster.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port)
            try:
                counted += list(client.scan_iter(match="kgdemoc:rl:*", count=1000))
            finally:
                client.close()
        assert counted
