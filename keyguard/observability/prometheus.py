"""Prometheus metrics (the ``prometheus`` extra): an event sink, a scrape-time collector, and a
``/metrics`` endpoint.

:class:`PrometheusMetrics` is a sink (``metrics(event)``) counting what keyguard decided:

* ``keyguard_requests_total{outcome, code, route, method}`` — every request outcome
  (``authenticated``, ``denied``, ``scope_denied``, ``rate_limited``, ``key_refused``) by error
  code (``none`` when admitted);
* ``keyguard_request_duration_seconds{outcome}`` — a histogram of keyguard's *own* time per
  request (not the application's);
* ``keyguard_limiter_fallbacks_total``, ``keyguard_store_errors_total``,
  ``keyguard_key_events_total{kind}`` (created, rotated, revoked…),
  ``keyguard_anomalies_total{detector}``, ``keyguard_notifications_total{notification}``;

and, read when Prometheus scrapes (never on the request path):

* ``keyguard_cache_requests_total{result}`` (``index_hit``, ``hit``, ``miss``) and
  ``keyguard_cache_hit_ratio`` — from the verifier's cache counters, given ``verifier=``;
* ``keyguard_active_keys`` — counted in the store (given ``store=``, or the verifier's),
  at most once per ``active_keys_ttl`` seconds (default 60);
* ``keyguard_events_dropped_total`` — given ``dropped=`` (a callable returning a count).

**Labels carry no key material and stay bounded.** No key id, owner or client address is a
label (they are unbounded, and belong in logs and usage). Routes are the policy's *templates*
(``/agents/{agent_id}``), ``(none)`` when no rule matched; after ``max_routes`` distinct ones
(default 100), new ones count as ``(other)``, and anything shaped like a key is ``(redacted)``.
Codes outside keyguard's error codes are ``other``, methods outside the usual nine ``OTHER``.

Serve the metrics with :meth:`PrometheusMetrics.asgi_app` / :meth:`~PrometheusMetrics.wsgi_app`
(mount at ``/metrics``, and keep it off the public internet), or pass an existing registry
(``registry=prometheus_client.REGISTRY``) and let the application's own endpoint serve them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from keyguard.core.errors import ConfigurationError, ErrorCode, KeyguardError
from keyguard.core.records import KeyStatus
from keyguard.core.store import KeyStore
from keyguard.observability.model import Event, EventKind

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "keyguard.observability.prometheus needs prometheus_client: "
        "pip install 'keyguard[prometheus]'",
        name=exc.name,
    ) from exc

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

logger = logging.getLogger("keyguard.prometheus")

#: Histogram buckets for keyguard's own time (seconds): microseconds on the fast path,
#: milliseconds when the store is asked, up to a store timeout.
DEFAULT_BUCKETS: Final = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
NO_ROUTE: Final = "(none)"
OTHER_ROUTE: Final = "(other)"
REDACTED: Final = "(redacted)"
_OUTCOMES: Final = frozenset(
    {
        EventKind.AUTHENTICATED,
        EventKind.DENIED,
        EventKind.SCOPE_DENIED,
        EventKind.RATE_LIMITED,
        EventKind.KEY_REFUSED,
    }
)
_LIFECYCLE: Final = frozenset(
    {
        EventKind.KEY_CREATED,
        EventKind.KEY_ROTATED,
        EventKind.KEY_REVOKED,
        EventKind.KEY_UPDATED,
        EventKind.KEY_SUSPENDED,
        EventKind.KEY_RESUMED,
    }
)
_CODES: Final = frozenset(c.value for c in ErrorCode)
_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# Anything a key could hide in: a long run of base62 characters (a key id and a secret, or a
# secret alone). Route templates never have one.
_KEYISH: Final = re.compile(r"[0-9A-Za-z]{12,}_[0-9A-Za-z]{8,}|[0-9A-Za-z]{24,}")
_DETECTORS_MAX: Final = 50


class _Bounded:
    """Label values seen so far, at most ``limit`` distinct ones; later ones map to ``other``."""

    def __init__(self, limit: int, other: str) -> None:
        self.limit = limit
        self.other = other
        self.seen: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, value: str) -> str:
        found = self.seen.get(value)
        if found is not None:
            return found
        with self.lock:
            if len(self.seen) >= self.limit:
                return self.other
            label = REDACTED if _KEYISH.search(value) else value
            self.seen[value] = label
            return label


class PrometheusMetrics:
    """keyguard's Prometheus metrics (see the module docstring). Thread-safe.

    ``registry`` defaults to a new :class:`~prometheus_client.CollectorRegistry` of its own
    (pass ``prometheus_client.REGISTRY`` to add to the process-wide one); ``namespace``
    prefixes every name (default ``keyguard``).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        verifier: Any = None,
        store: KeyStore | None = None,
        dropped: Callable[[], int] | None = None,
        namespace: str = "keyguard",
        max_routes: int = 100,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        active_keys_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_routes, bool) or not isinstance(max_routes, int) or max_routes < 1:
            raise ConfigurationError("max_routes must be a positive integer")
        if verifier is not None and not callable(getattr(verifier, "cache_stats", None)):
            raise ConfigurationError("verifier must be a keyguard Verifier")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.verifier = verifier
        self.store = store if store is not None else getattr(verifier, "store", None)
        self.dropped = dropped
        self.namespace = namespace
        self.active_keys_ttl = float(active_keys_ttl)
        self._clock = clock
        self._routes = _Bounded(max_routes, OTHER_ROUTE)
        self._detectors = _Bounded(_DETECTORS_MAX, "other")
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._active: tuple[float, int] | None = None
        self._active_lock = threading.Lock()
        ns = namespace
        self.requests = Counter(
            "requests",
            "Requests keyguard decided, by outcome, error code, route template and method.",
            ("outcome", "code", "route", "method"),
            namespace=ns,
            registry=self.registry,
        )
        self.duration = Histogram(
            "request_duration_seconds",
            "keyguard's own time per request (not the application's), in seconds.",
            ("outcome",),
            namespace=ns,
            buckets=tuple(buckets),
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "limiter_fallbacks",
            "Rate-limit decisions taken by the fallback because the limiter's backend failed.",
            namespace=ns,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "store_errors",
            "Key store failures seen on the request path (answered 503 auth_unavailable).",
            namespace=ns,
            registry=self.registry,
        )
        self.key_events = Counter(
            "key_events",
            "Key lifecycle changes (created, rotated, revoked, updated, suspended, resumed).",
            ("kind",),
            namespace=ns,
            registry=self.registry,
        )
        self.anomalies = Counter(
            "anomalies",
            "Anomaly detections, by detector.",
            ("detector",),
            namespace=ns,
            registry=self.registry,
        )
        self.notifications = Counter(
            "notifications",
            "Notifications sent (expiring, rotation_due, daily_limit, suspended).",
            ("notification",),
            namespace=ns,
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(self))

    def __repr__(self) -> str:
        return f"PrometheusMetrics(namespace={self.namespace!r}, routes={len(self._routes.seen)})"

    # -- the sink ----------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Count one event. Never raises."""
        try:
            kind = event.kind
            if kind in _OUTCOMES:
                self._request(event)
            elif kind is EventKind.STORE_UNAVAILABLE:
                self.store_errors.inc()
            elif kind is EventKind.LIMITER_FALLBACK:
                self.fallbacks.inc()
            elif kind in _LIFECYCLE:
                self.key_events.labels(kind.value.removeprefix("key_")).inc()
            elif kind is EventKind.ANOMALY:
                self.anomalies.labels(
                    self._detectors(event.detail.get("detector", "unknown"))
                ).inc()
            elif kind is EventKind.NOTIFICATION:
                name = event.detail.get("notification", "unknown")
                self.notifications.labels(name if name.isidentifier() else "other").inc()
        except Exception:  # a metric must never break a request
            logger.exception("counting an event failed")

    def _request(self, event: Event) -> None:
        code = event.code or "none"
        method = (event.method or "").upper()
        route = event.route
        key = (event.kind.value, code, route or NO_ROUTE, method)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(
                    event.kind.value,
                    code if code == "none" or code in _CODES else "other",
                    self._routes(route) if route is not None else NO_ROUTE,
                    method if method in _METHODS else ("OTHER" if method else "none"),
                ),
                self.duration.labels(event.kind.value),
            )
            if len(self._children) < 100_000:
                self._children[key] = children
        children[0].inc()
        if event.elapsed is not None:
            children[1].observe(event.elapsed)

    # -- scrape time -------------------------------------------------------------------------
    def active_keys(self) -> int | None:
        """Active keys in the store, counted at most once per ``active_keys_ttl`` seconds
        (``None`` without a store, or while it cannot be read and was never read)."""
        store = self.store
        if store is None:
            return None
        now = self._clock()
        cached = self._active
        if cached is not None and now - cached[0] < self.active_keys_ttl:
            return cached[1]
        with self._active_lock:
            cached = self._active
            if cached is not None and now - cached[0] < self.active_keys_ttl:
                return cached[1]
            try:
                count = _count_active(store)
            except KeyguardError as exc:
                logger.warning("could not count active keys: %s", exc)
                return None if cached is None else cached[1]
            self._active = (now, count)
            return count

    # -- exposition --------------------------------------------------------------------------
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics if ``accept`` asks) and its type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app answering ``GET`` with the metrics (rendered in a worker thread: the
        active-keys count may read the store)."""
        return _MetricsASGI(self)

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app answering ``GET`` with the metrics."""

        def app(environ: Mapping[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            method = environ.get("REQUEST_METHOD", "GET")
            if method not in ("GET", "HEAD"):
                start_response(
                    "405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET")]
                )
                return [b"method not allowed\n"]
            body, content_type = self.render(environ.get("HTTP_ACCEPT", ""))
            start_response(
                "200 OK",
                [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [b"" if method == "HEAD" else body]

        return app


class _MetricsASGI:
    """The ``/metrics`` ASGI app of :meth:`PrometheusMetrics.asgi_app`."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            allow = [(b"allow", b"GET")]
            await _asgi_answer(send, 405, b"method not allowed\n", "text/plain", allow)
            return
        accept = ""
        for name, value in scope.get("headers", ()):
            if name == b"accept":
                accept = value.decode("latin-1")
        body, content_type = await asyncio.to_thread(self.metrics.render, accept)
        await _asgi_answer(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)


async def _asgi_answer(
    send: Any,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _count_active(store: KeyStore) -> int:
    count = 0
    cursor: str | None = None
    now = time.time()
    while True:
        page = store.list(status=KeyStatus.ACTIVE, now=now, limit=1000, cursor=cursor)
        count += len(page.items)
        if page.next_cursor is None:
            return count
        cursor = page.next_cursor


class _ScrapeCollector:
    """What is read when Prometheus scrapes: cache counters, active keys, dropped events."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        ns = m.namespace
        verifier = m.verifier
        if verifier is not None:
            stats = verifier.cache_stats()
            lookups = CounterMetricFamily(
                f"{ns}_cache_requests",
                "Requests needing a key record: answered by the fast-path index, from the "
                "record cache, or by the store (miss).",
                labels=("result",),
            )
            lookups.add_metric(("index_hit",), stats.index_hits)
            lookups.add_metric(("hit",), stats.hits)
            lookups.add_metric(("miss",), stats.misses)
            yield lookups
            ratio = stats.hit_ratio
            if ratio is not None:
                yield GaugeMetricFamily(
                    f"{ns}_cache_hit_ratio",
                    "Share of requests needing a key record that did not read the store.",
                    value=ratio,
                )
            sizes = GaugeMetricFamily(
                f"{ns}_cache_entries", "Entries in the verifier's caches.", labels=("cache",)
            )
            sizes.add_metric(("records",), stats.records)
            sizes.add_metric(("unknown",), stats.unknown)
            sizes.add_metric(("index",), stats.indexed)
            yield sizes
        active = m.active_keys()
        if active is not None:
            yield GaugeMetricFamily(
                f"{ns}_active_keys",
                f"Active keys in the store (counted at most every {m.active_keys_ttl:g} s).",
                value=active,
            )
        if m.dropped is not None:
            yield CounterMetricFamily(
                f"{ns}_events_dropped",
                "Events a sink dropped (a full queue, a slow or failing sink).",
                value=m.dropped(),
            )
