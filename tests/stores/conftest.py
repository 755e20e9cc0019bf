"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_servers import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A Redis Cluster of three masters for the module's tests (see tests/redis_servers.py)."""
    with Cluster() as c:
        yield c
