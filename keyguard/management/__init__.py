"""Key management: the :class:`KeyManager` lifecycle service (create, list, show, update,
revoke, rotate, expire, suspend, resume, audit), the same operations over HTTP
(:mod:`keyguard.management.api`, a mountable management API) and the ``keyguard`` command
line built on both (:mod:`keyguard.management.cli`); the last two are imported on demand."""

from __future__ import annotations

from keyguard.management.manager import UNSET, CreatedKey, KeyManager

__all__ = ["UNSET", "CreatedKey", "KeyManager"]
