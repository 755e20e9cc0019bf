"""Usage counting: requests per key, UTC day, status class and route, counted in memory and
written to the key store in batches.

**On the request path** :meth:`UsageCounter.count` records the request as it is (key id,
method, route template, status, time, the raw client address) on an in-memory queue: one clock
read, one ``extend`` of a flat list, no lock, no store I/O, ever. (Flat: a record kept as a
tuple of its own would survive until the tally and make the garbage collector walk the young
generation every few hundred requests; its fields laid end to end in one list are no new
object to track.) A background thread tallies the queue every half
second into counts per (key id, UTC day, method, route template, status) and each key's latest
use.

**Flushes.** A background thread writes what was counted every ``interval`` seconds (default
5): one :meth:`~keyguard.core.store.KeyStore.add_usage` call per flush, one batch per key
(so at most one write per key per interval), as *increments* — several processes writing to
one store add up. Status codes become classes (``2xx``…, ``429`` apart) and routes become
``METHOD /template`` labels (``(other)`` when no template matched; unusual methods count as
``OTHER``), so the number of fields stays bounded whatever clients send. The client address
is resolved (``X-Forwarded-For`` per ``trusted_proxies``) only for the one request per key that
is kept. The key's ``last_used_at`` moves forward with each flush (the verifier stops its own
``touch`` writes).

**Failures and shutdown.** A flush the store refuses is kept (with its batch ids) and sent
again with the next one; stores skip a batch they applied already, so a retry never counts
twice. :meth:`UsageCounter.close` — also run at interpreter exit — writes what is pending: a
clean shutdown loses nothing. A crash (``kill -9``, power loss) loses what was counted since
the last flush: at most one interval. After ``fork()`` the child starts from zero (what the
parent counted is the parent's to write).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.errors import ConfigurationError, KeyguardError
from keyguard.core.usage import (
    DEFAULT_RETENTION_DAYS,
    ROUTE_FIELD,
    SCOPE_FIELD,
    STATUS_FIELD,
    USAGE_SINCE_SETTING,
    UsageBatch,
)
from keyguard.observability.model import escape, status_class
from keyguard.observability.report import OTHER_ROUTE

if TYPE_CHECKING:
    from keyguard.core.policy import RoutePolicy
    from keyguard.core.store import KeyStore

__all__ = ["DEFAULT_INTERVAL", "UsageCounter", "UsageStats", "needed_scopes", "route_label"]

logger = logging.getLogger("keyguard.observability.usage")

#: Seconds between flushes.
DEFAULT_INTERVAL: Final = 5.0
#: Methods named in route labels; any other counts as ``OTHER`` (bounded labels).
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
#: Batches kept for a retry while the store is down; beyond, the oldest are lost (counted).
MAX_RETRY_BATCHES: Final = 100_000


def route_label(method: str, template: str | None) -> str:
    """``"GET /agents/{agent_id}"``, or ``"(other)"`` when no template matched."""
    if template is None:
        return OTHER_ROUTE
    upper = method.upper()
    return f"{upper if upper in METHODS else 'OTHER'} {escape(template)}"


@dataclass(frozen=True, slots=True)
class UsageStats:
    """What a counter did: requests counted, flushes written and failed, batches written,
    and requests lost (retry buffer full, or the store refused a batch for good)."""

    counted: int
    flushes: int
    failed_flushes: int
    batches: int
    lost: int
    pending: int


#: The fields of one request as the request path records them, laid end to end in the queue:
#: the admission :mod:`keyguard.core.observe` hands the adapters — (verifier, principal or key
#: id, method, template, peer, forwarded_for, keyguard's time or None) — then the status and
#: the time. One ``list.extend`` adds all of them at once (atomic under the GIL: the tally
#: never sees half a record).
RECORD: Final = 9
#: (key id, epoch day, method, template, status, verifier) -> requests.
_Counts = dict[tuple[str, int, str, str | None, int, Any], int]
#: key id -> (time, peer, forwarded_for, verifier) of its latest request.
_Lasts = dict[str, tuple[float, Any, Any, Any]]


class UsageCounter:
    """Counts requests per key in memory and writes them to ``store`` in batches (see the
    module docstring). Thread-safe. Use as a context manager, or call :meth:`close`.

    ``interval``: seconds between flushes (the most a crash can lose). ``retention_days``:
    how many UTC days the store keeps (older days are deleted, or expire, as flushes go by).
    ``capacity``: requests recorded but not yet tallied (the background thread tallies them
    every ``min(interval, 0.5)`` s); beyond it requests are lost and counted in
    :attr:`UsageStats.lost`. ``start=False`` starts no thread (call :meth:`flush` yourself:
    tests, cron-like use).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        interval: float = DEFAULT_INTERVAL,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        capacity: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        if not getattr(store, "keeps_usage", False):
            raise ConfigurationError(f"{store!r} does not keep usage counts")
        if not 0 < interval <= 3600:
            raise ConfigurationError("interval must be between 0 and 3600 seconds")
        if isinstance(retention_days, bool) or not isinstance(retention_days, int):
            raise ConfigurationError("retention_days must be an integer")
        if not 1 <= retention_days <= 3660:
            raise ConfigurationError("retention_days must be between 1 and 3660")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError("capacity must be an integer >= 1")
        self.store = store
        self.interval = float(interval)
        self.retention_days = retention_days
        self.capacity = capacity
        self._clock = clock
        self.started_at = clock()
        # The request path only extends this list by whole records (atomic: no lock); the tally
        # (under _flush_lock) pops from the other end, so no request is ever missed.
        self._queue: list[Any] = []
        #: The queue's length at capacity (the request path compares, never multiplies).
        self._room = capacity * RECORD
        self._flush_lock = threading.Lock()
        self._counts: _Counts = {}
        self._lasts: _Lasts = {}
        self._retry: list[UsageBatch] = []
        self._since_written = False
        self._counted = 0
        self._overflow = 0
        self._flushes = 0
        self._failed = 0
        self._batches = 0
        self._lost = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._autostart = start
        #: Called (on the tallying thread) with the admission's fields and the time of each
        #: request an adapter reported: the observer turns it into an ``authenticated`` event.
        self.on_admitted: Callable[..., None] | None = None
        if start:
            self._start()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        atexit.register(_at_exit, ref)

    # -- the request path ----------------------------------------------------------------------
    def count(
        self,
        key_id: str,
        method: str,
        template: str | None,
        status: int,
        peer: Any = None,
        forwarded_for: Any = None,
        verifier: Any = None,
    ) -> None:
        """One request of ``key_id`` to ``method template`` answered ``status``: recorded as
        is (one clock read, one ``extend``). ``peer`` and ``forwarded_for`` are kept raw: at flush
        time the ``verifier``'s client-address rule turns the key's latest one into an
        address, and its route policy says which scopes the route needed (``q:`` fields)."""
        queue = self._queue
        if len(queue) < self._room:
            at = self._clock()
            queue.extend(
                (verifier, key_id, method, template, peer, forwarded_for, None, status, at)
            )
        else:
            self._overflow += 1

    # -- tallying and flushing -----------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="keyguard-usage", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        tally = min(self.interval, 0.5)
        due = time.monotonic() + self.interval
        while not self._stop.wait(tally):
            try:
                if time.monotonic() >= due:
                    due = time.monotonic() + self.interval
                    self.flush()
                else:
                    with self._flush_lock:
                        self._tally()
            except Exception:  # never let the thread die: the next interval tries again
                logger.exception("usage flush failed")

    def _tally(self) -> None:
        """Move what the request path recorded into the per-key counts (caller holds
        ``_flush_lock``)."""
        queue = self._queue
        # Whole records only (there are no others: writers extend by RECORD); writers may
        # extend the list between the copy and the del, after the part taken.
        records = queue[: len(queue) // RECORD * RECORD]
        del queue[: len(records)]
        counts = self._counts
        lasts = self._lasts
        taken = 0
        announce = self.on_admitted
        fields = iter(records)
        for verifier, who, method, template, peer, forwarded_for, elapsed, status, at in zip(
            *(fields,) * RECORD, strict=True
        ):
            key_id = who if type(who) is str else who.key_id
            if announce is not None and type(who) is not str:
                try:
                    announce(verifier, who, method, template, peer, forwarded_for, elapsed, at)
                except Exception:  # an event is not worth a lost count
                    logger.exception("usage: could not announce a request")
            key = (key_id, int(at // 86400), method, template, status, verifier)
            counts[key] = counts.get(key, 0) + 1
            last = lasts.get(key_id)
            if last is None or last[0] <= at:
                lasts[key_id] = (at, peer, forwarded_for, verifier)
            taken += 1
        self._counted += taken
        if self._overflow:
            overflow, self._overflow = self._overflow, 0
            self._lost += overflow
            logger.warning(
                "usage: %d request(s) not counted (capacity %d)", overflow, self.capacity
            )

    def _pending(self) -> list[tuple[tuple[Any, ...], int, float]]:
        """The records not tallied yet, as (admission, status, time) (for tests)."""
        queue = self._queue[:]
        return [
            (tuple(queue[i : i + RECORD - 2]), queue[i + RECORD - 2], queue[i + RECORD - 1])
            for i in range(0, len(queue) - len(queue) % RECORD, RECORD)
        ]

    def _take(self) -> list[UsageBatch]:
        """The batches of everything counted since the last flush (caller holds
        ``_flush_lock``; the counts restart)."""
        self._tally()
        counts, self._counts = self._counts, {}
        lasts, self._lasts = self._lasts, {}
        per_key: dict[str, dict[str, dict[str, int]]] = {}
        needs: dict[tuple[int, str, str | None], tuple[str, ...]] = {}
        for (key_id, day, method, template, status, verifier), n in counts.items():
            days = per_key.setdefault(key_id, {})
            fields = days.setdefault(date.fromordinal(_EPOCH_ORDINAL + day).isoformat(), {})
            names = [
                STATUS_FIELD + status_class(status),
                ROUTE_FIELD + route_label(method, template),
            ]
            policy = getattr(verifier, "policy", None)
            if policy is not None:
                need = needs.get((id(policy), method, template))
                if need is None:
                    need = needs[(id(policy), method, template)] = needed_scopes(
                        policy, method, template
                    )
                names += [SCOPE_FIELD + scope for scope in need]
            for name in names:
                fields[name] = fields.get(name, 0) + n
        flush_id = uuid.uuid4().hex
        batches = []
        for key_id in per_key.keys() | lasts.keys():
            at: float | None = None
            client = None
            last = lasts.get(key_id)
            if last is not None:
                at, peer, forwarded_for, verifier = last
                client = _resolve(getattr(verifier, "_client", None), peer, forwarded_for)
            batches.append(
                UsageBatch(key_id, per_key.get(key_id, {}), at, client, f"{flush_id}:{key_id}")
            )
        return batches

    def flush(self) -> bool:
        """Write everything counted so far (and any batches a failed flush left) now.
        ``True`` when the store took it; on failure the batches are kept for the next flush."""
        with self._flush_lock:
            batches = self._retry + self._take()
            self._retry = []
            if not batches:
                return True
            try:
                self.store.add_usage(batches, retention_days=self.retention_days)
            except (KeyguardError, OSError) as exc:
                self._failed += 1
                self._keep(batches)
                logger.warning(
                    "usage flush of %d key(s) failed (%s); kept for the next one",
                    len(batches),
                    type(exc).__name__,
                )
                return False
            self._flushes += 1
            self._batches += len(batches)
            if not self._since_written:
                self._mark_since()
            return True

    def _keep(self, batches: list[UsageBatch]) -> None:
        excess = len(batches) - MAX_RETRY_BATCHES
        if excess > 0:
            self._lost += sum(b.total for b in batches[:excess])
            batches = batches[excess:]
        self._retry = batches

    def _mark_since(self) -> None:
        """Record in the store when counting started (the first counter's start wins), so
        readers know from when the counts are complete."""
        try:
            self.store.set_setting(
                USAGE_SINCE_SETTING, repr(float(self.started_at)), only_if_absent=True
            )
        except (KeyguardError, OSError):
            return
        self._since_written = True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is pending. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if not self.flush():
            pending = sum(b.total for b in self._retry)
            if pending:
                self._lost += pending
                logger.error("usage counts of %d request(s) could not be written", pending)

    async def aclose(self) -> None:
        """:meth:`close` from an event loop (the final write runs in a thread)."""
        import asyncio

        await asyncio.to_thread(self.close)

    def __enter__(self) -> UsageCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> UsageStats:
        """Counters (``counted`` includes requests recorded but not yet tallied)."""
        with self._flush_lock:
            recorded = len(self._queue) // RECORD
            pending = recorded + sum(self._counts.values())
            return UsageStats(
                self._counted + recorded,
                self._flushes,
                self._failed,
                self._batches,
                self._lost + self._overflow,
                pending,
            )

    def __repr__(self) -> str:
        return f"UsageCounter({self.store!r}, interval={self.interval:g}s)"

    def _after_fork(self) -> None:
        self._queue = []
        self._flush_lock = threading.Lock()
        self._counts = {}
        self._lasts = {}
        self._retry = []
        self._counted = 0
        self._overflow = 0
        self._stop = threading.Event()
        self._thread = None
        if self._autostart and not self._closed:
            self._start()


def needed_scopes(policy: RoutePolicy, method: str, template: str | None) -> tuple[str, ...]:
    """The scopes the rule for ``method template`` names (the default's when no template
    matched); ``()`` for rules needing only a valid key."""
    method = method.upper()
    if template is None:
        requirement: Any = policy.default.requirement
    else:
        requirement = None
        for rule in policy.rules:
            if rule.path == template and rule.method in (method, "*"):
                requirement = rule.requirement
                if rule.method == method:
                    break
    scopes = getattr(requirement, "scopes", ())
    return tuple(scopes) if isinstance(scopes, tuple) else ()


def _resolve(resolver: Any, peer: Any, forwarded_for: Any) -> str | None:
    if resolver is None:
        address = peer[0] if isinstance(peer, tuple | list) and peer else peer
        return None if address is None else escape(str(address), 64)
    try:
        address = resolver(peer, forwarded_for)
    except Exception:
        return None
    return None if address is None else escape(str(address), 64)


def _after_fork(ref: weakref.ref[UsageCounter]) -> None:
    counter = ref()
    if counter is not None:
        counter._after_fork()


def _at_exit(ref: weakref.ref[UsageCounter]) -> None:
    counter = ref()
    if counter is not None and not counter.closed:
        try:
            counter.close(timeout=2.0)
        except Exception:  # the interpreter is going away: say so, never raise
            logger.exception("usage counts could not be written at exit")
