"""Choosing a store by URL: the registry, its errors, and URL redaction for logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.stores import _REGISTRY, from_url, redact_url, register_store
from keyguard.stores.memory import MemoryStore


class DummyStore(MemoryStore):
    """A store registered under a custom scheme by the tests below."""

    scheme = "dummy"
    urls: list[str] = []

    @classmethod
    def from_url(cls, url: str) -> DummyStore:
        cls.urls.append(url)
        return cls()


@pytest.mark.parametrize("url", ["memory://", "MEMORY://", "memory://anything"])
def test_memory(url: str) -> None:
    with from_url(url) as store:
        assert isinstance(store, MemoryStore)


def test_sqlite(tmp_path: Path) -> None:
    from keyguard.stores.sqlite import SQLiteStore

    with from_url(f"sqlite:///{tmp_path}/keys.db") as store:
        assert isinstance(store, SQLiteStore)
        store.ping()
    assert (tmp_path / "keys.db").exists()


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown store scheme") as info:
        from_url("ftp://example.com/keys")
    assert "memory://" in str(info.value)
    assert "sqlite://" in str(info.value)


@pytest.mark.parametrize("url", ["keys.db", "", "memory:", "/var/keys.db", None, 42])
def test_not_a_url(url: Any) -> None:
    with pytest.raises(ConfigurationError, match="not a URL"):
        from_url(url)


def test_registered_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_REGISTRY, "dummy", "placeholder")  # so that the undo removes it
    register_store("DUMMY", f"{__name__}:DummyStore")
    store = from_url("dummy://x?y=1")
    assert isinstance(store, DummyStore)
    assert DummyStore.urls[-1] == "dummy://x?y=1"


def test_missing_driver_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_REGISTRY, "nodriver", "keyguard_no_such_module_xyz:Store")
    with pytest.raises(ConfigurationError, match="pip install"):
        from_url("nodriver://host")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0", id="user-password"
        ),
        pytest.param("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0", id="password-only"),
        pytest.param("rediss://u:p%40ss@host/0?x=1", "rediss://u:***@host/0?x=1", id="encoded"),
        pytest.param("redis://host:6379/0", "redis://host:6379/0", id="no-password"),
        pytest.param("sqlite:///./keys.db", "sqlite:///./keys.db", id="sqlite"),
        pytest.param("memory://", "memory://", id="memory"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)
