"""A deterministic, realistic trace of normal traffic for the anomaly detectors, and attacks.

:func:`normal_trace` builds what a day and a half of an ordinary API looks like from the
events' side: many keys with their own rates (from one request an hour to a few per second,
log-uniform), rising and falling over the day; each key on one to three home networks (IPv4
/24s, some IPv6 /48s, several hosts in each); routes each key is allowed, and now and then one
it is not (a few scope denials); clients that sometimes paste a key with a typo (an unknown id
or a broken checksum) or an old secret; an hourly batch job that sends a burst; new keys that
appear during the trace and move to a second network during their warm-up; rate-limited
requests when a key's minute is busy. Every number comes from one seeded generator: the same
seed gives the same trace, event for event.

The ``*_attack`` helpers return the events of one abusive pattern, to be merged into a trace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from keyguard.observability.model import Event, EventKind

DAY = 86400.0
START = 1_900_000_000.0  # a fixed epoch: 2030-03-17T17:46:40Z

ROUTES = [
    ("GET", "/agents", "agents:read"),
    ("GET", "/agents/{agent_id}", "agents:read"),
    ("POST", "/agents", "agents:write"),
    ("GET", "/tasks", "tasks:read"),
    ("POST", "/tasks/{task_id}/execute", "tasks:execute"),
    ("GET", "/models", "models:read"),
]


@dataclass
class TraceKey:
    key_id: str
    owner: str
    rate: float  # requests per minute at the daily peak
    phase: float  # where in the day the peak is (fraction of a day)
    hosts: list[str]
    routes: list[tuple[str, str]]
    forbidden: tuple[str, str]
    limit: int = 100  # requests per minute before RATE_LIMITED
    starts: float = START
    batch: int = 0  # requests sent at the top of every hour (0: no batch job)
    moves_to: list[str] = field(default_factory=list)  # hosts of a later, second network


def _key_id(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(alphabet) for _ in range(12))


def _hosts(rng: random.Random, n_networks: int) -> list[str]:
    hosts = []
    for _ in range(n_networks):
        if rng.random() < 0.25:
            base = f"2001:db8:{rng.randrange(1, 0xFFFF):x}"
            hosts += [f"{base}:{rng.randrange(1, 0xFFFF):x}::{i + 1}" for i in range(3)]
        else:
            net = f"10.{rng.randrange(256)}.{rng.randrange(256)}"
            hosts += [f"{net}.{rng.randrange(2, 250)}" for _ in range(3)]
    return hosts


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def make_keys(rng: random.Random, n: int) -> list[TraceKey]:
    keys = []
    for i in range(n):
        allowed = rng.sample(ROUTES, rng.randint(2, 4))
        forbidden = next(r for r in ROUTES if r not in allowed)
        keys.append(
            TraceKey(
                key_id=_key_id(rng),
                owner=f"team-{i % 7}",
                rate=math.exp(rng.uniform(math.log(1 / 60), math.log(40))),
                phase=rng.random(),
                hosts=_hosts(rng, rng.choice((1, 1, 2, 3))),
                routes=[(m, r) for m, r, _ in allowed],
                forbidden=forbidden[:2],
            )
        )
    keys[0].batch = 150  # an hourly batch job on top of a trickle
    keys[0].rate = 0.5
    for late in keys[-3:]:  # keys created during the trace, moving network in warm-up
        late.starts = START + rng.uniform(0.2, 0.6) * DAY
        late.rate = max(late.rate, 5.0)
        late.moves_to = _hosts(rng, 1)
    return keys


def _diurnal(key: TraceKey, t: float) -> float:
    # Between 25% and 100% of the peak rate, peaking once a day.
    x = ((t - START) / DAY - key.phase) * 2 * math.pi
    return 0.25 + 0.75 * (1 + math.cos(x)) / 2


def normal_trace(seed: int = 7, *, keys: int = 40, days: float = 1.5) -> list[Event]:
    """The events of ``days`` of normal traffic by ``keys`` keys (see the module)."""
    rng = random.Random(seed)
    population = make_keys(rng, keys)
    events: list[Event] = []
    minutes = int(days * DAY / 60)
    for key in population:
        uses = 0
        for minute in range(minutes):
            t0 = START + minute * 60
            if t0 < key.starts:
                continue
            n = _poisson(rng, key.rate * _diurnal(key, t0))
            if key.batch and minute % 60 == 0:
                n += key.batch
            for j in range(n):
                at = t0 + rng.random() * 60
                uses += 1
                hosts = key.hosts
                if key.moves_to and uses > 60 and rng.random() < 0.5:
                    hosts = key.moves_to  # the second network, inside the warm-up
                client = rng.choice(hosts)
                kind = EventKind.AUTHENTICATED if j < key.limit else EventKind.RATE_LIMITED
                method, route = rng.choice(key.routes)
                code = "rate_limited" if kind is EventKind.RATE_LIMITED else None
                if kind is EventKind.AUTHENTICATED and rng.random() < 0.0005:
                    kind, code = EventKind.SCOPE_DENIED, "insufficient_scope"
                    method, route = key.forbidden
                events.append(
                    Event(
                        kind,
                        at=at,
                        code=code,
                        key_id=key.key_id,
                        owner=key.owner,
                        route=route,
                        method=method,
                        status={None: 200, "rate_limited": 429}.get(code, 403),
                        client=client,
                    )
                )
                if rng.random() < 0.001:  # a typo: an unknown id or a broken checksum
                    typo = rng.choice(
                        (("invalid_api_key", "unknown_key"), ("invalid_api_key_format", None))
                    )
                    events.append(
                        Event(
                            EventKind.DENIED,
                            at=at + 1,
                            code=typo[0],
                            reason=typo[1],
                            route=route,
                            method=method,
                            status=401,
                            client=client,
                        )
                    )
                if rng.random() < 0.0003:  # an old secret pasted from a notebook
                    events.append(
                        Event(
                            EventKind.DENIED,
                            at=at + 2,
                            code="invalid_api_key",
                            reason="wrong_secret",
                            key_id=key.key_id,
                            owner=key.owner,
                            route=route,
                            method=method,
                            status=401,
                            client=client,
                        )
                    )
    events.sort(key=lambda e: e.at)
    return events


def trace_keys(events: list[Event]) -> dict[str, tuple[str | None, list[str]]]:
    """Each key id in a trace: its owner and the client addresses it used."""
    found: dict[str, tuple[str | None, list[str]]] = {}
    for e in events:
        if e.kind is EventKind.AUTHENTICATED and e.key_id is not None and e.client:
            _, clients = found.setdefault(e.key_id, (e.owner, []))
            if e.client not in clients:
                clients.append(e.client)
    return found


def busiest(events: list[Event]) -> tuple[str, str | None, list[str]]:
    """The key id with the most AUTHENTICATED events in a trace, its owner and clients."""
    counts: dict[str, int] = {}
    for e in events:
        if e.kind is EventKind.AUTHENTICATED and e.key_id is not None:
            counts[e.key_id] = counts.get(e.key_id, 0) + 1
    key_id = max(counts, key=lambda k: counts[k])
    owner, clients = trace_keys(events)[key_id]
    return key_id, owner, clients


def quietest_warm(events: list[Event], minimum: int = 300) -> tuple[str, str | None, list[str]]:
    """A key with at least ``minimum`` uses but the fewest above that."""
    counts: dict[str, int] = {}
    for e in events:
        if e.kind is EventKind.AUTHENTICATED and e.key_id is not None:
            counts[e.key_id] = counts.get(e.key_id, 0) + 1
    key_id = min((k for k in counts if counts[k] >= minimum), key=lambda k: counts[k])
    owner, clients = trace_keys(events)[key_id]
    return key_id, owner, clients


def _event(kind: EventKind, at: float, **fields: object) -> Event:
    return Event(kind, at=at, **fields)  # type: ignore[arg-type]


def wrong_secret_attack(
    key_id: str, owner: str | None, at: float, n: int = 20, client: str = "198.51.100.7"
) -> Iterator[Event]:
    for i in range(n):
        yield _event(
            EventKind.DENIED,
            at + i * 5,
            code="invalid_api_key",
            reason="wrong_secret",
            key_id=key_id,
            owner=owner,
            status=401,
            client=client,
        )


def refused_use(key_id: str, owner: str | None, at: float, code: str) -> Iterator[Event]:
    yield _event(EventKind.KEY_REFUSED, at, code=code, key_id=key_id, owner=owner, status=401)


def use_from(
    key_id: str, owner: str | None, at: float, client: str, n: int = 1, spacing: float = 1.0
) -> Iterator[Event]:
    for i in range(n):
        yield _event(
            EventKind.AUTHENTICATED,
            at + i * spacing,
            key_id=key_id,
            owner=owner,
            route="/agents",
            method="GET",
            status=200,
            client=client,
        )


def scope_probe(key_id: str, owner: str | None, at: float, client: str) -> Iterator[Event]:
    for i, (method, route, _) in enumerate(ROUTES):
        yield _event(
            EventKind.SCOPE_DENIED,
            at + i * 10,
            code="insufficient_scope",
            key_id=key_id,
            owner=owner,
            route=route,
            method=method,
            status=403,
            client=client,
        )


def guessing(at: float, client: str = "203.0.113.9", n: int = 40) -> Iterator[Event]:
    for i in range(n):
        yield _event(
            EventKind.DENIED,
            at + i,
            code="invalid_api_key",
            reason="unknown_key",
            status=401,
            client=client,
        )
