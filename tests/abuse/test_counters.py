"""The detectors' counter primitive: one contract run against memory, SQLite and Redis, the
window semantics, atomicity across threads and processes, and choosing a backend by URL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyguard.core.detector_counters import (
    DetectorCounters,
    MemoryDetectorCounters,
    Window,
    check_name,
)
from keyguard.core.errors import ConfigurationError
from keyguard.stores.detector_counters import detector_counters_from_url
from keyguard.stores.sqlite_detector_counters import SQLiteDetectorCounters

T0 = 1_900_000_800.0  # a multiple of every window used here
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DetectorCounters]:
    backend: DetectorCounters
    if request.param == "memory":
        backend = MemoryDetectorCounters()
    elif request.param == "sqlite":
        backend = SQLiteDetectorCounters(tmp_path / "counters.db")
    else:
        backend = detector_counters_from_url(request.getfixturevalue("redis_url"))
    try:
        yield backend
    finally:
        backend.close()


# -- windows ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"seconds": 0}, "between 1 ms", id="zero"),
        pytest.param({"seconds": -5}, "between 1 ms", id="negative"),
        pytest.param({"seconds": float("inf")}, "between 1 ms", id="infinite"),
        pytest.param({"seconds": True}, "between 1 ms", id="bool"),
        pytest.param({"seconds": 400 * 86400}, "between 1 ms", id="too-long"),
        pytest.param({"seconds": 60, "keep": 3}, "fixed windows only", id="keep-sliding"),
        pytest.param({"seconds": 60, "fixed": True, "keep": 0}, "keep must", id="keep-zero"),
        pytest.param({"seconds": 60, "fixed": True, "keep": 65}, "keep must", id="keep-big"),
    ],
)
def test_bad_windows_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Window(**kwargs)  # type: ignore[arg-type]


def test_window_geometry() -> None:
    sliding = Window(80)
    assert (sliding.width, sliding.ring, sliding.tag, sliding.ttl) == (10.0, 8, "s80000", 80.0)
    assert sliding.span(T0 + 25) == (sliding.index(T0) - 5, sliding.index(T0) + 2)
    fixed = Window(60, fixed=True, keep=3)
    assert (fixed.width, fixed.ring, fixed.tag, fixed.ttl) == (60.0, 3, "f60000", 180.0)
    assert fixed.span(T0 + 59) == (fixed.index(T0),) * 2


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a{b}", "a\tb", "é", "x" * 201, "a\nb", "a}"],
    ids=["empty", "space", "braces", "tab", "non-ascii", "long", "newline", "brace"],
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="counter name"):
        check_name(name)
    with pytest.raises(ConfigurationError, match="counter name"):
        MemoryDetectorCounters().add(name, Window(60), T0)


# -- the contract -----------------------------------------------------------------------------
def test_add_counts_and_reads_back(counters: DetectorCounters) -> None:
    w = Window(80)
    assert counters.count("c:a", w, T0) == 0
    assert [counters.add("c:a", w, T0 + i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert counters.add("c:a", w, T0 + 5, amount=10) == 15
    assert counters.count("c:a", w, T0 + 5) == 15
    assert counters.add("c:a", w, T0 + 6, amount=0) == 15
    assert counters.count("c:b", w, T0 + 5) == 0  # names are separate
    assert counters.count("c:a", Window(40), T0 + 5) == 0  # and so are windows


def test_a_sliding_window_forgets_after_seven_eighths_to_one_window(
    counters: DetectorCounters,
) -> None:
    w = Window(80)  # buckets of 10 s
    counters.add("s", w, T0 + 1)  # in the bucket [T0, T0 + 10)
    counters.add("s", w, T0 + 15)  # in [T0 + 10, T0 + 20)
    assert counters.count("s", w, T0 + 70) == 2  # 69 s later: still within 7/8 of the window
    assert counters.count("s", w, T0 + 79.9) == 2
    assert counters.count("s", w, T0 + 80) == 1  # the first bucket left the window
    assert counters.count("s", w, T0 + 89.9) == 1
    assert counters.count("s", w, T0 + 90) == 0
    # Counting again after a long pause starts from zero.
    assert counters.add("s", w, T0 + 1000) == 1


def test_nothing_older_than_the_window_is_ever_counted(counters: DetectorCounters) -> None:
    w = Window(8)
    for i in range(40):  # one per second
        total = counters.add("n", w, T0 + i)
        assert 7 <= total <= 8 or i < 7
        assert total <= min(i + 1, 8)


def test_fixed_periods_and_reading_the_last_one(counters: DetectorCounters) -> None:
    w = Window(60, fixed=True, keep=3)
    assert [counters.add("f", w, T0 + s) for s in (1, 30, 59)] == [1, 2, 3]
    assert counters.add("f", w, T0 + 60) == 1  # a new period
    assert counters.add("f", w, T0 + 119) == 2
    assert counters.count("f", w, T0 + 30) == 3  # the periods before stay readable
    assert counters.count("f", w, T0 + 150) == 0
    counters.add("f", w, T0 + 121)
    assert counters.count("f", w, T0 + 5) == 3
    assert counters.count("f", w, T0 + 65) == 2


def test_concurrent_adds_each_see_a_distinct_total(counters: DetectorCounters) -> None:
    w = Window(600)
    seen: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [counters.add("race", w, T0 + 1) for _ in range(50)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 201))


def test_amount_must_be_a_count(counters: DetectorCounters) -> None:
    for amount in (-1, True, 1.5):
        with pytest.raises(ConfigurationError, match="amount"):
            counters.add("a", Window(60), T0, amount=amount)  # type: ignore[arg-type]


# -- in process -------------------------------------------------------------------------------
def test_memory_counters_are_bounded_least_recently_used_first() -> None:
    counters = MemoryDetectorCounters(max_counters=100)
    w = Window(600)
    counters.add("kept", w, T0)
    for i in range(10_000):
        counters.add(f"flood:{i}", w, T0)
        if i % 50 == 0:
            counters.add("kept", w, T0)  # used recently: survives the flood
    assert len(counters) == 100
    assert counters.count("kept", w, T0) == 201
    assert counters.count("flood:0", w, T0) == 0  # forgotten: under-counts, never over
    assert "max=100" in repr(counters)
    with pytest.raises(ConfigurationError):
        MemoryDetectorCounters(max_counters=0)


def test_a_late_event_counts_in_its_own_bucket_when_still_in_the_ring() -> None:
    counters = MemoryDetectorCounters()
    w = Window(80)
    counters.add("late", w, T0 + 50)
    # 5 s late: counted in its own bucket; the count "at" its time excludes what came after.
    assert counters.add("late", w, T0 + 45) == 1
    assert counters.add("late", w, T0 - 100) == 0  # far too late: dropped
    assert counters.count("late", w, T0 + 50) == 2


# -- across processes -------------------------------------------------------------------------
_CHILD = """
import sys
from keyguard.core.detector_counters import Window
from keyguard.stores.detector_counters import detector_counters_from_url
counters = detector_counters_from_url(sys.argv[1])
totals = [counters.add("shared", Window(600), 1_900_000_801.0) for _ in range(100)]
counters.close()
print(" ".join(map(str, totals)))
"""


def _two_processes(url: str) -> list[int]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    # Every child is waited for before anything is asserted: none is left running.
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    return sorted(int(x) for out in outputs for x in out.split())


@pytest.mark.slow
def test_sqlite_counters_are_shared_by_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert _two_processes(url) == list(range(1, 201))
    with SQLiteDetectorCounters.from_url(url) as again:
        assert again.count("shared", Window(600), T0 + 1) == 200


@pytest.mark.redis
@pytest.mark.slow
def test_redis_counters_are_shared_by_processes(redis_url: str) -> None:
    assert _two_processes(redis_url) == list(range(1, 201))


@pytest.mark.redis
def test_redis_counters_expire_and_keep_a_bounded_hash(redis_url: str) -> None:
    import redis

    counters = detector_counters_from_url(redis_url)
    assert counters.shared
    client = redis.Redis.from_url(redis_url.partition("?")[0])
    try:
        w = Window(80)
        for i in range(200):
            counters.add("ring", w, T0 + i)
        key = counters.key("ring", w)  # type: ignore[attr-defined]
        assert client.hlen(key) <= 8  # old buckets are deleted as new ones come
        assert 0 < client.pttl(key) <= 81_000
    finally:
        client.close()
        counters.close()


def test_sqlite_counters_purge_expired_rows(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "purge.db"
    with SQLiteDetectorCounters(path) as counters:
        for i in range(50):
            counters.add(f"old:{i}", Window(10), T0)
        counters.add("new", Window(10), T0 + 3600)  # an hour later: the old rows expired
        conn = sqlite3.connect(path)
        try:
            (rows,) = conn.execute("SELECT COUNT(*) FROM keyguard_detector_counters").fetchone()
        finally:
            conn.close()
    assert rows == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# -- by URL -----------------------------------------------------------------------------------
def test_counters_by_url(tmp_path: Path) -> None:
    assert isinstance(detector_counters_from_url("memory://"), MemoryDetectorCounters)
    sqlite = detector_counters_from_url(f"sqlite:///{tmp_path / 'k.db'}?timeout=3")
    assert isinstance(sqlite, SQLiteDetectorCounters)
    assert sqlite.shared
    sqlite.close()
    for bad in ("nope://x", "keys.db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigurationError):
            detector_counters_from_url(bad)
    with pytest.raises(ConfigurationError, match="directory"):
        SQLiteDetectorCounters(tmp_path / "missing" / "k.db")


@pytest.mark.redis
def test_redis_counters_take_the_store_url_and_its_options(redis_url: str) -> None:
    counters = detector_counters_from_url(redis_url + "&timeout=0.25&max_audit=10")
    try:
        assert counters.socket_timeout == 0.25  # type: ignore[attr-defined]
        assert counters.add("opt", Window(60), T0) == 1
    finally:
        counters.close()
    with pytest.raises(ConfigurationError, match="timeout"):
        detector_counters_from_url(redis_url + "&timeout=soon")
