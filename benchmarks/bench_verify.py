"""Per-call cost of ``Verifier.authenticate`` on a cache hit and a cache miss, per store.

Run: ``python benchmarks/bench_verify.py`` (add ``--redis redis://127.0.0.1:6379/15`` to
include a Redis store when one is available). The hit path is compared with a bare SHA-256 of
the key measured in the same run; the goal is at most about 3× that.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import per_call_us, row
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores import from_url
from keyguard.stores.base import KeyStore


def issue(store: KeyStore, hasher: Hasher) -> str:
    g = KeyFormat().generate()
    store.create(
        KeyRecord(
            key_id=g.key_id,
            name="bench",
            digest=hasher.digest(g.plaintext),
            scopes=frozenset({"agents:read"}),
        )
    )
    return g.plaintext


def bench_store(label: str, store: KeyStore, baseline: tuple[float, float]) -> None:
    hasher = Hasher(pepper_from_env=False)
    key = issue(store, hasher)
    header = "UserKey " + key
    hot = Verifier(store, hasher=hasher, cache_ttl=3600, touch_interval=1e9)
    assert hot.authenticate(header).allowed
    print(
        row(
            f"{label}: authenticate, cache hit",
            per_call_us(lambda: hot.authenticate(header)),
            baseline,
        )
    )
    # A miss: no cache at all, every call reads the store and compares the digest.
    cold = Verifier(store, hasher=hasher, cache_ttl=0, touch_interval=1e9)
    assert cold.authenticate(header).allowed
    number = 2_000 if store.in_process else 500
    print(
        row(
            f"{label}: authenticate, cache miss",
            per_call_us(lambda: cold.authenticate(header), number=number, repeat=5),
            baseline,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", help="also measure a Redis store at this URL")
    args = parser.parse_args()
    key = KeyFormat().generate().plaintext
    baseline = per_call_us(lambda: hashlib.sha256(key.encode()).digest())
    print(row("baseline: hashlib.sha256(key).digest()", baseline))
    fmt = KeyFormat()
    print(row("KeyFormat.parse (format + checksum)", per_call_us(lambda: fmt.parse(key)), baseline))
    bench_store("memory://", from_url("memory://"), baseline)
    with tempfile.TemporaryDirectory() as tmp:
        store = from_url(f"sqlite:///{tmp}/bench.db")
        try:
            bench_store("sqlite://", store, baseline)
        finally:
            store.close()
    if args.redis:
        store = from_url(args.redis)
        try:
            bench_store("redis://", store, baseline)
        finally:
            store.close()


if __name__ == "__main__":
    main()
