"""Bursts of scope denials from one key: someone exploring what a key can do.

A client that knows its job asks for what it was granted; one that holds a key it was not
given tries route after route. The detector reads ``SCOPE_DENIED`` events and fires when one
key is denied on ``distinct`` different routes (method and route template; 5 by default) or
``threshold`` times in all (100) within ``window`` (10 minutes). A client stuck retrying one
forbidden call trips only the second, higher bar. Counted across processes when the counters
are shared; distinct routes are counted approximately (a route is counted again once its own
marker aged out of the window; the count never includes routes older than the window).
"""

from __future__ import annotations

from typing import ClassVar

from keyguard.abuse.detectors.base import (
    DEFAULT_COOLDOWN,
    Alarm,
    Detector,
    counter_part,
    positive,
    seconds_text,
    whole,
)
from keyguard.core.detector_counters import Window
from keyguard.observability.model import Event, EventKind

__all__ = ["ScopeProbeDetector"]


class ScopeProbeDetector(Detector):
    """``distinct`` denied routes, or ``threshold`` scope denials, for one key within
    ``window`` seconds."""

    name: ClassVar[str] = "scope_probe"
    kinds: ClassVar[frozenset[EventKind]] = frozenset({EventKind.SCOPE_DENIED})

    def __init__(
        self,
        *,
        distinct: int = 5,
        threshold: int = 100,
        window: float = 600.0,
        suspend: bool = False,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        self.distinct = whole(distinct, f"{self.name}: distinct")
        self.threshold = whole(threshold, f"{self.name}: threshold")
        self.window = Window(positive(window, f"{self.name}: window"))

    def observe(self, event: Event) -> Alarm | None:
        key_id = event.key_id
        if key_id is None:
            return None
        at, window = event.at, self.window
        total = self.counters.add(self.counter(key_id, "all"), window, at)
        route = f"{event.method or '-'} {event.route or '(unmatched)'}"
        marker = self.counter(key_id, "r", counter_part(route))
        if self.counters.add(marker, window, at) == 1:
            routes = self.counters.add(self.counter(key_id, "routes"), window, at)
        else:
            routes = self.counters.count(self.counter(key_id, "routes"), window, at)
        if routes < self.distinct and total < self.threshold:
            return None
        by_routes = routes >= self.distinct
        span = seconds_text(window.seconds)
        return Alarm(
            subject=key_id,
            reason="scope_probe",
            message=(
                f"denied on {routes} different routes ({total} scope denials) within {span}: "
                "probing what the key can do"
                if by_routes
                else f"{total} scope denials within {span} (on {routes} route(s))"
            ),
            threshold=self.distinct if by_routes else self.threshold,
            observed=routes if by_routes else total,
            key_id=key_id,
            owner=event.owner,
            client=event.client,
            detail={"window": span, "routes": str(routes), "denials": str(total)},
        )

    def describe(self) -> dict[str, object]:
        return {
            "distinct": self.distinct,
            "threshold": self.threshold,
            "window": self.window.seconds,
            **super().describe(),
        }
