"""Key-lifecycle events from the KeyManager; the usage sources of the dashboard and of
``keyguard review``; the adapters' ``events=``/``usage=`` options."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyguard.abuse.usage import UsageSource as ReviewUsageSource
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.errors import ConfigurationError, PermissionDenied
from keyguard.core.policy import RoutePolicy
from keyguard.core.usage import UsageBatch
from keyguard.dashboard.usage import UsageSource as DashboardUsageSource
from keyguard.management.manager import KeyManager
from keyguard.observability import (
    Emitter,
    EventKind,
    ListSink,
    LoggingSink,
    Observer,
    UsageCounter,
    make_observer,
)
from keyguard.observability.sources import StoreScopeUsage, StoreUsage
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore

DAY = 86_400.0


def _day(back: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=back)).isoformat()


# -- lifecycle ------------------------------------------------------------------------------------
def test_every_committed_change_emits_its_event_once() -> None:
    sink = ListSink()
    with Emitter([sink]) as emitter:
        manager = KeyManager(MemoryStore(), events=emitter)
        admin = manager.create("admin", ["admin"], owner="acme", actor="cli")
        child = manager.create("child", ["agents:read"], parent=admin.record)
        manager.rotate(child.key_id)
        manager.update(child.key_id, name="renamed", description="d")
        manager.update(child.key_id, name="renamed")  # no change: no event
        manager.suspend(child.key_id, reason="looking into it")
        manager.suspend(child.key_id, reason="again")  # already suspended: no event
        manager.resume(child.key_id)
        manager.update(child.key_id, enabled=False, suspend_reason="via update")
        manager.update(child.key_id, enabled=True)
        manager.expire(child.key_id)
        manager.revoke(admin.key_id, reason="compromised")
        emitter.flush()
    seen = [(e.kind, e.key_id, e.actor, e.reason) for e in sink.events]
    a, c = admin.key_id, child.key_id
    assert seen == [
        (EventKind.KEY_CREATED, a, "cli", None),
        (EventKind.KEY_CREATED, c, f"key:{a}", None),
        (EventKind.KEY_ROTATED, c, "system", None),
        (EventKind.KEY_UPDATED, c, "system", None),
        (EventKind.KEY_SUSPENDED, c, "system", "looking into it"),
        (EventKind.KEY_RESUMED, c, "system", None),
        (EventKind.KEY_SUSPENDED, c, "system", "via update"),
        (EventKind.KEY_RESUMED, c, "system", None),
        (EventKind.KEY_UPDATED, c, "system", None),
        (EventKind.KEY_REVOKED, a, "system", "compromised"),
        (EventKind.KEY_REVOKED, c, "system", "compromised"),
    ]
    events = sink.events
    assert dict(events[3].detail) == {"action": "update", "changed": "description,name"}
    assert dict(events[8].detail) == {"action": "expire"}
    assert dict(events[10].detail) == {"action": "revoke", "cascade_from": a}
    assert all(e.owner == "acme" for e in events)


def test_a_refused_change_emits_nothing() -> None:
    sink = ListSink()
    with Emitter([sink]) as emitter:
        manager = KeyManager(MemoryStore(), events=emitter)
        a = manager.create("a", ["agents:read"])
        b = manager.create("b", ["agents:read"])
        with pytest.raises(PermissionDenied):
            manager.revoke(b.key_id, reason="x", parent=a.record)
        emitter.flush()
    assert [e.kind for e in sink.events] == [EventKind.KEY_CREATED] * 2


# -- the dashboard's source -----------------------------------------------------------------------
def _store_with_usage() -> tuple[MemoryStore, str, str]:
    store = MemoryStore()
    manager = KeyManager(store)
    one = manager.create("one", ["agents:read"], owner="acme").key_id
    two = manager.create("two", ["agents:read"], owner="acme").key_id
    store.add_usage(
        [
            UsageBatch(
                one,
                {
                    _day(0): {"s:2xx": 5, "s:429": 1, "r:GET /agents": 6, "q:agents:read": 6},
                    _day(3): {"s:4xx": 2, "r:POST /agents": 2, "q:agents:write": 2},
                    _day(40): {"s:2xx": 9, "r:GET /old": 9, "q:old:read": 9},
                },
                time.time(),
                "198.51.100.1",
                "b1",
            ),
            UsageBatch(two, {_day(0): {"s:5xx": 1, "r:GET /agents": 1}}, None, None, "b2"),
        ]
    )
    store.set_setting("usage_since", repr(time.time() - 60 * DAY))
    return store, one, two


def test_store_usage_answers_the_dashboards_questions() -> None:
    store, one, _ = _store_with_usage()
    flushed: list[int] = []
    source = StoreUsage(store, before_read=lambda: flushed.append(1))
    assert isinstance(source, DashboardUsageSource)
    days = source.daily_usage(key_id=one, days=7)
    assert [(d.day.isoformat(), dict(d.counts)) for d in days] == [
        (_day(3), {"4xx": 2}),
        (_day(0), {"2xx": 5, "429": 1}),
    ]
    assert source.top_routes(key_id=one, days=7, limit=1) == [("GET /agents", 6)]
    assert source.top_routes(owner="acme", days=7, limit=5) == [
        ("GET /agents", 7),
        ("POST /agents", 2),
    ]
    assert [d.total for d in source.daily_usage(owner="acme", days=1)] == [7]
    assert source.daily_usage(key_id=one, days=0) == []
    assert flushed  # the serving process's counts are written before each read
    with pytest.raises(ValueError, match="exactly one"):
        source.daily_usage(days=3)


def test_the_dashboard_renders_store_usage() -> None:
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

    store, _, _ = _store_with_usage()
    dashboard = Dashboard(ManagementAPI(KeyManager(store)), usage=StoreUsage(store))
    assert dashboard.usage is not None


# -- the review's source --------------------------------------------------------------------------
def test_store_scope_usage_counts_needed_scopes_since_a_day() -> None:
    store, one, two = _store_with_usage()
    source = StoreScopeUsage(store)
    assert isinstance(source, ReviewUsageSource)
    assert source.scope_usage(one, time.time() - 30 * DAY) == {
        "agents:read": 6,
        "agents:write": 2,
    }
    assert source.scope_usage(one, time.time() - 2 * DAY) == {"agents:read": 6}
    assert source.scope_usage(two, time.time() - 30 * DAY) == {}  # no route needed a scope
    assert source.scope_usage("nosuchkey000", time.time() - DAY) == {}


def test_store_scope_usage_says_when_it_cannot_know() -> None:
    store, one, _ = _store_with_usage()
    source = StoreScopeUsage(store, retention_days=90)
    assert source.scope_usage(one, time.time() - 61 * DAY) is None  # before counting began
    assert StoreScopeUsage(MemoryStore()).scope_usage(one, time.time()) is None  # never counted
    short = StoreScopeUsage(store, retention_days=10)
    assert short.scope_usage(one, time.time() - 20 * DAY) is None  # past what the store keeps


def test_keyguard_review_uses_the_stores_own_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyguard.management.cli import main

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("KEYGUARD_STORE_URL", url)
    monkeypatch.delenv("KEYGUARD_PEPPER", raising=False)
    with SQLiteStore(tmp_path / "keys.db") as store:
        manager = KeyManager(store, clock=lambda: time.time() - 40 * DAY)  # a 40-day-old key
        made = manager.create(
            "wide", ["agents:read", "agents:write", "tasks:read"], expires_in=80 * DAY
        )
        store.set_setting("usage_since", repr(time.time() - 40 * DAY))  # counting for 40 days
        counter = UsageCounter(store, start=False)
        verifier_options: dict[str, Any] = {
            "policy": RoutePolicy({"GET /agents": "agents:read"}),
            "observer": Observer(usage=counter),
        }
        from keyguard.core.verifier import Verifier
        from tests.observability.support import wsgi_send

        send = wsgi_send(Verifier(store, **verifier_options))
        assert (
            send("GET", "/agents", [("Authorization", f"UserKey {made.plaintext}")]).status == 200
        )
        counter.close()
    status = main(["review", "--fail-on", "never", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    assert '"unused_scopes"' in out
    assert '"usage_checked": true' in out


# -- adapter options ------------------------------------------------------------------------------
def test_events_and_usage_options_build_the_observer() -> None:
    store = MemoryStore()
    sink = ListSink()
    mw = KeyGuardMiddleware(lambda *a: None, store=store, events=[sink], usage=True)
    observer = mw.verifier.observer
    assert isinstance(observer, Observer)
    assert observer.usage is not None
    assert observer.usage.store is store
    assert observer.events is not None
    assert observer.events.sinks == (sink,)
    observer.close()
    plain = KeyGuardWSGIMiddleware(lambda *a: [], store=store)
    assert plain.verifier.observer is None
    with pytest.raises(ConfigurationError):
        KeyGuardMiddleware(lambda *a: None, store=store, usage="yes")
    with pytest.raises(ConfigurationError):
        KeyGuardMiddleware(lambda *a: None, store=store, usage=True, observer=Observer())


def test_make_observer_forms() -> None:
    store = MemoryStore()
    assert make_observer(store) is None
    logged = make_observer(store, events=True)
    assert logged is not None
    assert logged.events is not None
    assert isinstance(logged.events.sinks[0], LoggingSink)
    logged.close()
    single = make_observer(store, events=print)
    assert single is not None
    assert single.events is not None
    assert single.events.sinks == (print,)
    single.close()
    with pytest.raises(ConfigurationError):
        make_observer(store, events=42)


def test_flask_settings_turn_usage_and_events_on() -> None:
    """Framework hooks that never see the response count admitted requests as 2xx."""
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard

    store = MemoryStore()
    made = KeyManager(store).create("k", ["agents:read"])
    sink = ListSink()
    app = Flask(__name__)
    app.config.update(
        KEYGUARD_POLICY={"GET /agents": "agents:read"}, KEYGUARD_USAGE=True, KEYGUARD_EVENTS=[sink]
    )

    @app.get("/agents")
    def agents() -> dict[str, str]:
        return {"ok": "yes"}

    guard = KeyGuard(app, store=store)
    client = app.test_client()
    assert (
        client.get("/agents", headers={"Authorization": f"UserKey {made.plaintext}"}).status_code
        == 200
    )
    assert client.get("/agents").status_code == 401
    observer = guard.verifier.observer
    assert isinstance(observer, Observer)
    observer.close()
    assert sorted(e.kind for e in sink.events) == [EventKind.AUTHENTICATED, EventKind.DENIED]
    totals = store.usage_totals(key_id=made.key_id, since=_day(0))
    assert totals.days[_day(0)]["s:2xx"] == 1
