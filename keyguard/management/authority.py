"""Who may change which key: the one rule behind every key-management mutation.

A key acting on keys (the ``parent`` of :class:`~keyguard.management.KeyManager` operations)
must first be allowed to manage keys at all (:func:`may_manage`: active, holding ``admin`` or
the management scope exactly). Then :func:`authorize` decides each mutation — create, update,
revoke (every key of a cascade), rotate, expire, suspend, resume — from the acting record, the
target as stored (``before``; ``None`` when creating) and as it would be stored (``after``):

* A key holding ``admin`` acts on any key. What it hands out is still bounded by what it holds:
  a new key, or a field an update widens (a later expiry, a looser rate limit, added scopes,
  wider networks), may not go beyond the acting key's own, and a new key belongs to the acting
  key's owner.
* Any other key acts only on itself and on keys it created, directly or indirectly: the
  target's ``created_by`` chain, followed upward from the target, must reach the acting key.
  An ancestor, a sibling or a stranger is refused, and so is a chain with a cycle, a missing
  link or more than ``max_depth`` links (a damaged store must not widen anybody's reach). The
  target must belong to the acting key's owner — an ownerless key is in *no* tenant, so
  ownerless keys reach each other only through the chain — and, before and after the change,
  it must be within the acting key: scopes covered (:meth:`ScopeCatalog.covers`), expiry no
  later, rate limits no looser, networks no wider (a key restricted to some networks acts only
  on keys restricted to networks inside them: :func:`keyguard.core.networks.networks_within`).
  A manager can therefore never act on a key that an admin made more powerful than the
  manager, nor make one so. A suspended acting key, like a revoked or expired one, may not act
  at all (:func:`may_manage`).

Pure: the caller passes ``parent_of`` (one record read) and gets a :class:`Verdict`, allowed,
or refused with a reason naming key ids, scopes, times and limits, never key material.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from keyguard.core.clock import to_iso
from keyguard.core.networks import networks_within
from keyguard.core.ratelimit import Window, parse_windows
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.core.scopes import ADMIN, ScopeCatalog

__all__ = [
    "MAX_CHAIN_DEPTH",
    "Verdict",
    "authorize",
    "is_admin",
    "may_manage",
    "no_looser",
]

#: The longest ``created_by`` chain followed before giving up (real chains are a few links).
MAX_CHAIN_DEPTH: Final = 64

ParentOf = Callable[[str], KeyRecord | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authority decision: ``allowed``, and why (for refusals: what to tell and audit)."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def _allow(reason: str) -> Verdict:
    return Verdict(True, reason)


def _refuse(reason: str) -> Verdict:
    return Verdict(False, reason)


# -- rate-limit comparison ---------------------------------------------------------------------
def _bound(windows: Iterable[Window], period: float) -> float:
    """The most requests ``windows`` can admit in any interval of length ``period``.

    A window of ``limit`` per ``p`` admits at most ``limit * ceil(period / p)`` requests in an
    interval of length ``period`` (the interval is covered by that many windows), and every
    window applies at once, so the tightest one wins.
    """
    best = math.inf
    for w in windows:
        best = min(best, w.limit * math.ceil(period / w.period - 1e-9))
    return best


def no_looser(child: Iterable[Window], parent: Iterable[Window]) -> bool:
    """Whether the ``child`` windows admit no more than the ``parent`` windows, at every
    period the parent limits."""
    child = tuple(child)
    return all(_bound(child, p.period) <= p.limit for p in parent)


def _windows(spec: str | None, default: Sequence[Window]) -> tuple[Window, ...]:
    return parse_windows(spec) if spec is not None else tuple(default)


# -- the rule --------------------------------------------------------------------------------
def is_admin(record: KeyRecord, catalog: ScopeCatalog) -> bool:
    """Whether the key holds ``admin`` (directly or through an implication)."""
    return ADMIN in catalog.grants(record.scopes)


def may_manage(
    actor: KeyRecord, now: float, *, catalog: ScopeCatalog, manage_scope: str
) -> Verdict:
    """Whether ``actor`` (freshly read) may act on keys at all: active, and holding ``admin``
    or ``manage_scope`` itself (no wildcard grants the management scope)."""
    status = actor.status(now)
    if status is not KeyStatus.ACTIVE:
        return _refuse(f"the acting key {actor.key_id} is {status.value}")
    if not catalog.grants(actor.scopes).satisfies(manage_scope):
        return _refuse(
            f"the acting key {actor.key_id} needs the 'admin' or '{manage_scope}' scope "
            "to manage keys"
        )
    return _allow("may manage keys")


def _lineage(actor_id: str, target: KeyRecord, parent_of: ParentOf, max_depth: int) -> str | None:
    """``None`` when ``target`` is the actor or descends from it; else why not."""
    if target.key_id == actor_id:
        return None
    seen = {target.key_id}
    current = target
    for _ in range(max_depth):
        up = current.created_by
        if up is None:
            return (
                f"key {target.key_id} was not created by the acting key {actor_id}, "
                "directly or indirectly"
            )
        if up == actor_id:
            return None
        if up in seen:
            return f"the creation chain of key {target.key_id} has a cycle at {up}"
        seen.add(up)
        found = parent_of(up)
        if found is None:
            return f"the creation chain of key {target.key_id} is broken at missing key {up}"
        current = found
    return f"the creation chain of key {target.key_id} is longer than {max_depth} keys"


def _exceeds(
    actor: KeyRecord,
    record: KeyRecord,
    *,
    catalog: ScopeCatalog,
    default_windows: Sequence[Window],
    relative_to: KeyRecord | None = None,
) -> str | None:
    """Why ``record`` is not within ``actor``, or ``None``.

    With ``relative_to`` only what ``record`` widens compared with it is checked (added
    scopes, a later expiry, a looser rate limit, wider networks): what an admin hands out by a
    change.
    """
    scopes = record.scopes
    if relative_to is not None:
        scopes = frozenset(s for s in scopes if not catalog.covers(relative_to.scopes, {s}))
    if not catalog.covers(actor.scopes, scopes):
        extra = sorted(s for s in scopes if not catalog.covers(actor.scopes, {s}))
        return f"scopes beyond the acting key's: {', '.join(extra or sorted(scopes))}"

    later = relative_to is None or (
        relative_to.expires_at is not None
        and (record.expires_at is None or record.expires_at > relative_to.expires_at)
    )
    if (
        later
        and actor.expires_at is not None
        and (record.expires_at is None or record.expires_at > actor.expires_at)
    ):
        return (
            f"an expiry later than the acting key's ({to_iso(actor.expires_at)}): "
            f"{to_iso(record.expires_at) if record.expires_at is not None else 'never'}"
        )

    mine = _windows(record.rate_limit, default_windows)
    looser = relative_to is None or not no_looser(
        mine, _windows(relative_to.rate_limit, default_windows)
    )
    if looser and not no_looser(mine, _windows(actor.rate_limit, default_windows)):
        theirs = actor.rate_limit or "the default policy"
        return (
            f"a rate limit ({record.rate_limit or 'the default policy'}) looser than the "
            f"acting key's ({theirs})"
        )

    nets = record.allowed_networks
    wider = relative_to is None or not networks_within(nets, relative_to.allowed_networks)
    if wider and not networks_within(nets, actor.allowed_networks):
        return (
            f"networks ({', '.join(nets) or 'any'}) beyond the acting key's "
            f"({', '.join(actor.allowed_networks)})"
        )
    return None


def authorize(
    actor: KeyRecord,
    before: KeyRecord | None,
    after: KeyRecord,
    parent_of: ParentOf,
    *,
    catalog: ScopeCatalog,
    default_windows: Sequence[Window],
    max_depth: int = MAX_CHAIN_DEPTH,
) -> Verdict:
    """May ``actor`` turn ``before`` (``None``: nothing, a creation) into ``after``?

    ``actor`` is the acting key's fresh record, already checked by :func:`may_manage`;
    ``parent_of(key_id)`` reads one record (``None`` if missing) to follow ``created_by``.
    See the module docstring for the rule.
    """
    target = after.key_id
    if is_admin(actor, catalog):
        if before is None and after.owner != actor.owner:
            return _refuse(f"a new key must belong to the acting key's owner ({actor.owner!r})")
        excess = _exceeds(
            actor, after, catalog=catalog, default_windows=default_windows, relative_to=before
        )
        if excess is not None:
            return _refuse(f"key {target} would get {excess}")
        return _allow("admin")

    subject = before if before is not None else after
    if subject.owner != actor.owner:
        # Never name the other owner: that would tell one tenant about another.
        return _refuse(f"key {target} does not belong to the acting key's owner")
    broken = _lineage(actor.key_id, subject, parent_of, max_depth)
    if broken is not None:
        return _refuse(broken)
    if before is not None:
        excess = _exceeds(actor, before, catalog=catalog, default_windows=default_windows)
        if excess is not None:
            return _refuse(f"key {target} holds {excess}")
    excess = _exceeds(actor, after, catalog=catalog, default_windows=default_windows)
    if excess is not None:
        return _refuse(f"key {target} would get {excess}")
    return _allow("itself" if target == actor.key_id else "created by the acting key")
