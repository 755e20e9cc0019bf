"""Anomaly detectors: event sinks that notice abuse and answer with an event (and a suspension).

Attach :class:`Detectors` to the event emitter; each detector reads the events of the request
path and fires an ``ANOMALY`` event (``detail["detector"]`` names it) when its pattern is met,
at most once per key (or address) and condition within its cooldown, and — when configured
with ``suspend=True`` and a :class:`~keyguard.management.KeyManager` — suspends the key, off
the request path, reversibly and audited:

=================  =====================================================================
``wrong_secret``   20 wrong secrets for one real key id within 10 minutes
``refused_key``    a revoked, expired or suspended key used (with its right secret), or a
                   key used outside its allowed networks
``new_network``    a key past its warm-up (200 uses) used from an IPv4 /24 or IPv6 /48 it
                   did not use within 30 days (or a new country, with a resolver)
``volume``         a key's requests in one minute ≥ 100 and over 5× its own baseline
``scope_probe``    one key denied on 5 different routes (or 100 times) within 10 minutes
``failed_auth``    30 failed authentications from one address within 10 minutes
=================  =====================================================================

Counting goes through :class:`~keyguard.core.detector_counters.DetectorCounters`: in process
by default (bounded), or shared by every process through SQLite or Redis
(:func:`keyguard.stores.detector_counters.detector_counters_from_url`). See
``docs/detectors.md``.
"""

from __future__ import annotations

from keyguard.abuse.detectors.base import Alarm, Detector
from keyguard.abuse.detectors.catalog import (
    DETECTORS,
    build_detector,
    default_detectors,
    detectors_from_config,
)
from keyguard.abuse.detectors.failed_auth import FailedAuthDetector
from keyguard.abuse.detectors.new_network import NewNetworkDetector, network_of
from keyguard.abuse.detectors.refused_key import RefusedKeyDetector
from keyguard.abuse.detectors.runner import ACTOR_PREFIX, Detectors
from keyguard.abuse.detectors.scope_probe import ScopeProbeDetector
from keyguard.abuse.detectors.suspender import Suspender
from keyguard.abuse.detectors.volume import VolumeDetector
from keyguard.abuse.detectors.wrong_secret import WrongSecretDetector

__all__ = [
    "ACTOR_PREFIX",
    "DETECTORS",
    "Alarm",
    "Detector",
    "Detectors",
    "FailedAuthDetector",
    "NewNetworkDetector",
    "RefusedKeyDetector",
    "ScopeProbeDetector",
    "Suspender",
    "VolumeDetector",
    "WrongSecretDetector",
    "build_detector",
    "default_detectors",
    "detectors_from_config",
    "network_of",
]
