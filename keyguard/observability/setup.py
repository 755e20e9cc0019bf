"""Building an :class:`~keyguard.observability.observer.Observer` from simple options: what the
adapters' ``events=`` and ``usage=`` keyword arguments (and the ``EVENTS``/``USAGE``
settings of Flask and Django) accept."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from keyguard.core.errors import ConfigurationError
from keyguard.observability.events import Emitter
from keyguard.observability.observer import Observer
from keyguard.observability.sinks import LoggingSink
from keyguard.observability.usage import UsageCounter

if TYPE_CHECKING:
    from keyguard.core.store import KeyStore

__all__ = ["make_observer"]


def _emitter(events: Any) -> Emitter | None:
    if events is None or events is False:
        return None
    if events is True:
        return Emitter([LoggingSink()])
    if isinstance(events, Emitter):
        return events
    if callable(events):
        return Emitter([events])
    if isinstance(events, Iterable) and not isinstance(events, str | bytes):
        sinks: list[Callable[..., object]] = list(events)
        if not all(callable(s) for s in sinks):
            raise ConfigurationError("events= takes an Emitter, a sink or a list of sinks")
        return Emitter(sinks)
    raise ConfigurationError("events= takes True, an Emitter, a sink or a list of sinks")


def _counter(usage: Any, store: KeyStore) -> UsageCounter | None:
    if usage is None or usage is False:
        return None
    if usage is True:
        return UsageCounter(store)
    if isinstance(usage, UsageCounter):
        return usage
    raise ConfigurationError("usage= takes True (count into the key store) or a UsageCounter")


def make_observer(store: KeyStore, *, events: Any = None, usage: Any = None) -> Observer | None:
    """The observer for ``events`` and ``usage``, or ``None`` when both are off.

    ``events``: ``True`` (log every event on ``keyguard.events``), an
    :class:`~keyguard.observability.events.Emitter`, a sink, or a list of sinks.
    ``usage``: ``True`` (count into ``store``, flushed every 5 s) or a
    :class:`~keyguard.observability.usage.UsageCounter`.
    """
    emitter = _emitter(events)
    counter = _counter(usage, store)
    if emitter is None and counter is None:
        return None
    return Observer(events=emitter, usage=counter)
