"""Several processes counting into one store, on SQLite and on a real Redis: the counts add up
exactly (nothing double-counted, nothing lost on a clean shutdown), and a crash loses only what
was counted since the last flush."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from keyguard.management.manager import KeyManager
from keyguard.observability import Observer, UsageCounter
from keyguard.stores import from_url
from tests.adapters import wsgi_driver

pytestmark = pytest.mark.slow

POLICY = {"GET /agents": "agents:read", "GET /agents/{agent_id}": "agents:read"}


def today() -> date:
    """Read when asserting: a module constant goes stale when a run crosses midnight UTC."""
    return datetime.now(UTC).date()


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status = "404 Not Found" if environ["PATH_INFO"].endswith("/missing") else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


def _serve(url: str, plaintext: str, requests: int, interval: float, crash_after: int) -> None:
    """A worker process: ``requests`` requests through the WSGI middleware, counted with
    ``interval`` between flushes; a clean exit, or ``os._exit`` right after ``crash_after``
    requests and one explicit flush before the last of them."""
    store = from_url(url)
    counter = UsageCounter(store, interval=interval)
    verifier = Verifier(
        store,
        policy=RoutePolicy(POLICY),
        rate_limits=None,
        hasher=Hasher(pepper_from_env=False),
        observer=Observer(usage=counter),
    )
    app = KeyGuardWSGIMiddleware(_app, verifier=verifier)
    headers = [("Authorization", f"UserKey {plaintext}")]
    for n in range(requests):
        path = "/agents" if n % 3 else ("/agents/missing" if n % 2 else "/agents/7")
        assert wsgi_driver.call(app, "GET", path, headers).status in (200, 404)
        if crash_after and n + 1 == crash_after - 5:
            counter.flush()  # the last flush before the crash
        if crash_after and n + 1 == crash_after:
            os._exit(3)  # no atexit, no close: a crash
    counter.close()
    store.close()


def _expected(requests: int) -> dict[str, int]:
    paths = [
        "/agents" if n % 3 else ("/agents/missing" if n % 2 else "/agents/7")
        for n in range(requests)
    ]
    found = sum(p == "/agents/missing" for p in paths)
    plain = paths.count("/agents")
    out = {
        "s:2xx": requests - found,
        "r:GET /agents": plain,
        "r:GET /agents/{agent_id}": requests - plain,
        "q:agents:read": requests,
    }
    if found:
        out["s:4xx"] = found
    return out


def _run(url: str, jobs: list[tuple[int, float, int]]) -> str:
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as manager:
        made = manager.create("shared", ["agents:read"], owner="acme")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_serve, args=(url, made.plaintext, n, interval, crash))
        for n, interval, crash in jobs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    expected_codes = [3 if crash else 0 for _, _, crash in jobs]
    assert [p.exitcode for p in procs] == expected_codes
    return made.key_id


def _counts(url: str, key_id: str) -> tuple[dict[str, int], Any]:
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as manager:
        report = manager.usage(key_id, days=2)
        totals = manager.store.usage_totals(key_id=key_id, since=today().isoformat())
    return dict(totals.days.get(today().isoformat(), {})), report


def _check_two_processes(url: str) -> None:
    # Short intervals: both processes flush many times while the other writes.
    key_id = _run(url, [(240, 0.02, 0), (360, 0.03, 0)])
    fields, report = _counts(url, key_id)
    assert fields == _expected(600)
    assert report.total == 600
    assert report.days[-1].day == today()
    assert report.last_client == "127.0.0.1"


def _check_crash(url: str) -> None:
    # One worker exits cleanly after 50 requests; the other crashes after 40, having flushed
    # after 35: its last 5 requests (less than one interval) are lost, nothing else.
    key_id = _run(url, [(50, 3600.0, 0), (40, 3600.0, 40)])
    fields, _ = _counts(url, key_id)
    assert fields == _sum(_expected(50), _expected(35))


def _sum(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def test_two_processes_add_up_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    _check_two_processes(url)


def test_a_crash_loses_at_most_one_interval_on_sqlite(tmp_path: Path) -> None:
    _check_crash(f"sqlite:///{tmp_path / 'keys.db'}")


@pytest.mark.redis
def test_two_processes_add_up_on_redis(redis_url: str) -> None:
    _check_two_processes(redis_url)


@pytest.mark.redis
def test_a_crash_loses_at_most_one_interval_on_redis(redis_url: str) -> None:
    _check_crash(redis_url)
