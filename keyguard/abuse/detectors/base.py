"""What every anomaly detector is: a name, the event kinds it reads, a judgement per event.

A :class:`Detector` sees one :class:`~keyguard.observability.model.Event` at a time and
returns an :class:`Alarm` when its pattern is met, or ``None``. It counts with the
:class:`~keyguard.core.detector_counters.DetectorCounters` it is bound to (shared by several
processes when the backend is), and keeps any state of its own bounded. Everything that is
the same for every detector — firing at most once per condition, building the ``ANOMALY``
event, asking for a suspension — is done by :class:`~keyguard.abuse.detectors.Detectors`, not
here. The options every detector has (``suspend``, ``cooldown``) are checked here.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Final

from keyguard.core.detector_counters import (
    DetectorCounters,
    MemoryDetectorCounters,
    check_name,
)
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event, EventKind

__all__ = ["DEFAULT_COOLDOWN", "Alarm", "Detector", "counter_part", "positive", "whole"]

#: How long a condition stays quiet after it fired (per key, or per address), by default.
DEFAULT_COOLDOWN: Final = 3600.0
MAX_COOLDOWN: Final = 366 * 86400.0

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/_-")


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detector's finding about one event.

    ``subject`` is what "once per condition" is counted by (a key id, a key id and a network,
    an address); ``reason`` a machine word (``wrong_secret_burst``); ``message`` one sentence
    for people (it becomes the suspension reason); ``threshold`` and ``observed`` the numbers
    compared. ``detail`` adds facts to the event (strings only).
    """

    subject: str
    reason: str
    message: str
    threshold: float
    observed: float
    key_id: str | None = None
    owner: str | None = None
    client: str | None = None
    detail: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


def positive(value: object, what: str, *, integer: bool = False, minimum: float = 0.0) -> float:
    """``value`` as a finite number above ``minimum`` (an integer when ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a number, got {type(value).__name__}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise ConfigurationError(f"{what} must be a whole number, got {value!r}")
    if not math.isfinite(value) or not value > minimum:
        raise ConfigurationError(f"{what} must be a number > {minimum:g}, got {value!r}")
    return float(value)


def whole(value: object, what: str, *, minimum: int = 1) -> int:
    """``value`` as an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def counter_part(text: str) -> str:
    """``text`` as part of a counter name: itself when it is short and plain (a key id, an
    address, a network), else a short digest of it."""
    if len(text) <= 64 and set(text) <= _SAFE:
        return text
    return "h" + hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=10).hexdigest()


def seconds_text(seconds: float) -> str:
    """``600`` → ``"10m"``: a window for a sentence."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def number_text(value: float) -> str:
    """A count or a rate as a short string (``20``, ``12.5``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


class Detector(abc.ABC):
    """Base of the detectors (see the module docstring).

    Every detector takes ``suspend`` (ask :meth:`KeyManager.suspend
    <keyguard.management.KeyManager.suspend>` to suspend the key when it fires; off by
    default) and ``cooldown`` (how long the same condition stays quiet after it fired, one
    hour by default). Subclasses set :attr:`name` and :attr:`kinds` and implement
    :meth:`observe`.
    """

    #: The detector's name: the event's ``detail["detector"]`` and its configuration key.
    name: ClassVar[str] = ""
    #: The event kinds :meth:`observe` is given.
    kinds: ClassVar[frozenset[EventKind]] = frozenset()
    #: Whether an alarm names a key that can be suspended.
    can_suspend: ClassVar[bool] = True

    def __init__(self, *, suspend: bool = False, cooldown: float = DEFAULT_COOLDOWN) -> None:
        if not isinstance(suspend, bool):
            raise ConfigurationError(f"{self.name}: suspend must be true or false")
        if suspend and not self.can_suspend:
            raise ConfigurationError(
                f"{self.name}: this detector watches addresses, not keys: it has no key to suspend"
            )
        self.suspend = suspend
        self.cooldown = positive(cooldown, f"{self.name}: cooldown", minimum=0.999)
        if self.cooldown > MAX_COOLDOWN:
            raise ConfigurationError(f"{self.name}: cooldown is at most 366 days")
        self.counters: DetectorCounters = MemoryDetectorCounters()

    def bind(self, counters: DetectorCounters) -> None:
        """Count with ``counters`` from now on (the runner gives every detector its own
        in-process counters, or one shared backend)."""
        self.counters = counters

    def counter(self, *parts: str) -> str:
        """A counter name under this detector's namespace."""
        return check_name(":".join((self.name, *parts)))

    @abc.abstractmethod
    def observe(self, event: Event) -> Alarm | None:
        """The alarm ``event`` raises, if any. Called from one thread at a time."""

    def state_size(self) -> int:
        """Entries of state kept besides the counters (0 for most detectors)."""
        return 0

    def describe(self) -> dict[str, object]:
        """The detector's settings, for logs and ``repr``."""
        return {"suspend": self.suspend, "cooldown": self.cooldown}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({settings})"
