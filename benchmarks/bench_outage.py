"""What each rate-limit mode admits while Redis is out, measured through ``keyguard demo``.

Run: ``python benchmarks/bench_outage.py [--workers 2] [--requests 80]``. For each mode
(``local``, ``allow``, ``deny``) it starts ``keyguard demo --workers N`` with
``KEYGUARD_RATELIMIT_URL`` naming a Redis that is not there (connection refused, as when
Redis is down), sends ``--requests`` requests of one key at once over fresh connections (so
the kernel spreads them over the workers) and counts the answers. The key's burst quota is
20 per 10 s, so a shared limiter would admit 20.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

DEAD_REDIS = "redis://127.0.0.1:1/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url)  # noqa: S310 - a local http URL we built
    if key is not None:
        request.add_header("Authorization", f"UserKey {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def measure(mode: str, workers: int, requests: int, workdir: Path) -> dict[str, object]:
    port = free_port()
    db = workdir / f"{mode}.db"
    env = {
        **os.environ,
        "KEYGUARD_STORE_URL": f"sqlite:///{db}",
        "KEYGUARD_RATELIMIT_URL": DEAD_REDIS,
        "KEYGUARD_RATELIMIT_MODE": mode,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyguard", "demo", "--workers", str(workers), "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = None
        for line in proc.stdout:
            if "read-only key:" in line:
                key = line.split("read-only key:", 1)[1].strip()
                break
        assert key, "the demo printed no key"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while len(pids) < workers and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as reply:  # noqa: S310
                    pids.add(json.load(reply)["pid"])
            except OSError:
                time.sleep(0.1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda _: get(base + "/agents", key), range(requests)))
        counts = collections.Counter(statuses)
        return {"mode": mode, "workers": len(pids), "requests": requests, **dict(counts)}
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure(m, args.workers, args.requests, Path(tmp)) for m in ("local", "allow", "deny")
        ]
    print(f"Redis down, {args.requests} requests of one key (burst quota 20 per 10 s):")
    print(f"{'mode':<6} {'workers':>7} {'200':>5} {'429':>5} {'503':>5}")
    for r in rows:
        ok, limited, down = (r.get(status, 0) for status in (200, 429, 503))
        print(f"{r['mode']:<6} {r['workers']:>7} {ok:>5} {limited:>5} {down:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
