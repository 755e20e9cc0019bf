"""Notifications: the conditions, delivery once per condition instance (claimed in the store,
per target), retry after a failed delivery, and the event sink for daily limits and
suspensions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event, EventKind
from keyguard.observability.notifications import (
    DAY,
    Notification,
    NotificationKind,
    conditions,
    from_event,
    is_daily_window,
)
from keyguard.observability.notifier import Notifier
from keyguard.observability.webhooks import Webhook
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.observability.receiver import receiver

NOW = 1_900_000_000.0
SECRET = "whsec-0123456789abcdef-test"


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore() as s:
        yield s


def test_conditions_of_a_key() -> None:
    store = MemoryStore()
    keys = KeyFactory(store)
    soon = keys.issue(expires_at=NOW + 3 * DAY, created_at=NOW - DAY).record
    later = keys.issue(expires_at=NOW + 8 * DAY, created_at=NOW - DAY).record
    old = keys.issue(created_at=NOW - 91 * DAY).record
    rotated = keys.issue(created_at=NOW - 200 * DAY, rotated_at=NOW - 10 * DAY).record
    expired = keys.issue(expires_at=NOW - 1, created_at=NOW - 100 * DAY).record
    revoked = keys.issue(revoked_at=NOW - 5, created_at=NOW - 100 * DAY).record

    (found,) = conditions(soon, NOW)
    note, ttl = found
    assert note.kind is NotificationKind.EXPIRING
    assert note.name == f"expiring:{soon.key_id}:{int(NOW + 3 * DAY)}"
    assert ttl == pytest.approx(4 * DAY)  # the marker outlives the expiry
    assert note.detail["expires_in_seconds"] == str(int(3 * DAY))
    assert conditions(later, NOW) == []
    assert len(conditions(later, NOW, expiring_within=9 * DAY)) == 1
    ((note, _),) = conditions(old, NOW)
    assert note.kind is NotificationKind.ROTATION_DUE
    assert note.detail["age_days"] == "91"
    assert conditions(old, NOW, rotation_after=None) == []
    assert conditions(rotated, NOW) == []  # the last rotation counts, not the creation
    assert conditions(expired, NOW) == []
    assert conditions(revoked, NOW) == []


@pytest.mark.parametrize(
    ("detail", "daily"),
    [
        pytest.param({"window": "day"}, True, id="day"),
        pytest.param({"window": "1d"}, True, id="1d"),
        pytest.param({"window": "7d"}, True, id="7d"),
        pytest.param({"window": "24h"}, True, id="24h"),
        pytest.param({"window": "minute"}, False, id="minute"),
        pytest.param({"window": "10s"}, False, id="10s"),
        pytest.param({"window": "quota", "period": "86400"}, True, id="period"),
        pytest.param({"window": "day", "period": "60"}, False, id="period-wins"),
        pytest.param({"window": "day", "period": "x"}, False, id="bad-period"),
        pytest.param({}, False, id="none"),
    ],
)
def test_which_windows_are_daily(detail: dict[str, str], daily: bool) -> None:
    assert is_daily_window(detail) is daily


def test_payload_has_public_facts_only() -> None:
    store = MemoryStore()
    issued = KeyFactory(store).issue(
        expires_at=NOW + 3 * DAY, created_at=NOW - DAY, name="billing", owner="acme"
    )
    ((note, _),) = conditions(issued.record, NOW)
    payload = note.payload()
    assert payload["type"] == "keyguard.key.expiring"
    assert payload["key"] == {
        "key_id": issued.key_id,
        "name": "billing",
        "owner": "acme",
        "expires_at": "2030-03-20T17:46:40Z",
    }
    assert "expires soon" in payload["message"]
    text = repr(payload)
    secret = issued.plaintext.rsplit("_", 1)[1]
    for i in range(len(secret) - 7):
        assert secret[i : i + 8] not in text
    assert issued.record.digest not in text
    later = Notification(note.kind, note.key_id, note.name, NOW + 5)
    assert note.id == later.id  # the id follows the condition, not the moment it was found
    event = note.event()
    assert event.kind is EventKind.NOTIFICATION
    assert event.detail["notification"] == "expiring"


def test_check_sends_each_condition_once(store: MemoryStore) -> None:
    keys = KeyFactory(store)
    soon = keys.issue(expires_at=NOW + 3 * DAY, created_at=NOW - DAY)
    keys.issue(expires_at=NOW + 30 * DAY, created_at=NOW - DAY)
    got: list[Notification] = []
    events: list[Event] = []
    with Notifier(store, callbacks=[got.append], events=events.append, clock=lambda: NOW) as n:
        assert [x.key_id for x in n.check()] == [soon.key_id]
        assert n.check() == []
        assert n.check(NOW + DAY) == []
        # another Notifier (another process, a later cron run) sharing the store: nothing new
        with Notifier(store, callbacks=[got.append], clock=lambda: NOW) as other:
            assert other.check() == []
    assert len(got) == 1
    assert got[0].kind is NotificationKind.EXPIRING
    assert [e.kind for e in events] == [EventKind.NOTIFICATION]


def test_a_new_expiry_is_a_new_condition(store: MemoryStore) -> None:
    issued = KeyFactory(store).issue(expires_at=NOW + 3 * DAY, created_at=NOW - DAY)
    got: list[Notification] = []
    with Notifier(store, callbacks=[got.append], clock=lambda: NOW) as n:
        n.check()
        record = store.get(issued.key_id)
        assert record is not None
        store.update(record.evolve(expires_at=NOW + 5 * DAY))
        n.check()
    assert [x.expires_at for x in got] == [NOW + 3 * DAY, NOW + 5 * DAY]


def test_a_failed_callback_is_retried_and_others_are_not_repeated(store: MemoryStore) -> None:
    KeyFactory(store).issue(expires_at=NOW + 3 * DAY, created_at=NOW - DAY)
    good: list[Notification] = []
    calls = []

    def flaky(n: Notification) -> None:
        calls.append(n)
        if len(calls) == 1:
            raise RuntimeError("mail server down")

    with Notifier(store, callbacks=[good.append, flaky], clock=lambda: NOW) as n:
        n.check()
        assert n.failures == 1
        n.check()
        n.check()
    assert len(good) == 1
    assert len(calls) == 2


def test_async_callbacks_are_awaited(store: MemoryStore) -> None:
    KeyFactory(store).issue(expires_at=NOW + 3 * DAY, created_at=NOW - DAY)
    got: list[str] = []

    async def callback(n: Notification) -> None:
        await asyncio.sleep(0)
        got.append(n.key_id)

    with Notifier(store, callbacks=[callback], clock=lambda: NOW) as n:
        n.check()
    assert len(got) == 1


def test_the_webhook_receives_one_signed_expiring_notification(store: MemoryStore) -> None:
    issued = KeyFactory(store).issue(expires_at=time.time() + 3 * DAY, name="ci deploy")
    with receiver(SECRET) as rx, Notifier(store, webhooks=[Webhook(rx.url, SECRET)]) as n:
        n.check()
        n.check()
    (got,) = rx.received
    assert got.signature_ok
    assert got.json["type"] == "keyguard.key.expiring"
    assert got.json["key"]["key_id"] == issued.key_id
    assert SECRET not in got.body.decode()


def test_an_undelivered_webhook_is_retried_by_the_next_check(store: MemoryStore) -> None:
    KeyFactory(store).issue(expires_at=time.time() + 3 * DAY)
    with receiver(SECRET, statuses=[500, 500]) as rx:
        hook = Webhook(rx.url, SECRET, retries=1, sleep=lambda s: None)
        with Notifier(store, webhooks=[hook]) as n:
            assert n.check() == []
            assert n.failures == 1
            assert len(n.check()) == 1
            assert n.check() == []
    assert [r.headers["x-answered"] for r in rx.received] == ["500", "500", "200"]


def limited(key_id: str, window: str = "day", at: float = NOW) -> Event:
    return Event(
        EventKind.RATE_LIMITED,
        at,
        code="rate_limited",
        key_id=key_id,
        owner="acme",
        status=429,
        detail={"window": window, "limit": "5000"},
    )


def test_the_sink_notifies_a_daily_limit_once_per_key_and_day(store: MemoryStore) -> None:
    got: list[Notification] = []
    done = threading.Event()

    def callback(n: Notification) -> None:
        got.append(n)
        if len(got) == 3:
            done.set()

    n = Notifier(store, callbacks=[callback])
    try:
        for _ in range(200):
            n(limited("aaaaaaaaaaaa"))
            n(limited("aaaaaaaaaaaa", window="minute"))  # not a daily limit
            n(Event(EventKind.AUTHENTICATED, NOW, key_id="aaaaaaaaaaaa"))
        n(limited("bbbbbbbbbbbb"))
        n(limited("aaaaaaaaaaaa", at=NOW + DAY))  # the next day
        assert done.wait(10)
    finally:
        n.close()
    assert sorted((x.key_id, x.detail["day"]) for x in got) == [
        ("aaaaaaaaaaaa", "2030-03-17"),
        ("aaaaaaaaaaaa", "2030-03-18"),
        ("bbbbbbbbbbbb", "2030-03-17"),
    ]
    assert got[0].kind is NotificationKind.DAILY_LIMIT
    assert "5000 per day" in got[0].message


def test_the_sink_notifies_a_suspension(store: MemoryStore) -> None:
    got: list[Notification] = []
    n = Notifier(store, callbacks=[got.append])
    n(Event(EventKind.KEY_SUSPENDED, NOW, key_id="aaaaaaaaaaaa", reason="abuse", actor="cli"))
    n.close()  # delivers what is queued
    (note,) = got
    assert note.kind is NotificationKind.SUSPENDED
    assert note.detail == {"reason": "abuse"}


def test_the_sink_never_raises_or_blocks(store: MemoryStore) -> None:
    release = threading.Event()

    def slow(n: Notification) -> None:
        release.wait(10)

    n = Notifier(store, callbacks=[slow], queue_size=2)
    try:
        start = time.perf_counter()
        for i in range(50):
            n(limited(f"{i:012d}"))
        assert time.perf_counter() - start < 5  # generous: the point is no waiting on `slow`
        assert n.dropped >= 45
        n(Event(EventKind.RATE_LIMITED, NOW, key_id=None))  # nothing to notify: ignored
    finally:
        release.set()
        n.close()


def test_kinds_filter_and_configuration_errors(store: MemoryStore) -> None:
    KeyFactory(store).issue(expires_at=NOW + 3 * DAY, created_at=NOW - 100 * DAY)
    got: list[Notification] = []
    with Notifier(store, callbacks=[got.append], kinds=["rotation_due"], clock=lambda: NOW) as n:
        n.check()
    assert [x.kind for x in got] == [NotificationKind.ROTATION_DUE]
    with pytest.raises(ConfigurationError):
        Notifier(store)
    with pytest.raises(ConfigurationError):
        Notifier(store, callbacks=[got.append], expiring_within=0)
    with pytest.raises(ConfigurationError):
        Notifier(store, callbacks=["nope"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="bogus"):
        Notifier(store, callbacks=[got.append], kinds=["bogus"])


def test_from_event_ignores_other_events() -> None:
    assert from_event(Event(EventKind.DENIED, NOW, code="invalid_api_key")) is None
    assert from_event(limited("aaaaaaaaaaaa", window="minute")) is None


def test_periodic_checks_run_in_a_thread(store: MemoryStore) -> None:
    KeyFactory(store).issue(expires_at=time.time() + DAY)
    got = threading.Event()
    n = Notifier(store, callbacks=[lambda _: got.set()])
    n.start(interval=0.05)
    try:
        assert got.wait(10)
        with pytest.raises(ConfigurationError):
            n.start()
    finally:
        n.close()
