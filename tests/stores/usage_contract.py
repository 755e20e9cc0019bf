"""The usage part of the store contract (:mod:`keyguard.core.usage`), mixed into
:class:`~tests.stores.contract.StoreContract` so that every store runs it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import KeyRecord
from keyguard.core.usage import UsageBatch, iso_day
from keyguard.stores.base import KeyStore

DIGEST = "sha256$" + "0" * 64


def _record(key_id: str, **fields: Any) -> KeyRecord:
    return KeyRecord(key_id=key_id, name=key_id, digest=DIGEST, created_at=1_000.0, **fields)


def _days_ago(n: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=n)).isoformat()


class UsageContract:
    def test_usage_increments_add_up_per_key_and_day(self, store: KeyStore) -> None:
        assert store.keeps_usage
        store.create(_record("usage0000001"))
        today, yesterday = _days_ago(0), _days_ago(1)
        store.add_usage(
            [
                UsageBatch(
                    "usage0000001",
                    {today: {"s:2xx": 3, "r:GET /a": 3}, yesterday: {"s:429": 1, "r:(other)": 1}},
                    batch_id="p1-1",
                )
            ]
        )
        store.add_usage(
            [UsageBatch("usage0000001", {today: {"s:2xx": 2, "s:4xx": 1, "r:GET /a": 3}}, None)]
        )
        totals = store.usage_totals(key_id="usage0000001", since=yesterday)
        assert dict(totals.days[today]) == {"s:2xx": 5, "s:4xx": 1, "r:GET /a": 6}
        assert dict(totals.days[yesterday]) == {"s:429": 1, "r:(other)": 1}
        assert today not in store.usage_totals(key_id="usage0000001", since=_days_ago(-1)).days

    def test_a_batch_applied_twice_counts_once(self, store: KeyStore) -> None:
        store.create(_record("usage0000002"))
        batch = UsageBatch("usage0000002", {_days_ago(0): {"s:2xx": 7}}, batch_id="retry-me")
        store.add_usage([batch])
        store.add_usage([batch])
        totals = store.usage_totals(key_id="usage0000002", since=_days_ago(0))
        assert totals.days[_days_ago(0)]["s:2xx"] == 7

    def test_unknown_keys_and_days_past_retention_are_dropped(self, store: KeyStore) -> None:
        store.create(_record("usage0000003"))
        store.add_usage(
            [
                UsageBatch("nosuchkey000", {_days_ago(0): {"s:2xx": 1}}, batch_id="u1"),
                UsageBatch(
                    "usage0000003",
                    {_days_ago(10): {"s:2xx": 1}, _days_ago(0): {"s:2xx": 2}},
                    batch_id="u2",
                ),
            ],
            retention_days=5,
        )
        assert store.usage_totals(key_id="nosuchkey000", since=_days_ago(30)).days == {}
        totals = store.usage_totals(key_id="usage0000003", since=_days_ago(30))
        assert list(totals.days) == [_days_ago(0)]

    def test_last_use_moves_forward_only_and_reaches_the_record(self, store: KeyStore) -> None:
        store.create(_record("usage0000004"))
        now = time.time()
        store.add_usage([UsageBatch("usage0000004", {}, now, "192.0.2.1", "l1")])
        store.add_usage([UsageBatch("usage0000004", {}, now - 50, "192.0.2.9", "l2")])
        totals = store.usage_totals(key_id="usage0000004", since=_days_ago(0))
        assert totals.last_used_at == pytest.approx(now)
        assert totals.last_client == "192.0.2.1"
        got = store.get("usage0000004")
        assert got is not None
        assert got.last_used_at == pytest.approx(now)

    def test_owner_usage_sums_the_owners_keys_only(self, store: KeyStore) -> None:
        for key_id, owner in (("own000000001", "acme"), ("own000000002", "acme")):
            store.create(_record(key_id, owner=owner))
        store.create(_record("own000000003", owner="other"))
        day = _days_ago(0)
        now = time.time()
        store.add_usage(
            [
                UsageBatch("own000000001", {day: {"s:2xx": 1, "r:GET /a": 1}}, now - 5, "a", "o1"),
                UsageBatch("own000000002", {day: {"s:2xx": 2, "r:GET /a": 2}}, now, "b", "o2"),
                UsageBatch("own000000003", {day: {"s:2xx": 40}}, now + 5, "c", "o3"),
            ]
        )
        totals = store.usage_totals(owner="acme", since=day)
        assert dict(totals.days[day]) == {"s:2xx": 3, "r:GET /a": 3}
        assert totals.last_client == "b"
        assert store.usage_totals(owner="nobody", since=day).days == {}

    def test_usage_totals_needs_one_subject(self, store: KeyStore) -> None:
        with pytest.raises(ConfigurationError):
            store.usage_totals(since=iso_day(time.time()))
        with pytest.raises(ConfigurationError):
            store.usage_totals(key_id="a", owner="b", since=iso_day(time.time()))

    def test_async_add_usage(self, store: KeyStore) -> None:
        store.create(_record("usage0000005"))
        asyncio.run(
            store.aadd_usage(
                [UsageBatch("usage0000005", {_days_ago(0): {"s:5xx": 1}}, None, None, "a1")]
            )
        )
        assert store.usage_totals(key_id="usage0000005", since=_days_ago(0)).days[_days_ago(0)] == {
            "s:5xx": 1
        }
