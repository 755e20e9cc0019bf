"""Usage: the protocol's in-memory source, the recorders that feed it from real responses,
the chart geometry, and the pages that draw it (per key, per owner, within authority)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.policy import RoutePolicy
from keyguard.dashboard import DayUsage, MemoryUsage, UsageRecorder, UsageRecorderWSGI, UsageSource
from keyguard.dashboard.charts import day_chart, route_bars
from keyguard.dashboard.usage import OTHER_ROUTE, day_of, status_class
from tests.api.support import T0, Clock, SyncASGITransport
from tests.dashboard.support import World, browser, make_world

DAY = 86400.0


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (100, "2xx"),
        (200, "2xx"),
        (204, "2xx"),
        (301, "3xx"),
        (404, "4xx"),
        (429, "429"),
        (499, "4xx"),
        (500, "5xx"),
        (503, "5xx"),
        (600, "5xx"),
    ],
)
def test_status_classes(status: int, cls: str) -> None:
    assert status_class(status) == cls


def test_memory_usage_counts_per_key_and_owner_by_day() -> None:
    clock = Clock()
    usage = MemoryUsage(clock=clock)
    assert isinstance(usage, UsageSource)
    usage.record("k1", owner="acme", route="GET /agents", status=200, count=3)
    usage.record("k1", owner="acme", route="GET /agents", status=429)
    usage.record("k2", owner="acme", route="POST /agents", status=201, at=T0 - 2 * DAY)
    usage.record("k3", owner=None, route="GET /tasks", status=500, at=T0 - 40 * DAY)
    today = day_of(T0)
    assert usage.daily_usage(key_id="k1", days=7) == [DayUsage(today, {"2xx": 3, "429": 1})]
    owner = usage.daily_usage(owner="acme", days=7)
    assert [(u.day, u.total) for u in owner] == [(today - timedelta(days=2), 1), (today, 4)]
    assert usage.daily_usage(key_id="k3", days=30) == []  # outside the window
    assert usage.daily_usage(key_id="k3", days=41)[0].count("5xx") == 1
    assert usage.top_routes(owner="acme", days=7, limit=5) == [
        ("GET /agents", 4),
        ("POST /agents", 1),
    ]
    assert usage.top_routes(key_id="k1", days=7, limit=1) == [("GET /agents", 4)]
    with pytest.raises(ValueError, match="exactly one"):
        usage.daily_usage(days=1)
    with pytest.raises(ValueError, match="exactly one"):
        usage.top_routes(key_id="k1", owner="acme", days=1, limit=1)


def test_the_day_chart_stacks_classes_and_fills_missing_days() -> None:
    today = date(2030, 1, 10)
    usage = [
        DayUsage(today, {"2xx": 6, "4xx": 2, "429": 2}),
        DayUsage(today - timedelta(days=3), {"2xx": 1}),
    ]
    chart = day_chart(usage, days=7, today=today)
    assert [u.day for u in chart.days] == [today - timedelta(days=6 - i) for i in range(7)]
    assert dict(chart.totals) == {"2xx": 7, "3xx": 0, "4xx": 2, "429": 2, "5xx": 0}
    last = [b for b in chart.bars if b.day == today]
    assert [(b.cls, b.count) for b in last] == [("2xx", 6), ("4xx", 2), ("429", 2)]
    # Stacked: each bar starts where the one below ended, the tallest day fills the scale.
    assert last[0].y + last[0].height == pytest.approx(chart.baseline)
    assert last[1].y + last[1].height == pytest.approx(last[0].y)
    assert chart.y_ticks[-1][1] == 10
    assert sum(b.height for b in last) == pytest.approx(chart.baseline - chart.y_ticks[-1][0])
    assert day_chart([], days=3, today=today).empty
    bars = route_bars([("GET /a", 10), ("GET /b", 5)])
    assert [(b.route, b.percent) for b in bars] == [("GET /a", 100.0), ("GET /b", 50.0)]


def _asgi_app(world: World, usage: MemoryUsage, policy: RoutePolicy) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = 404 if scope["path"].startswith("/agents/") else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = KeyGuardMiddleware(
        app, store=world.store, policy=policy, hasher=world.manager.hasher, rate_limits="3/minute"
    )
    return UsageRecorder(guard, usage, policy=policy)


def _wsgi_app(world: World, usage: MemoryUsage, policy: RoutePolicy) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        missing = environ["PATH_INFO"].startswith("/agents/")
        start_response("404 Not Found" if missing else "200 OK", [])
        return [b"ok"]

    guard = KeyGuardWSGIMiddleware(
        app, store=world.store, policy=policy, hasher=world.manager.hasher, rate_limits="3/minute"
    )
    return UsageRecorderWSGI(guard, usage, policy=policy)


@pytest.mark.parametrize("skin", ["asgi", "wsgi"])
def test_the_recorders_count_what_keyguard_let_through(skin: str) -> None:
    world = make_world()
    usage = MemoryUsage()
    policy = RoutePolicy({"GET /agents": "agents:read", "GET /agents/{agent_id}": "agents:read"})
    app = (_asgi_app if skin == "asgi" else _wsgi_app)(world, usage, policy)
    transport = SyncASGITransport(app) if skin == "asgi" else httpx.WSGITransport(app=app)
    reader = {"Authorization": f"UserKey {world.key('reader')}"}
    with httpx.Client(transport=transport, base_url="http://t") as client:
        assert client.get("/agents", headers=reader).status_code == 200
        assert client.get("/agents/7", headers=reader).status_code == 404
        assert client.get("/agents/8", headers=reader).status_code == 404
        assert client.get("/agents", headers=reader).status_code == 429  # keyguard refused
        assert client.get("/agents").status_code == 401  # no key: nobody to count
    (day,) = usage.daily_usage(key_id=world.id("reader"), days=1)
    assert dict(day.counts) == {"2xx": 1, "4xx": 2}
    assert usage.top_routes(owner="acme", days=1, limit=5) == [
        ("GET /agents/{agent_id}", 2),
        ("GET /agents", 1),
    ]
    assert UsageRecorder(app, usage).policy is None
    assert OTHER_ROUTE == "(other)"


def test_the_key_page_draws_its_requests(world: World) -> None:
    key_id = world.id("reader")
    usage = world.usage
    usage.record(key_id, owner="acme", route="GET /agents", status=200, count=5)
    usage.record(key_id, owner="acme", route="GET /agents/{id}", status=404, count=2)
    usage.record(key_id, owner="acme", route="GET /agents", status=429, count=3)
    usage.record(key_id, owner="acme", route="GET /agents", status=200, at=T0 - DAY, count=4)
    with browser(world) as b:
        b.sign_in(world.key("admin"))
        page = b.get(f"/keys/{key_id}").text
    today, yesterday = day_of(T0).isoformat(), day_of(T0 - DAY).isoformat()
    bars = {
        (d, c): int(n)
        for d, c, n in re.findall(
            r'data-day="([^"]+)" data-class="([^"]+)" data-count="(\d+)"', page
        )
    }
    assert bars == {(today, "2xx"): 5, (today, "4xx"): 2, (today, "429"): 3, (yesterday, "2xx"): 4}
    totals = dict(re.findall(r'data-total="([^"]+)">(\d+)<', page))
    assert totals == {"2xx": "9", "3xx": "0", "4xx": "2", "429": "3", "5xx": "0"}
    assert re.search(r'data-route-count="GET /agents">12<', page)
    assert "<svg" in page
    assert "Requests per day" in page


def test_without_a_usage_source_the_pages_say_so() -> None:
    world = make_world(usage=False)
    with browser(world) as b:
        b.sign_in(world.key("admin"))
        for path in (f"/keys/{world.id('admin')}", "/usage"):
            page = b.get(path).text
            assert "No usage data yet" in page
            assert 'class="bar' not in page


def test_a_key_with_no_requests_says_so(world: World) -> None:
    with browser(world) as b:
        b.sign_in(world.key("admin"))
        assert "No requests recorded in the last 30 days" in b.get(f"/keys/{world.id('mgr')}").text


def test_owner_usage_counts_only_what_the_operator_may_see(world: World) -> None:
    for name, n in (("admin", 100), ("mgr", 3), ("child", 4), ("reader", 50)):
        world.usage.record(world.id(name), owner="acme", route="GET /agents", status=200, count=n)
    world.usage.record(world.id("stranger"), owner="globex", route="GET /x", status=200)

    def total(page: str) -> int:
        found = re.search(r'data-total="2xx">(\d+)<', page)
        assert found is not None, page
        return int(found.group(1))

    with browser(world) as b:
        b.sign_in(world.key("admin"))
        assert total(b.get("/usage").text) == 157  # its own owner, every key
        assert total(b.get("/usage?owner=globex").text) == 1
    with browser(world) as b:
        b.sign_in(world.key("mgr"))
        page = b.get("/usage").text
        assert total(page) == 7  # mgr + child: the keys it sees
        assert total(b.get("/usage?owner=globex").text) == 7  # not another owner's
        assert total(b.get(f"/usage?key={world.id('child')}").text) == 4
