"""The short programs the README quotes (examples/snippets/) do what the README says."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from examples.snippets import keys_from_code, redis_limits
from keyguard.management import KeyManager
from tests.keyfactory import KeyFactory


def test_keys_from_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    key_id = keys_from_code.main(url)
    with KeyManager(url) as keys:
        record = keys.get(key_id)
        assert record.status(time.time()).value == "revoked"
        assert record.owner == "team-a"
        assert capsys.readouterr().out.strip().startswith("kg_" + key_id + "_")
        actions = [e.action for e in keys.audit(key_id=key_id)]
        assert actions == ["revoke", "rotate", "create"]


def test_redis_limits(tmp_path: Path, redis_url: str) -> None:
    verifier = redis_limits.build(f"sqlite:///{tmp_path / 'keys.db'}", redis_url)
    key = KeyFactory(verifier.store).issue("agents:read")
    decisions = [verifier.verify(key.header) for _ in range(21)]
    assert all(d.allowed for d in decisions[:20])
    assert decisions[20].code == "rate_limited"
