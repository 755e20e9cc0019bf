"""A small HTTP/1.1 keep-alive load generator, for machines without ``wrk``.

``python benchmarks/_loadgen.py HOST PORT PATH KEYS_FILE DURATION CONNECTIONS`` opens
CONNECTIONS connections, each sending ``GET PATH`` with the next Authorization value of
KEYS_FILE (round-robin over all of them), one request at a time per connection (no
pipelining), for DURATION seconds, and prints one JSON object: requests, statuses, errors,
requests/s and latency percentiles (ms). It runs on uvloop when installed. One Python process
drives far fewer requests per second than wrk: when it saturates its own core before the
server does, the ratios between apps shrink towards 1, so prefer wrk where it installs.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    deadline: float,
    latencies: list[int],
    statuses: collections.Counter[int],
    errors: list[str],
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        errors.append(f"connect: {exc}")
        return
    n = len(requests)
    i = offset
    clock = time.perf_counter_ns
    try:
        while time.monotonic() < deadline:
            start = clock()
            writer.write(requests[i % n])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            latencies.append(clock() - start)
            statuses[int(head[9:12])] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def run(
    host: str, port: int, path: str, keys_file: str, duration: float, connections: int
) -> dict[str, object]:
    with open(keys_file, encoding="ascii") as f:
        values = [line.strip() for line in f if line.strip()]
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {v}\r\n\r\n".encode()
        for v in values
    ]
    latencies: list[int] = []
    statuses: collections.Counter[int] = collections.Counter()
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + duration
    step = max(1, len(requests) // connections)
    await asyncio.gather(
        *(
            _connection(host, port, requests, c * step, deadline, latencies, statuses, errors)
            for c in range(connections)
        )
    )
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main() -> None:
    host, port, path, keys_file, duration, connections = sys.argv[1:7]
    coro = run(host, int(port), path, keys_file, float(duration), int(connections))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
