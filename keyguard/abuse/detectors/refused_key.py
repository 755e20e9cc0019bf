"""Use of a revoked, expired or suspended key — or of a key outside its allowed networks.

Each of these requests carried the key's *whole secret* (the verifier refuses a key for its
state only after the secret matched): whoever sent it holds the key. A revoked key still in
use is a leak not cleaned up, or a client nobody told; an expired one, a client that missed
its rotation; a key used from outside its ``networks`` restriction, a copy of the key
somewhere it should not be. The detector reads ``KEY_REFUSED`` events (codes
``revoked_api_key``, ``expired_api_key``, ``suspended_api_key``) and ``DENIED`` events with
code ``network_not_allowed`` that name a key, and fires per key and code on the
``threshold``-th refusal within ``window`` (default: the first one; then the cooldown keeps
it to one event per key and code per hour).

``suspend=True`` suspends the key as well: useless for a revoked key (it stays revoked; the
suspension is refused and logged), but for an expired key it means that extending its expiry
does not bring it back by itself, and for a key used out of its networks it stops the key
until someone looks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Final

from keyguard.abuse.detectors.base import (
    DEFAULT_COOLDOWN,
    Alarm,
    Detector,
    positive,
    seconds_text,
    whole,
)
from keyguard.core.detector_counters import Window
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.observability.model import Event, EventKind

__all__ = ["REFUSED_CODES", "RefusedKeyDetector"]

#: The codes watched by default, and the reason each alarm gives.
REFUSED_CODES: Final = {
    ErrorCode.REVOKED_API_KEY.value: "revoked_key_used",
    ErrorCode.EXPIRED_API_KEY.value: "expired_key_used",
    ErrorCode.SUSPENDED_API_KEY.value: "suspended_key_used",
    ErrorCode.NETWORK_NOT_ALLOWED.value: "key_used_outside_its_networks",
}

_WORDS: Final = {
    "revoked_api_key": "a revoked key",
    "expired_api_key": "an expired key",
    "suspended_api_key": "a suspended key",
    "network_not_allowed": "a key outside its allowed networks",
}


class RefusedKeyDetector(Detector):
    """Requests with the right secret of a key refused for its state (see the module)."""

    name: ClassVar[str] = "refused_key"
    kinds: ClassVar[frozenset[EventKind]] = frozenset({EventKind.KEY_REFUSED, EventKind.DENIED})

    def __init__(
        self,
        *,
        codes: Iterable[str] = tuple(REFUSED_CODES),
        threshold: int = 1,
        window: float = 3600.0,
        suspend: bool = False,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        if isinstance(codes, str):
            codes = (codes,)
        chosen = frozenset(str(c) for c in codes)
        unknown = chosen - REFUSED_CODES.keys()
        if unknown or not chosen:
            raise ConfigurationError(
                f"{self.name}: codes must be among {', '.join(REFUSED_CODES)}"
                + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
            )
        self.codes = chosen
        self.threshold = whole(threshold, f"{self.name}: threshold")
        self.window = Window(positive(window, f"{self.name}: window"))

    def observe(self, event: Event) -> Alarm | None:
        code = event.code
        if code is None or code not in self.codes or event.key_id is None:
            return None
        if event.kind is EventKind.DENIED and code != ErrorCode.NETWORK_NOT_ALLOWED:
            return None
        seen = 1
        if self.threshold > 1:  # the first use fires: no need to count it anywhere
            seen = self.counters.add(self.counter(event.key_id, code), self.window, event.at)
            if seen < self.threshold:
                return None
        within = f" within {seconds_text(self.window.seconds)}" if self.threshold > 1 else ""
        return Alarm(
            subject=f"{event.key_id}:{code}",
            reason=REFUSED_CODES[code],
            message=(
                f"{seen} request(s){within} with the right secret of {_WORDS[code]} "
                f"({code}): whoever sent them holds the key"
            ),
            threshold=self.threshold,
            observed=seen,
            key_id=event.key_id,
            owner=event.owner,
            client=event.client,
            detail={"code": code},
        )

    def describe(self) -> dict[str, object]:
        return {
            "codes": sorted(self.codes),
            "threshold": self.threshold,
            "window": self.window.seconds,
            **super().describe(),
        }
