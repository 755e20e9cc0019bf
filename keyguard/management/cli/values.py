"""Parsers for option values: durations, times, metadata items, counts and scope lists.

Each raises :class:`argparse.ArgumentTypeError` with a message that says what was expected;
argparse turns it into a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

__all__ = ["meta_item", "parse_duration", "parse_time", "positive_int", "scope_list"]

_UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_RE: Final = re.compile(r"(?:[0-9]{1,9}[wdhms])+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]{1,9})([wdhms])")


def parse_duration(text: str) -> float:
    """``90d``, ``24h``, ``30m``, ``45s``, ``2w`` or combinations such as ``1d12h`` (or ``0``),
    in seconds."""
    value = text.strip()
    if value == "0":
        return 0.0
    if value.startswith("-") and _DURATION_RE.fullmatch(value[1:]):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: a duration cannot be negative"
        )
    if not _DURATION_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit (w, d, h, m, s), "
            "e.g. 90d, 24h, 30m, 45s, 2w or 1d12h"
        )
    parts = _DURATION_PART_RE.findall(value)
    units = [u for _, u in parts]
    if len(set(units)) != len(units):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: a unit appears twice")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def parse_time(text: str) -> float:
    """An ISO-8601 date or time (``2030-01-31``, ``2030-01-31T12:00:00Z``); UTC unless it
    names an offset. Returns epoch seconds."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO-8601, e.g. 2030-01-31 or 2030-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def meta_item(text: str) -> tuple[str, str]:
    """``key=value`` (the value may be empty or contain ``=``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid metadata {text!r}: use key=value")
    return key, value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return n


def scope_list(values: Iterable[str] | None) -> list[str]:
    """The scopes of repeated ``--scope`` options: ``--scope a --scope b`` and
    ``--scope a,b`` are the same."""
    return [s.strip() for v in values or () for s in v.split(",") if s.strip()]
