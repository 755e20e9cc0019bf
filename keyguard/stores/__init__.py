"""Key stores, chosen by URL: ``memory://``, ``sqlite:///path/keys.db``, ``redis://host/0``
(``rediss://`` for TLS, ``redis+cluster://`` for a Redis Cluster).

The registry maps a URL scheme to a dotted path of the store class; the module is imported
only when that scheme is used, so ``import keyguard`` loads no database driver.
"""

from __future__ import annotations

import importlib
from typing import Final
from urllib.parse import urlsplit

from keyguard.core.errors import ConfigurationError
from keyguard.stores.base import KeyStore
from keyguard.stores.memory import MemoryStore

DEFAULT_STORE_URL: Final = "sqlite:///./keyguard.db"
STORE_URL_ENV: Final = "KEYGUARD_STORE_URL"

_REGISTRY: dict[str, str] = {
    "memory": "keyguard.stores.memory:MemoryStore",
    "sqlite": "keyguard.stores.sqlite:SQLiteStore",
    "redis": "keyguard.stores.redis_store:RedisStore",
    "rediss": "keyguard.stores.redis_store:RedisStore",
    "redis+cluster": "keyguard.stores.redis_store:RedisStore",
    "rediss+cluster": "keyguard.stores.redis_store:RedisStore",
}


def register_store(scheme: str, target: str) -> None:
    """Register a store class (``"package.module:Class"``) for a URL scheme."""
    _REGISTRY[scheme.lower()] = target


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def from_url(url: str) -> KeyStore:
    """Open the store a URL names. Unknown schemes and missing drivers are ConfigurationErrors."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"store URL {redact_url(url) if isinstance(url, str) else url!r} is not a URL; "
            "expected memory://, sqlite:///path or redis://host:6379/0"
        )
    scheme = url.split("://", 1)[0].lower()
    target = _REGISTRY.get(scheme)
    if target is None:
        known = ", ".join(sorted(f"{s}://" for s in _REGISTRY))
        raise ConfigurationError(f"unknown store scheme {scheme!r} (known: {known})")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {scheme}:// store needs an optional dependency: pip install 'keyguard[{scheme}]'"
            f" ({exc.name or exc})"
        ) from exc
    cls = getattr(module, class_name)
    store = cls.from_url(url)
    assert isinstance(store, KeyStore)
    return store


__all__ = [
    "DEFAULT_STORE_URL",
    "STORE_URL_ENV",
    "KeyStore",
    "MemoryStore",
    "from_url",
    "redact_url",
    "register_store",
]
