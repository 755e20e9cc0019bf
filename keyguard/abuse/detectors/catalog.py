"""Every detector by name, their defaults, and building them from configuration.

:func:`detectors_from_config` turns a mapping — from a settings module, JSON, TOML, YAML — into
a :class:`~keyguard.abuse.detectors.Detectors`::

    {"wrong_secret": {"threshold": 20, "window": "10m", "suspend": true},
     "new_network": {"warmup": 500},
     "volume": false}

Each key names a detector; its value is ``true`` (defaults), ``false`` (off) or its options.
Detectors not named run with their defaults (``defaults=False`` runs only those named).
Durations (``window``, ``cooldown``, ``horizon``, ``period``) are seconds or text such as
``10m``, ``1h``, ``30d``, ``1d12h``. Unknown detectors and options are refused with the list of
known ones, so a typo never silently disables a detector.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from keyguard.abuse.detectors.base import Detector
from keyguard.abuse.detectors.failed_auth import FailedAuthDetector
from keyguard.abuse.detectors.new_network import NewNetworkDetector
from keyguard.abuse.detectors.refused_key import RefusedKeyDetector
from keyguard.abuse.detectors.runner import DEFAULT_DETECTOR_COUNTERS, Detectors
from keyguard.abuse.detectors.scope_probe import ScopeProbeDetector
from keyguard.abuse.detectors.suspender import SuspendsKeys
from keyguard.abuse.detectors.volume import VolumeDetector
from keyguard.abuse.detectors.wrong_secret import WrongSecretDetector
from keyguard.core.detector_counters import DetectorCounters
from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event

__all__ = ["DETECTORS", "default_detectors", "detectors_from_config", "parse_seconds"]

#: Every built-in detector class by name, in the order they run.
DETECTORS: Final[Mapping[str, type[Detector]]] = {
    cls.name: cls
    for cls in (
        WrongSecretDetector,
        RefusedKeyDetector,
        NewNetworkDetector,
        VolumeDetector,
        ScopeProbeDetector,
        FailedAuthDetector,
    )
}

_DURATIONS: Final = frozenset({"window", "cooldown", "horizon", "period"})
_UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION: Final = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]+)?[wdhms])+")
_PART: Final = re.compile(r"([0-9]{1,9}(?:\.[0-9]+)?)([wdhms])")


def parse_seconds(value: object, what: str) -> float:
    """A duration: a number of seconds, or ``10m``, ``1h``, ``30d``, ``1d12h``…"""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if _DURATION.fullmatch(text):
            return float(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
        try:
            return float(text)
        except ValueError:
            pass
    raise ConfigurationError(
        f"{what}: expected seconds or a duration such as 10m, 1h, 30d, got {value!r}"
    )


def default_detectors() -> list[Detector]:
    """One of every built-in detector, with its defaults (no suspension)."""
    return [cls() for cls in DETECTORS.values()]


def _options(cls: type[Detector]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def build_detector(name: str, options: Mapping[str, Any] | bool | None = True) -> Detector | None:
    """One detector from its name and options (``None`` when ``options`` is ``False``)."""
    cls = DETECTORS.get(name)
    if cls is None:
        raise ConfigurationError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    if options is False:
        return None
    if options is True or options is None:
        return cls()
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{name}: expected true, false or a mapping of options")
    allowed = _options(cls)
    kwargs: dict[str, Any] = {}
    for option, value in options.items():
        if option not in allowed:
            raise ConfigurationError(
                f"{name}: unknown option {option!r} (known: {', '.join(allowed)})"
            )
        if option in _DURATIONS:
            value = parse_seconds(value, f"{name}.{option}")
        kwargs[option] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a value of the wrong shape for an option
        raise ConfigurationError(f"{name}: {exc}") from None


def detectors_from_config(
    config: Mapping[str, Any] | None = None,
    *,
    emit: Callable[[Event], object] | None = None,
    manager: SuspendsKeys | None = None,
    counters: DetectorCounters | None = None,
    background: bool = True,
    defaults: bool = True,
    resolver: Callable[[str], str | None] | None = None,
    max_counters: int = DEFAULT_DETECTOR_COUNTERS,
    max_latches: int = 20_000,
    max_pending: int = 10_000,
    closing: Iterable[Any] = (),
) -> Detectors:
    """:class:`Detectors` from a configuration mapping (see the module docstring).

    ``resolver`` (address → country code) is handed to ``new_network``, which then learns
    countries instead of networks; the other keyword arguments go to :class:`Detectors`.
    """
    config = {} if config is None else config
    if not isinstance(config, Mapping):
        raise ConfigurationError("the detectors' configuration must be a mapping")
    for name in config:
        if name not in DETECTORS:
            raise ConfigurationError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    chosen: list[Detector] = []
    for name, cls in DETECTORS.items():
        if name not in config and not defaults:
            continue
        options: Any = config.get(name, True)
        if resolver is not None and cls is NewNetworkDetector and options is not False:
            options = {**(options if isinstance(options, Mapping) else {}), "resolver": resolver}
        detector = build_detector(name, options)
        if detector is not None:
            chosen.append(detector)
    return Detectors(
        emit,
        detectors=chosen,
        counters=counters,
        manager=manager,
        background=background,
        max_counters=max_counters,
        max_latches=max_latches,
        max_pending=max_pending,
        closing=closing,
    )
