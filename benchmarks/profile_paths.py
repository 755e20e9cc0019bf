"""Where keyguard's time goes on one path: cProfile over N in-process requests.

Run: ``python benchmarks/profile_paths.py [PATH] [--number N] [--top K]`` where PATH is one of
``full`` (Starlette + keyguard, the full default path), ``no-headers``, ``auth``, ``429``,
``401-unknown``, ``401-malformed``, ``403``, ``fastapi-dependency`` (the documented
``guard.require()``), ``fastapi-dependency-auth`` (the same without rate limits),
``fastapi-middleware``, ``wsgi-full``, a peer: ``fastapi-apikeyheader``, or a baseline:
``bare``, ``floor`` (the hand-written guard), ``fastapi-bare``, ``fastapi-floor-dependency``,
``wsgi-floor``.
Requests are built and sent exactly as in ``bench_asgi.py`` / ``bench_wsgi.py`` (same apps,
10,000 client addresses in turn). Prints the functions with the most time of their own
(``tottime``); profiling slows every call several times over: read shares, not microseconds.

``--breakdown`` times the full path's steps one by one instead. ``--bytecodes`` counts the
bytecode instructions each function executes per request (``sys.settrace`` opcode events over
``--number`` requests, default 50 in this mode): unlike a time it is the same on every machine
and every run, so two versions of the code compare exactly (the guard's own count, against the
floor's, is how far the code is from a hand-written guard in work done); ``--lines`` with it
lists the guard's own count line by line, with each line's text (the generated rate-limit
functions' lines included), to find which lines of a path cost what.
"""

from __future__ import annotations

import argparse
import cProfile
import linecache
import os
import pstats
import sys
from collections import Counter
from types import CodeType, FrameType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _labels as L
from benchmarks._inprocess import Keys

ASGI = {
    "bare": L.S_BARE,
    "floor": L.S_FLOOR,
    "fastapi-bare": L.F_BARE,
    "full": L.S_KG_FULL,
    "no-headers": L.S_KG_NO_HEADERS,
    "auth": L.S_KG_AUTH,
    "429": L.KG_429,
    "401-unknown": L.KG_401_UNKNOWN,
    "401-malformed": L.KG_401_MALFORMED,
    "403": L.KG_403,
    "fastapi-dependency": L.F_KG_DEPENDENCY,
    "fastapi-dependency-auth": L.F_KG_DEPENDENCY_AUTH,
    "fastapi-floor-dependency": L.F_FLOOR_DEPENDENCY,
    "fastapi-middleware": L.F_KG_MIDDLEWARE,
    "fastapi-apikeyheader": L.F_API_KEY,
}
WSGI = {"wsgi-full": L.W_KG_FULL, "wsgi-floor": L.W_FLOOR}


def breakdown(number: int) -> None:
    """The full path's steps timed one by one (µs per call, min of 7 runs), same process."""
    import asyncio
    import itertools
    import timeit

    from benchmarks._inprocess import (
        GOOD,
        MALFORMED,
        PATH,
        UNKNOWN,
        admitting_limiter,
        client_address,
    )
    from keyguard.adapters.asgi import KeyGuardCredentials, _with_headers, problem_messages
    from keyguard.core.ratelimit import DEFAULT_WINDOWS
    from keyguard.core.render import DEFAULT_RENDERER, request_id_from

    keys = Keys()
    good = keys.header[GOOD]
    full = keys.verifier(limiter=admitting_limiter())
    off = keys.verifier(limiter=admitting_limiter(), ietf_headers=False, legacy_headers=False)
    auth = keys.verifier(rate_limits=None)
    limiter = admitting_limiter()
    for verifier in (full, off, auth):
        verifier.verify(good, "GET", PATH)  # cached: the next calls take the fast path
    decision = full.verify_nowait(good, "GET", PATH)
    assert decision is not None
    assert decision.allowed
    principal = decision.principal
    assert principal is not None
    extra = decision.asgi_headers()
    loop = asyncio.new_event_loop()

    async def sink(message: Any) -> None:
        return None

    async def wrap_and_send(n: int) -> None:
        for _ in range(n):
            wrapped = _with_headers(sink, extra)
            await wrapped({"type": "http.response.start", "status": 200, "headers": []})
            await wrapped({"type": "http.response.body", "body": b"{}"})

    async def plain_send(n: int) -> None:
        for _ in range(n):
            await sink({"type": "http.response.start", "status": 200, "headers": []})
            await sink({"type": "http.response.body", "body": b"{}"})

    peers = itertools.cycle([(client_address(i), 5000) for i in range(10_000)])
    fresh = keys.verifier(limiter=admitting_limiter())

    async def unknown(n: int, header: str) -> None:
        for _ in range(n):
            await fresh.averify(header, "GET", PATH, peer=next(peers))

    denial = loop.run_until_complete(
        fresh.averify(keys.header[UNKNOWN], "GET", PATH, peer=next(peers))
    )

    def per(fn: Any) -> float:
        return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

    def per_async(coro: Any) -> float:
        runs = []
        for _ in range(7):
            start = timeit.default_timer()
            loop.run_until_complete(coro(number))
            runs.append(timeit.default_timer() - start)
        return min(runs) / number * 1e6

    steps = [
        ("verify_nowait, auth + scope only", per(lambda: auth.verify_nowait(good, "GET", PATH))),
        (
            "verify_nowait, full path (headers on)",
            per(lambda: full.verify_nowait(good, "GET", PATH)),
        ),
        (
            "verify_nowait, full path (headers off)",
            per(lambda: off.verify_nowait(good, "GET", PATH)),
        ),
        ("  of which: route match", per(lambda: full.match("GET", PATH))),
        ("  of which: fast-path index (_hot)", per(lambda: full._hot(good))),
        (
            "  of which: MemoryRateLimiter.hit, 3 windows",
            per(lambda: limiter.hit(principal.key_id, DEFAULT_WINDOWS)),
        ),
        ("Decision.asgi_headers() (5 rate-limit headers)", per(decision.asgi_headers)),
        ("KeyGuardCredentials(principal)", per(lambda: KeyGuardCredentials(principal))),
        (
            "send wrapper: build + start + body, minus plain sends",
            per_async(wrap_and_send) - per_async(plain_send),
        ),
        (
            "401 unknown id: averify, 10,000 addresses in turn",
            per_async(lambda n: unknown(n, keys.header[UNKNOWN])),
        ),
        (
            "401 malformed: averify, 10,000 addresses in turn",
            per_async(lambda n: unknown(n, keys.header[MALFORMED])),
        ),
        (
            "401 problem rendering (problem_messages)",
            per(lambda: problem_messages(DEFAULT_RENDERER, denial, request_id_from(None))),
        ),
    ]
    loop.close()
    width = max(len(name) for name, _ in steps)
    print(f"keyguard's full path, step by step ({number:,} calls x 7, min), µs per call\n")
    for name, us in steps:
        print(f"  {name:<{width}}  {us:6.2f}")


def _guard_code(filename: str) -> bool:
    """keyguard's own code (its modules and the code it generates) or the floor's."""
    return (
        "/keyguard/" in filename
        or filename.startswith("<keyguard")
        or filename.endswith("benchmarks/_floor.py")
    )


def _where(code: CodeType) -> str:
    name = code.co_filename
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if name.startswith("<"):
        pass  # code keyguard generates, named by what it was compiled for
    elif "/site-packages/" in name:
        name = name.rsplit("/site-packages/", 1)[1]
    elif name.startswith(root + os.sep):
        name = name[len(root) + 1 :]
    else:
        name = "python/" + os.path.basename(name)  # the standard library
    return f"{name}:{code.co_firstlineno} {code.co_qualname}"


def bytecodes(
    driver: Any, app: Any, request: str, number: int, top: int, lines: bool = False
) -> None:
    """Bytecode instructions executed per request: in all, by the guard, per function (with
    ``lines``: the guard's own, line by line, in source order)."""
    counts: Counter[CodeType] = Counter()
    per_line: Counter[tuple[CodeType, int]] = Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        own = lines and _guard_code(code.co_filename)

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[code] += 1
                if own:
                    per_line[code, frame.f_lineno or 0] += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        driver.timed(app, request, number)
    finally:
        sys.settrace(None)
    total = sum(counts.values()) / number
    own = sum(n for code, n in counts.items() if _guard_code(code.co_filename)) / number
    print(f"bytecode instructions per request, mean of {number:,}: {total:,.0f} in all, ")
    print(f"{own:,.0f} in the guard's own code (keyguard's or the floor's)\n")
    if lines:
        _by_line(per_line, number)
        return
    for code, n in counts.most_common(top):
        mark = "*" if _guard_code(code.co_filename) else " "
        print(f"  {n / number:8.1f} {mark} {_where(code)}")
    print("\n(* the guard's own code)")


def _by_line(per_line: Counter[tuple[CodeType, int]], number: int) -> None:
    """The guard's own bytecodes per request, function by function (the busiest first), each
    line in source order with its text (the generated functions' too: their source is
    registered with linecache)."""
    functions: Counter[CodeType] = Counter()
    for (code, _), n in per_line.items():
        functions[code] += n
    for code, n in functions.most_common():
        print(f"{n / number:8.1f}  {_where(code)}")
        for (c, line), m in sorted(per_line.items(), key=lambda item: item[0][1]):
            if c is code and m / number >= 0.05:
                text = linecache.getline(code.co_filename, line).strip() if line else ""
                print(f"  {m / number:6.1f}  {line:5d}  {text[:100]}")
        print()


def prepared(keys: Keys, label: str) -> tuple[Any, Any, Any]:
    """``(driver, app, variant)`` for the ``bench_asgi.py`` or ``bench_wsgi.py`` row named
    ``label`` (exactly): the app built and primed as the benchmark primes it, checked to
    answer the row's status, then 2,000 requests served. SystemExit for an unknown label (the
    known ones listed) or a wrong status."""
    from benchmarks.bench_asgi import ASGIDriver
    from benchmarks.bench_asgi import variants as asgi_variants
    from benchmarks.bench_wsgi import WSGIDriver
    from benchmarks.bench_wsgi import variants as wsgi_variants

    rows: dict[str, tuple[Any, Any]] = {v.label: (v, ASGIDriver) for v in asgi_variants(keys)[0]}
    rows.update({v.label: (v, WSGIDriver) for v in wsgi_variants(keys)})
    if label not in rows:
        raise SystemExit(f"unknown path {label!r}; known labels:\n  " + "\n  ".join(rows))
    variant, make = rows[label]
    driver = make(keys)
    app = variant.build()
    for _ in range(variant.prime):
        driver.probe(app, variant.request)
    status, _, body = driver.probe(app, variant.request)
    if status != variant.status:
        raise SystemExit(f"{label} answered {status}: {body[:200]!r}")
    driver.timed(app, variant.request, 2_000)
    return driver, app, variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", default="full", choices=[*ASGI, *WSGI])
    parser.add_argument("--number", type=int, help="requests (default 20,000; 50 with --bytecodes)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--breakdown", action="store_true", help="time the full path's steps one by one instead"
    )
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="count the bytecode instructions each function runs per request instead",
    )
    parser.add_argument(
        "--lines",
        action="store_true",
        help="with --bytecodes: the guard's own count line by line, with each line's text",
    )
    args = parser.parse_args()
    if args.number is not None and args.number < 1:
        parser.error("--number must be positive")
    if args.lines and not args.bytecodes:
        parser.error("--lines goes with --bytecodes")
    number = args.number or (50 if args.bytecodes else 20_000)
    if args.breakdown:
        breakdown(min(number, 5_000))
        return
    driver, app, variant = prepared(Keys(), ASGI.get(args.path) or WSGI[args.path])
    label = variant.label
    if args.bytecodes:
        print(f"{label}")
        bytecodes(driver, app, variant.request, number, args.top, args.lines)
        return
    profile = cProfile.Profile()
    profile.enable()
    driver.timed(app, variant.request, number)
    profile.disable()
    print(f"{label}: {number:,} requests\n")
    stats = pstats.Stats(profile).strip_dirs()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
