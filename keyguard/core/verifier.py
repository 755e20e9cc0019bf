"""The request hot path: from an ``Authorization`` header (and method/path) to a Decision.

Order of work, cheapest first, so that junk costs nothing and no store is touched before the
key is known to be well formed:

1. **fast path**: the exact canonical header ``UserKey <key>`` (no longer than
   ``max_header_length``) whose BLAKE2s digest matches one that authenticated in full moments
   ago (a bounded index, at most two entries per key, whose deadlines never outlive the
   record's freshness, expiry or rotation grace; see :mod:`keyguard.core.keycache`) — scopes
   and the rate limit are then checked as on the slow path. Other spellings (``userkey``,
   extra spaces) are accepted but always take the slow path and are never indexed, so header
   variants cannot grow memory;
2. header shape: absent → ``missing_api_key``; duplicated, over-long or control characters →
   ``invalid_request``; another scheme → ``missing_api_key`` (the scheme is case-insensitive);
3. format and checksum (``invalid_api_key_format``, no store access);
4. the record, from the cache or (on a miss) the store; unknown ids are negatively cached. A
   store read is refused — the id is treated as unknown — when the client address is blocked
   by the brute-force guard or has spent its budget of lookups of unknown ids
   (:class:`~keyguard.core.lookup_budget.LookupBudget`), unless the secret verifies against a
   stale cached copy of the record (a key's owner is never locked out by an attacker sharing
   the address);
5. digest comparison in constant time and in the same shape for every id: the current digest
   *and* the previous one (or a dummy digest in the configured algorithm), for unknown,
   known, rotated, revoked and expired ids alike, so timing does not reveal which ids exist
   or what state they are in. Only after a secret matched: revocation (also for a revoked
   key's previous secret), then expiry, then the rotation grace of a previous secret;
6. scopes against the route's requirement; 7. the per-key rate limit.

Expiry and grace are compared with a wall clock that never goes backwards within the process
(:class:`~keyguard.core.clock.Ratchet`); the fast path's deadlines are monotonic.

The decisions are pure methods on in-memory data; :meth:`Verifier.verify` and
:meth:`Verifier.averify` differ only in how they fetch a record on a cache miss. The cache holds
records and BLAKE2s digests of header values that verified, never plaintext. A cache entry is
trusted for ``cache_ttl`` seconds (default 1 s): that is the bound on how long a revocation made in
another process can take to be seen (stores that push invalidations shorten it).

The store's pepper fingerprint is checked when the verifier is built
(:func:`keyguard.core.pepper.check_store`): a mismatch raises one clear
:class:`~keyguard.core.errors.ConfigurationError`. When the store is unreachable then, the
check runs before the first store read instead, and a mismatch found then answers every
request that needs the store with 503 (one ERROR log).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from hashlib import blake2s
from typing import Any, Final, Literal

from cachetools import LRUCache

from keyguard.core import decision as d
from keyguard.core.addresses import MAX_ADDRESS_LENGTH, peer_address
from keyguard.core.authn import (
    CANONICAL,
    GUESSES,
    AuthorizationValue,
    Peer,
    authorize,
    blocked,
    is_canonical,
    judge,
    read_credential,
)
from keyguard.core.bruteforce import BruteForceGuard, client_address
from keyguard.core.clock import Clock, ratchet
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError, ConflictError, KeyguardError
from keyguard.core.expiry import DEFAULT_WARNING_WINDOW, expiry_header
from keyguard.core.hashing import Hasher
from keyguard.core.incident import Incident
from keyguard.core.keycache import CacheEntry, CacheStats, KeyCache
from keyguard.core.keylimits import KeyLimits, owner_bucket
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.observe import (
    RequestObserver,
    observed_averify,
    observed_nowait,
    observed_verify,
)
from keyguard.core.pepper import StoreCheck
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
)
from keyguard.core.records import KeyRecord
from keyguard.core.restrictions import record_denial
from keyguard.core.scopes import (
    AUTHENTICATED,
    DEFAULT_PRIVILEGED,
    Requirement,
    Scope,
    ScopeCatalog,
    as_requirement,
)
from keyguard.core.store import KeyStore

__all__ = ["AuthorizationValue", "Peer", "Verifier", "authorize", "owner_bucket"]

logger = logging.getLogger("keyguard.verifier")

_DEFAULT_MATCH: Final = RouteMatch(requirement=AUTHENTICATED, template=None)
#: A settled denial that depends on the header value alone (a malformed one) holds forever.
_FOREVER: Final = math.inf
#: A limiter's fused admission for the verifier's windows: (bucket, cost, ietf, legacy) ->
#: the headers or the refusal (MemoryRateLimiter.admitter).
_LaneAdmit = Callable[[str, int, bool, bool], Any]
_new_tuple = tuple.__new__
#: Verifier._missed when it holds no value (nothing is ever identical to a fresh object).
_NO_MISS: Final[tuple[object, bytes]] = (object(), b"")


class _Unset:
    """The client address has not been worked out yet (it costs an address parse)."""

    __slots__ = ()


_UNSET: Final = _Unset()
_Client = str | None | _Unset


class Verifier(KeyLimits):
    """Checks requests against a key store, a scope policy and (optionally) a rate limiter.

    Security-relevant keyword arguments:

    * ``max_header_length`` — longer ``Authorization`` values are refused before any parsing
      (bounded work per request, whatever the client sends).
    * ``cache_ttl`` — how long a cached record is trusted; the revocation-propagation bound
      across processes.
    * ``negative_cache_ttl`` — how long an unknown key id is remembered, so floods of random
      well-formed keys do not each hit the store.
    * ``hasher`` — the digest algorithm (HMAC with a pepper when ``KEYGUARD_PEPPER`` is set).
      The store's pepper fingerprint must match it (checked when the verifier is built).
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
      are answered 429 instead of 401, and the address causes no store reads. It never refuses
      a key that verifies against a cached record, so an attacker cannot lock a key's owner
      out. ``None`` disables it.
    * ``unknown_id_budget`` — a :class:`~keyguard.core.lookup_budget.LookupBudget`: how many
      store lookups of unknown key ids one client address may cause (default 60 per minute,
      in bursts of 60); past it, fresh ids are answered ``invalid_api_key`` without a store
      read (and count as failures). ``None`` disables it.
    * ``trusted_proxies`` — how many proxies in front of the app append to
      ``X-Forwarded-For``; 0 (default) trusts no forwarded header and counts the peer address.
    * ``expiry_warning`` — seconds (default 7 days): an allowed response made with a credential
      that stops working within that window (its expiry, or the end of a rotation grace)
      carries ``API-Key-Expires: <ISO time>``; ``None`` turns it off.
    * ``stale_if_error`` — off (0) by default: while the store is unreachable, every request
      that needs it is refused 503 (fail closed). With N > 0, a key verified in this process
      within the last ``cache_ttl + N`` seconds keeps being judged against its last known
      record while the store is down — availability bought with staleness: a revocation made
      during the outage is not seen here for up to N seconds. Unknown keys still get 503.
    * ``read_only`` — never write to the store (no re-hash, no ``last_used_at``, no pepper
      fingerprint): for diagnostics and CLI commands that must not change what a running
      service sees.
    * ``clock`` — the wall clock for expiry and rotation grace, wrapped in a
      :class:`~keyguard.core.clock.Ratchet` so that it never goes backwards.
    * ``observer`` — events and usage counting (a :class:`keyguard.observability.Observer`;
      see :mod:`keyguard.core.observe`). ``None`` (default): the request path pays one
      attribute check for it. An observer that counts usage also keeps ``last_used_at``, so
      the verifier's own ``touch`` writes stop.
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
        unknown_id_budget: LookupBudget | Literal["default"] | None = "default",
        trusted_proxies: int = 0,
        read_only: bool = False,
        expiry_warning: float | None = DEFAULT_WARNING_WINDOW,
        stale_if_error: float = 0.0,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        observer: RequestObserver | None = None,
    ) -> None:
        if cache_ttl < 0 or negative_cache_ttl < 0:
            raise ConfigurationError("cache TTLs must be >= 0")
        if max_header_length < key_format.max_length + len(CANONICAL):
            raise ConfigurationError("max_header_length is shorter than a key of this format")
        self.store = store
        self._store_incident = Incident(f"key store lookup ({store!r})", logger)
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
        if expiry_warning is not None and not expiry_warning >= 0:
            raise ConfigurationError("expiry_warning must be >= 0 seconds (or None)")
        self.expiry_warning = expiry_warning
        if isinstance(stale_if_error, bool) or not 0 <= stale_if_error < math.inf:
            raise ConfigurationError("stale_if_error must be a number of seconds >= 0")
        self.stale_if_error = float(stale_if_error)
        self._clock = ratchet(clock)
        self._monotonic = monotonic
        self._cache = KeyCache(
            size=cache_size,
            ttl=cache_ttl,
            negative_size=negative_cache_size,
            negative_ttl=negative_cache_ttl,
            implications=catalog.implications if catalog is not None else None,
            dummy_digest=self.hasher.dummy_digest,
            privileged=catalog.privileged if catalog is not None else DEFAULT_PRIVILEGED,
        )
        # The fast path reads these dicts with one atomic ``dict.get`` (no lock).
        self._index = self._cache.index
        self._denials = self._cache.denials
        self._lock = self._cache.lock
        self._touched: LRUCache[str, float] = LRUCache(maxsize=cache_size)
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
        # fast_admit()'s limiter calls (ASGI and text headers), found for self.limiter and
        # self.rate_limits by _refresh_lane() (and again whenever either is replaced).
        self._lane_for: object = _UNSET
        self._lane_windows: object = _UNSET
        self._lane_min_length = len(CANONICAL) + key_format.min_length
        self._lane_asgi: _LaneAdmit | None = None
        self._lane_text: _LaneAdmit | None = None
        # (value, digest) of the last value fast_admit() found in no index entry, for
        # verify_nowait() to reuse when it is handed the same object (an identity test: a
        # value equal but not identical is hashed again).
        self._missed: tuple[object, bytes] = _NO_MISS
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
        self.unknown_id_budget = (
            LookupBudget(60, 60.0) if unknown_id_budget == "default" else unknown_id_budget
        )
        if isinstance(trusted_proxies, bool) or trusted_proxies < 0:
            raise ConfigurationError("trusted_proxies must be an integer >= 0")
        self.trusted_proxies = trusted_proxies
        # verify_nowait() may settle cached denials itself when counting a failure needs no
        # I/O either (an in-process brute-force guard, or none).
        self._settle_inline = self.brute_force is None or bool(
            getattr(self.brute_force, "in_process", False)
        )
        # The store's pepper fingerprint: checked now, or before the first key lookup if the
        # store is unreachable now; a mismatch at startup raises.
        self._pepper = StoreCheck(store, self.hasher, write=not read_only)
        store.subscribe_invalidations(self.invalidate)
        #: The observer of every request (events, usage), or ``None``.
        self.observer = observer
        if observer is not None:
            self._store_incident.listener = getattr(observer, "store_failed", None)

    # -- cache control --------------------------------------------------------------------
    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one key (or every key) so the next request re-reads the store."""
        self._cache.invalidate(key_id)

    def cache_stats(self) -> CacheStats:
        """The record cache's counters and sizes (hit ratio, for metrics)."""
        return self._cache.stats()

    # -- pure steps -------------------------------------------------------------------------
    def _hot(self, authorization: AuthorizationValue) -> tuple[Decision | None, bytes]:
        """Step 1, before any parsing: a header value that verified recently is answered from
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
        missed = self._missed
        if missed[0] is raw:  # fast_admit() hashed this very value (as in verify_nowait())
            digest = missed[1]
            self._missed = _NO_MISS
        else:
            digest = blake2s(raw).digest()  # type: ignore[arg-type]
        hit = self._index.get(digest)
        if hit is not None and hit[1] > self._monotonic():
            self._cache.index_hits += 1
            return hit[0], digest
        return None, digest

    def _judge(self, credential: str, entry: CacheEntry, now: float) -> tuple[Decision, float]:
        """Step 5 (see :func:`~keyguard.core.authn.judge`): the decision for ``credential``
        against a cache entry (the cache's ``unknown`` entry for an unknown id), and until when
        an allowed decision holds (wall clock)."""
        denial, until = judge(self.hasher, credential, entry.record, now)
        if denial is not None:
            return denial, until
        window = self.expiry_warning
        if window is not None and until - now <= window:
            # The credential used stops working soon (expiry, or the end of a rotation grace):
            # say when, on every response (rare: keys in their last days only).
            allowed = entry.allowed
            return allowed._replace(
                extra_headers=(*allowed.extra_headers, expiry_header(until))
            ), until
        return entry.allowed, until

    def _conclude(
        self,
        authorization: AuthorizationValue,
        credential: str,
        digest: bytes,
        entry: CacheEntry,
        now: float,
        now_mono: float,
    ) -> Decision:
        """Judge; index a success for the fast path if the header is the canonical spelling,
        until the earliest of the entry's freshness, expiry and grace."""
        result, until = self._judge(credential, entry, now)
        if result.allowed and digest and is_canonical(authorization, credential):
            deadline = min(entry.fresh_until, now_mono + (until - now))
            window = self.expiry_warning
            if window is not None and result is entry.allowed and math.isfinite(until):
                # Unwarned now: the index must stop answering when the warning window opens.
                deadline = min(deadline, now_mono + (until - window - now))
            self._cache.remember(digest, entry, deadline, result)
        return result

    def _stale_usable(self, entry: CacheEntry | None, now_mono: float) -> bool:
        """Whether a stale cached record may stand in for an unreachable store
        (``stale_if_error``): only a real key's record, and only that many seconds past its
        freshness."""
        window = self.stale_if_error
        return (
            window > 0
            and entry is not None
            and entry.principal is not None
            and now_mono - entry.fresh_until <= window
        )

    def _restrict(
        self, decision: Decision, peer: Peer, forwarded_for: str | bytes | None
    ) -> Decision:
        """A key's own restrictions, after its secret matched: suspended, or used from outside
        its networks (the client resolved as for the brute-force guard; unknown → refused)."""
        principal = decision.principal
        assert principal is not None
        record = principal.record
        if record.suspended_at is None and not record.allowed_networks:
            return decision
        denial = record_denial(record, self._client(peer, forwarded_for), self._clock())
        return decision if denial is None else denial

    def _authorize(self, decision: Decision, requirement: Requirement | None) -> Decision:
        """Step 6: scopes. ``requirement`` None means authentication alone suffices."""
        if requirement is None or not decision.allowed:
            return decision
        denial = authorize(decision.principal, requirement)
        return decision if denial is None else denial

    def _needs_rehash(self, entry: CacheEntry, credential: str) -> KeyRecord | None:
        record = entry.record
        if not self.rehash or not self.hasher.needs_rehash(record.digest):
            return None
        if not self.hasher.verify(credential, record.digest):
            return None  # verified with the previous digest: rotation owns this record
        return record.evolve(digest=self.hasher.digest(credential))

    def _due_touch(self, key_id: str, now: float) -> bool:
        if self.read_only:
            return False
        observer = self.observer
        if observer is not None and observer.owns_last_used:
            return False  # usage counting writes last_used_at with its flushes
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

    def _client(self, peer: Peer, forwarded_for: str | bytes | None) -> str | None:
        if isinstance(peer, tuple | list):  # an ASGI (host, port); a host of None: no address
            host = peer[0] if peer else None
            peer = None if host is None else str(host)
        if forwarded_for is not None and isinstance(forwarded_for, bytes):
            forwarded_for = forwarded_for.decode("latin-1")
        return client_address(peer, forwarded_for, trusted_proxies=self.trusted_proxies)

    def _stale_matches(self, credential: str, stale: CacheEntry | None, now: float) -> bool:
        """Whether ``credential`` matches a stale cached copy of its record (then the store
        may be read although the address is blocked: the requester holds a real secret).
        The same work whether or not there is such a copy."""
        result, _ = self._judge(credential, stale or self._cache.unknown, now)
        return result is not d.INVALID

    def _gate(
        self, credential: str, entry: CacheEntry | None, client: str, barred: bool
    ) -> tuple[CacheEntry | None, bool, LookupBudget | None]:
        """Before a store read for ``client``: may it read? Not when its address is blocked
        or has spent its lookup budget — unless the secret matches a stale cached copy of the
        record. Returns the entry to use, whether it is final (the store stays untouched),
        and the budget to refund if the id turns out to exist."""
        budget = self.unknown_id_budget
        if not barred and (budget is None or budget.take(client)):
            return entry, False, budget
        if self._stale_matches(credential, entry, self._clock()):
            return entry, False, None
        return self._cache.unknown, True, None

    def _failed(
        self, result: Decision, client: _Client, peer: Peer, forwarded_for: str | bytes | None
    ) -> Decision:
        """Count a guess against the client address (429 once it is blocked)."""
        guard = self.brute_force
        if guard is None or result.code not in GUESSES:
            return result
        if isinstance(client, _Unset):
            # WSGI's REMOTE_ADDR, or an ASGI client's host.
            host = peer if type(peer) is str else peer[0] if type(peer) is tuple and peer else None
            if type(host) is str and (forwarded_for is None or not self.trusted_proxies):
                # No X-Forwarded-For to trust: _client() inlined, and peer_address()'s IPv4
                # case with it (no colon, no bracket: the stripped text, see there).
                if ":" in host or "[" in host:
                    client = peer_address(host)
                else:
                    client = host.strip()[:MAX_ADDRESS_LENGTH] or None
            else:
                client = self._client(peer, forwarded_for)
        retry_after = guard.record_failure(client)
        return result if retry_after is None else blocked(retry_after, result)

    async def _afailed(
        self, result: Decision, client: _Client, peer: Peer, forwarded_for: str | bytes | None
    ) -> Decision:
        """Async :meth:`_failed`."""
        guard = self.brute_force
        if guard is None or result.code not in GUESSES:
            return result
        if isinstance(client, _Unset):
            client = self._client(peer, forwarded_for)
        return blocked(await guard.arecord_failure(client), result)

    # -- sync I/O skin ----------------------------------------------------------------------
    def authenticate(
        self,
        authorization: AuthorizationValue,
        *,
        peer: Peer | _Unset = _UNSET,
        forwarded_for: str | bytes | None = None,
        restrictions: bool = True,
    ) -> Decision:
        """Authenticate only: the principal, or the denial. Blocking (for WSGI and scripts).

        With ``peer`` (and ``forwarded_for``, see :meth:`verify`) the brute-force guard and the
        lookup budget apply to the client address: failures are counted (429 once the address
        is blocked) and a blocked address causes no store reads. Without them, neither applies.
        A key's own restrictions apply after its secret matched — suspended, or used from
        outside its ``allowed_networks`` (an unknown client address never satisfies them: pass
        the peer) — unless ``restrictions=False`` (for callers that judge them themselves).
        """
        hit, digest = self._hot(authorization)
        anonymous = isinstance(peer, _Unset) and forwarded_for is None
        peer = None if isinstance(peer, _Unset) else peer
        if hit is not None:
            return self._restrict(hit, peer, forwarded_for) if restrictions else hit
        result, client = self._slow(authorization, digest, peer, forwarded_for)
        if result.allowed:
            return self._restrict(result, peer, forwarded_for) if restrictions else result
        if anonymous:
            return result
        return self._failed(result, client, peer, forwarded_for)

    def _slow(
        self,
        authorization: AuthorizationValue,
        digest: bytes,
        peer: Peer,
        forwarded_for: str | bytes | None,
    ) -> tuple[Decision, _Client]:
        """Steps 2–5 off the fast path: the decision, and the client address if it had to be
        worked out (only before a store read)."""
        credential = read_credential(authorization, self.max_header_length)
        if isinstance(credential, Decision):
            return credential, _UNSET
        key_id = self.key_format.key_id_of(credential)
        if key_id is None:
            return d.BAD_FORMAT, _UNSET
        now_mono = self._monotonic()
        entry, fresh = self._cache.lookup(key_id, now_mono)
        client: _Client = _UNSET
        if not fresh:
            if self._pepper.pending and not self._pepper.run():
                return d.UNAVAILABLE, client
            budget = None
            guard = self.brute_force
            if guard is not None or self.unknown_id_budget is not None:
                client = self._client(peer, forwarded_for)
            address = client if isinstance(client, str) else None
            if address is not None:
                barred = guard is not None and guard.is_blocked(address) is not None
                entry, fresh, budget = self._gate(credential, entry, address, barred)
            if not fresh:
                generation = self._cache.generation
                try:
                    record = self.store.get(key_id)
                except Exception as exc:
                    self._store_incident.failed(exc)
                    if not self._stale_usable(entry, now_mono):
                        return d.UNAVAILABLE, client
                    # stale_if_error: judge against the last record seen (not re-cached).
                else:
                    self._store_incident.succeeded()
                    if budget is not None and record is not None:
                        budget.refund(address)
                    entry = self._cache.put(record, key_id, now_mono, since=generation)
        assert entry is not None
        now = self._clock()
        result = self._conclude(authorization, credential, digest, entry, now, now_mono)
        if result.allowed:
            self._after_success(entry, credential, now)
        return result, client

    def _settle(self, authorization: AuthorizationValue, digest: bytes) -> Decision | None:
        """Steps 2–5 when they need no I/O (see :meth:`verify_nowait`): the denial, or
        ``None`` when the store must be read or the key verifies (its use is recorded by the
        full path, which may write to the store). ``digest``: the value's BLAKE2s, under which
        the denial is remembered (the cache's settled denials, which the caller has read
        first), if there is one."""
        cache = self._cache
        generation = cache.generation
        credential = read_credential(authorization, self.max_header_length)
        if isinstance(credential, Decision):
            if digest:
                cache.remember_denial(digest, credential, _FOREVER, False, generation)
            return credential
        key_id = self.key_format.key_id_of(credential)
        if key_id is None:
            if digest:
                cache.remember_denial(digest, d.BAD_FORMAT, _FOREVER, False, generation)
            return d.BAD_FORMAT
        now_mono = self._monotonic()
        # Uncounted: unless it settles a denial here, averify() looks the id up again.
        entry, until = cache.lookup_until(key_id, now_mono, counted=False)
        if until <= now_mono:
            return None
        assert entry is not None
        # Judged, not concluded: a success is not indexed here, so that averify() concludes it
        # (and records the key's use) exactly as it would have without this look-ahead.
        result, _ = self._judge(credential, entry, self._clock())
        if result.allowed:
            return None
        cache.count_hit()
        if digest:
            cache.remember_denial(digest, result, until, True, generation)
        return result

    def _after_success(self, entry: CacheEntry, credential: str, now: float) -> None:
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
        ``X-Forwarded-For`` value) identify the client for the brute-force guard and the
        lookup budget; they are only looked at when the store would be read or authentication
        fails.
        """
        observer = self.observer
        if observer is not None:
            return observed_verify(
                self, observer, authorization, method, path, required, peer, forwarded_for, False
            )[0]
        route = self.match(method, path)
        if route.requirement is None and required is None:
            return d.ALLOW_PUBLIC
        result = self.authenticate(authorization, peer=peer, forwarded_for=forwarded_for)
        if not result.allowed:
            return result
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
        self,
        authorization: AuthorizationValue,
        method: str = "GET",
        path: str = "/",
        *,
        required: Requirement | str | Sequence[str] | None = None,
        peer: Peer | _Unset = _UNSET,
        forwarded_for: str | bytes | None = None,
    ) -> Decision | None:
        """The decision when it needs no I/O and no await — a public route, a recently
        verified key with an in-process limiter, or (given ``peer``, with an in-process
        brute-force guard) a denial the cache settles: a malformed header or key, a key id
        known to be unknown, a wrong secret for a cached key — else ``None`` (then await
        :meth:`averify`). ``required``, ``peer`` and ``forwarded_for`` are as in
        :meth:`verify`.

        ASGI adapters call this first: on the common paths it saves creating coroutines.
        """
        observer = self.observer
        if observer is not None:
            if required is not None:
                return None  # the observed quick path knows only the policy: averify() checks
            client = None if isinstance(peer, _Unset) else peer
            outcome = observed_nowait(
                self, observer, authorization, method, path, client, forwarded_for, False
            )
            return None if outcome is None else outcome[0]
        policy = self.policy
        if policy is None:
            route = _DEFAULT_MATCH
        else:
            # RoutePolicy.match()'s first probe inlined, as in fast_admit().
            by_method = policy._static.get(path)
            route = None if by_method is None else by_method.get(method)  # type: ignore[assignment]
            if route is None:
                route = policy.match(method, path)
        requirement = route.requirement
        if route.rate_limited and not self._limit_inline and self.limiter is not None:
            return None  # the limiter does I/O: the whole request takes the awaited path
        if required is not None:
            if requirement is None:
                return None  # public by the policy, but the caller requires more: rare
            also = required if isinstance(required, Requirement) else as_requirement(required)
        else:
            also = None
            if requirement is None:
                self._missed = _NO_MISS  # fast_admit() may have hashed a value: let it go
                return d.ALLOW_PUBLIC
        # _hot() inlined: this is the path nearly every request of a busy service takes.
        kind = type(authorization)
        raw: bytes | None = None
        if kind is bytes:
            raw = authorization  # type: ignore[assignment]
        elif kind is str:
            raw = authorization.encode()  # type: ignore[union-attr]
        hit = None
        digest = b""
        if raw is not None and len(raw) <= self.max_header_length:
            missed = self._missed
            if missed[0] is raw:  # the same object fast_admit() just hashed: its digest,
                digest = missed[1]  # which it has just looked for in the index, in vain
                self._missed = _NO_MISS  # (and no reference to the value kept)
            else:
                digest = blake2s(raw).digest()
                hit = self._index.get(digest)
        if hit is None or hit[1] <= self._monotonic():
            if isinstance(peer, _Unset) or not self._settle_inline:
                return None
            # A value refused before (a client stuck on a bad key): the cache's settled
            # denials, one dict read; else _settle() judges it.
            memo = self._denials.get(digest) if digest else None
            if memo is not None and memo[1] > self._monotonic():
                if memo[2]:
                    self._cache.hits += 1
                return self._failed(memo[0], _UNSET, peer, forwarded_for)
            denial = self._settle(authorization, digest)
            return None if denial is None else self._failed(denial, _UNSET, peer, forwarded_for)
        result = hit[0]
        principal = result.principal
        assert principal is not None  # the index holds allowed decisions only
        record = principal.record
        if record.suspended_at is not None or record.allowed_networks:
            if isinstance(peer, _Unset):
                return None  # the answer depends on the client address: averify() has it
            self._cache.index_hits += 1
            result = self._restrict(result, peer, forwarded_for)
            if not result.allowed:
                return result
        else:
            self._cache.index_hits += 1
        grants = principal.grants
        # A single scope the key holds exactly (the common case) needs no call.
        if (type(requirement) is not Scope or requirement.name not in grants.scopes) and (
            not requirement.is_satisfied_by(grants)
        ):
            return self._authorize(result, requirement)
        if also is not None and not also.is_satisfied_by(principal.grants):
            return self._authorize(result, also)
        limiter = self.limiter
        if limiter is None or not route.rate_limited:
            return result
        # (A limiter that does I/O sent the request to averify() before the index was read.)
        if record.rate_limit or (self.owner_rate_limits is not None and principal.owner):
            return self._limited(result, self._hit(limiter, principal, route.cost))
        # The common case of _hit() and _limited(), inlined: the key's default windows, and an
        # admitted request (whose headers are rendered later, from the counts).
        rd = limiter.hit(principal.key_id, self.rate_limits, route.cost)  # type: ignore[arg-type]
        if not rd[0] or rd[6]:
            return self._limited(result, rd)
        ietf = self.ietf_headers
        legacy = self.legacy_headers
        plan = rd[2]
        counts = rd[3]
        if plan is None or not counts or not (ietf or legacy):
            return result
        rate = (plan, counts, ietf, legacy)
        extra = result.extra_headers  # e.g. API-Key-Expires
        return _new_tuple(Decision, (True, principal, None, "", (), None, extra, rate))

    def fast_admit(
        self,
        authorization: bytes,
        method: str,
        path: str,
        required: Requirement | None = None,
        text: bool = False,
        observed: bool = False,
    ) -> (
        tuple[Principal, Any]
        | tuple[Principal, Any, str | None, RateDecision | None]
        | Decision
        | None
    ):
        """The adapters' fast path, for the request nearly every busy service sees: a
        recently verified key, an in-process limiter, the key's default windows.

        ``authorization`` is the header's value as bytes (WSGI's text value ``.encode()``d,
        as :meth:`verify_nowait` hashes it). ``(principal, rate-limit headers)`` when admitted
        (the headers as ASGI byte pairs in a list, or with ``text`` as text pairs in a tuple,
        rendered together with the decision: :mod:`keyguard.core.ratelimit.fused`), the
        denial when the key lacks the scope (403) or the limiter refuses (429), and ``None``
        whenever anything else might decide — a public route, a key not in the fast index, a
        suspended or network-restricted key, a per-key or owner limit, extra headers
        (``API-Key-Expires``), events or usage counting, a limiter without this path: then
        :meth:`verify_nowait` (and :meth:`averify`) decide, exactly as they would have. What
        it answers, the limiter state and the cache counters are the same as
        :meth:`verify_nowait`'s.
        ``required`` (a :class:`~keyguard.core.scopes.Requirement`, as a FastAPI dependency
        adds one) is checked on top of the route's, as :meth:`verify_nowait` checks it.

        ``observed``: for the adapters' observed path (events, usage counting), which reports
        each request itself: ``(principal, outcome, route template, rate)`` where the outcome
        is the headers (admitted) or the denial (403, or 429 with the limiter's refusal as
        ``rate``, else ``None``), and ``None`` as above.
        """
        if self.observer is not None and not observed:
            return None
        if self.limiter is not self._lane_for or self.rate_limits is not self._lane_windows:
            self._refresh_lane()
        admit = self._lane_text if text else self._lane_asgi
        if admit is None:
            return None
        # The key first: a key not in the index (every 401) leaves before the route is looked
        # up, and a value too short to hold a key (a malformed one) before it is hashed.
        if not self._lane_min_length <= len(authorization) <= self.max_header_length:
            return None
        digest = blake2s(authorization).digest()
        hit = self._index.get(digest)
        if hit is None or hit[1] <= self._monotonic():
            if not text:
                # An ASGI adapter calls verify_nowait() next, with this very object (every 401
                # of a well-formed value comes this way): it takes the digest instead of
                # hashing the value again, and lets go of the value. (A text caller encoded
                # its value for this call alone: nothing would take it.)
                self._missed = (authorization, digest)
            return None
        # The key's own conditions (suspended, networks, its own limit, extra headers) were
        # judged when it was indexed: the lane is its principal, or None.
        principal = hit[2]
        if principal is None or (self.owner_rate_limits is not None and principal.owner):
            return None
        policy = self.policy
        route: RouteMatch | None
        if policy is None:
            route = _DEFAULT_MATCH
        else:
            # RoutePolicy.match()'s first probe inlined (a static path, the method as sent);
            # anything else, match() itself.
            by_method = policy._static.get(path)
            route = None if by_method is None else by_method.get(method)
            if route is None:
                route = policy.match(method, path)
        requirement = route.requirement
        if requirement is None or not route.rate_limited:
            return None
        self._cache.index_hits += 1
        grants = principal.grants
        # A single scope the key holds exactly, or any valid key, needs no call.
        if (
            requirement is not AUTHENTICATED
            and (type(requirement) is not Scope or requirement.name not in grants.scopes)
            and not requirement.is_satisfied_by(grants)
        ):
            denial = self._authorize(hit[0], requirement)  # the 403, as verify_nowait() says it
            return (principal, denial, route.template, None) if observed else denial
        if (
            required is not None
            and (type(required) is not Scope or required.name not in grants.scopes)
            and not required.is_satisfied_by(grants)
        ):
            denial = self._authorize(hit[0], required)
            return (principal, denial, route.template, None) if observed else denial
        got = admit(principal.key_id, route.cost, self.ietf_headers, self.legacy_headers)
        if type(got) is not RateDecision:
            return (principal, got, route.template, None) if observed else (principal, got)
        denial = self._limited(hit[0], got)
        return (principal, denial, route.template, got) if observed else denial

    def _refresh_lane(self) -> None:
        """Find :meth:`fast_admit`'s limiter calls for the current ``self.limiter`` and
        ``self.rate_limits``: its ``admitter`` functions when it has them and decides in
        process, unless a subclass overrides ``hit`` or ``admit`` below the class that defines
        ``admitter`` (that method must keep deciding)."""
        limiter = self.limiter
        windows = self.rate_limits
        asgi = text = None
        admitter = getattr(limiter, "admitter", None)
        if admitter is not None and windows is not None and getattr(limiter, "in_process", False):
            mro = type(limiter).__mro__
            owner = next((i for i, k in enumerate(mro) if "admitter" in vars(k)), None)
            # No class defines it (an attribute of the instance): not a limiter's own path.
            if owner is not None and not any(
                "hit" in vars(k) or "admit" in vars(k) for k in mro[:owner]
            ):
                asgi = admitter(windows)
                text = admitter(windows, True)
        self._lane_asgi = asgi
        self._lane_text = text
        self._lane_for = limiter
        self._lane_windows = windows

    # -- async I/O skin ---------------------------------------------------------------------
    async def aauthenticate(
        self,
        authorization: AuthorizationValue,
        *,
        peer: Peer | _Unset = _UNSET,
        forwarded_for: str | bytes | None = None,
        restrictions: bool = True,
    ) -> Decision:
        """Async :meth:`authenticate`: store I/O on a miss never blocks the event loop."""
        hit, digest = self._hot(authorization)
        anonymous = isinstance(peer, _Unset) and forwarded_for is None
        peer = None if isinstance(peer, _Unset) else peer
        if hit is not None:
            return self._restrict(hit, peer, forwarded_for) if restrictions else hit
        result, client = await self._aslow(authorization, digest, peer, forwarded_for)
        if result.allowed:
            return self._restrict(result, peer, forwarded_for) if restrictions else result
        if anonymous:
            return result
        return await self._afailed(result, client, peer, forwarded_for)

    async def _aslow(
        self,
        authorization: AuthorizationValue,
        digest: bytes,
        peer: Peer,
        forwarded_for: str | bytes | None,
    ) -> tuple[Decision, _Client]:
        """Async :meth:`_slow` (keep the two in step)."""
        credential = read_credential(authorization, self.max_header_length)
        if isinstance(credential, Decision):
            return credential, _UNSET
        key_id = self.key_format.key_id_of(credential)
        if key_id is None:
            return d.BAD_FORMAT, _UNSET
        now_mono = self._monotonic()
        entry, fresh = self._cache.lookup(key_id, now_mono)
        client: _Client = _UNSET
        if not fresh:
            if self._pepper.pending and not await self._pepper.arun():
                return d.UNAVAILABLE, client
            budget = None
            guard = self.brute_force
            if guard is not None or self.unknown_id_budget is not None:
                client = self._client(peer, forwarded_for)
            address = client if isinstance(client, str) else None
            if address is not None:
                barred = guard is not None and await guard.ais_blocked(address) is not None
                entry, fresh, budget = self._gate(credential, entry, address, barred)
            if not fresh:
                generation = self._cache.generation
                try:
                    record = await self.store.aget(key_id)
                except Exception as exc:
                    self._store_incident.failed(exc)
                    if not self._stale_usable(entry, now_mono):
                        return d.UNAVAILABLE, client
                    # stale_if_error: judge against the last record seen (not re-cached).
                else:
                    self._store_incident.succeeded()
                    if budget is not None and record is not None:
                        budget.refund(address)
                    entry = self._cache.put(record, key_id, now_mono, since=generation)
        assert entry is not None
        now = self._clock()
        result = self._conclude(authorization, credential, digest, entry, now, now_mono)
        if result.allowed:
            await self._aafter_success(entry, credential, now)
        return result, client

    async def _aafter_success(self, entry: CacheEntry, credential: str, now: float) -> None:
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
        observer = self.observer
        if observer is not None:
            outcome = await observed_averify(
                self, observer, authorization, method, path, required, peer, forwarded_for, False
            )
            return outcome[0]
        route = self.match(method, path)
        if route.requirement is None and required is None:
            return d.ALLOW_PUBLIC
        result = await self.aauthenticate(authorization, peer=peer, forwarded_for=forwarded_for)
        if not result.allowed:
            return result
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
