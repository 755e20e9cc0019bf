"""Repeated wrong secrets for a real key id: someone holds the id but not the key.

Key ids are public (they are printed in listings and logs), so a stranger can try secrets
against one; the brute-force guard slows them down per address, and this detector tells the
key's owner. It reads ``DENIED`` events whose code is ``invalid_api_key`` and reason
``wrong_secret`` (the verifier sets the real key's id and owner on those) and fires when one
key id collects ``threshold`` wrong secrets within ``window`` (default 20 within 10 minutes),
counted across every process sharing the counters.

``suspend=True`` suspends the key when it fires. Think before turning it on: anyone who knows a
key id can then suspend that key by sending 20 wrong secrets — a denial of service against its
owner, traded for certainty that a leaked id plus a guessed secret never gets in.
"""

from __future__ import annotations

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
from keyguard.core.errors import ErrorCode
from keyguard.observability.model import Event, EventKind

__all__ = ["WrongSecretDetector"]

#: The DENIED reason of a real key id with a wrong secret (a reason word, not a secret).
_WRONG_SECRET: Final = "wrong_secret"  # noqa: S105


class WrongSecretDetector(Detector):
    """``threshold`` wrong secrets for one real key id within ``window`` seconds."""

    name: ClassVar[str] = "wrong_secret"
    kinds: ClassVar[frozenset[EventKind]] = frozenset({EventKind.DENIED})

    def __init__(
        self,
        *,
        threshold: int = 20,
        window: float = 600.0,
        suspend: bool = False,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        self.threshold = whole(threshold, f"{self.name}: threshold")
        self.window = Window(positive(window, f"{self.name}: window"))

    def observe(self, event: Event) -> Alarm | None:
        if (
            event.code != ErrorCode.INVALID_API_KEY
            or event.reason != _WRONG_SECRET
            or event.key_id is None
        ):
            return None
        seen = self.counters.add(self.counter(event.key_id), self.window, event.at)
        if seen < self.threshold:
            return None
        return Alarm(
            subject=event.key_id,
            reason="wrong_secret_burst",
            message=(
                f"{seen} wrong secrets for this key id within {seconds_text(self.window.seconds)}"
                f" (threshold {self.threshold}): someone holds its id but not its secret"
            ),
            threshold=self.threshold,
            observed=seen,
            key_id=event.key_id,
            owner=event.owner,
            client=event.client,
            detail={"window": seconds_text(self.window.seconds)},
        )

    def describe(self) -> dict[str, object]:
        return {"threshold": self.threshold, "window": self.window.seconds, **super().describe()}
