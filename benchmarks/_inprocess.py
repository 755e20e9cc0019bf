"""Shared driver for the in-process request benchmarks (``bench_asgi.py``, ``bench_wsgi.py``).

A benchmark is a list of :class:`Variant` rows — a label, a function that builds the app, the
label of the row it is compared with, the request it is sent and the status it must answer.
:func:`run` builds every app, checks each answers its expected status (aborting otherwise),
warms it, then times the variants round-robin: repeat ``r`` runs every variant once, in an
order rotated by ``r``, so drift on a shared machine affects them all alike. Overheads are
differences of figures measured in the same run, from the minimums (the cost without
interference) and from the medians (what a typical run sees).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from benchmarks._results import Row, describe, environment, group_json, write_json
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    MemoryRateLimiter,
    RateDecision,
    Window,
    admitted_headers,
    admitted_headers_asgi,
)
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

#: The one protected route of every app, and the scope it needs.
PATH = "/agents"
SCOPE = "agents:read"
#: The body every app answers ``GET /agents`` with, so the probe can tell the endpoint ran.
BODY = {"agents": []}

#: Which request a variant is sent: a key with ``agents:read``; no Authorization header; a
#: valid key without the scope; a value that is not a key at all; a well-formed key (valid
#: checksum) whose id is in no store.
GOOD, NO_KEY, NARROW, MALFORMED, UNKNOWN = "good", "no key", "narrow", "malformed", "unknown id"
REQUESTS = (GOOD, NO_KEY, NARROW, MALFORMED, UNKNOWN)

#: Requests come from this many client addresses, in turn (10.x.y.z, never contacted: it is
#: only the ASGI ``client`` / WSGI ``REMOTE_ADDR`` of an in-process request). keyguard's
#: brute-force guard refuses an address after 100 failed authentications a minute, and its
#: unknown-id budget after 60 unknown ids: from ONE address the 401 rows would turn into 429s
#: after the first hundred requests (correct, but not the 401 path). Spread over this many
#: addresses each sees a few failures per run, as real clients with a typo do. Every row —
#: admitted or denied, keyguard or not — cycles over the same number of prebuilt requests, so
#: the cycling costs the same everywhere and cancels out of the overheads.
CLIENTS = 10_000


def client_address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


class BenchmarkError(SystemExit):
    """A variant does not behave as the benchmark assumes: abort before printing figures."""

    def __init__(self, message: str) -> None:
        super().__init__(f"benchmark aborted: {message}")


class CountingStore(MemoryStore):
    """A memory store that counts reads, so a run can prove keyguard stayed on the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return super().get(key_id)


class Keys:
    """One store with two keys (one with ``agents:read``, one without) and the Authorization
    values for each request kind, shared by every variant of a run."""

    def __init__(self) -> None:
        self.store = CountingStore()
        self.hasher = Hasher(pepper_from_env=False)
        self.good = self._issue(SCOPE, "agents:write")
        self.narrow = self._issue("tasks:read")
        # Well-formed (its checksum is right) but never stored.
        self.unknown = f"UserKey {KeyFormat().generate().plaintext}"
        #: Authorization header value per request kind (None: no header).
        self.header: dict[str, str | None] = {
            GOOD: self.good,
            NO_KEY: None,
            NARROW: self.narrow,
            MALFORMED: "UserKey not-a-key",
            UNKNOWN: self.unknown,
        }
        #: What the peer backends look up: the whole header value → scopes.
        self.table: dict[str, frozenset[str]] = {
            self.good: frozenset({SCOPE, "agents:write"}),
            self.narrow: frozenset({"tasks:read"}),
        }

    def _issue(self, *scopes: str) -> str:
        g = KeyFormat().generate()
        self.store.create(
            KeyRecord(
                key_id=g.key_id,
                name="bench",
                digest=self.hasher.digest(g.plaintext),
                scopes=frozenset(scopes),
            )
        )
        return f"UserKey {g.plaintext}"

    def verifier(self, **options: Any) -> Verifier:
        """A keyguard verifier for ``GET /agents``; long cache TTLs so every timed request is
        a cache hit (the default 1 s TTL adds one store read per key per second) and every
        unknown id a negative-cache hit. ``options`` go to :class:`Verifier` (``rate_limits=``,
        ``limiter=``, ``ietf_headers=``, ...); without them the verifier has the library's
        defaults, rate limiting included."""
        settings: dict[str, Any] = {
            "policy": RoutePolicy({f"GET {PATH}": SCOPE}),
            "hasher": self.hasher,
            "cache_ttl": 3600,
            "negative_cache_ttl": 3600,
            "touch_interval": 1e9,
        }
        settings.update(options)
        return Verifier(self.store, **settings)


#: Seconds the limiter's clock advances per check in the admitted rate-limit rows. The
#: platform's windows (20/10 s, 100/minute, 5,000/day) admit a key that sends one request
#: every 18 s for ever (4,800 a day), so every timed request is admitted, with the state of a
#: busy key: 3-4 units in the sliding log, ~50 units in each of the day window's 96 buckets.
ADMITTED_STEP = 18.0
#: Any epoch time: where the fake limiter clocks start.
EPOCH = 1_700_000_000.0


def admitting_clock() -> Callable[[], float]:
    """A clock advancing :data:`ADMITTED_STEP` seconds per call (``itertools.count``'s
    ``__next__``: a C call, as cheap as ``time.time``)."""
    return itertools.count(EPOCH, ADMITTED_STEP).__next__


def frozen_clock() -> Callable[[], float]:
    """A clock that never moves (``itertools.repeat``'s ``__next__``)."""
    return itertools.repeat(EPOCH).__next__


def admitting_limiter() -> MemoryRateLimiter:
    """A memory limiter whose clock advances :data:`ADMITTED_STEP` seconds per check, so the
    platform's own windows admit every request (same windows, same code path, no 429)."""
    return MemoryRateLimiter(clock=admitting_clock())


def frozen_limiter() -> MemoryRateLimiter:
    """A memory limiter whose clock never moves: once a key has spent its burst (20 requests
    in the 10 s window) every later request is refused, for as long as the benchmark runs."""
    return MemoryRateLimiter(clock=frozen_clock())


class StubLimiter(MemoryRateLimiter):
    """A diagnostic, not a limiter: every ``hit`` answers one decision, made once by a real
    :class:`MemoryRateLimiter` for the platform's windows, so the verifier, the headers and
    the adapters run as on the full path while the limiter's own work (``hit`` and the
    decision) is gone. A row with it beside the full path's row is what the limiter costs in
    that framework."""

    __slots__ = ("decision",)

    def __init__(self) -> None:
        super().__init__()
        self.decision = admitting_limiter().hit("stub", DEFAULT_WINDOWS)

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self.decision

    def admitter(self, windows: tuple[Window, ...], text: bool = False) -> Any:
        """The fused path's stub: a function answering the constant decision's headers,
        rendered as the fused function renders them (one renderer call instead of the
        limiter's work)."""
        plan = self.decision.plan
        counts = self.decision.counts
        assert plan is not None
        render = admitted_headers if text else admitted_headers_asgi

        def admit(bucket: str, cost: int, ietf: bool, legacy: bool) -> Any:
            return render(plan, counts, ietf, legacy)

        return admit


NOTE_STUB = (
    "diagnostic: the full path with a limiter stub that answers one constant admitted decision "
    "(made once by a real MemoryRateLimiter): the same verifier, headers and adapter, without "
    "the limiter's work. The full path's row minus this one is what the limiter costs there."
)

#: Response headers a rate-limited keyguard row must send (and the headers-off row must not).
RATE_LIMIT_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-remaining")

#: Footnotes of the keyguard rows, shared by bench_asgi.py and bench_wsgi.py.
NOTE_NO_LIMIT = "Verifier(rate_limits=None): authentication + scope (RoutePolicy), cache hit."
NOTE_LIMITED = (
    "the full default path: auth + scope + the platform's three windows (burst 20/10s, "
    "100/minute, 5000/day: DEFAULT_WINDOWS, unchanged) in a MemoryRateLimiter, with the "
    "IETF RateLimit-Policy/RateLimit and legacy X-RateLimit-* headers on every response. So "
    "that no timed request is refused, the limiter's clock (itertools.count, a C call like "
    "time.time) advances 18 s per check: the key is busy (4,800 requests a day) but never "
    "over."
)
NOTE_NO_HEADERS = (
    "as above with ietf_headers=False, legacy_headers=False: the difference is what the "
    "rate-limit headers cost (formatting them and adding them to the response start)."
)
NOTE_429 = (
    "the 429 path: DEFAULT_WINDOWS, the limiter's clock frozen and the key's 20-request burst "
    "spent before timing, so every timed request is refused: auth + scope + limiter check, "
    "then a problem+json body with a fresh request id and Retry-After, RateLimit-Policy, "
    "RateLimit and X-RateLimit-* headers. The app never runs."
)
NOTE_FLOOR = (
    "hand-written floor: parse (scheme + key prefix + length), SHA-256 of the key, dict "
    "lookup digest -> (key id, scopes), one scope check, one GCRA window (20 per 10 s, the same "
    "admitting clock as keyguard's rows) and one fixed response header added. No checksum, "
    "expiry, revocation, problem body, request id: the least a guard doing the same job pays."
)


@dataclass(frozen=True)
class Variant:
    """One row: ``build()`` returns the app; ``baseline`` names the row it is compared with."""

    label: str
    build: Callable[[], Any]
    baseline: str | None = None
    request: str = GOOD
    status: int = 200
    #: Requests sent (answers discarded) once the app is built, before any check: to spend a
    #: rate limit so the row measures the 429 path.
    prime: int = 0
    #: The body the row answers must contain this (checked before and after timing).
    body_has: bytes = b""
    #: Response headers (lower-case names) the row must send / must not send.
    headers_has: tuple[str, ...] = ()
    headers_lack: tuple[str, ...] = ()
    note: str = ""


class Driver(Protocol):
    """Sends requests to an app of one kind (ASGI or WSGI) without any network."""

    def probe(self, app: Any, request: str) -> tuple[int, list[str], bytes]:
        """One request: the status, response header names (lower-case) and body."""

    def timed(self, app: Any, request: str, number: int) -> int:
        """Nanoseconds spent answering ``number`` requests of one kind."""


def parse_args(doc: str | None, *, number: int, repeat: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few requests, few repeats (seconds)"
    )
    parser.add_argument("--number", type=int, help=f"requests per timed run (default {number:,})")
    parser.add_argument("--repeat", type=int, help=f"timed runs per variant (default {repeat})")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--rows",
        metavar="TEXT[,TEXT...]",
        help="only the rows whose label contains one of these (case-insensitive), with their "
        "baselines: a quicker before/after run of the rows a change is about",
    )
    args = parser.parse_args()
    if args.rows is not None and not [t for t in args.rows.split(",") if t.strip()]:
        parser.error("--rows needs at least one piece of a row label")
    if args.number is None:
        args.number = 200 if args.quick else number
    if args.repeat is None:
        args.repeat = 3 if args.quick else repeat
    if args.number < 1 or args.repeat < 1:
        parser.error("--number and --repeat must be at least 1")
    return args


def select(variants: Sequence[Variant], rows: str | None) -> list[Variant]:
    """The variants whose label contains one of the comma-separated ``rows`` (case-insensitive),
    with every baseline they are compared with, in their original order; all of them when
    ``rows`` is None. Raises :class:`BenchmarkError` when nothing matches."""
    if rows is None:
        return list(variants)
    wanted = [t.strip().lower() for t in rows.split(",") if t.strip()]
    by_label = {v.label: v for v in variants}
    keep = {v.label for v in variants if any(t in v.label.lower() for t in wanted)}
    if not keep:
        raise BenchmarkError(f"no row label contains any of {wanted}")
    for label in list(keep):
        baseline = by_label[label].baseline
        while baseline is not None and baseline in by_label:
            keep.add(baseline)
            baseline = by_label[baseline].baseline
    return [v for v in variants if v.label in keep]


def run(
    group: str,
    title: str,
    variants: Sequence[Variant],
    driver: Driver,
    *,
    number: int,
    repeat: int,
    keys: Keys,
    json_path: str | None = None,
    skipped: Sequence[str] = (),
    clients: int = CLIENTS,
) -> dict[str, Any]:
    """Check, warm and time ``variants``; print the table; return the group's JSON (and
    write it when ``json_path`` is given). ``skipped``: notes on rows left out (a peer that is
    not installed), printed and kept in the JSON."""
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise BenchmarkError("two variants share a label")
    for v in variants:
        if v.baseline is not None and v.baseline not in labels:
            raise BenchmarkError(f"{v.label!r}: unknown baseline {v.baseline!r}")
        if v.request not in REQUESTS:
            raise BenchmarkError(f"{v.label!r}: unknown request kind {v.request!r}")

    env = environment()
    print(f"keyguard — {title}: in-process per-request cost, µs per request")
    print(describe(env))
    print(
        f"{number:,} requests per run x {repeat} runs per variant, round-robin; "
        "overhead = variant - baseline, same run"
    )
    for note in skipped:
        print(f"skipped: {note}")
    print()

    apps = {v.label: v.build() for v in variants}
    for v in variants:
        for _ in range(v.prime):
            driver.probe(apps[v.label], v.request)
    _check(variants, apps, driver, "before timing")
    warm = min(number, 1_000)
    for v in variants:
        driver.timed(apps[v.label], v.request, warm)
    reads = keys.store.reads

    rows = {
        v.label: Row(v.label, baseline=v.baseline, status=v.status, note=v.note) for v in variants
    }
    count = len(variants)
    for r in range(repeat):
        for i in range(count):
            v = variants[(i + r) % count]
            gc.collect()
            ns = driver.timed(apps[v.label], v.request, number)
            rows[v.label].runs.append(ns / number / 1_000)

    # Still answering as expected after thousands of requests (no rate limit hit, no cache
    # expiry), and keyguard never went back to the store: every timed request was a cache hit.
    _check(variants, apps, driver, "after timing")
    if keys.store.reads != reads:
        raise BenchmarkError(
            f"keyguard read the store {keys.store.reads - reads} times while timed: "
            "the rows are not cache hits"
        )

    ordered = [rows[v.label] for v in variants]
    print_table(ordered)
    data = group_json(
        group,
        title,
        ordered,
        options={"number": number, "repeat": repeat, "clients": clients},
        facts={"skipped": list(skipped)},
        env=env,
    )
    if json_path:
        write_json(json_path, data)
        print(f"\nwrote {json_path}")
    return data


def _check(variants: Sequence[Variant], apps: dict[str, Any], driver: Driver, when: str) -> None:
    for v in variants:
        status, names, body = driver.probe(apps[v.label], v.request)
        if status != v.status:
            raise BenchmarkError(
                f"{v.label!r} answered {status} {when}, expected {v.status}: {body[:200]!r}"
            )
        if v.status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if answer != BODY:
                raise BenchmarkError(f"{v.label!r} answered an unexpected body {when}: {body!r}")
        if v.body_has not in body:
            raise BenchmarkError(
                f"{v.label!r} answered without {v.body_has!r} {when}: {body[:200]!r}"
            )
        missing = [h for h in v.headers_has if h not in names]
        extra = [h for h in v.headers_lack if h in names]
        if missing or extra:
            raise BenchmarkError(
                f"{v.label!r} {when}: headers {names}; missing {missing}, unexpected {extra}"
            )


def print_table(rows: Sequence[Row]) -> None:
    by_label = {r.label: r for r in rows}
    width = max(48, *(len(r.label) for r in rows))
    print(f"{'variant':<{width}}  status  {'min':>8}  {'median':>8}   overhead (min / median)")
    print("-" * (width + 70))
    notes: list[str] = []
    for r in rows:
        status = "" if r.status is None else str(r.status)
        text = f"{r.label:<{width}}  {status:>6}  {r.min:8.2f}  {r.median:8.2f}"
        base = by_label.get(r.baseline) if r.baseline else None
        if base is not None:
            text += (
                f"   {r.min - base.min:+7.2f} / {r.median - base.median:+7.2f}  "
                f"(x{r.min / base.min:.2f})  vs {r.baseline}"
            )
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            text += f"  ({notes.index(r.note) + 1})"
        print(text)
    if notes:
        print()
    for n, note in enumerate(notes, 1):
        print(f"({n}) {note}")
