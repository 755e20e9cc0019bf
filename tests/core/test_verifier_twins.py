"""The async skin answers and acts exactly as the sync one.

Every scenario below runs three times, each on a fresh twin world (same keys, same fake
clocks): through ``verify()``/``authenticate()``, through ``averify()``/``aauthenticate()``, and
through ``verify_nowait()`` first (as the ASGI middleware calls it) with ``averify()`` when it
stands aside. The traces must be identical: each decision (status, code, detail, headers,
principal), every store call in order, the brute-force guard's and the lookup budget's state,
the cache counters and the warnings logged. The sync skin's own tests pin down what the
answers are; these pin the async skin and the no-await shortcut to it, so that a change to one
twin alone (they are kept in step by hand) cannot pass. A few facts only the async skin has are
asserted directly: a store that is not in-process is called off the event loop's thread, an
in-process one on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.decision import Decision
from keyguard.core.errors import ConflictError, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.policy import PUBLIC, RoutePolicy, Rule
from keyguard.core.ratelimit import MemoryRateLimiter, parse_windows
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import Requirement, all_of, any_of, as_requirement
from keyguard.core.verifier import Verifier
from keyguard.observability import Emitter, ListSink, Observer, UsageCounter
from keyguard.observability.usage import UsageBatch
from keyguard.stores.memory import MemoryStore

PEPPER = "p" * 32
T0 = 1_700_000_000.0
POLICY = RoutePolicy(
    [
        Rule("GET", "/agents", all_of("agents:read")),
        Rule("POST", "/agents", all_of("agents:write")),
        Rule("GET", "/open", PUBLIC),
        Rule("GET", "/free", all_of("agents:read"), rate_limited=False),
        Rule("GET", "/heavy", all_of("agents:read"), cost=3),
    ]
)
INSIDE = ("198.51.100.9", 1234)
PEER = ("203.0.113.7", 4000)
OTHER_PEER = ("203.0.113.8", 4000)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Store(MemoryStore):
    """A memory store that logs every call (in order, whichever skin made it), can fail each
    kind of call, and notes on which thread each ran."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, ...]] = []
        self.down = False
        self.update_error: Exception | None = None
        self.touch_error: Exception | None = None
        self.loop_thread: threading.Thread | None = None
        self.off_loop: list[tuple[str, bool]] = []  # (call, ran off the loop's thread)

    def _where(self, call: str) -> None:
        if self.loop_thread is not None:
            self.off_loop.append((call, threading.current_thread() is not self.loop_thread))

    def get(self, key_id: str) -> KeyRecord | None:
        self.ops.append(("get", key_id))
        self._where("get")
        if self.down:
            raise StoreUnavailable("connection refused")
        return super().get(key_id)

    def update(self, record: KeyRecord, **kw: Any) -> None:
        self.ops.append(("update", record.key_id, record.digest.split("$")[0]))
        self._where("update")
        if self.update_error is not None:
            raise self.update_error
        super().update(record, **kw)

    def touch(self, key_id: str, at: float) -> None:
        self.ops.append(("touch", key_id, at))
        self._where("touch")
        if self.touch_error is not None:
            raise self.touch_error
        super().touch(key_id, at)

    def add_usage(self, batches: Sequence[UsageBatch], **kw: Any) -> None:
        for batch in batches:
            self.ops.append(("add_usage", batch.key_id, repr(sorted(batch.counts.items()))))
        super().add_usage(batches, **kw)

    def get_setting(self, name: str) -> str | None:
        self.ops.append(("get_setting", name))
        if self.down:
            raise StoreUnavailable("connection refused")
        return super().get_setting(name)

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        self.ops.append(("set_setting", name))
        if self.down:
            raise StoreUnavailable("connection refused")
        return super().set_setting(name, value, only_if_absent=only_if_absent)


class RemoteStore(Store):
    """The same, declared not in-process (as SQLite and Redis are): async callers must not
    block the event loop on it. Like a third-party store written against the protocol alone,
    it does not tell this process's caches about its own writes: the verifier must forget a
    record it re-hashed itself."""

    in_process = False

    def _changed(self, key_id: str) -> None:
        pass


def _material() -> dict[str, tuple[Any, str]]:
    """The keys (and a wrong secret for each id), the same in every twin world."""
    fmt = KeyFormat()
    names = ["reader", "writer", "narrow", "revoked", "expired", "suspended", "fenced"]
    names += ["own-limit", "owned", "unknown", "unknown-2"]
    material = {}
    for name in names:
        g = fmt.generate()
        material[name] = (g, fmt.generate(g.key_id).plaintext)
    return material


MATERIAL = _material()


@dataclass
class World:
    store: Store
    verifier: Verifier
    wall: Clock
    mono: Clock
    guard: BruteForceGuard | None
    budget: LookupBudget | None
    headers: dict[str, Any] = field(default_factory=dict)
    sink: ListSink | None = None
    emitter: Emitter | None = None
    usage: UsageCounter | None = None


def build(
    *,
    remote: bool = False,
    down_at_start: bool = False,
    migrating: bool = False,
    observed: bool | str = False,
    **options: Any,
) -> World:
    """Keys of every kind the scenarios use, then a verifier over them (fake clocks)."""
    store: Store = RemoteStore() if remote else Store()
    wall, mono = Clock(T0), Clock(1_000.0)
    plain = Hasher(pepper_from_env=False)
    headers: dict[str, Any] = {}

    def issue(name: str, *scopes: str, hasher: Hasher = plain, **fields: Any) -> None:
        g, wrong = MATERIAL[name]
        fields.setdefault("created_at", T0 - 3600)
        store.create(
            KeyRecord(
                key_id=g.key_id,
                digest=hasher.digest(g.plaintext),
                scopes=frozenset(scopes),
                name=name,
                **fields,
            )
        )
        headers[name] = f"UserKey {g.plaintext}"
        headers[name + "-wrong"] = f"UserKey {wrong}"

    hasher = Hasher(PEPPER, pepper_from_env=False, accept_unpeppered=True) if migrating else plain
    issue("reader", "agents:read")
    issue("writer", "agents:read", "agents:write")
    issue("narrow", "tasks:read")
    issue("revoked", "agents:read", revoked_at=T0 - 60)
    issue("expired", "agents:read", expires_at=T0 + 5)
    issue("suspended", "agents:read", suspended_at=T0 - 60)
    issue("fenced", "agents:read", allowed_networks=("198.51.100.0/24",))
    issue("own-limit", "agents:read", rate_limit="2/minute")
    issue("owned", "agents:read", owner="acme")
    headers["unknown"] = f"UserKey {MATERIAL['unknown'][0].plaintext}"
    headers["unknown-2"] = f"UserKey {MATERIAL['unknown-2'][0].plaintext}"
    headers["malformed"] = "UserKey not-a-key"
    headers["bearer"] = "Bearer abc"
    headers["missing"] = None
    headers["bytes-reader"] = headers["reader"].encode()
    headers["two"] = [headers["reader"], headers["writer"]]
    store.ops.clear()
    store.down = down_at_start
    guard = options.pop("guard", BruteForceGuard(4, 60.0, clock=mono))
    budget = options.pop("budget", LookupBudget(3, 60.0, clock=mono))
    options.setdefault("policy", POLICY)
    options.setdefault("rate_limits", "3/10s, 5/minute")
    if options["rate_limits"] is not None:
        options.setdefault("limiter", MemoryRateLimiter(clock=wall))
    sink = emitter = usage = None
    if observed:
        sink = ListSink()
        emitter = Emitter([sink])
        if observed == "usage":
            usage = UsageCounter(store, start=False, clock=wall)
        options["observer"] = Observer(events=emitter, usage=usage, clock=wall)
    verifier = Verifier(
        store,
        hasher=hasher,
        clock=wall,
        monotonic=mono,
        brute_force=guard,
        unknown_id_budget=budget,
        cache_ttl=options.pop("cache_ttl", 5.0),
        negative_cache_ttl=options.pop("negative_cache_ttl", 5.0),
        touch_interval=options.pop("touch_interval", 30.0),
        **options,
    )
    return World(store, verifier, wall, mono, guard, budget, headers, sink, emitter, usage)


# -- steps ---------------------------------------------------------------------------------------
# ("req", header, method, path, kwargs)   verify / averify / verify_nowait first
# ("auth", header, kwargs)                authenticate / aauthenticate
# ("tick", seconds)                       both clocks move on
# ("store", attribute, value)             e.g. the store goes down
# ("invalidate",)                         the verifier forgets every cached key
# ("create", name)                        the store creates the key MATERIAL[name]
# ("update", name, fields)                the store updates that key's record
Step = tuple[Any, ...]


def req(header: str, path: str = "/agents", method: str = "GET", **kw: Any) -> Step:
    return ("req", header, method, path, kw)


def auth(header: str, **kw: Any) -> Step:
    return ("auth", header, kw)


def tick(seconds: float) -> Step:
    return ("tick", seconds)


def summary(decision: Decision) -> tuple[Any, ...]:
    principal = decision.principal
    return (
        decision.allowed,
        decision.status,
        decision.code,
        decision.detail,
        decision.retry_after,
        decision.required,
        tuple(decision.headers),
        None if principal is None else (principal.key_id, principal.record.name),
        None if principal is None else tuple(sorted(principal.grants.scopes)),
    )


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        traceback = " (with traceback)" if record.exc_info else ""
        self.messages.append(f"{record.levelname} {record.getMessage()}{traceback}")


@contextmanager
def captured() -> Iterator[Warnings]:
    handler = Warnings()
    loggers = [logging.getLogger(n) for n in ("keyguard.verifier", "keyguard.pepper")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def state(
    w: World, decision: Decision | None, log: Warnings, summarized: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    if w.usage is not None:
        assert w.usage.flush()  # admitted requests' events come through the usage tally
    ops = tuple(w.store.ops)
    w.store.ops.clear()
    messages = tuple(log.messages)
    log.messages.clear()
    addresses = [INSIDE[0], PEER[0], OTHER_PEER[0], "192.0.2.1"]
    stats = w.verifier.cache_stats()
    events: tuple[Any, ...] = ()
    if w.sink is not None and w.emitter is not None:
        assert w.emitter.flush()
        events = tuple(
            (e.kind, e.code, e.key_id, e.route, e.method, e.status, e.client, e.reason)
            for e in w.sink.events
        )
        w.sink.clear()
    return (
        events,
        summarized if summarized is not None else None if decision is None else summary(decision),
        ops,
        messages,
        None if w.guard is None else tuple(w.guard.is_blocked(a) for a in addresses),
        None
        if w.budget is None
        else tuple(sorted((k, round(v[0], 6)) for k, v in w.budget._buckets.items())),
        (stats.index_hits, stats.hits, stats.misses, stats.records, stats.unknown, stats.indexed),
    )


def plain_step(w: World, step: Step) -> bool:
    """Apply a step that is not a request; ``False`` if it is one."""
    kind = step[0]
    if kind == "tick":
        w.wall.now += step[1]
        w.mono.now += step[1]
    elif kind == "store":
        setattr(w.store, step[1], step[2])
    elif kind == "invalidate":
        w.verifier.invalidate()
    elif kind == "create":  # a key whose id the scenario used as unknown comes to exist
        g, _ = MATERIAL[step[1]]
        w.store.create(
            KeyRecord(
                key_id=g.key_id,
                digest=Hasher(pepper_from_env=False).digest(g.plaintext),
                scopes=frozenset({"agents:read"}),
                name=step[1],
                created_at=T0 - 3600,
            )
        )
    elif kind == "update":  # a key's record changes in the store
        record = w.store.get(MATERIAL[step[1]][0].key_id)
        assert record is not None
        w.store.update(record.evolve(**step[2]))
    else:
        return False
    return True


def run_sync(w: World, steps: list[Step]) -> list[tuple[Any, ...]]:
    trace = []
    with captured() as log:
        for step in steps:
            if plain_step(w, step):
                continue
            v, headers = w.verifier, w.headers
            if step[0] == "req":
                _, header, method, path, kw = step
                decision = v.verify(headers[header], method, path, **kw)
            else:
                _, header, kw = step
                decision = v.authenticate(headers[header], **kw)
            trace.append(state(w, decision, log))
    return trace


#: The ASGI header names of fast_admit()'s headers, as Decision.headers spells them.
TEXT_NAMES = {
    b"ratelimit-policy": "RateLimit-Policy",
    b"ratelimit": "RateLimit",
    b"x-ratelimit-limit": "X-RateLimit-Limit",
    b"x-ratelimit-remaining": "X-RateLimit-Remaining",
    b"x-ratelimit-reset": "X-RateLimit-Reset",
}


def admitted_summary(principal: Any, headers: Any) -> tuple[Any, ...]:
    """summary() of the admitted decision fast_admit()'s (principal, headers) stand for: ASGI
    byte pairs in a list, or text pairs in a tuple."""
    if isinstance(headers, tuple):
        text = headers
    else:
        text = tuple((TEXT_NAMES[k], v.decode("latin-1")) for k, v in headers)
    plain = summary(Decision(True, principal))
    return (*plain[:6], text, *plain[7:])


def run_async(
    w: World, steps: list[Step], *, nowait: bool, fast: bool = False, text: bool = False
) -> list[tuple[Any, ...]]:
    """The async skin: ``averify()``; with ``nowait``, ``verify_nowait()`` first (as the ASGI
    middleware calls it); with ``fast`` too, ``fast_admit()`` before both for a request with one
    key value (ASGI headers, or text ones with ``text``), holding a requirement as a FastAPI
    dependency does."""

    async def main() -> list[tuple[Any, ...]]:
        w.store.loop_thread = threading.current_thread()
        trace = []
        with captured() as log:
            for step in steps:
                if plain_step(w, step):
                    continue
                v, headers = w.verifier, w.headers
                if step[0] == "req":
                    _, header, method, path, kw = step
                    value = headers[header]
                    decision = None
                    if fast:
                        raw = value.encode("latin-1") if isinstance(value, str) else value
                        required = kw.get("required")
                        if required is not None and not isinstance(required, Requirement):
                            required = as_requirement(required)
                        if type(raw) is bytes:
                            admitted = v.fast_admit(raw, method, path, required, text)
                            if type(admitted) is tuple:
                                trace.append(state(w, None, log, admitted_summary(*admitted)))
                                continue
                            decision = admitted
                    if decision is None and nowait:
                        decision = v.verify_nowait(value, method, path, **kw)
                    if decision is None:
                        decision = await v.averify(value, method, path, **kw)
                else:
                    _, header, kw = step
                    decision = await v.aauthenticate(headers[header], **kw)
                trace.append(state(w, decision, log))
        return trace

    return asyncio.run(main())


def twins(steps: list[Step], **options: Any) -> tuple[World, World, World]:
    """Run ``steps`` through the three skins, and the ASGI fast path in front of the third;
    assert equal traces; return the worlds of the three skins."""
    sync_world, async_world, nowait_world = build(**options), build(**options), build(**options)
    fast_world = build(**options)
    expected = run_sync(sync_world, steps)
    got_async = run_async(async_world, steps, nowait=False)
    got_nowait = run_async(nowait_world, steps, nowait=True)
    got_fast = run_async(fast_world, steps, nowait=True, fast=True)
    got_text = run_async(build(**options), steps, nowait=True, fast=True, text=True)
    for i, (want, a, n, f, t) in enumerate(
        zip(expected, got_async, got_nowait, got_fast, got_text, strict=True)
    ):
        assert a == want, f"averify differs at request {i}"
        assert n == want, f"verify_nowait + averify differs at request {i}"
        assert f == want, f"fast_admit + verify_nowait + averify differs at request {i}"
        assert t == want, f"fast_admit(text=True) + ... differs at request {i}"
    return sync_world, async_world, nowait_world


# -- the scenarios ---------------------------------------------------------------------------------
EVERY_KEY = [
    "reader",
    "writer",
    "narrow",
    "revoked",
    "expired",
    "suspended",
    "fenced",
    "own-limit",
    "owned",
    "unknown",
    "malformed",
    "bearer",
    "missing",
    "bytes-reader",
    "two",
    "reader-wrong",
    "writer-wrong",
]
AUTH_OPTIONS: list[dict[str, Any]] = [
    {},
    {"peer": PEER},
    {"peer": INSIDE},
    {"peer": PEER, "restrictions": False},
]
FORWARDED_OPTIONS: list[dict[str, Any]] = [
    {"peer": PEER, "forwarded_for": INSIDE[0]},
    {"peer": INSIDE, "forwarded_for": b"203.0.113.50"},
    {"peer": PEER, "forwarded_for": f"{INSIDE[0]}, 10.0.0.1"},
    {"forwarded_for": INSIDE[0]},
    {},
]
SCENARIOS: dict[str, tuple[list[Step], dict[str, Any]]] = {
    # Every kind of key on every kind of route, twice (the second pass hits the caches), from
    # an address inside the fenced key's network and from one outside.
    "every-key-every-route": (
        [
            req(h, path, method, peer=peer)
            for _ in range(2)
            for peer in (INSIDE, PEER)
            for h in EVERY_KEY
            for method, path in [
                ("GET", "/agents"),
                ("POST", "/agents"),
                ("GET", "/open"),
                ("GET", "/free"),
                ("GET", "/heavy"),
                ("GET", "/nowhere"),
            ]
        ],
        {"guard": None, "budget": None},
    ),
    # An extra requirement on top of the policy, on private and public routes.
    "required": (
        [
            req(h, path, peer=PEER, required=r)
            for h in ["reader", "writer", "narrow", "unknown", "malformed"]
            for path in ["/agents", "/open"]
            for r in ["agents:write", any_of("tasks:read", "agents:read"), ["agents:read"]]
        ]
        * 2,
        {"guard": None, "budget": None},
    ),
    # Wrong secrets and malformed keys from one address until it is blocked (429), while
    # another address and the right key are unaffected; the block then expires.
    "brute-force": (
        [req("reader", peer=PEER)]
        + [req(h, peer=PEER) for h in ["reader-wrong", "malformed", "unknown", "writer-wrong"]]
        + [req(h, peer=PEER) for h in ["reader-wrong", "malformed", "reader", "unknown-2"]]
        + [req("reader-wrong", peer=OTHER_PEER), req("writer", peer=PEER)]
        + [tick(61), req("reader-wrong", peer=PEER), req("writer", peer=PEER)],
        {"budget": None},
    ),
    # The X-Forwarded-For value names the client behind one trusted proxy.
    "forwarded-for": (
        [
            req(h, peer=PEER, forwarded_for=f"{OTHER_PEER[0]}, 10.0.0.1")
            for h in ["reader-wrong"] * 5 + ["reader", "unknown"]
        ]
        + [req("reader-wrong", peer=PEER), auth("reader-wrong", forwarded_for="192.0.2.1")],
        {"trusted_proxies": 1, "budget": None},
    ),
    # Unknown ids spend the address's lookup budget; an existing id refunds it; past the
    # budget unknown ids are refused without a store read; the budget refills with time.
    "lookup-budget": (
        [
            req("unknown", peer=PEER),
            req("reader", peer=PEER),
            req("unknown-2", peer=PEER),
            tick(6),
            req("unknown", peer=PEER),
            req("unknown-2", peer=PEER),
            req("writer", peer=PEER),
            req("unknown", peer=PEER),
            req("unknown", peer=OTHER_PEER),
            tick(40),
            req("unknown-2", peer=PEER),
            req("reader-wrong", peer=PEER),
            tick(1),
            req("reader", peer=PEER),
            req("reader-wrong", peer=PEER),
        ],
        {"guard": None},
    ),
    # A blocked address still gets its cached key through, and a stale cached copy is used
    # instead of a store read; anything else from it causes no read.
    "blocked-address-and-stale-entry": (
        [req("reader", peer=PEER), tick(6)]
        + [req("reader-wrong", peer=PEER) for _ in range(5)]
        + [req("reader", peer=PEER), req("writer", peer=PEER), req("unknown", peer=PEER)]
        + [tick(70), req("writer", peer=PEER)],
        {"budget": None},
    ),
    # authenticate(): with and without a peer (anonymous failures are not counted), with
    # restrictions off, for a suspended and a fenced key.
    "authenticate": (
        [
            auth(h, **kw)
            for kw in AUTH_OPTIONS
            for h in ["reader", "suspended", "fenced", "reader-wrong", "unknown", "malformed"]
        ]
        * 2,
        {},
    ),
    # The store goes down: fail closed (503) once the cache has expired; back up, served.
    "store-down": (
        [
            req("reader", peer=PEER),
            ("store", "down", True),
            req("reader", peer=PEER),
            tick(6),
            req("reader", peer=PEER),
            req("writer", peer=PEER),
            req("unknown", peer=PEER),
            ("store", "down", False),
            req("reader", peer=PEER),
        ],
        {},
    ),
    # With stale_if_error, a recently verified key keeps working while the store is down.
    "stale-if-error": (
        [
            req("reader", peer=PEER),
            req("writer", peer=PEER),
            ("store", "down", True),
            tick(6),
            req("reader", peer=PEER),
            req("writer-wrong", peer=PEER),
            req("narrow", peer=PEER),
            tick(30),
            req("reader", peer=PEER),
        ],
        {"stale_if_error": 10.0},
    ),
    # Unreachable at start: the pepper check waits for the first lookup, which fails closed
    # until the store is back.
    "pepper-deferred": (
        [
            req("reader", peer=PEER),
            req("malformed", peer=PEER),
            ("store", "down", False),
            req("reader", peer=PEER),
            req("reader", peer=PEER),
        ],
        {"down_at_start": True},
    ),
    # Keys are used: last_used_at is written at most every touch interval.
    "touch": (
        [
            req("reader"),
            tick(10),
            req("reader"),
            tick(25),
            req("reader"),
            req("writer"),
            tick(31),
            req("reader"),
            ("invalidate",),
            req("reader"),
            tick(1),
            req("reader"),
        ],
        {},
    ),
    "touch-conflict": (
        [("store", "touch_error", ConflictError("raced")), req("reader"), req("writer")],
        {},
    ),
    "touch-failure": (
        [
            ("store", "touch_error", StoreUnavailable("read-only")),
            req("reader"),
            tick(40),
            req("reader"),
            ("store", "touch_error", OSError("disk")),
            tick(40),
            req("reader"),
        ],
        {},
    ),
    # A migrating hasher re-hashes a plain digest on first use (then forgets the entry).
    "rehash": (
        [
            req("reader"),
            req("reader"),
            req("writer"),
            req("reader-wrong", peer=PEER),
            tick(6),
            req("reader"),
        ],
        {"migrating": True},
    ),
    "rehash-conflict": (
        [
            ("store", "update_error", ConflictError("raced")),
            req("reader"),
            req("reader"),
            tick(6),
            req("reader"),
        ],
        {"migrating": True},
    ),
    "rehash-failure": (
        [
            ("store", "update_error", StoreUnavailable("read-only")),
            req("reader"),
            ("store", "update_error", OSError("disk")),
            tick(6),
            req("reader"),
        ],
        {"migrating": True},
    ),
    "read-only": ([req("reader"), tick(40), req("reader")], {"migrating": True, "read_only": True}),
    # Rate limits: the default windows, a key's own, costs, an unlimited route, the reset.
    "rate-limits": (
        [req("reader", peer=PEER) for _ in range(4)]
        + [req("reader", "/free", peer=PEER), req("own-limit", peer=PEER)]
        + [req("own-limit", peer=PEER), req("own-limit", peer=PEER)]
        + [req("writer", "/heavy", peer=PEER), req("writer", "/heavy", peer=PEER)]
        + [tick(10), req("reader", peer=PEER), req("writer", peer=PEER)],
        {},
    ),
    "rate-limits-no-headers": (
        [req("reader", peer=PEER) for _ in range(5)],
        {"ietf_headers": False, "legacy_headers": False},
    ),
    "rate-limits-legacy-only": (
        [req("reader", peer=PEER) for _ in range(5)],
        {"ietf_headers": False},
    ),
    "owner-limits": (
        [req(h, peer=PEER) for h in ["owned", "reader", "owned", "owned", "owned"]],
        {"owner_rate_limits": "3/minute"},
    ),
    "no-rate-limits": ([req("reader", peer=PEER) for _ in range(5)], {"rate_limits": None}),
    # Expiry: the warning header, then the key stops working.
    "expiry": ([req("expired", peer=PEER), tick(3), req("expired"), tick(3), req("expired")], {}),
    # With an observer (events): the observed twins of every path.
    "observed": (
        [
            req(h, path, peer=peer)
            for _ in range(2)
            for peer in (INSIDE, PEER)
            for h in EVERY_KEY
            for path in ["/agents", "/open", "/free", "/heavy"]
        ]
        + [req("reader", peer=PEER, required=r) for r in ["agents:write", "agents:read"]]
        + [auth(h, peer=PEER) for h in ["reader", "reader-wrong", "fenced", "unknown"]],
        {"observed": True},
    ),
    "observed-store-down": (
        [
            req("reader", peer=PEER),
            ("store", "down", True),
            tick(6),
            req("reader", peer=PEER),
            req("unknown", peer=PEER),
            ("store", "down", False),
            req("reader", peer=PEER),
        ],
        {"observed": True},
    ),
    # With events and usage counting (admitted requests are tallied, not sent one by one),
    # from clients behind a trusted proxy, with and without a peer.
    "observed-usage": (
        [
            req(h, path, **kw)
            for kw in FORWARDED_OPTIONS
            for h in ["reader", "writer", "narrow", "reader-wrong", "fenced", "unknown"]
            for path in ["/agents", "/open"]
        ]
        * 2
        + [auth(h, **kw) for kw in FORWARDED_OPTIONS for h in ["reader", "fenced"]],
        {"observed": "usage", "trusted_proxies": 1},
    ),
    "observed-forwarded": (
        [req(h, **kw) for kw in FORWARDED_OPTIONS for h in ["reader", "fenced", "reader-wrong"]]
        * 2,
        {"observed": True, "trusted_proxies": 1},
    ),
    # A fenced key used from behind a trusted proxy: the forwarded address decides, on the
    # store-read path (no cache) and from the cache and index.
    "forwarded-restrictions": (
        [
            step
            for kw in FORWARDED_OPTIONS
            for step in (
                req("fenced", **kw),
                req("fenced", **kw),
                auth("fenced", **kw),
                auth("fenced", restrictions=False, **kw),
            )
        ]
        * 2,
        {"trusted_proxies": 1},
    ),
    "forwarded-restrictions-uncached": (
        [
            step
            for kw in FORWARDED_OPTIONS
            for step in (
                req("fenced", **kw),
                auth("fenced", **kw),
                auth("fenced", restrictions=False, **kw),
                auth("suspended", restrictions=False, **kw),
            )
        ],
        {"trusted_proxies": 1, "cache_ttl": 0, "negative_cache_ttl": 0},
    ),
    # Bad values repeated (the cache's settled denials answer the repeats), then the unknown
    # id created and the expired key extended inside the cache TTL (both must work at once),
    # then everything stale again.
    "settled-denials": (
        [req(h, peer=PEER) for h in ["unknown", "reader-wrong", "malformed", "bearer"] * 3]
        + [tick(6)]
        + [req(h, peer=PEER) for h in ["expired", "expired", "revoked", "revoked"] * 2]
        + [req("unknown", peer=PEER), ("create", "unknown"), req("unknown", peer=PEER)]
        + [("update", "expired", {"expires_at": T0 + 3600}), req("expired", peer=PEER)]
        + [req("unknown", peer=PEER), req("expired", peer=PEER)]
        + [tick(6)]
        + [req(h, peer=PEER) for h in ["reader-wrong", "unknown-2", "malformed"] * 2],
        {"guard": None, "budget": None},
    ),
    # Without a guard or a budget, and with a zero cache TTL (every request reads).
    "bare": (
        [req(h, peer=PEER) for h in ["reader", "reader", "unknown", "reader-wrong"]] * 2,
        {"guard": None, "budget": None, "cache_ttl": 0, "negative_cache_ttl": 0},
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("remote", [False, True], ids=["in-process-store", "remote-store"])
def test_the_three_skins_agree(name: str, remote: bool) -> None:
    steps, options = SCENARIOS[name]
    twins(steps, remote=remote, **options)


# -- what only the async skin does -----------------------------------------------------------------
def _threads(remote: bool, steps: list[Step], **options: Any) -> list[tuple[str, bool]]:
    w = build(remote=remote, **options)
    run_async(w, steps, nowait=False)
    return w.store.off_loop


@pytest.mark.parametrize("remote", [False, True], ids=["in-process-store", "remote-store"])
def test_the_store_is_called_off_the_event_loop_only_when_it_is_remote(remote: bool) -> None:
    calls = _threads(remote, [req("reader"), req("writer"), tick(6), req("reader")], migrating=True)
    kinds = {call for call, _ in calls}
    assert kinds == {"get", "update", "touch"}
    assert {off for _, off in calls} == {remote}


def test_the_scenarios_reach_what_they_claim() -> None:
    """The traces are compared, not judged: make sure they contain the cases that matter."""
    seen: dict[str, set[Any]] = {}
    for name, (steps, options) in SCENARIOS.items():
        trace = run_sync(build(**options), steps)
        seen[name] = {(row[1][1], row[1][2]) for row in trace}
        seen[name + ":ops"] = {op[0] for row in trace for op in row[2]}
        seen[name + ":log"] = {m.split()[0] for row in trace for m in row[3]}
        seen[name + ":events"] = {event[0] for row in trace for event in row[0]}
    statuses = {status for name, s in seen.items() if ":" not in name for status, _ in s}
    assert {200, 401, 403, 429, 503} <= statuses
    assert any(status == 429 for status, _ in seen["brute-force"])
    assert any(status == 429 for status, _ in seen["rate-limits"])
    assert any(status == 503 for status, _ in seen["store-down"])
    assert any(status == 503 for status, _ in seen["pepper-deferred"])
    assert any(status == 200 for status, _ in seen["stale-if-error"])
    assert {"update", "touch"} <= seen["rehash:ops"]
    assert "WARNING" in seen["rehash-failure:log"]
    assert "WARNING" not in seen["rehash-conflict:log"]
    assert "WARNING" in seen["touch-failure:log"]
    assert "WARNING" not in seen["touch-conflict:log"]
    assert {"update", "touch"}.isdisjoint(seen["read-only:ops"])
    assert len(seen["observed:events"]) >= 3
    assert "store_unavailable" in {str(k) for k in seen["observed-store-down:events"]}
    assert {(401, "invalid_api_key"), (401, "expired_api_key"), (200, None)} <= {
        (status, None if code is None else str(code)) for status, code in seen["settled-denials"]
    }


def test_the_asgi_fast_path_answers_the_common_requests_itself() -> None:
    """fast_admit() must actually take: a recently verified key admitted (with its headers),
    refused a scope (403) and over its limit (429) are answered by it alone; anything it is
    not sure of goes to verify_nowait()."""
    w = build()
    v, h = w.verifier, w.headers
    reader = h["reader"].encode()
    assert v.fast_admit(reader, "GET", "/agents") is None  # not verified yet: not indexed
    assert v.verify(h["reader"], "GET", "/agents").allowed
    assert v.authenticate(h["narrow"]).allowed
    got = v.fast_admit(reader, "GET", "/agents")
    assert type(got) is tuple
    principal, headers = got
    assert principal.record.name == "reader"
    assert dict(headers)[b"x-ratelimit-remaining"] == b"1"  # 3/10s: two spent
    denied = v.fast_admit(h["narrow"].encode(), "GET", "/agents")
    assert isinstance(denied, Decision)
    assert denied.status == 403
    refused = v.fast_admit(reader, "GET", "/agents")
    assert type(refused) is tuple  # the third of 3/10s
    refused = v.fast_admit(reader, "GET", "/agents")
    assert isinstance(refused, Decision)
    assert refused.status == 429
    assert refused.retry_after == 10
    for header, method, path in [
        ("reader", "GET", "/open"),  # public
        ("reader", "GET", "/free"),  # not rate-limited
        ("reader-wrong", "GET", "/agents"),  # not in the index
        ("suspended", "GET", "/agents"),
    ]:
        assert v.fast_admit(h[header].encode(), method, path) is None, header
    assert v.fast_admit(b"UserKey " + b"x" * 5000, "GET", "/agents") is None


def test_the_asgi_fast_path_follows_the_limiter_and_never_bypasses_a_custom_hit() -> None:
    """The fast path calls the limiter's admitter(): not when a subclass overrides hit() or
    admit() (that method must keep deciding), and a limiter or windows replaced on the
    verifier are used."""
    calls: list[str] = []

    class Counting(MemoryRateLimiter):
        def hit(self, bucket: str, *args: Any, **kw: Any) -> Any:
            calls.append(bucket)
            return super().hit(bucket, *args, **kw)

    w = build(limiter=Counting(clock=T0.__float__))
    v, h = w.verifier, w.headers
    assert v.verify(h["reader"], "GET", "/agents").allowed
    assert v.fast_admit(h["reader"].encode(), "GET", "/agents") is None
    assert v.verify_nowait(h["reader"], "GET", "/agents") is not None
    assert len(calls) == 2

    class OwnAdmit(MemoryRateLimiter):
        def admit(self, bucket: str, *args: Any, **kw: Any) -> Any:
            calls.append(bucket)
            return super().admit(bucket, *args, **kw)

    v.limiter = OwnAdmit(clock=T0.__float__)
    assert v.fast_admit(h["reader"].encode(), "GET", "/agents") is None
    assert len(calls) == 2

    fresh = MemoryRateLimiter(clock=T0.__float__)
    v.limiter = fresh
    got = v.fast_admit(h["reader"].encode(), "GET", "/agents")
    assert type(got) is tuple
    assert dict(got[1])[b"x-ratelimit-remaining"] == b"2"  # the new limiter's first unit
    windows = v.rate_limits
    v.rate_limits = parse_windows("7/10s")
    got = v.fast_admit(h["reader"].encode(), "GET", "/agents")
    assert type(got) is tuple
    assert dict(got[1])[b"x-ratelimit-limit"] == b"7"  # the replaced windows
    v.rate_limits = windows
    v.limiter = None
    assert v.fast_admit(h["reader"].encode(), "GET", "/agents") is None

    class Duck:
        """A limiter of its own whose ``admitter`` is an attribute of the instance: no class
        of it defines the fused path, so the verifier keeps to its ``hit``."""

        in_process = True

        def __init__(self) -> None:
            self.inner = MemoryRateLimiter(clock=T0.__float__)
            self.admitter = self.inner.admitter

        def hit(self, bucket: str, *args: Any, **kw: Any) -> Any:
            calls.append(bucket)
            return self.inner.hit(bucket, *args, **kw)

    v.limiter = Duck()  # type: ignore[assignment]
    assert v.fast_admit(h["reader"].encode(), "GET", "/agents") is None
    assert v.verify(h["reader"], "GET", "/agents").allowed
    assert len(calls) == 3


def test_nowait_answers_without_awaiting_on_the_common_paths() -> None:
    """The ASGI shortcut must actually take: a cached key, a public route and a cached denial
    are answered by verify_nowait alone."""
    w = build()
    v, h = w.verifier, w.headers
    assert v.verify(h["reader"], "GET", "/agents", peer=PEER).allowed
    assert v.verify(h["reader-wrong"], "GET", "/agents", peer=PEER).status == 401
    for header, path in [("reader", "/agents"), ("missing", "/open"), ("reader-wrong", "/agents")]:
        assert v.verify_nowait(h[header], "GET", path, peer=PEER) is not None, header
