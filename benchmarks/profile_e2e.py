"""Where a uvicorn worker's CPU goes, end to end: the ``e2e`` group's server for one app, under
the same load, sampled with py-spy.

Run: ``python benchmarks/profile_e2e.py [--app keyguard] [--seconds 8] [--keys 20000]``
(``--app`` is one of ``bare``, ``floor``, ``keyguard``, ``keyguard_ietf``; ``--raw PATH`` keeps
py-spy's samples, ``--json PATH`` writes the table). Needs py-spy (``pip install py-spy``) and
the right to trace the server (root, or ``kernel.yama.ptrace_scope`` 0), and wrk or the
Python load generator, as ``bench_e2e.py`` does.

The server is started and loaded exactly as in ``bench_e2e.py`` (one uvicorn worker pinned to
the first CPU, the load generator on the second, ``--keys`` keys round-robin). A first run
reads the worker's CPU time from ``/proc`` before and after ``--seconds`` of load: the
server's **CPU time per request**, exact whether or not the load saturates it. A second run of
the same load is sampled by py-spy with the native frames (``--native``), which pauses the
worker at every sample (so the first run is the one timed). Each sample is charged to the
innermost Python function on its stack (with the C code it was running): to keyguard (the
generated rate-limit code included), the hand-written floor, Starlette, uvicorn,
asyncio/uvloop, ``json`` or the rest. A component's share of the samples times the CPU time
per request is its cost per request. Then keyguard's (or the floor's) own functions, the
largest first.

Sampling is statistical: a few thousand samples put each share within about one percentage
point; compare apps in runs of the same length.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_e2e import APPS, PIDS, Generator, servers, write_keys

FACTORIES = {factory: label for label, factory in APPS.items() if factory != "slowapi"}

#: Components, in the order the table lists them, and how a Python frame's file names one.
COMPONENTS = ("keyguard", "floor", "app", "starlette", "uvicorn", "asyncio/uvloop", "json")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?):(?P<line>\d+)\)$")


def _generated(filename: str) -> bool:
    """Whether ``filename`` names code keyguard generates (the rate-limit decision and header
    renderers, ``<keyguard.ratelimit WindowPlan('burst=20/10s, ...')>``). py-spy shows a file
    from its last ``/`` on when it cannot place it under a path entry, so the name arrives
    cut inside the window spec (``day')>``): no other code this server runs has a name ending
    in ``>`` without its ``<``."""
    return filename.startswith("<keyguard.") or (filename.endswith(">") and "<" not in filename)


def component(filename: str) -> str:
    """The component a Python file belongs to (see :data:`COMPONENTS`), else ``other``."""
    if _generated(filename) or "/keyguard/" in filename or filename.startswith("keyguard/"):
        return "keyguard"
    if filename.endswith("_floor.py"):
        return "floor"
    if filename.endswith("_e2e_apps.py"):
        return "app"
    for name in ("starlette", "uvicorn"):
        if f"{name}/" in filename:
            return name
    if "asyncio/" in filename or "uvloop" in filename:
        return "asyncio/uvloop"
    if "json/" in filename:
        return "json"
    return "other"


def _python_frame(frame: str) -> tuple[str, str] | None:
    """(function, file) of a Python frame of py-spy's raw output, ``None`` for a native one
    (whose file is a C source or a shared object, or absent)."""
    match = _FRAME.match(frame)
    if match is None:
        return None
    file = match.group("file")
    if not (file.endswith(".py") or file.startswith("<") or _generated(file)):
        return None
    return match.group("function"), file


def charge(lines: Iterable[str]) -> tuple[Counter[str], Counter[str], int]:
    """Read py-spy's ``--format raw`` lines (``frame;frame;... count``, outermost first):
    samples per component and per guard function (``function (file)`` of keyguard's or the
    floor's), each sample charged to its innermost Python frame; and the sample count."""
    components: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        inner = None
        for frame in reversed(stack.split(";")):
            inner = _python_frame(frame)
            if inner is not None:
                break
        if inner is None:
            components["other"] += n
            continue
        function, file = inner
        name = component(file)
        components[name] += n
        if name in ("keyguard", "floor"):
            where = "generated" if _generated(file) else Path(file).name
            functions[f"{function} ({where})"] += n
    return components, functions, total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", choices=sorted(FACTORIES), default="keyguard")
    parser.add_argument("--seconds", type=float, default=8.0, help="sampled seconds (default 8)")
    parser.add_argument("--keys", type=int, default=20_000, help="keys (default 20,000)")
    parser.add_argument("--connections", type=int, default=32, help="connections (default 32)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--top", type=int, default=15, help="guard functions listed")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--raw", metavar="PATH", help="keep py-spy's raw samples here")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.seconds <= 0 or args.keys < 1 or args.connections < 1 or args.rate < 1:
        parser.error("--seconds, --keys, --connections and --rate must be positive")
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    if not os.path.exists("/proc/self/stat"):
        parser.error("needs Linux (/proc) to read the server's CPU time")
    kind = args.generator
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    label = FACTORIES[args.app]

    with tempfile.TemporaryDirectory() as tmp:
        keys_file = os.path.join(tmp, "keys.txt")
        raw_file = args.raw or os.path.join(tmp, "samples.txt")
        write_keys(keys_file, args.keys)
        generator = Generator(kind, keys_file, args.connections, load_cpu)
        try:
            with servers(keys_file, server_cpu, {label: args.app}) as ports:
                pid = PIDS[label]
                generator.run(ports[label], 2.0)  # warm up
                result: dict[str, Any] = {}
                # The CPU time per request, measured without the sampler: py-spy pauses the
                # worker at every sample to read its native stack, which changes the timing.
                load = threading.Thread(
                    target=lambda: result.update(generator.run(ports[label], args.seconds + 2))
                )
                load.start()
                time.sleep(1.0)
                cpu0, wall0 = cpu_seconds(pid), time.monotonic()
                time.sleep(args.seconds)
                cpu1, wall1 = cpu_seconds(pid), time.monotonic()
                load.join()
                if result.get("non2xx") or result.get("error_count"):
                    raise SystemExit(f"profile aborted: {label}: non-2xx answers or socket errors")
                # Then the shares, sampled under the same load.
                sampled: dict[str, Any] = {}
                load = threading.Thread(
                    target=lambda: sampled.update(generator.run(ports[label], args.seconds + 3))
                )
                load.start()
                time.sleep(1.0)
                spied = subprocess.run(
                    [spy, "record", "--pid", str(pid), "--duration", str(round(args.seconds)),
                     "--rate", str(args.rate), "--native", "--format", "raw",
                     "--output", raw_file],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                load.join()
        finally:
            generator.close()
        if spied.returncode != 0:
            raise SystemExit(f"py-spy failed (permission to trace?):\n{spied.stderr.strip()}")
        if sampled.get("non2xx") or sampled.get("error_count"):
            raise SystemExit(f"profile aborted: {label}: non-2xx answers or socket errors")
        with open(raw_file, encoding="utf-8", errors="replace") as f:
            components, functions, total = charge(f)
    if total == 0:
        raise SystemExit("profile aborted: py-spy recorded no samples")

    rps = result["rps"]
    busy = (cpu1 - cpu0) / (wall1 - wall0)
    per_request = (cpu1 - cpu0) / (rps * (wall1 - wall0)) * 1e6
    # Each figure below is a share of the samples times this CPU time per request.
    print(f"keyguard — where the server's CPU goes end to end: {label}")
    print(
        f"{args.keys:,} keys, {args.connections} connections ({kind}), {rps:,.0f} requests/s; "
        f"the worker busy {busy:.0%} of the time, {per_request:.1f} µs of CPU per request; "
        f"{total:,} samples over {args.seconds:g} s (a second run: py-spy slows the worker)"
    )
    print()
    print(f"{'component':<16} {'samples':>8} {'µs / request':>13}")
    rows = {}
    for name in (*COMPONENTS, "other"):
        share = components.get(name, 0) / total
        if share:
            rows[name] = {"share": share, "us_per_request": share * per_request}
            print(f"{name:<16} {share:8.1%} {share * per_request:13.1f}")
    if functions:
        print()
        print(f"the guard's own functions (the largest {args.top}):")
        for function, n in functions.most_common(args.top):
            print(f"  {n / total:6.1%} {n / total * per_request:6.2f} µs  {function}")
    if args.json:
        data = {
            "app": label,
            "requests_per_s": rps,
            "cpu_us_per_request": per_request,
            "busy": busy,
            "samples": total,
            "components": rows,
            "guard_functions": {k: v / total for k, v in functions.most_common(args.top)},
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
