"""What events and usage counting add to a request, against the same app with them off.

Run: ``python benchmarks/bench_observability.py`` (about a minute; ``--quick`` for a smoke
run, ``--json PATH`` to keep the figures). One key, one route (``GET /agents/{agent_id}``,
auth + scope + the platform's three rate-limit windows), driven in-process through keyguard's
ASGI middleware (one event loop, requests awaited back to back) and its WSGI middleware;
every variant is the same middleware over the same minimal app, repeats taken round-robin.
Times are the process's CPU time (``time.process_time``: every thread of this process, none of
the others'), so that a busy shared machine slows the figures less than it would wall time.

Rows, per middleware:

- ``observability off`` — the baseline (the verifier has no observer: one attribute check);
- ``usage counting`` — ``usage=True``: one in-memory count per request, flushed every 5 s;
- ``events (no sink wants requests) + usage`` — an emitter whose sinks only take refusals and
  key changes (a logging sink at INFO, say): per admitted request one set lookup;
- ``events + usage, request path`` — a sink that wants every request: the request records
  one tuple on the usage counter's queue (its ``authenticated`` event is made from that record
  later); the counter's tally and the emitter's dispatch are held back while timing (they
  would run on this core, under the GIL), so this row is what the request itself pays;
- ``events + usage, dispatch running`` — the same with the tally, the dispatch and the sink
  running as in production: the request's cost plus tallying, building and delivering every
  event, on the same core (what the process pays in CPU per request).

The issue's goal — events + usage add under 1 µs per request on the hot path — is judged on
the ``request path`` row against ``observability off`` (minimums, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from time import process_time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._inprocess import admitting_limiter
from benchmarks._results import Row, group_json, write_json
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.observability import Emitter, Event, EventKind, Observer, UsageCounter
from keyguard.stores.memory import MemoryStore

GROUP = "observability"
OFF = "observability off"
USAGE = "usage counting"
QUIET = "events (no sink wants requests) + usage"
PATH = "events + usage, request path"
RUNNING = "events + usage, dispatch running"
VARIANTS = (OFF, USAGE, QUIET, PATH, RUNNING)


class _Count:
    """A sink that wants every event and only counts them."""

    name = "count"

    def __init__(self, kinds: frozenset[EventKind] | None = None) -> None:
        self.kinds = kinds
        self.n = 0

    def __call__(self, event: Event) -> None:
        self.n += 1


def _observer(variant: str, store: MemoryStore) -> Observer | None:
    if variant == OFF:
        return None
    if variant == PATH:
        # No background work while timing: the counter tallies and the emitter dispatches
        # between repeats only (both large enough for a whole repeat).
        return Observer(
            events=Emitter([_Count()], capacity=10_000_000, interval=60),
            usage=UsageCounter(store, start=False, capacity=10_000_000),
        )
    usage = UsageCounter(store)
    if variant == USAGE:
        return Observer(usage=usage)
    if variant == QUIET:
        emitter = Emitter([_Count(frozenset({EventKind.DENIED, EventKind.KEY_REVOKED}))])
    else:
        emitter = Emitter([_Count()], capacity=10_000_000)
    return Observer(events=emitter, usage=usage)


class Bench:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.hasher = Hasher(pepper_from_env=False)
        generated = KeyFormat().generate()
        self.store.create(
            KeyRecord(
                key_id=generated.key_id,
                name="bench",
                digest=self.hasher.digest(generated.plaintext),
                scopes=frozenset({"agents:read"}),
            )
        )
        self.header = f"UserKey {generated.plaintext}"
        self.observers: dict[str, Observer] = {}
        self.loops: list[asyncio.AbstractEventLoop] = []

    def verifier(self, variant: str) -> Verifier:
        observer = _observer(variant, self.store)
        if observer is not None:
            self.observers[variant] = observer
        # As in the other in-process benchmarks: every timed request a cache hit, admitted by
        # the platform's three windows with the state of a busy key (benchmarks/_inprocess.py).
        return Verifier(
            self.store,
            policy=RoutePolicy({"GET /agents/{agent_id}": "agents:read"}),
            limiter=admitting_limiter(),
            hasher=self.hasher,
            cache_ttl=3600,
            negative_cache_ttl=3600,
            touch_interval=1e9,
            observer=observer,
        )

    def close(self) -> None:
        for observer in self.observers.values():
            observer.close()
        for loop in self.loops:
            loop.close()


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _asgi_timer(bench: Bench, variant: str) -> Callable[[int], float]:
    mw = KeyGuardMiddleware(_asgi_app, verifier=bench.verifier(variant))
    base = {
        "type": "http",
        "method": "GET",
        "path": "/agents/7",
        "headers": [(b"authorization", bench.header.encode())],
        "client": ("127.0.0.1", 5000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def loop(n: int) -> float:
        copy = base.copy
        started = process_time()
        for _ in range(n):
            await mw(copy(), receive, send)
        return process_time() - started

    runner = asyncio.new_event_loop()
    bench.loops.append(runner)
    return lambda n: runner.run_until_complete(loop(n))


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def _wsgi_timer(bench: Bench, variant: str) -> Callable[[int], float]:
    mw = KeyGuardWSGIMiddleware(_wsgi_app, verifier=bench.verifier(variant))
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/agents/7",
        "HTTP_AUTHORIZATION": bench.header,
        "REMOTE_ADDR": "127.0.0.1",
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def loop(n: int) -> float:
        copy = base.copy
        started = process_time()
        for _ in range(n):
            mw(copy(), start_response)
        return process_time() - started

    return loop


def measure(number: int, repeat: int) -> list[Row]:
    bench = Bench()
    rows: list[Row] = []
    try:
        for kind, make in (("ASGI", _asgi_timer), ("WSGI", _wsgi_timer)):
            timers = {v: make(bench, v) for v in VARIANTS}
            observers = dict(bench.observers)
            bench.observers.clear()
            by_variant = {
                v: Row(f"{kind}, {v}", baseline=None if v == OFF else f"{kind}, {OFF}")
                for v in VARIANTS
            }
            for timer in timers.values():
                timer(max(number // 10, 100))  # warm caches and the fast-path index
            for observer in observers.values():
                observer.flush()
            for _ in range(repeat):
                for variant, timer in timers.items():
                    seconds = timer(number)
                    by_variant[variant].runs.append(seconds / number * 1e6)
                    observer = observers.get(variant)
                    if observer is not None:
                        observer.flush()  # outside the timed loop
            rows += by_variant.values()
            bench.observers.update({f"{kind} {v}": o for v, o in observers.items()})
    finally:
        bench.close()
    return rows


def print_rows(rows: list[Row]) -> None:
    by_label = {r.label: r for r in rows}
    print(f"{'row':<52} {'min µs':>8} {'median':>8} {'+min µs':>8}")
    for r in rows:
        base = by_label.get(r.baseline) if r.baseline else None
        extra = f"{r.min - base.min:+8.3f}" if base is not None else ""
        print(f"{r.label:<52} {r.min:8.3f} {r.median:8.3f} {extra:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--number", type=int, default=20_000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=15, help="repeats per row")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    number, repeat = (2_000, 3) if args.quick else (args.number, args.repeat)
    rows = measure(number, repeat)
    print_rows(rows)
    if args.json:
        write_json(
            args.json,
            group_json(
                GROUP,
                "Observability: events and usage counting vs off",
                rows,
                options={"number": number, "repeat": repeat},
            ),
        )
    from benchmarks.goals import print_goals

    print_goals({GROUP: group_json(GROUP, "", rows)})


if __name__ == "__main__":
    main()
