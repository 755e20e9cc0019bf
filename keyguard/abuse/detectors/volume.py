"""Usage far above a key's own recent baseline: a stolen key put to work, a runaway client.

Requests with the key's right secret (``AUTHENTICATED``, ``SCOPE_DENIED`` and ``RATE_LIMITED``
events: a client hammering past its limit is the loudest case) are counted per key in fixed
periods (``period``, one minute by default) — across processes when the counters are shared,
so the count is the key's real total. Each process folds every finished period into two
baselines of the key: an exponentially weighted moving average (``half_life`` periods, 60 by
default: it follows a day's rise and fall) and a slowly decaying peak (``peak_half_life``,
one day of periods: an hourly batch job sets a peak the next batch does not exceed). The
detector fires as soon as the running count of the current period reaches ``minimum`` (100)
*and* exceeds ``factor`` (5) times the larger baseline.

**Warm-up.** A key is judged only after this process has followed it for ``warmup`` periods
(60): a process that just started, or a key it forgot, learns first. **Reading finished
periods.** At its first event of a new period a process reads the totals of at most
``lookback`` (5) finished periods from the counters (periods older than that count as empty:
a key idle for that long has a baseline near what it gets); with in-process counters those
are its own counts. State per key: one small record, at most ``max_keys`` keys (least
recently used forgotten, and then warmed up again).
"""

from __future__ import annotations

from typing import ClassVar

from cachetools import LRUCache

from keyguard.abuse.detectors.base import (
    DEFAULT_COOLDOWN,
    Alarm,
    Detector,
    number_text,
    positive,
    seconds_text,
    whole,
)
from keyguard.core.detector_counters import Window
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event, EventKind

__all__ = ["VolumeDetector"]


class _KeyState:
    __slots__ = ("ewma", "last_count", "peak", "period", "periods")

    def __init__(self, period: int) -> None:
        self.period = period  # the newest period this process saw the key in
        self.last_count = 0  # the key's count in that period, as last seen
        self.ewma: float | None = None
        self.peak = 0.0
        self.periods = 0  # finished periods folded in


class VolumeDetector(Detector):
    """A key's requests in the current period above ``factor`` × its baseline and at least
    ``minimum`` (see the module docstring)."""

    name: ClassVar[str] = "volume"
    kinds: ClassVar[frozenset[EventKind]] = frozenset(
        {EventKind.AUTHENTICATED, EventKind.SCOPE_DENIED, EventKind.RATE_LIMITED}
    )

    def __init__(
        self,
        *,
        period: float = 60.0,
        factor: float = 5.0,
        minimum: int = 100,
        half_life: float = 60.0,
        peak_half_life: float = 1440.0,
        warmup: int = 60,
        lookback: int = 5,
        max_keys: int = 50_000,
        suspend: bool = False,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        super().__init__(suspend=suspend, cooldown=cooldown)
        self.factor = positive(factor, f"{self.name}: factor", minimum=1.0)
        self.minimum = whole(minimum, f"{self.name}: minimum")
        self.half_life = positive(half_life, f"{self.name}: half_life")
        self.peak_half_life = positive(peak_half_life, f"{self.name}: peak_half_life")
        self.warmup = whole(warmup, f"{self.name}: warmup", minimum=1)
        self.lookback = whole(lookback, f"{self.name}: lookback")
        if self.lookback > 32:
            raise ConfigurationError(f"{self.name}: lookback is at most 32 periods")
        self.period = Window(
            positive(period, f"{self.name}: period"), fixed=True, keep=self.lookback + 1
        )
        self.max_keys = whole(max_keys, f"{self.name}: max_keys")
        self._alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        self._peak_decay = 0.5 ** (1.0 / self.peak_half_life)
        self._keys: LRUCache[str, _KeyState] = LRUCache(maxsize=self.max_keys)

    def observe(self, event: Event) -> Alarm | None:
        key_id = event.key_id
        if key_id is None:
            return None
        name = self.counter(key_id)
        now = self.period.index(event.at)
        count = self.counters.add(name, self.period, event.at)
        state = self._keys.get(key_id)
        if state is None:
            self._keys[key_id] = state = _KeyState(now)
        elif now > state.period:
            self._fold(state, name, now)
        elif now < state.period:
            return None  # a late event of a period already folded in
        state.last_count = max(state.last_count, count)
        if state.periods < self.warmup or state.ewma is None:
            return None
        baseline = max(state.ewma, state.peak)
        limit = max(float(self.minimum), self.factor * baseline)
        if count < self.minimum or count <= self.factor * baseline:
            return None
        per = seconds_text(self.period.seconds)
        return Alarm(
            subject=key_id,
            reason="volume_spike",
            message=(
                f"{count} requests in one {per} period, over {number_text(self.factor)}× its "
                f"baseline of {number_text(round(baseline, 1))} per {per}"
            ),
            threshold=round(limit, 1),
            observed=count,
            key_id=key_id,
            owner=event.owner,
            client=event.client,
            detail={
                "period": per,
                "baseline": number_text(round(baseline, 1)),
                "factor": number_text(self.factor),
            },
        )

    def _fold(self, state: _KeyState, name: str, now: int) -> None:
        """Fold the finished periods ``state.period … now - 1`` into the baselines."""
        width = self.period.width
        first_read = max(state.period, now - self.lookback)
        totals = [
            self.counters.count(name, self.period, (j + 0.5) * width)
            for j in range(first_read, now)
        ]
        if first_read > state.period:
            # The newest period this process saw is older than the lookback: what it saw
            # then is all that is left of it, and the periods after it count as empty.
            self._add(state, state.last_count)
            self._empty(state, first_read - state.period - 1)
        elif totals:
            totals[0] = max(totals[0], state.last_count)
        for total in totals:
            self._add(state, total)
        state.periods += now - state.period
        state.period = now
        state.last_count = 0

    def _add(self, state: _KeyState, total: int) -> None:
        if state.ewma is None:
            state.ewma = float(total)
        else:
            state.ewma += self._alpha * (total - state.ewma)
        state.peak = max(float(total), state.peak * self._peak_decay)

    def _empty(self, state: _KeyState, periods: int) -> None:
        if periods > 0 and state.ewma is not None:
            state.ewma *= (1.0 - self._alpha) ** periods
            state.peak *= self._peak_decay**periods

    def state_size(self) -> int:
        return len(self._keys)

    def describe(self) -> dict[str, object]:
        return {
            "period": self.period.seconds,
            "factor": self.factor,
            "minimum": self.minimum,
            "half_life": self.half_life,
            "peak_half_life": self.peak_half_life,
            "warmup": self.warmup,
            "lookback": self.lookback,
            "max_keys": self.max_keys,
            **super().describe(),
        }
