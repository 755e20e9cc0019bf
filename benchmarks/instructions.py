"""Machine instructions per request on one path, counted by valgrind's callgrind.

Run: ``python benchmarks/instructions.py PATH [PATH ...] [--number N] [--baseline PATH]``
where PATH is a path name of ``profile_paths.py`` (``bare``, ``floor``, ``full``,
``401-malformed``, ``wsgi-full``, ...), the exact label of a ``bench_asgi.py`` or
``bench_wsgi.py`` row (``"Starlette AuthenticationMiddleware: 401, unknown key (on_error)"``),
or ``observability-asgi-off``/``-on``, ``observability-wsgi-off``/``-on`` (the ``observability
off`` and ``events + usage, request path`` rows of ``bench_observability.py``).

Like ``profile_paths.py --bytecodes`` the count is the same on every run and every machine, so
two versions of the code compare exactly while the machine is busy; unlike it, it counts what
the interpreter and C code (hashing, formatting, allocation, the garbage collector) execute
too. It is not a time: code with many cache misses or mispredicted branches takes longer per
instruction (keyguard's full path is x2.1 the floor's overhead in instructions and x2.5 in
time). Each path runs in two fresh interpreters under callgrind, built and primed as the
benchmarks do, one of them serving ``N`` more requests (default 5,000); the difference over
``N`` is the count per request (start-up, imports and priming cancel out). Each interpreter
leaves with ``os._exit`` so that nothing run at exit (a usage counter's last tally) is
counted, and both collect their garbage before counting and use one string hash seed.
The collections the counted requests bring on are counted too, and when one falls inside the
window moves with small changes of the code (some 2,000 instructions per request either way
on the WSGI path, 2026-12-01): ``--gc-off`` disables the collector while counting, for an A/B
of the code's own work. Counts of different ``N`` do not compare (the same WSGI code: 37,725
per request over 5,000 requests, 44,559 over 12,000). The string hash seed is fixed (0), yet
one version of the code can sit a few hundred instructions off under one seed and not under
others (the 401 path, 2026-12-01: 54,038 under seed 0, 53,442–53,474 under seeds 1–3):
``--seeds 1,2,3`` counts under each and prints the mean, for a small A/B.
Needs ``valgrind`` (Debian: ``apt-get install valgrind``); some 20 s per path.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OBSERVABILITY = {
    "observability-asgi-off": ("asgi", "observability off"),
    "observability-asgi-on": ("asgi", "events + usage, request path"),
    "observability-wsgi-off": ("wsgi", "observability off"),
    "observability-wsgi-on": ("wsgi", "events + usage, request path"),
}

#: Requests served before counting, as profile_paths.prepared() serves them.
PRIME = 2_000


def _runner(path: str) -> Any:
    """A function serving ``n`` requests of ``path``, built and primed."""
    if path in OBSERVABILITY:
        from benchmarks import bench_observability as bo

        kind, variant = OBSERVABILITY[path]
        bench = bo.Bench()
        timer = (bo._asgi_timer if kind == "asgi" else bo._wsgi_timer)(bench, variant)
        timer(PRIME)
        return timer
    from benchmarks import profile_paths as pp
    from benchmarks._inprocess import Keys

    label = pp.ASGI.get(path) or pp.WSGI.get(path) or path
    driver, app, variant = pp.prepared(Keys(), label)
    return lambda n: driver.timed(app, variant.request, n)


def _serve(path: str, number: int, gc_off: bool = False) -> None:
    run = _runner(path)
    # Both interpreters start counting from the same heap: nothing left for the collector.
    gc.collect()
    if gc_off:
        gc.disable()
    if number:
        run(number)
    sys.stdout.flush()
    os._exit(0)


def _collected(path: str, number: int, gc_off: bool = False, seed: int = 0) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),
        "--serve",
        path,
        str(number),
        *(["--gc-off"] if gc_off else []),
    ]
    # One string hash seed for both runs: the same dict layouts, the same probes.
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{path}: valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(
    path: str, number: int, gc_off: bool = False, seeds: tuple[int, ...] = (0,)
) -> float:
    """Instructions per request of ``path`` (see the module docstring): the mean over the
    string hash ``seeds``, each a pair of interpreters run with that ``PYTHONHASHSEED``."""
    counts = [
        (_collected(path, number, gc_off, seed) - _collected(path, 0, gc_off, seed)) / number
        for seed in seeds
    ]
    return sum(counts) / len(counts)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or any(not 0 <= seed <= 4294967295 for seed in seeds):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated hash seeds from 0 to 4294967295, got {text!r}"
        )
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="paths or row labels (see the module doc)")
    parser.add_argument("--number", type=int, default=5_000, help="requests counted (5,000)")
    parser.add_argument("--baseline", help="a path whose count the others are shown over")
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="the garbage collector disabled while counting: the code's own work, without "
        "the collections its allocations bring on (whose timing a small change can shift)",
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=(0,),
        help="comma-separated string hash seeds (PYTHONHASHSEED) to count under, the mean "
        "printed (default 0): one version of the code can sit a few hundred instructions off "
        "under one seed, so a small A/B is best read over several",
    )
    parser.add_argument("--serve", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]), args.gc_off)
        return
    if not args.paths:
        parser.error("name at least one path")
    if args.number < 1:
        parser.error("--number must be positive")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    seeds = args.seeds
    base = per_request(args.baseline, args.number, args.gc_off, seeds) if args.baseline else None
    if base is not None:
        print(f"{args.baseline:<60} {base:>10,.0f}  (baseline)")
    for path in args.paths:
        count = per_request(path, args.number, args.gc_off, seeds)
        over = "" if base is None else f"  {count - base:>+10,.0f}"
        print(f"{path:<60} {count:>10,.0f}{over}")
    gc_note = ", the garbage collector off" if args.gc_off else ""
    seed_note = (
        f", mean of hash seeds {','.join(map(str, seeds))}" if seeds != (0,) else ", hash seed 0"
    )
    print(
        f"\n(machine instructions per request, callgrind, {args.number:,} requests"
        f"{gc_note}{seed_note})"
    )


if __name__ == "__main__":
    main()
