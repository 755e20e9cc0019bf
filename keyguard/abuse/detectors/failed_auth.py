"""A burst of failed authentications from one address: guessing, or a broken deployment.

The brute-force guard (:mod:`keyguard.core.bruteforce`) already slows a guessing address
down; this detector *tells* someone. It reads ``DENIED`` events whose code is a guess
(``invalid_api_key``, ``invalid_api_key_format``, and ``rate_limited`` — the guard's answer
once an address is over its threshold) and fires when one address (an IPv6 address counts as
its ``/ipv6_prefix``, /64 by default, as in the guard) fails ``threshold`` times within
``window`` (30 within 10 minutes by default). Requests without a client address are not
counted. There is no key to suspend, so ``suspend`` is refused: block the address upstream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Final

from keyguard.abuse.detectors.base import (
    DEFAULT_COOLDOWN,
    Alarm,
    Detector,
    counter_part,
    positive,
    seconds_text,
    whole,
)
from keyguard.core.addresses import network_key
from keyguard.core.detector_counters import Window
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.observability.model import Event, EventKind

__all__ = ["FAILED_CODES", "FailedAuthDetector"]

#: The denial codes counted by default.
FAILED_CODES: Final = (
    ErrorCode.INVALID_API_KEY.value,
    ErrorCode.INVALID_API_KEY_FORMAT.value,
    ErrorCode.RATE_LIMITED.value,
)
_ALLOWED: Final = frozenset(
    {*FAILED_CODES, ErrorCode.MISSING_API_KEY.value, ErrorCode.INVALID_REQUEST.value}
)


class FailedAuthDetector(Detector):
    """``threshold`` failed authentications from one address within ``window`` seconds."""

    name: ClassVar[str] = "failed_auth"
    kinds: ClassVar[frozenset[EventKind]] = frozenset({EventKind.DENIED})
    can_suspend: ClassVar[bool] = False

    def __init__(
        self,
        *,
        threshold: int = 30,
        window: float = 600.0,
        codes: Iterable[str] = FAILED_CODES,
        ipv6_prefix: int = 64,
        cooldown: float = DEFAULT_COOLDOWN,
        suspend: bool = False,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        self.threshold = whole(threshold, f"{self.name}: threshold")
        self.window = Window(positive(window, f"{self.name}: window"))
        if isinstance(codes, str):
            codes = (codes,)
        chosen = frozenset(str(c) for c in codes)
        if not chosen or not chosen <= _ALLOWED:
            raise ConfigurationError(
                f"{self.name}: codes must be among {', '.join(sorted(_ALLOWED))}"
            )
        self.codes = chosen
        self.ipv6_prefix = whole(ipv6_prefix, f"{self.name}: ipv6_prefix", minimum=16)
        if self.ipv6_prefix > 128:
            raise ConfigurationError(f"{self.name}: ipv6_prefix is at most 128")

    def observe(self, event: Event) -> Alarm | None:
        if event.code not in self.codes or event.client is None:
            return None
        source = network_key(event.client, self.ipv6_prefix)
        failures = self.counters.add(self.counter(counter_part(source)), self.window, event.at)
        if failures < self.threshold:
            return None
        span = seconds_text(self.window.seconds)
        return Alarm(
            subject=counter_part(source),
            reason="failed_auth_burst",
            message=(
                f"{failures} failed authentications from {source} within {span} "
                f"(threshold {self.threshold})"
            ),
            threshold=self.threshold,
            observed=failures,
            client=event.client,
            detail={"window": span, "source": source},
        )

    def describe(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "window": self.window.seconds,
            "codes": sorted(self.codes),
            "ipv6_prefix": self.ipv6_prefix,
            **super().describe(),
        }
