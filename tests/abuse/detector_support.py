"""Helpers for the detector tests: events made short, and a Detectors that runs inline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from keyguard.abuse.detectors import Detector, Detectors
from keyguard.observability.model import Event, EventKind

T0 = 1_900_000_800.0  # a multiple of every window used in the tests
KEY = "AbCdEfGh1234"
OTHER = "ZyXwVu987654"


def ev(kind: EventKind, at: float, **fields: Any) -> Event:
    return Event(kind, at=at, **fields)


def wrong(at: float, key_id: str = KEY, client: str = "198.51.100.7") -> Event:
    return ev(
        EventKind.DENIED,
        at,
        code="invalid_api_key",
        reason="wrong_secret",
        key_id=key_id,
        owner="acme",
        client=client,
        status=401,
    )


def ok(at: float, client: str, key_id: str = KEY, route: str = "/agents") -> Event:
    return ev(
        EventKind.AUTHENTICATED,
        at,
        key_id=key_id,
        owner="acme",
        client=client,
        route=route,
        method="GET",
        status=200,
    )


class Run:
    """Detectors run inline, collecting what they emit."""

    def __init__(self, *detectors: Detector, **kwargs: Any) -> None:
        self.events: list[Event] = []
        kwargs.setdefault("background", False)
        self.detectors = Detectors(self.events.append, detectors=detectors, **kwargs)

    def feed(self, events: Iterable[Event]) -> list[Event]:
        start = len(self.events)
        for e in events:
            self.detectors(e)
        return self.events[start:]

    def names(self) -> list[str]:
        return [e.detail["detector"] for e in self.events]

    def close(self) -> None:
        self.detectors.close()
