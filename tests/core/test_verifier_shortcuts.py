"""The fast path's shortcuts are taken. Each one answers exactly what the general code it
skips would answer (the twin tests hold the answers equal), so a change that quietly sends
every request down the general path changes no answer, only the cost: these tests hold each
shortcut to being used, with a control showing the spy sees the general code when it runs.

- the route's first probe (a static path) inlined in ``fast_admit``: no ``RoutePolicy.match``;
- a single scope the key holds exactly: no ``Scope.is_satisfied_by`` (``fast_admit``, its
  ``required`` scope, and ``verify_nowait``);
- a header of exactly ``max_header_length`` and a key with an owner but no owner limits are
  still answered by the fast path.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import PUBLIC, RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.scopes import Scope, as_requirement
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory

RULES = {"GET /agents": "agents:read", "GET /agents/{agent_id}": "agents:read"}


class CountingPolicy(RoutePolicy):
    """A route policy that counts the calls of its general matcher."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.matched = 0

    def match(self, method: str, path: str) -> Any:
        self.matched += 1
        return super().match(method, path)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scopes ``Scope.is_satisfied_by`` was asked about."""
    asked: list[str] = []
    real = Scope.is_satisfied_by

    def spy(self: Scope, grants: Any) -> bool:
        asked.append(self.name)
        return real(self, grants)

    monkeypatch.setattr(Scope, "is_satisfied_by", spy)
    return asked


def verifier(store: MemoryStore, **kw: Any) -> Verifier:
    kw.setdefault("policy", CountingPolicy(RULES))
    return Verifier(store, hasher=Hasher(pepper_from_env=False), limiter=MemoryRateLimiter(), **kw)


def indexed(v: Verifier, header: str) -> bytes:
    """``header`` verified once, so the fast path's index holds it."""
    assert v.verify(header, "GET", "/agents").allowed
    return header.encode()


def test_a_static_route_is_found_without_the_general_matcher() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    v = verifier(store)
    policy = v.policy
    assert isinstance(policy, CountingPolicy)
    raw = indexed(v, key.header)
    policy.matched = 0
    assert type(v.fast_admit(raw, "GET", "/agents")) is tuple
    assert policy.matched == 0
    # Control: a templated path takes the general matcher, once.
    assert type(v.fast_admit(raw, "GET", "/agents/7")) is tuple
    assert policy.matched == 1
    # A static path with a method it has no rule for: the general matcher decides.
    assert v.fast_admit(raw, "POST", "/agents") is not None
    assert policy.matched == 2


def test_a_scope_the_key_holds_exactly_needs_no_check(checks: list[str]) -> None:
    store = MemoryStore()
    factory = KeyFactory(store)
    exact = factory.issue("agents:read")
    wide = factory.issue("agents:*")
    v = verifier(store)
    raw = indexed(v, exact.header)
    checks.clear()
    assert type(v.fast_admit(raw, "GET", "/agents")) is tuple
    assert type(v.fast_admit(raw, "GET", "/agents", as_requirement("agents:read"))) is tuple
    assert v.verify_nowait(exact.header, "GET", "/agents").allowed  # type: ignore[union-attr]
    assert checks == []
    # Control: a wildcard grant is checked by the requirement itself, on every path.
    raw = indexed(v, wide.header)
    checks.clear()
    assert type(v.fast_admit(raw, "GET", "/agents")) is tuple
    assert type(v.fast_admit(raw, "GET", "/agents", as_requirement("agents:read"))) is tuple
    assert v.verify_nowait(wide.header, "GET", "/agents").allowed  # type: ignore[union-attr]
    assert checks == ["agents:read"] * 4


def test_a_header_of_exactly_the_maximum_length_takes_the_fast_path() -> None:
    store = MemoryStore()
    factory = KeyFactory(store)
    factory.format = fmt = KeyFormat(secret_length=64)
    key = factory.issue("agents:read")
    v = verifier(store, key_format=fmt, max_header_length=len(key.header))
    raw = indexed(v, key.header)
    assert type(v.fast_admit(raw, "GET", "/agents")) is tuple
    assert v.fast_admit(raw + b"x", "GET", "/agents") is None  # one byte over: not even looked up


def test_a_key_with_an_owner_but_no_owner_limits_takes_the_fast_path() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read", owner="acme")
    v = verifier(store)
    raw = indexed(v, key.header)
    got = v.fast_admit(raw, "GET", "/agents")
    assert type(got) is tuple
    assert got[0].owner == "acme"
    # With owner limits the owner's windows must be decided too: the general path does it.
    limited = verifier(store, owner_rate_limits="100/minute")
    raw = indexed(limited, key.header)
    assert limited.fast_admit(raw, "GET", "/agents") is None


class DuckLimiter:
    """A limiter of its own class with an ``admitter`` (a fused admission) but no
    ``in_process`` flag: nothing says it decides in this process, so the fast path must not
    take its admitter."""

    def __init__(self) -> None:
        self.inner = MemoryRateLimiter()
        self.hits = 0

    def admitter(self, windows: Any, text: bool = False) -> Any:
        return self.inner.admitter(windows, text)

    def hit(self, bucket: str, windows: Any, cost: int = 1) -> Any:
        self.hits += 1
        return self.inner.hit(bucket, windows, cost)

    async def ahit(self, bucket: str, windows: Any, cost: int = 1) -> Any:
        return self.hit(bucket, windows, cost)


class ElsewhereLimiter(MemoryRateLimiter):
    """An in-process limiter's admitter, on a limiter that says it decides elsewhere."""

    in_process = False


@pytest.mark.parametrize("make", [DuckLimiter, ElsewhereLimiter], ids=["no-flag", "not-in-process"])
def test_a_limiter_not_known_to_decide_in_process_never_takes_the_fast_path(make: Any) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    limiter = make()
    v = Verifier(
        store, hasher=Hasher(pepper_from_env=False), policy=RoutePolicy(RULES), limiter=limiter
    )
    raw = indexed(v, key.header)
    assert v.fast_admit(raw, "GET", "/agents") is None
    decision = v.verify_nowait(key.header, "GET", "/agents")
    assert decision is None or decision.allowed


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The values the verifier's BLAKE2s index digest was computed for."""
    import keyguard.core.verifier as module

    seen: list[bytes] = []
    real = module.blake2s

    def spy(data: bytes) -> Any:
        seen.append(bytes(data))
        return real(data)

    monkeypatch.setattr(module, "blake2s", spy)
    return seen


def test_a_value_the_fast_path_missed_is_hashed_once(hashed: list[bytes]) -> None:
    """A well-formed value in no index entry (every 401 for an unknown id) is hashed by
    fast_admit(); verify_nowait(), handed the same object next, takes that digest."""
    store = MemoryStore()
    KeyFactory(store).issue("agents:read")
    v = verifier(store)
    raw = f"UserKey {KeyFormat().generate().plaintext}".encode()  # well-formed, never stored
    assert v.verify(raw, "GET", "/agents", peer="10.0.0.1").status == 401  # now cached unknown
    hashed.clear()
    assert v.fast_admit(raw, "GET", "/agents") is None
    first = v.verify_nowait(raw, "GET", "/agents", peer=("10.0.0.1", 1))
    assert first is not None
    assert first.status == 401
    assert hashed.count(raw) == 1
    assert v._missed[0] is not raw  # handed off, and no reference to the value kept
    # Control: an equal value that is another object is hashed again, and answered alike.
    again = bytes(bytearray(raw))
    assert again == raw
    assert again is not raw
    assert v.fast_admit(again, "GET", "/agents") is None
    second = v.verify_nowait(bytes(bytearray(raw)), "GET", "/agents", peer=("10.0.0.1", 1))
    assert second is not None
    assert (second.status, second.code) == (first.status, first.code)
    assert hashed.count(raw) == 3


def test_a_missed_digest_never_answers_for_another_value(hashed: list[bytes]) -> None:
    """The digest handed from fast_admit() to verify_nowait() belongs to one object: any other
    value — a valid key after an unknown one, or the first of two missed values — is judged
    on its own digest."""
    store = MemoryStore()
    factory = KeyFactory(store)
    good = factory.issue("agents:read")
    v = verifier(store)
    raw_good = indexed(v, good.header)
    unknown = f"UserKey {KeyFormat().generate().plaintext}".encode()
    other = f"UserKey {KeyFormat().generate().plaintext}".encode()
    assert v.verify(unknown, "GET", "/agents", peer="10.0.0.1").status == 401
    hashed.clear()
    assert v.fast_admit(unknown, "GET", "/agents") is None
    decision = v.verify_nowait(raw_good, "GET", "/agents", peer=("10.0.0.1", 1))
    assert decision is not None
    assert decision.allowed
    assert decision.principal is not None
    assert decision.principal.key_id == good.key_id
    assert v.fast_admit(unknown, "GET", "/agents") is None
    assert v.fast_admit(other, "GET", "/agents") is None
    refused = v.verify_nowait(unknown, "GET", "/agents", peer=("10.0.0.1", 1))
    assert refused is not None
    assert refused.status == 401
    assert hashed.count(unknown) == 3  # twice by fast_admit(), once more: not other's digest
    # The observed path's lookup (_hot) takes the hand-off too, and only for its own value.
    assert v._hot(other)[0] is None
    assert hashed.count(other) == 1
    assert v.fast_admit(raw_good, "GET", "/agents") is not None
    assert v._hot(raw_good)[0] is not None


def test_the_hand_off_keeps_no_value_it_will_not_use() -> None:
    """A text caller's value (WSGI, Django: encoded for fast_admit() alone) is not kept, and a
    public route, where verify_nowait() reads no key, lets go of the value fast_admit() kept."""
    store = MemoryStore()
    KeyFactory(store).issue("agents:read")
    v = verifier(store, policy=RoutePolicy({**RULES, "GET /health": PUBLIC}))
    unknown = f"UserKey {KeyFormat().generate().plaintext}".encode()
    assert v.fast_admit(unknown, "GET", "/agents", None, True) is None
    assert v._missed[0] is not unknown
    assert v.fast_admit(unknown, "GET", "/health") is None
    assert v._missed[0] is unknown  # kept for verify_nowait()...
    public = v.verify_nowait(unknown, "GET", "/health", peer=("10.0.0.1", 1))
    assert public is not None
    assert public.allowed
    assert v._missed[0] is not unknown  # ...which let go of it without reading it
