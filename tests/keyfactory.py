"""Test helper: put keys straight into a store, bypassing the KeyManager, with full control
over every record field (expired, revoked, rotated...)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.records import KeyRecord
from keyguard.stores.base import KeyStore


@dataclass
class IssuedKey:
    plaintext: str
    record: KeyRecord

    @property
    def key_id(self) -> str:
        return self.record.key_id

    @property
    def header(self) -> str:
        return f"UserKey {self.plaintext}"


class KeyFactory:
    def __init__(self, store: KeyStore, hasher: Hasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or Hasher(pepper_from_env=False)
        self.format = KeyFormat()

    def issue(self, *scopes: str, **fields: Any) -> IssuedKey:
        g = self.format.generate()
        fields.setdefault("name", "test key")
        fields.setdefault("created_at", time.time())
        record = KeyRecord(
            key_id=g.key_id,
            digest=self.hasher.digest(g.plaintext),
            scopes=frozenset(scopes),
            **fields,
        )
        self.store.create(record)
        return IssuedKey(g.plaintext, record)

    def rotate(self, key: IssuedKey, grace_until: float) -> IssuedKey:
        g = self.format.generate(key.key_id)
        current = self.store.get(key.key_id)
        assert current is not None
        record = current.evolve(
            digest=self.hasher.digest(g.plaintext),
            previous_digest=current.digest,
            previous_expires_at=grace_until,
        )
        self.store.update(record)
        return IssuedKey(g.plaintext, record)

    def change(self, key: IssuedKey, **fields: Any) -> KeyRecord:
        current = self.store.get(key.key_id)
        assert current is not None
        record = current.evolve(**fields)
        self.store.update(record)
        return record
