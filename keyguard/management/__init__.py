"""Key management: the :class:`KeyManager` lifecycle service (create, list, show, update,
revoke, rotate, expire, audit) and the ``keyguard`` command line built on it
(:mod:`keyguard.management.cli`, imported on demand)."""

from __future__ import annotations

from keyguard.management.manager import UNSET, CreatedKey, KeyManager

__all__ = ["UNSET", "CreatedKey", "KeyManager"]
