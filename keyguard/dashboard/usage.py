"""What the dashboard's usage charts read: a small protocol, and an in-memory source.

:class:`UsageSource` asks two questions of whoever counts requests, for one key or one owner
over the last ``days`` days (UTC days, today included): how many requests per day by status
class (:data:`STATUS_CLASSES`: ``2xx``, ``3xx``, ``4xx`` other than 429, ``429``, ``5xx`` —
disjoint, so they stack), and which route templates were called most. The usage counters of
the observability layer are the intended real source (an adapter of a few lines, wired by the
application); until one is given, the dashboard says "no usage data yet".

:class:`MemoryUsage` counts in this process only (tests, the demo); :class:`UsageRecorder` and
:class:`UsageRecorderWSGI` feed it from an application's responses. They sit *outside*
keyguard's middleware and count the requests it let through (the principal it left in the
scope or environ), whatever status the application then answered; refusals by keyguard itself
carry no principal and are left to the real counters. Routes are counted by the route
policy's template (``/agents/{agent_id}``), never by raw path, so their number stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable

from keyguard.adapters.wsgi import PRINCIPAL_KEY
from keyguard.core.clock import Clock
from keyguard.core.decision import Principal
from keyguard.core.policy import RoutePolicy

__all__ = [
    "OTHER_ROUTE",
    "STATUS_CLASSES",
    "DayUsage",
    "MemoryUsage",
    "UsageRecorder",
    "UsageRecorderWSGI",
    "UsageSource",
    "day_of",
    "status_class",
]

#: The status classes a day's requests are split into; ``4xx`` excludes ``429``.
STATUS_CLASSES: Final = ("2xx", "3xx", "4xx", "429", "5xx")
#: The route counted for a request no policy template matched.
OTHER_ROUTE: Final = "(other)"


def status_class(status: int) -> str:
    """``"429"`` for 429, else ``"2xx"``, ``"3xx"``, ``"4xx"`` or ``"5xx"`` (1xx counts as 2xx)."""
    if status == 429:
        return "429"
    first = status // 100
    if first <= 2:
        return "2xx"
    return f"{min(first, 5)}xx"


def day_of(at: float) -> date:
    """The UTC day of an epoch time."""
    return datetime.fromtimestamp(at, UTC).date()


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One day's requests by status class (missing classes count zero)."""

    day: date
    counts: Mapping[str, int] = field(default_factory=dict)

    def count(self, cls: str) -> int:
        return int(self.counts.get(cls, 0))

    @property
    def total(self) -> int:
        return sum(int(v) for v in self.counts.values())


@runtime_checkable
class UsageSource(Protocol):
    """Request counts per key or per owner (exactly one of ``key_id``/``owner`` is given)."""

    def daily_usage(
        self, *, key_id: str | None = None, owner: str | None = None, days: int
    ) -> Sequence[DayUsage]:
        """Requests per UTC day in the last ``days`` days (today included), by status class;
        days without requests may be left out."""
        ...

    def top_routes(
        self, *, key_id: str | None = None, owner: str | None = None, days: int, limit: int
    ) -> Sequence[tuple[str, int]]:
        """The ``limit`` most called route templates in the last ``days`` days, with their
        request counts, most called first."""
        ...


def _subject(key_id: str | None, owner: str | None) -> tuple[str, str]:
    if (key_id is None) == (owner is None):
        raise ValueError("give exactly one of key_id and owner")
    return ("key", key_id) if key_id is not None else ("owner", owner or "")


class MemoryUsage:
    """A :class:`UsageSource` counting in this process (tests, the demo): thread-safe, bounded
    by the number of keys, owners, route templates and days seen."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._days: dict[tuple[str, str], dict[date, Counter[str]]] = defaultdict(dict)
        self._routes: dict[tuple[str, str], dict[date, Counter[str]]] = defaultdict(dict)

    def record(
        self,
        key_id: str,
        *,
        owner: str | None,
        route: str,
        status: int,
        at: float | None = None,
        count: int = 1,
    ) -> None:
        """Count ``count`` requests made with ``key_id`` (of ``owner``) to ``route``."""
        day = day_of(self._clock() if at is None else at)
        cls = status_class(status)
        subjects = [("key", key_id)] + ([("owner", owner)] if owner is not None else [])
        with self._lock:
            for subject in subjects:
                self._days[subject].setdefault(day, Counter())[cls] += count
                self._routes[subject].setdefault(day, Counter())[route] += count

    def _window(self, days: int) -> set[date]:
        today = day_of(self._clock())
        return {today - timedelta(days=i) for i in range(max(days, 0))}

    def daily_usage(
        self, *, key_id: str | None = None, owner: str | None = None, days: int
    ) -> list[DayUsage]:
        subject = _subject(key_id, owner)
        window = self._window(days)
        with self._lock:
            found = self._days.get(subject, {})
            return [DayUsage(d, dict(c)) for d, c in sorted(found.items()) if d in window]

    def top_routes(
        self, *, key_id: str | None = None, owner: str | None = None, days: int, limit: int
    ) -> list[tuple[str, int]]:
        subject = _subject(key_id, owner)
        window = self._window(days)
        total: Counter[str] = Counter()
        with self._lock:
            for day, routes in self._routes.get(subject, {}).items():
                if day in window:
                    total.update(routes)
        return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def __repr__(self) -> str:
        return f"MemoryUsage(subjects={len(self._days)})"


def _route(policy: RoutePolicy | None, method: str, path: str) -> str:
    if policy is None:
        return OTHER_ROUTE
    template = policy.match(method, path).template
    return f"{method.upper()} {template}" if template is not None else OTHER_ROUTE


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UsageRecorder:
    """ASGI middleware counting, into ``usage``, each HTTP request keyguard let through.

    Put it around the application *and* keyguard's middleware (``UsageRecorder(app, ...)``
    as the outermost layer): it reads the principal keyguard left in ``scope["keyguard"]`` and
    the status of the response start. ``policy`` names routes by template.
    """

    def __init__(
        self, app: ASGIApp, usage: MemoryUsage, *, policy: RoutePolicy | None = None
    ) -> None:
        self.app = app
        self.usage = usage
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            principal = scope.get("keyguard")
            if isinstance(principal, Principal) and status:
                self.usage.record(
                    principal.key_id,
                    owner=principal.owner,
                    route=_route(self.policy, scope.get("method", "GET"), scope.get("path", "/")),
                    status=status[0],
                )


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class UsageRecorderWSGI:
    """The WSGI form of :class:`UsageRecorder`: reads ``environ["keyguard.principal"]``."""

    def __init__(
        self, app: WSGIApp, usage: MemoryUsage, *, policy: RoutePolicy | None = None
    ) -> None:
        self.app = app
        self.usage = usage
        self.policy = policy

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        status: list[int] = []

        def watch(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(int(line.split(" ", 1)[0]))
            return start_response(line, headers, exc_info)

        # An app may call start_response while its body is iterated: the status is known
        # for sure only at the end.
        result = self.app(environ, watch)
        try:
            yield from result
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            principal = environ.get(PRINCIPAL_KEY)
            if isinstance(principal, Principal) and status:
                self.usage.record(
                    principal.key_id,
                    owner=principal.owner,
                    route=_route(
                        self.policy,
                        environ.get("REQUEST_METHOD", "GET"),
                        environ.get("PATH_INFO", "/") or "/",
                    ),
                    status=status[-1],
                )
