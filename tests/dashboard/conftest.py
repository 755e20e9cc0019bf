"""Fixtures of the dashboard tests (the pieces live in :mod:`tests.dashboard.support`)."""

from __future__ import annotations

import pytest

from tests.dashboard.support import World, make_world


@pytest.fixture
def world() -> World:
    """A fresh world of keys with its dashboard (see :func:`make_world`)."""
    return make_world()
