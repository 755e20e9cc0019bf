"""The local half of ``keyguard doctor``: why a key store would refuse a key, check by check.

:func:`diagnose` mirrors the verifier's order of work (format, prefix, key id, secret — current,
in-grace previous or rotated-out —, status, networks, scope, rate limit) on a read-only
:class:`~keyguard.management.manager.KeyManager`, and stops at the first refusal with a
:class:`~keyguard.client.diagnosis.Diagnosis` that says exactly why, and when. A status that
refuses a key is explained by its entry in :data:`STATUS_EXPLAINERS`, so a new status (such as
``suspended``) is one more entry. Nothing here writes to the store or holds on to the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from keyguard.client.diagnosis import Diagnosis, Finding, ago, refused
from keyguard.client.keycheck import check_key, parse_any_prefix
from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import DEFAULT_WINDOWS, format_windows, parse_windows
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import Grants
from keyguard.management.cli.errors import UsageError
from keyguard.management.manager import KeyManager

__all__ = ["RATELIMIT_URL_ENV", "STATUS_EXPLAINERS", "Question", "diagnose"]

RATELIMIT_URL_ENV: Final = "KEYGUARD_RATELIMIT_URL"

Explainer = Callable[[KeyRecord, float, list[Finding]], Diagnosis]


@dataclass(frozen=True)
class Question:
    """What the operator asked about besides the key itself."""

    method: str | None = None
    path: str | None = None
    policy: RoutePolicy | None = None
    client_address: str | None = None
    limiter: Any = None


# -- statuses: one entry per refused status (a new status is one more entry) ----------------
def _revoked(record: KeyRecord, now: float, findings: list[Finding]) -> Diagnosis:
    when = ago(record.revoked_at or now, now)
    why = record.revoked_reason or "no reason recorded"
    return refused(
        "revoked",
        f"key {record.key_id} was revoked at {when}: {why}. Revocation is final.",
        findings,
        key_id=record.key_id,
        revoked_at=record.revoked_at,
        revoked_reason=record.revoked_reason,
    )


def _expired(record: KeyRecord, now: float, findings: list[Finding]) -> Diagnosis:
    return refused(
        "expired",
        f"key {record.key_id} expired at {ago(record.expires_at or now, now)}",
        findings,
        key_id=record.key_id,
        expires_at=record.expires_at,
    )


def _suspended(record: KeyRecord, now: float, findings: list[Finding]) -> Diagnosis:
    # Suspension arrives with the management API; its fields are read if the record has them.
    at = getattr(record, "suspended_at", None)
    why = getattr(record, "suspended_reason", None)
    since = f" since {ago(at, now)}" if isinstance(at, int | float) else ""
    return refused(
        "suspended",
        f"key {record.key_id} is suspended{since}: {why or 'no reason recorded'}. It works "
        "again once resumed.",
        findings,
        key_id=record.key_id,
        suspended_at=at,
        suspended_reason=why,
    )


#: Status value → the explanation of a key refused for being in it.
STATUS_EXPLAINERS: Final[dict[str, Explainer]] = {
    "revoked": _revoked,
    "expired": _expired,
    "suspended": _suspended,
}


# -- the local diagnosis ----------------------------------------------------------------------
def diagnose(
    key: str, manager: KeyManager, *, now: float, ask: Question | None = None
) -> Diagnosis:
    """Why ``key`` would be refused by a service using ``manager``'s store (read-only)."""
    ask = Question() if ask is None else ask
    findings: list[Finding] = []
    problem = check_key(key)
    if problem is not None:
        return refused("format", f"the key is malformed ({problem})", findings, part=problem.part)
    parsed = parse_any_prefix(key)
    assert parsed is not None
    key_id = parsed.key_id
    findings.append(Finding("format", True, "well formed, checksum correct"))
    fmt = manager.key_format
    if fmt.parse(key) is None:
        return refused(
            "prefix",
            f"the key's prefix {parsed.prefix!r} is not this deployment's ({fmt.prefix!r}): it "
            "is a key for another deployment or environment (or set --prefix / "
            "KEYGUARD_KEY_PREFIX if this deployment issues that prefix)",
            findings,
            key_id=key_id,
            prefix=parsed.prefix,
        )
    record = manager.store.get(key_id)
    if record is None:
        return refused(
            "unknown",
            f"no key with id {key_id} in this store: a key for another environment or base "
            "URL, or one that was never created here",
            findings,
            key_id=key_id,
        )
    findings.append(Finding("key", True, f"key id {key_id} exists ({record.name})"))
    diagnosis = _secret(key, record, manager, now, findings)
    if diagnosis is not None:
        return diagnosis
    status = record.status(now).value
    if status != "active":
        explain = STATUS_EXPLAINERS.get(status)
        if explain is None:
            return refused(
                "status", f"key {key_id} is {status}", findings, key_id=key_id, status=status
            )
        return explain(record, now, findings)
    until = f", expires {ago(record.expires_at, now)}" if record.expires_at else ", no expiry"
    findings.append(Finding("status", True, f"active{until}"))
    for check in (_network, _scope, _rate_limit):
        diagnosis = check(record, manager, now, findings, ask)
        if diagnosis is not None:
            return diagnosis
    what = f"{ask.method} {ask.path}" if ask.path else "authentication"
    return Diagnosis(
        True,
        f"accepted: key {key_id} ({record.name}) passes every check for {what}",
        key_id=key_id,
        findings=findings,
        facts={"scopes": sorted(record.scopes)},
    )


def _secret(
    key: str, record: KeyRecord, manager: KeyManager, now: float, findings: list[Finding]
) -> Diagnosis | None:
    hasher = manager.hasher
    if hasher.verify(key, record.digest):
        findings.append(Finding("secret", True, "matches the key's current secret"))
        return None
    prev, grace = record.previous_digest, record.previous_expires_at
    if prev is not None and grace is not None and hasher.verify(key, prev):
        rotated = ago(record.rotated_at, now) if record.rotated_at else "its last rotation"
        if now < grace:
            findings.append(
                Finding(
                    "secret",
                    True,
                    f"the previous secret: accepted until {ago(grace, now)} (rotation grace; "
                    f"rotated at {rotated}) — switch to the new secret before then",
                )
            )
            return None
        return refused(
            "rotated_out",
            f"this is key {record.key_id}'s secret from before its rotation at {rotated}; the "
            f"grace period ended at {ago(grace, now)}. Use the new secret.",
            findings,
            key_id=record.key_id,
            rotated_at=record.rotated_at,
            grace_ended_at=grace,
        )
    hint = (
        f"; the key was rotated at {ago(record.rotated_at, now)}, so this is most likely an "
        "older secret (only the one before the latest rotation is kept)"
        if record.rotated_at
        else ""
    )
    return refused(
        "wrong_secret",
        f"key id {record.key_id} exists but the secret does not match{hint}",
        findings,
        key_id=record.key_id,
        rotated_at=record.rotated_at,
    )


def _network(
    record: KeyRecord, manager: KeyManager, now: float, findings: list[Finding], ask: Question
) -> Diagnosis | None:
    # allowed_networks arrives with the management API; checked when the record has it.
    networks = getattr(record, "allowed_networks", None)
    if not networks:
        return None
    client = ask.client_address
    shown = ", ".join(str(n) for n in networks)
    if client is None:
        findings.append(
            Finding(
                "network",
                True,
                f"restricted to {shown} (give --client-address to check an address)",
            )
        )
        return None
    try:
        address = ipaddress.ip_address(client)
        allowed = any(address in ipaddress.ip_network(str(n), strict=False) for n in networks)
    except ValueError as exc:
        raise UsageError(f"doctor: --client-address: {exc}") from None
    if allowed:
        findings.append(Finding("network", True, f"{client} is within {shown}"))
        return None
    return refused(
        "network",
        f"key {record.key_id} is restricted to {shown}; {client} is not in them",
        findings,
        key_id=record.key_id,
        allowed_networks=[str(n) for n in networks],
    )


def _scope(
    record: KeyRecord, manager: KeyManager, now: float, findings: list[Finding], ask: Question
) -> Diagnosis | None:
    method, path, policy = ask.method or "GET", ask.path, ask.policy
    held = ", ".join(sorted(record.scopes)) or "none"
    if path is None:
        findings.append(Finding("scope", True, f"the key holds: {held} (no route asked about)"))
        return None
    where = f"{method} {path}"
    if policy is None:
        findings.append(
            Finding(
                "scope",
                True,
                f"the key holds: {held}; give --policy module:attr to check what {where} needs",
            )
        )
        return None
    match = policy.match(method, path)
    requirement = match.requirement
    if requirement is None:
        findings.append(Finding("scope", True, f"{where} is public: no key is needed"))
        return None
    grants = Grants(record.scopes, manager.catalog.implications)
    if requirement.is_satisfied_by(grants):
        findings.append(Finding("scope", True, f"{where} needs {requirement.describe()}: held"))
        return None
    if not requirement.scopes:
        return refused(
            "no_route",
            f"no rule of the route policy covers {where}, and unlisted routes are denied by "
            "default (check the method and path)",
            findings,
            key_id=record.key_id,
        )
    return refused(
        "scope",
        f"{where} needs {requirement.describe()}; key {record.key_id} holds: {held}",
        findings,
        key_id=record.key_id,
        required_scopes=list(requirement.scopes),
        scopes=sorted(record.scopes),
    )


def _rate_limit(
    record: KeyRecord, manager: KeyManager, now: float, findings: list[Finding], ask: Question
) -> Diagnosis | None:
    limiter = ask.limiter
    spec = record.rate_limit
    try:
        windows = parse_windows(spec) if spec else DEFAULT_WINDOWS
    except ConfigurationError:
        windows = DEFAULT_WINDOWS
    shown = format_windows(windows)
    if limiter is None:
        findings.append(
            Finding(
                "rate_limit",
                True,
                f"limits {shown}; counts live in each server process (set {RATELIMIT_URL_ENV} "
                "when they are in Redis, or ask the service with --url)",
            )
        )
        return None
    decision = limiter.peek(record.key_id, windows)
    if decision.allowed:
        findings.append(Finding("rate_limit", True, f"limits {shown}: room left"))
        return None
    retry = decision.retry_after or 1
    violated = ", ".join(f"{w.limit} per {w.name}" for w in decision.violated) or shown
    return refused(
        "rate_limited",
        f"key {record.key_id} is rate-limited ({violated} used up) until {ago(now + retry, now)}",
        findings,
        key_id=record.key_id,
        retry_after=retry,
        until=now + retry,
    )
