"""The request hot path: from an ``Authorization`` header (and method/path) to a Decision.

Order of work, cheapest first, so that junk costs nothing and no store is touched before the
key is known to be well formed:

1. **fast path**: a header value no longer than ``max_header_length`` whose BLAKE2s digest
   matches one that verified in full moments ago (a bounded index whose deadlines never
   outlive the record's freshness, expiry or rotation grace) — nothing else to do;
2. header shape: absent → ``missing_api_key``; duplicated, over-long or control characters →
   ``invalid_request``; another scheme → ``missing_api_key`` (the scheme is case-insensitive);
3. format and checksum (``invalid_api_key_format``, no store access);
4. the record, from the cache or (on a miss) the store; unknown ids are negatively cached and
   cost the same digest comparison as a wrong secret, so timing does not reveal which ids exist;
5. constant-time digest comparison (current digest, or the previous one inside its rotation
   grace period), and only after the secret matched: revocation, then expiry;
6. scopes against the route's requirement; 7. the per-key rate limit.

The decisions are pure methods on in-memory data; :meth:`Verifier.verify` and
:meth:`Verifier.averify` differ only in how they fetch a record on a cache miss. The cache holds
records and BLAKE2s digests of header values that verified, never plaintext. A cache entry is
trusted for ``cache_ttl`` seconds (default 1 s): that is the bound on how long a revocation made in
another process can take to be seen (stores that push invalidations shorten it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from hashlib import blake2s
from typing import Final, Literal
from urllib.parse import quote

from cachetools import LRUCache

from keyguard.core import decision as d
from keyguard.core.bruteforce import BruteForceGuard, client_address
from keyguard.core.clock import Clock
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError, ConflictError, ErrorCode, KeyguardError
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.policy import RouteMatch, RoutePolicy
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    Window,
    check_windows,
    pair_plan,
    parse_windows,
    rate_limit_headers,
)
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import AUTHENTICATED, Grants, Requirement, ScopeCatalog, as_requirement
from keyguard.core.store import KeyStore

logger = logging.getLogger("keyguard.verifier")

AuthorizationValue = str | bytes | Sequence[str | bytes] | None

_SCHEME: Final = "userkey"
_FOREVER: Final = math.inf
_DEFAULT_MATCH: Final = RouteMatch(requirement=AUTHENTICATED, template=None)


#: Denials that count as a guess for the brute-force guard (expired/revoked keys are real keys).
_GUESSES: Final = frozenset({ErrorCode.INVALID_API_KEY, ErrorCode.INVALID_API_KEY_FORMAT})

Peer = str | tuple[object, ...] | list[object] | None


def _blocked(retry_after: int | None, failure: Decision) -> Decision:
    """The failure itself, or 429 once the client address is over the guard's threshold."""
    if retry_after is None:
        return failure
    return Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "Too many failed authentication attempts from this address.",
        retry_after=max(1, retry_after),
    )


@lru_cache(maxsize=4096)
def owner_bucket(owner: str) -> str:
    """The rate-limit bucket of an owner's shared limits: ``"owner:" + owner``, with every
    character but letters, digits and ``_.-~`` percent-encoded (an injective mapping that keeps
    braces and whitespace out of Redis key names). Key ids have no ``:``, so never clash."""
    return "owner:" + quote(owner, safe="")


def authorize(principal: Principal | None, requirement: Requirement) -> Decision | None:
    """The denial for ``principal`` against ``requirement``, or ``None`` when it is allowed.

    No principal is ``missing_api_key``; an unmet requirement is ``insufficient_scope`` naming
    the required scopes (never the key's own); a requirement nothing satisfies (deny by
    default) is ``insufficient_scope`` without scopes. Adapters' per-view checks use this too.
    """
    if principal is None:
        return d.MISSING
    if requirement.is_satisfied_by(principal.grants):
        return None
    if not requirement.scopes:
        return d.NO_ROUTE
    return d.insufficient_scope(requirement.scopes, requirement.describe())


class _Entry:
    """A cached record plus what was derived from it once: the principal, the allowed decision,
    and the BLAKE2s digests of header values that verified against it (see ``_index``)."""

    __slots__ = ("allowed", "fresh_until", "principal", "record", "verified")

    def __init__(self, record: KeyRecord, principal: Principal, fresh_until: float) -> None:
        self.record = record
        self.principal = principal
        self.allowed = Decision(True, principal)
        self.fresh_until = fresh_until
        self.verified: set[bytes] = set()


class Verifier:
    """Checks requests against a key store, a scope policy and (optionally) a rate limiter.

    Security-relevant keyword arguments:

    * ``max_header_length`` — longer ``Authorization`` values are refused before any parsing
      (bounded work per request, whatever the client sends).
    * ``cache_ttl`` — how long a cached record is trusted; the revocation-propagation bound
      across processes.
    * ``negative_cache_ttl`` — how long an unknown key id is remembered, so floods of random
      well-formed keys do not each hit the store.
    * ``hasher`` — the digest algorithm (HMAC with a pepper when ``KEYGUARD_PEPPER`` is set).
    * ``rehash`` — re-hash digests made with another algorithm when their key is next used.
    * ``rate_limits`` — the default per-key windows (the platform's 20/10 s, 100/min,
      5,000/day), a spec string like ``"20/10s, 100/minute"``, or ``None`` for no rate
      limiting; a key's own ``rate_limit`` overrides them. ``limiter`` is the backend (an
      in-process :class:`~keyguard.core.ratelimit.MemoryRateLimiter` by default; a
      ``RedisRateLimiter`` shares the counts across processes).
    * ``owner_rate_limits`` — optional windows (or a spec string) shared by all keys of one
      owner (tenant), in the bucket :func:`owner_bucket`; keys without an owner have only their
      own limits. A request is then admitted iff the key's windows *and* its owner's all have
      room (a refusal consumes nothing in either; Retry-After is the latest violated window's),
      via the limiter's ``hit_pair``. Headers report both sets, the owner's windows named
      ``owner-<name>``. With a ``RedisRateLimiter`` an owned key's counts move under the
      owner's hash tag (new Redis keys: counts start afresh when this is turned on).
    * ``ietf_headers`` / ``legacy_headers`` — send ``RateLimit-Policy``/``RateLimit`` and
      ``X-RateLimit-*`` response headers.
    * ``brute_force`` — a :class:`~keyguard.core.bruteforce.BruteForceGuard` counting failed
      authentications per client address; past its threshold, failures from that address
      are answered 429 instead of 401. It never refuses a key that verifies, so an attacker
      cannot lock a key's owner out. ``None`` disables it.
    * ``trusted_proxies`` — how many proxies in front of the app append to
      ``X-Forwarded-For``; 0 (default) trusts no forwarded header and counts the peer address.
    * ``read_only`` — never write to the store (no re-hash, no ``last_used_at``): for
      diagnostics and CLI commands that must not change what a running service sees.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        policy: RoutePolicy | None = None,
        catalog: ScopeCatalog | None = None,
        key_format: KeyFormat = DEFAULT_FORMAT,
        hasher: Hasher | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 1.0,
        negative_cache_size: int = 10_000,
        negative_cache_ttl: float = 1.0,
        max_header_length: int = 512,
        touch_interval: float = 60.0,
        rehash: bool = True,
        rate_limits: Sequence[Window] | str | None = DEFAULT_WINDOWS,
        owner_rate_limits: Sequence[Window] | str | None = None,
        limiter: RateLimiter | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = True,
        brute_force: BruteForceGuard | Literal["default"] | None = "default",
        trusted_proxies: int = 0,
        read_only: bool = False,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        if cache_ttl < 0 or negative_cache_ttl < 0:
            raise ConfigurationError("cache TTLs must be >= 0")
        if max_header_length < key_format.max_length + len("UserKey "):
            raise ConfigurationError("max_header_length is shorter than a key of this format")
        self.store = store
        self.policy = policy
        self.catalog = catalog
        self.key_format = key_format
        self.hasher = hasher if hasher is not None else Hasher()
        self.cache_ttl = cache_ttl
        self.negative_cache_ttl = negative_cache_ttl
        self.max_header_length = max_header_length
        self.touch_interval = touch_interval
        self.rehash = rehash and not read_only
        self.read_only = read_only
        self._clock = clock
        self._monotonic = monotonic
        # cachetools caches are not thread-safe (even a get reorders the LRU list), and WSGI
        # servers call us from many threads: every cache access off the fast path holds this
        # lock. The fast path reads only ``_index`` with one atomic ``dict.get``.
        self._lock = threading.RLock()
        self._cache: LRUCache[str, _Entry] = LRUCache(maxsize=cache_size)
        self._negative: LRUCache[str, float] = LRUCache(maxsize=negative_cache_size)
        self._touched: LRUCache[str, float] = LRUCache(maxsize=cache_size)
        # The fast-path index: BLAKE2s of an Authorization value that verified in full →
        # (allowed decision, monotonic deadline). A plain dict because it is read on every
        # request; bounded FIFO (insertion order) at ``cache_size`` entries. Deadlines never
        # exceed the record's freshness, its expiry or its rotation grace. BLAKE2s rather than
        # SHA-256: equally collision-resistant, and Python's built-in BLAKE2 costs markedly less
        # than OpenSSL's SHA-256 inside a real request (measured with benchmarks/bench_*.py).
        self._index: dict[bytes, tuple[Decision, float]] = {}
        self._index_size = cache_size
        self._implications = catalog.implications if catalog is not None else None
        if isinstance(rate_limits, str):
            rate_limits = parse_windows(rate_limits)
        self.rate_limits = None if rate_limits is None else check_windows(rate_limits)
        if self.rate_limits is None:
            if limiter is not None:
                raise ConfigurationError("limiter= needs rate_limits (or leave limiter unset)")
        elif limiter is None:
            limiter = MemoryRateLimiter()
        self.limiter = limiter
        self._limit_inline = bool(getattr(limiter, "in_process", False))
        if isinstance(owner_rate_limits, str):
            owner_rate_limits = parse_windows(owner_rate_limits)
        self.owner_rate_limits = (
            None if owner_rate_limits is None else check_windows(owner_rate_limits)
        )
        if self.owner_rate_limits is not None:
            if self.rate_limits is None:
                raise ConfigurationError("owner_rate_limits needs rate_limits")
            if not callable(getattr(limiter, "hit_pair", None)):
                raise ConfigurationError("owner_rate_limits needs a limiter with hit_pair")
            pair_plan(self.rate_limits, self.owner_rate_limits)  # validates the combined names
        self.ietf_headers = ietf_headers
        self.legacy_headers = legacy_headers
        # Default: 100 failed authentications per minute per address (generous for a client
        # with a typo, hopeless for a guesser).
        self.brute_force = (
            BruteForceGuard(threshold=100, window=60.0) if brute_force == "default" else brute_force
        )
        if isinstance(trusted_proxies, bool) or trusted_proxies < 0:
            raise ConfigurationError("trusted_proxies must be an integer >= 0")
        self.trusted_proxies = trusted_proxies
        store.subscribe_invalidations(self.invalidate)

    # -- cache control --------------------------------------------------------------------
    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one key (or every key) so the next request re-reads the store."""
        with self._lock:
            if key_id is None:
                self._cache.clear()
                self._negative.clear()
                self._index.clear()
                return
            entry = self._cache.pop(key_id, None)
            self._negative.pop(key_id, None)
            if entry is not None:
                for digest in entry.verified:
                    self._index.pop(digest, None)

    # -- pure steps -------------------------------------------------------------------------
    def _hot(self, authorization: AuthorizationValue) -> tuple[Decision | None, bytes]:
        """Step 2, before any parsing: a header value that verified recently is answered from
        the index. Returns the decision (or None) and the value's digest for the slow path."""
        kind = type(authorization)
        if kind is bytes:
            raw = authorization
        elif kind is str:
            raw = authorization.encode()  # type: ignore[union-attr]
        else:
            return None, b""
        if len(raw) > self.max_header_length:  # type: ignore[arg-type]
            return None, b""
        digest = blake2s(raw).digest()  # type: ignore[arg-type]
        hit = self._index.get(digest)
        if hit is not None and hit[1] > self._monotonic():
            return hit[0], digest
        return None, digest

    def _credential(self, authorization: AuthorizationValue) -> str | Decision:
        """Step 1: the credential string, or the denial for a malformed header."""
        if authorization is None:
            return d.MISSING
        if not isinstance(authorization, str | bytes):
            values = list(authorization)
            if len(values) != 1:
                return d.MISSING if not values else d.DUPLICATE_HEADER
            authorization = values[0]
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        if len(authorization) > self.max_header_length:
            return d.HEADER_TOO_LONG
        if not authorization.isprintable():
            return d.CONTROL_CHARACTERS
        scheme, _, credential = authorization.strip(" ").partition(" ")
        if scheme.lower() != _SCHEME:
            return d.MISSING
        credential = credential.strip(" ")
        if not credential:
            return d.MISSING
        return credential

    def _lookup(self, key_id: str, now_mono: float) -> tuple[bool, _Entry | None]:
        """Step 4 (cache part): ``(True, entry)`` for a fresh entry, ``(True, None)`` for a
        known-unknown id, ``(False, None)`` when the store must be asked."""
        with self._lock:
            entry = self._cache.get(key_id)
            if entry is not None and entry.fresh_until > now_mono:
                return True, entry
            until = self._negative.get(key_id)
        return (until is not None and until > now_mono), None

    def _cache_record(
        self, record: KeyRecord | None, key_id: str, now_mono: float
    ) -> _Entry | None:
        with self._lock:
            if record is None:
                self.invalidate(key_id)
                self._negative[key_id] = now_mono + self.negative_cache_ttl
                return None
            old = self._cache.get(key_id)
            if old is not None and old.record.version == record.version:
                # Same record: keep the principal (and its allowed decision); just refresh.
                old.fresh_until = now_mono + self.cache_ttl
                return old
            if old is not None:
                self.invalidate(key_id)
            grants = Grants(record.scopes, self._implications)
            principal = Principal(record.key_id, record.name, record.owner, grants, record)
            entry = _Entry(record, principal, now_mono + self.cache_ttl)
            self._cache[key_id] = entry
            return entry

    def _judge(
        self,
        credential: str,
        digest: bytes,
        entry: _Entry | None,
        now: float,
        now_mono: float,
    ) -> Decision:
        """Step 5: compare digests in constant time, then revocation and expiry. A success is
        indexed for the fast path until the earliest of freshness, expiry and grace."""
        hasher = self.hasher
        if entry is None:
            hasher.verify(credential, hasher.dummy_digest)  # same work as a wrong secret
            return d.INVALID
        record = entry.record
        until = _FOREVER
        if not hasher.verify(credential, record.digest):
            prev = record.previous_digest
            grace = record.previous_expires_at
            if prev is None or grace is None or now >= grace or not hasher.verify(credential, prev):
                return d.INVALID
            until = grace
        if record.revoked_at is not None:
            return d.REVOKED
        if record.expires_at is not None:
            if now >= record.expires_at:
                return d.EXPIRED
            until = min(until, record.expires_at)
        if digest:
            with self._lock:
                index = self._index
                if len(index) >= self._index_size:
                    del index[next(iter(index))]
                index[digest] = (entry.allowed, min(entry.fresh_until, now_mono + (until - now)))
                entry.verified.add(digest)
        return entry.allowed

    def _authorize(self, decision: Decision, requirement: Requirement | None) -> Decision:
        """Step 6: scopes. ``requirement`` None means authentication alone suffices."""
        if requirement is None or not decision.allowed:
            return decision
        denial = authorize(decision.principal, requirement)
        return decision if denial is None else denial

    def _needs_rehash(self, entry: _Entry, credential: str) -> KeyRecord | None:
        record = entry.record
        if not self.rehash or not self.hasher.needs_rehash(record.digest):
            return None
        if not self.hasher.verify(credential, record.digest):
            return None  # verified with the previous digest: rotation owns this record
        return record.evolve(digest=self.hasher.digest(credential))

    def _due_touch(self, key_id: str, now: float) -> bool:
        if self.read_only:
            return False
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < self.touch_interval:
                return False
            self._touched[key_id] = now
        return True

    def match(self, method: str, path: str) -> RouteMatch:
        """The policy rule for a request (authentication-only when no policy is configured)."""
        if self.policy is None:
            return _DEFAULT_MATCH
        return self.policy.match(method, path)

    # -- sync I/O skin ----------------------------------------------------------------------
    def authenticate(self, authorization: AuthorizationValue) -> Decision:
        """Authenticate only: the principal, or the denial. Blocking (for WSGI and scripts)."""
        hit, digest = self._hot(authorization)
        if hit is not None:
            return hit
        credential = self._credential(authorization)
        if isinstance(credential, Decision):
            return credential
        parsed = self.key_format.parse(credential)
        if parsed is None:
            return d.BAD_FORMAT
        now_mono = self._monotonic()
        cached, entry = self._lookup(parsed.key_id, now_mono)
        if not cached:
            try:
                record = self.store.get(parsed.key_id)
            except Exception:
                logger.exception("key store lookup failed; failing closed")
                return d.UNAVAILABLE
            entry = self._cache_record(record, parsed.key_id, now_mono)
        now = self._clock()
        result = self._judge(credential, digest, entry, now, now_mono)
        if result.allowed and entry is not None:
            self._after_success(entry, credential, now)
        return result

    def _after_success(self, entry: _Entry, credential: str, now: float) -> None:
        updated = self._needs_rehash(entry, credential)
        try:
            if updated is not None:
                self.store.update(updated)
                self.invalidate(updated.key_id)
            if self._due_touch(entry.record.key_id, now):
                self.store.touch(entry.record.key_id, now)
        except ConflictError:
            pass  # someone else changed the record; the next use re-hashes
        except (KeyguardError, OSError):
            logger.warning("could not record key use for %s", entry.record.key_id, exc_info=True)

    def verify(
        self,
        authorization: AuthorizationValue,
        method: str = "GET",
        path: str = "/",
        *,
        required: Requirement | str | Sequence[str] | None = None,
        peer: Peer = None,
        forwarded_for: str | bytes | None = None,
    ) -> Decision:
        """Full check of one request: route policy, key, scopes, rate limit.

        ``required`` adds a requirement on top of the policy (per-view decorators use it).
        ``peer`` (an address, or an ASGI ``(host, port)`` client) and ``forwarded_for`` (the
        ``X-Forwarded-For`` value) identify the client for the brute-force guard; they are
        only looked at when authentication fails.
        """
        route = self.match(method, path)
        if route.requirement is None and required is None:
            return d.ALLOW_PUBLIC
        result = self.authenticate(authorization)
        if not result.allowed:
            guard = self.brute_force
            if guard is None or result.code not in _GUESSES:
                return result
            return _blocked(guard.record_failure(self._client(peer, forwarded_for)), result)
        result = self._authorize(result, route.requirement)
        if required is not None:
            result = self._authorize(result, as_requirement(required))
        limiter = self.limiter
        if limiter is None or not result.allowed or not route.rate_limited:
            return result
        principal = result.principal
        assert principal is not None
        return self._limited(result, self._hit(limiter, principal, route.cost))

    def verify_nowait(
        self, authorization: AuthorizationValue, method: str = "GET", path: str = "/"
    ) -> Decision | None:
        """The decision when it needs no I/O and no await — a public route, or a recently
        verified key with an in-process limiter — else ``None`` (then await :meth:`averify`).

        ASGI adapters call this first: on the common path it saves creating coroutines.
        """
        route = self.match(method, path)
        if route.requirement is None:
            return d.ALLOW_PUBLIC
        hit, _ = self._hot(authorization)
        if hit is None:
            return None
        result = self._authorize(hit, route.requirement)
        limiter = self.limiter
        if limiter is None or not result.allowed or not route.rate_limited:
            return result
        if not self._limit_inline:
            return None
        principal = result.principal
        assert principal is not None
        return self._limited(result, self._hit(limiter, principal, route.cost))

    def rate_limit(self, decision: Decision, cost: int = 1) -> Decision:
        """Apply the per-key rate limit to an allowed decision (for adapters that authenticate
        with :meth:`authenticate` and check scopes themselves, such as DRF)."""
        limiter = self.limiter
        principal = decision.principal
        if limiter is None or not decision.allowed or principal is None:
            return decision
        return self._limited(decision, self._hit(limiter, principal, cost))

    async def arate_limit(self, decision: Decision, cost: int = 1) -> Decision:
        """Async :meth:`rate_limit`."""
        limiter = self.limiter
        principal = decision.principal
        if limiter is None or not decision.allowed or principal is None:
            return decision
        return self._limited(decision, await self._ahit(limiter, principal, cost))

    def _hit(self, limiter: RateLimiter, principal: Principal, cost: int) -> RateDecision:
        """One limiter check for the key — and, with owner limits, its owner, atomically."""
        windows = self._windows(principal)
        owner_windows = self.owner_rate_limits
        if owner_windows is not None and principal.owner:
            return limiter.hit_pair(
                principal.key_id, windows, owner_bucket(principal.owner), owner_windows, cost
            )
        return limiter.hit(principal.key_id, windows, cost)

    async def _ahit(self, limiter: RateLimiter, principal: Principal, cost: int) -> RateDecision:
        """Async :meth:`_hit`."""
        windows = self._windows(principal)
        owner_windows = self.owner_rate_limits
        if owner_windows is not None and principal.owner:
            return await limiter.ahit_pair(
                principal.key_id, windows, owner_bucket(principal.owner), owner_windows, cost
            )
        return await limiter.ahit(principal.key_id, windows, cost)

    def _windows(self, principal: Principal) -> tuple[Window, ...]:
        override = principal.record.rate_limit
        if override:
            try:
                return parse_windows(override)  # cached by spec string
            except ConfigurationError:
                logger.warning(
                    "key %s has an invalid rate_limit; using the default", principal.key_id
                )
        assert self.rate_limits is not None
        return self.rate_limits

    def _limited(self, result: Decision, rd: RateDecision) -> Decision:
        """Turn a limiter outcome into the request's decision (with its headers)."""
        if rd.unavailable:
            return d.UNAVAILABLE
        ietf, legacy = self.ietf_headers, self.legacy_headers
        if rd.allowed:
            if not (ietf or legacy):
                return result
            plan, counts = rd.plan, rd.counts
            if plan is None or not counts:
                return result
            return Decision(
                True, result.principal, None, "", (), None, (), (plan, counts, ietf, legacy)
            )
        principal = result.principal
        assert principal is not None
        headers = tuple(
            h for h in rate_limit_headers(rd, ietf=ietf, legacy=legacy) if h[0] != "Retry-After"
        )
        retry = rd.retry_after
        windows = self._windows(principal)
        # A pair decision (key and owner) lists the key's windows first, then the owner's.
        by_owner = (
            self.owner_rate_limits is not None
            and bool(principal.owner)
            and rd.violated_mask >> len(windows) != 0
        )
        whose = "this API key's owner" if by_owner else "this API key"
        if retry is None:
            # The request costs more than a window allows: it can never pass. Say so, and
            # tell the client not to retry before the longest window has passed.
            every = rd.plan.windows if rd.plan is not None else windows
            retry = max(1, math.ceil(max(w.period for w in every)))
            detail = f"This request costs more than {whose}'s rate limit allows."
        else:
            detail = f"Rate limit exceeded for {whose}; retry in {retry} s."
        return Decision(
            False, None, ErrorCode.RATE_LIMITED, detail, retry_after=retry, extra_headers=headers
        )

    def _client(self, peer: Peer, forwarded_for: str | bytes | None) -> str | None:
        if isinstance(peer, tuple | list):
            peer = str(peer[0]) if peer else None
        if isinstance(forwarded_for, bytes):
            forwarded_for = forwarded_for.decode("latin-1")
        return client_address(peer, forwarded_for, trusted_proxies=self.trusted_proxies)

    # -- async I/O skin ---------------------------------------------------------------------
    async def aauthenticate(self, authorization: AuthorizationValue) -> Decision:
        """Async :meth:`authenticate`: store I/O on a miss never blocks the event loop."""
        hit, digest = self._hot(authorization)
        if hit is not None:
            return hit
        credential = self._credential(authorization)
        if isinstance(credential, Decision):
            return credential
        parsed = self.key_format.parse(credential)
        if parsed is None:
            return d.BAD_FORMAT
        now_mono = self._monotonic()
        cached, entry = self._lookup(parsed.key_id, now_mono)
        if not cached:
            try:
                record = await self.store.aget(parsed.key_id)
            except Exception:
                logger.exception("key store lookup failed; failing closed")
                return d.UNAVAILABLE
            entry = self._cache_record(record, parsed.key_id, now_mono)
        now = self._clock()
        result = self._judge(credential, digest, entry, now, now_mono)
        if result.allowed and entry is not None:
            await self._aafter_success(entry, credential, now)
        return result

    async def _aafter_success(self, entry: _Entry, credential: str, now: float) -> None:
        updated = self._needs_rehash(entry, credential)
        store = self.store
        try:
            if updated is not None:
                if store.in_process:
                    store.update(updated)
                else:
                    await asyncio.to_thread(store.update, updated)
                self.invalidate(updated.key_id)
            if self._due_touch(entry.record.key_id, now):
                await store.atouch(entry.record.key_id, now)
        except ConflictError:
            pass
        except (KeyguardError, OSError):
            logger.warning("could not record key use for %s", entry.record.key_id, exc_info=True)

    async def averify(
        self,
        authorization: AuthorizationValue,
        method: str = "GET",
        path: str = "/",
        *,
        required: Requirement | str | Sequence[str] | None = None,
        peer: Peer = None,
        forwarded_for: str | bytes | None = None,
    ) -> Decision:
        """Async :meth:`verify`."""
        route = self.match(method, path)
        if route.requirement is None and required is None:
            return d.ALLOW_PUBLIC
        result = await self.aauthenticate(authorization)
        if not result.allowed:
            guard = self.brute_force
            if guard is None or result.code not in _GUESSES:
                return result
            client = self._client(peer, forwarded_for)
            return _blocked(await guard.arecord_failure(client), result)
        result = self._authorize(result, route.requirement)
        if required is not None:
            result = self._authorize(result, as_requirement(required))
        limiter = self.limiter
        if limiter is None or not result.allowed or not route.rate_limited:
            return result
        principal = result.principal
        assert principal is not None
        return self._limited(result, await self._ahit(limiter, principal, route.cost))

    def __repr__(self) -> str:
        return f"Verifier(store={self.store!r}, policy={self.policy!r}, cache_ttl={self.cache_ttl})"
