"""Leak response and hygiene: finding keys where they must not be, and acting on them.

* :mod:`keyguard.abuse.matching` — the one pattern and the checksum that find keys in bytes;
* :mod:`keyguard.abuse.scanner` and :mod:`keyguard.abuse.history` — ``keyguard scan``: files,
  directory trees and every commit of a git repository;
* :mod:`keyguard.abuse.leaks` — whether a found key is live (its whole secret matches the
  store), and revoking it;
* :mod:`keyguard.abuse.review` — ``keyguard review``: the least-privilege and hygiene report;
* :mod:`keyguard.abuse.detectors` — anomaly detectors: event sinks that notice abuse (wrong
  secrets for a real key id, refused keys used, new networks, usage spikes, scope probing,
  failed authentications from one address), emit an ``ANOMALY`` event and optionally suspend
  the key, off the request path;
* :mod:`keyguard.abuse.alerts` — the secret-scanning alert receiver (GitHub's partner format,
  and a generic HMAC-signed webhook) that revokes leaked keys within seconds; it needs the
  ``scanning`` extra (``cryptography``) for GitHub's ECDSA signatures.

Nothing here runs on the request path (the detectors' sink only queues an event).
"""

from __future__ import annotations

from keyguard.abuse.alerts import AlertReceiver, LeakAction, RevokeLeaked, SuspendLeaked
from keyguard.abuse.apps import AlertASGIApp, AlertWSGIApp
from keyguard.abuse.detectors import Detectors, detectors_from_config
from keyguard.abuse.findings import Finding, ScanReport, Skipped
from keyguard.abuse.history import GitError, HistoryScanner
from keyguard.abuse.matching import KEY_REGEX, iter_keys, mask
from keyguard.abuse.review import Review, ReviewPolicy, ReviewReport
from keyguard.abuse.scanner import FileScanner
from keyguard.abuse.signing import GitHubKeySet, HmacVerifier
from keyguard.abuse.usage import MappingUsageSource, UsageSource

__all__ = [
    "KEY_REGEX",
    "AlertASGIApp",
    "AlertReceiver",
    "AlertWSGIApp",
    "Detectors",
    "FileScanner",
    "Finding",
    "GitError",
    "GitHubKeySet",
    "HistoryScanner",
    "HmacVerifier",
    "LeakAction",
    "MappingUsageSource",
    "Review",
    "ReviewPolicy",
    "ReviewReport",
    "RevokeLeaked",
    "ScanReport",
    "Skipped",
    "SuspendLeaked",
    "UsageSource",
    "detectors_from_config",
    "iter_keys",
    "mask",
]
