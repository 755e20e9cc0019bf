"""The memory store against the store contract, plus what is particular to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keyguard.core.records import AuditEvent
from keyguard.stores.base import KeyStore
from keyguard.stores.memory import MemoryStore
from tests.stores.contract import StoreContract, StoreFactory, record


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[StoreFactory]:
        made: list[KeyStore] = []

        def make() -> KeyStore:
            made.append(MemoryStore())
            return made[-1]

        yield make
        for store in made:
            store.close()


def test_audit_log_is_bounded() -> None:
    store = MemoryStore(max_audit=3)
    for i in range(5):
        store.add_audit(AuditEvent(at=float(i), action="create", key_id="k", actor="a"))
    assert [e.at for e in store.audit()] == [4.0, 3.0, 2.0]


def test_from_url_and_repr() -> None:
    store = MemoryStore.from_url("memory://")
    store.create(record())
    assert repr(store) == "MemoryStore(keys=1)"
    assert store.in_process
