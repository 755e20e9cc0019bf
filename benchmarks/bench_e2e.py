"""End to end: uvicorn serving bare Starlette, the hand-written guard (the floor), keyguard's
full default path (and the same with the IETF rate-limit fields only) and Starlette auth +
slowapi, under a load generator running in another
process, pinned to the other core.

Run: ``python benchmarks/bench_e2e.py`` (about three minutes; ``--quick`` for a smoke run of a
few seconds, ``--generator wrk|python``, ``--json PATH``). Needs uvicorn (the ``server``
extra); uses uvloop and httptools when installed (the ``bench`` extra installs them) and
``wrk`` when on PATH (``apt-get install wrk``), else the Python load generator
``_loadgen.py``.

* **Servers**: one uvicorn process per app (``--workers 1``, ``--loop uvloop --http
  httptools`` when available, no access log), all three started once and pinned to CPU 0
  (``os.sched_setaffinity``); an idle one costs nothing while another is measured.
* **Load**: ``wrk -t1 -cC -dD --latency`` (or ``_loadgen.py``) pinned to CPU 1, sending
  ``GET /agents`` with an ``Authorization`` value taken round-robin from K keys (a Lua
  ``request()`` hook; the same for every app, so the client's work is the same). K (default
  20,000) keeps every key under the platform's windows (20/10 s, 100/minute, 5,000/day) at
  the request rates of a 2-core machine: no 429 (the run aborts on any non-2xx answer).
* **Rounds**: every app is warmed (a short run), then measured ``--rounds`` times (default
  3), the order rotated each round. Rows: requests/s, p50 and p99 latency per round; the
  goals use the median over rounds of keyguard / bare. Also printed: each guard's cost per
  request under the server (``1/req/s`` minus bare's), keyguard's as a multiple of the
  floor's, which is the in-process goals' measure (overhead over the floor's) taken end to
  end: under a real server every guard costs several times what a tight in-process loop
  shows (cold caches between requests, 20,000 keys' state), the floor included.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _labels as L
from benchmarks._results import HIGHER, Row, describe, environment, group_json, write_json

ROOT = Path(__file__).resolve().parent.parent

APPS = {
    L.E_BARE: "bare",
    L.E_FLOOR: "floor",
    L.E_KG: "keyguard",
    L.E_KG_IETF: "keyguard_ietf",
    L.E_SLOWAPI: "slowapi",
}
try:
    import slowapi  # noqa: F401 - a peer from the bench extra
except ImportError:  # pragma: no cover - depends on the environment
    del APPS[L.E_SLOWAPI]
TITLE = "end to end under uvicorn"
#: label -> process id of each server :func:`servers` is running.
PIDS: dict[str, int] = {}

LUA = """
local keys = {}
for line in io.lines(os.getenv("KGBENCH_KEYS_FILE")) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", "/agents", {["Authorization"] = keys[i]})
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def server_options() -> list[str]:
    options = []
    try:
        import uvloop  # noqa: F401

        options += ["--loop", "uvloop"]
    except ImportError:
        options += ["--loop", "asyncio"]
    try:
        import httptools  # noqa: F401

        options += ["--http", "httptools"]
    except ImportError:
        options += ["--http", "h11"]
    return options


@contextlib.contextmanager
def servers(
    keys_file: str, cpu: int | None, apps: dict[str, str] | None = None
) -> Iterator[dict[str, int]]:
    """Start a uvicorn per app (label -> factory in ``_e2e_apps``, default :data:`APPS`);
    yield label -> port; stop them all. :data:`PIDS` maps each label to its process id while
    they run (one worker: the uvicorn process is the server)."""
    env = {**os.environ, "KGBENCH_KEYS_FILE": keys_file, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for label, factory in (APPS if apps is None else apps).items():
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"benchmarks._e2e_apps:{factory}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
                *server_options(),
            ]
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, preexec_fn=pinned(cpu)))
            ports[label] = port
            PIDS[label] = procs[-1].pid
        with open(keys_file, encoding="ascii") as f:
            first = f.readline().strip()
        for label, port in ports.items():
            wait_ready(port, first, label)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for label in ports:
            PIDS.pop(label, None)


def wait_ready(port: int, header: str, label: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/agents", headers={"Authorization": header})
            status = conn.getresponse().status
            conn.close()
        except OSError:
            time.sleep(0.2)
            continue
        if status != 200:
            raise SystemExit(f"benchmark aborted: {label} answered {status} to a good key")
        return
    raise SystemExit(f"benchmark aborted: {label} did not start within 120 s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and total):
        raise SystemExit(f"benchmark aborted: cannot read wrk's output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "requests": int(total.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "error_count": sum(int(x) for x in errors.groups()) if errors else 0,
    }


class Generator:
    def __init__(self, kind: str, keys_file: str, connections: int, cpu: int | None) -> None:
        self.kind = kind
        self.keys_file = keys_file
        self.connections = connections
        self.cpu = cpu
        self.lua = None
        if kind == "wrk":
            fd, self.lua = tempfile.mkstemp(suffix=".lua")
            with os.fdopen(fd, "w") as f:
                f.write(LUA)

    def run(self, port: int, duration: float) -> dict[str, Any]:
        env = {**os.environ, "KGBENCH_KEYS_FILE": self.keys_file}
        if self.kind == "wrk":
            assert self.lua is not None
            seconds = max(1, round(duration))
            command = [
                "wrk",
                "-t1",
                f"-c{self.connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                self.lua,
                f"http://127.0.0.1:{port}/agents",
            ]
        else:
            command = [
                sys.executable,
                str(ROOT / "benchmarks" / "_loadgen.py"),
                "127.0.0.1",
                str(port),
                "/agents",
                self.keys_file,
                str(duration),
                str(self.connections),
            ]
        proc = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=pinned(self.cpu),
            timeout=duration + 60,
        )
        if proc.returncode != 0:
            raise SystemExit(f"benchmark aborted: {command[0]} failed:\n{proc.stderr}")
        if self.kind == "wrk":
            return parse_wrk(proc.stdout)
        result = json.loads(proc.stdout)
        result["non2xx"] = sum(v for k, v in result["statuses"].items() if not k.startswith("2"))
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.lua is not None:
            os.unlink(self.lua)


def write_keys(path: str, count: int) -> None:
    from keyguard.core.keys import KeyFormat

    fmt = KeyFormat()
    with open(path, "w", encoding="ascii") as f:
        for _ in range(count):
            f.write(f"UserKey {fmt.generate().plaintext}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s")
    parser.add_argument("--rounds", type=int, help="measured rounds per app (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="connections (default 32)")
    parser.add_argument("--keys", type=int, help="keys the load rotates over (default 20,000)")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 10.0)
    count = args.keys or (2_000 if args.quick else 20_000)
    warm = 1.0 if args.quick else 2.0
    kind = args.generator
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH (apt-get install wrk), use --generator python")
    if rounds < 1 or duration <= 0 or count < 1 or args.connections < 1:
        parser.error("--rounds, --duration, --keys and --connections must be positive")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)

    env = environment()
    print(f"keyguard — {TITLE}")
    print(describe(env))
    import uvicorn

    if L.E_SLOWAPI not in APPS:
        print("skipped: the slowapi app (slowapi is not installed; pip install -e '.[bench]')")
    print(
        f"uvicorn {uvicorn.__version__} {' '.join(server_options())}, 1 worker, CPU "
        f"{server_cpu}; load: {kind}, 1 thread, {args.connections} connections, CPU {load_cpu}; "
        f"{count:,} keys; {rounds} round(s) of {duration:g} s per app"
    )
    rows: dict[str, Row] = {}
    for label in APPS:
        rows[f"{label}: requests/s"] = Row(f"{label}: requests/s", unit="req/s", better=HIGHER)
        rows[f"{label}: p50 latency"] = Row(f"{label}: p50 latency", unit="ms")
        rows[f"{label}: p99 latency"] = Row(f"{label}: p99 latency", unit="ms")
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = os.path.join(tmp, "keys.txt")
        write_keys(keys_file, count)
        generator = Generator(kind, keys_file, args.connections, load_cpu)
        try:
            with servers(keys_file, server_cpu) as ports:
                labels = list(APPS)
                for label in labels:
                    generator.run(ports[label], warm)
                for r in range(rounds):
                    for i in range(len(labels)):
                        label = labels[(i + r) % len(labels)]
                        result = generator.run(ports[label], duration)
                        if result["non2xx"] or result["error_count"]:
                            raise SystemExit(
                                f"benchmark aborted: {label}: {result['non2xx']} non-2xx "
                                f"answers, {result['error_count']} socket errors"
                            )
                        raw.append({"round": r, "app": label, **result})
                        rows[f"{label}: requests/s"].runs.append(result["rps"])
                        rows[f"{label}: p50 latency"].runs.append(result["p50_ms"])
                        rows[f"{label}: p99 latency"].runs.append(result["p99_ms"])
        finally:
            generator.close()

    print()
    width = max(len(label) for label in APPS)
    print(f"{'app':<{width}} {'req/s (median, per round)':<40} {'p50 ms':>8} {'p99 ms':>8}")
    for label in APPS:
        rps = rows[f"{label}: requests/s"]
        rounds_text = ", ".join(f"{x:,.0f}" for x in rps.runs)
        p50 = rows[f"{label}: p50 latency"].median
        p99 = rows[f"{label}: p99 latency"].median
        text = f"{rps.median:>9,.0f} ({rounds_text})"
        print(f"{label:<{width}} {text:<40} {p50:8.2f} {p99:8.2f}")
    bare = rows[f"{L.E_BARE}: requests/s"].median
    cost = {label: 1e6 / rows[f"{label}: requests/s"].median - 1e6 / bare for label in APPS}
    for label in APPS:
        if label != L.E_BARE:
            ratio = rows[f"{label}: requests/s"].median / bare
            print(
                f"{label}: {ratio:.2f} of bare's requests/s, "
                f"{cost[label]:+.1f} µs per request of server time"
            )
    if cost.get(L.E_FLOOR, 0) > 0:
        print(
            f"keyguard's cost per request under the server: {cost[L.E_KG] / cost[L.E_FLOOR]:.2f}x "
            "the hand-written floor's"
        )
    data = group_json(
        "e2e",
        TITLE,
        list(rows.values()),
        options={
            "rounds": rounds,
            "duration_s": duration,
            "connections": args.connections,
            "keys": count,
            "generator": kind,
            "server": server_options(),
            "server_cpu": server_cpu,
            "load_cpu": load_cpu,
        },
        facts={"runs": raw},
        env=env,
    )
    if args.json:
        write_json(args.json, data)
        print(f"\nwrote {args.json}")
    from benchmarks.goals import print_goals

    print_goals({"e2e": data})


if __name__ == "__main__":
    main()
