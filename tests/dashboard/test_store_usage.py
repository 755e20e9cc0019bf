"""The default usage source: the store's counters read through KeyManager.usage/owner_usage
(a stand-in of that contract here), wired by default, drawn on the key page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from keyguard.dashboard import Dashboard, ManagerUsage, UsageSource
from keyguard.dashboard.usage import day_of
from keyguard.management import KeyManager
from keyguard.management.reader import KeyReader
from keyguard.observability.model import STATUS_CLASSES, UsageDay, UsageReport
from tests.dashboard.support import SECRET, T0, browser, make_world

DAY = 86400.0


class Counts:
    """What the stand-in usage methods answer, and how often they were asked."""

    def __init__(self) -> None:
        self.calls = 0

    def report(self, key_id: str | None, owner: str | None, days: int) -> UsageReport:
        self.calls += 1
        today = day_of(T0)
        out = []
        for i in range(days):
            day = today - timedelta(days=days - 1 - i)
            by_status = dict.fromkeys(STATUS_CLASSES, 0)
            routes = {}
            if i == days - 1:
                by_status.update({"2xx": 7, "429": 2})
                routes = {"GET /agents": 9}
            elif i == days - 2:
                by_status["4xx"] = 3
                routes = {"GET /agents/{agent_id}": 3}
            out.append(UsageDay(day, by_status, routes))
        return UsageReport(tuple(out), key_id=key_id, owner=owner)


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    c = Counts()
    monkeypatch.setattr(
        KeyManager, "usage", lambda self, k, *, days=30: c.report(k, None, days), raising=False
    )
    monkeypatch.setattr(
        KeyManager,
        "owner_usage",
        lambda self, o, *, days=30: c.report(None, o, days),
        raising=False,
    )
    return c


def test_manager_usage_is_a_usage_source(counts: Counts) -> None:
    world = make_world()
    source = ManagerUsage(world.manager)
    assert isinstance(source, UsageSource)
    today = day_of(T0)
    daily = source.daily_usage(key_id="k1", days=7)
    assert [(d.day, d.total) for d in daily] == [(today - timedelta(days=1), 3), (today, 9)]
    assert source.top_routes(key_id="k1", days=7, limit=1) == [("GET /agents", 9)]
    assert counts.calls == 1  # one report per subject and page
    source.daily_usage(owner="acme", days=7)
    assert counts.calls == 2
    with pytest.raises(ValueError, match="exactly one"):
        source.daily_usage(days=7)
    with pytest.raises(TypeError):
        ManagerUsage(object())


def test_the_dashboard_reads_the_store_counters_by_default(counts: Counts) -> None:
    world = make_world()
    dashboard = Dashboard(world.api, secret=SECRET)
    assert isinstance(dashboard.usage, ManagerUsage)
    assert Dashboard(world.api, secret=SECRET, usage=None).usage is None
    with browser(world, dashboard) as b:
        b.sign_in(world.key("admin"))
        page = b.get(f"/keys/{world.id('mgr')}").text
    bars = {
        (d, c): int(n)
        for d, c, n in re.findall(
            r'data-day="([^"]+)" data-class="([^"]+)" data-count="(\d+)"', page
        )
    }
    today, yesterday = day_of(T0).isoformat(), day_of(T0 - DAY).isoformat()
    assert bars == {(today, "2xx"): 7, (today, "429"): 2, (yesterday, "4xx"): 3}
    assert "No usage data yet" not in page


def test_a_manager_without_usage_reading_gets_no_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    # (KeyManager inherits usage() from KeyReader, where it is defined.)
    monkeypatch.delattr(KeyReader, "usage", raising=False)
    world = make_world()
    assert Dashboard(world.api, secret=SECRET).usage is None
