"""The management API's operations, one function per route, framework-free.

Each takes the :class:`~keyguard.management.api.handler.ManagementAPI` (manager, policies),
the authenticated :class:`~keyguard.management.api.listing.Caller` and the request, validates
*everything* first (:mod:`~keyguard.management.api.body`) and then makes one
:class:`~keyguard.management.KeyManager` call, which applies the authority rule to the caller's
fresh record and writes the change with its audit event in one transaction — so a refused or
malformed request never leaves a partial write. Plaintext keys appear only in the bodies of
``create`` (201) and ``rotate``, both ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.errors import ConfigurationError, ErrorCode, KeyguardError, ScopeError
from keyguard.core.networks import parse_networks
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.management import validation as v
from keyguard.management.api import body as b
from keyguard.management.api.http import ApiRequest, ApiResponse, json_response
from keyguard.management.api.listing import Caller, Filters, audit_events, list_page, sees
from keyguard.management.api.problems import ApiError, from_exception
from keyguard.management.idempotency import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    Idempotency,
    fingerprint,
)
from keyguard.management.lifecycle import DEFAULT_GRACE, MAX_GRACE
from keyguard.management.mutations import CreatedKey
from keyguard.observability.reports import report_dict
from keyguard.stores.base import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from keyguard.management.api.handler import ManagementAPI

__all__ = [
    "audit_all",
    "audit_key",
    "create",
    "expire",
    "list_keys",
    "me",
    "revoke",
    "rotate",
    "show",
    "update",
    "usage_key",
    "usage_owner",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: The longest usage window a request may ask for, in days.
MAX_USAGE_DAYS: Final = 366

_CREATE: Final[dict[str, b.Field]] = {
    "name": b.string(v.MAX_NAME_LENGTH),
    "description": b.nullable(b.string(v.MAX_DESCRIPTION_LENGTH)),
    "scopes": b.string_list(100, 200),
    "expires_in": b.duration(),
    "expires_at": b.timestamp,
    "owner": b.nullable(b.string(v.MAX_OWNER_LENGTH)),
    "rate_limit": b.nullable(b.string(200)),
    "metadata": b.obj,
    "allowed_networks": b.string_list(100, 64),
}
_UPDATE: Final[dict[str, b.Field]] = {
    "name": b.string(v.MAX_NAME_LENGTH),
    "description": b.nullable(b.string(v.MAX_DESCRIPTION_LENGTH)),
    "metadata": b.obj,
    "scopes": b.string_list(100, 200),
    "enabled": b.boolean,
    "reason": b.string(v.MAX_REASON_LENGTH),
}
_REVOKE: Final[dict[str, b.Field]] = {
    "reason": b.string(v.MAX_REASON_LENGTH),
    "cascade": b.boolean,
}
_ROTATE: Final[dict[str, b.Field]] = {
    "grace_period": b.duration(allow_zero=True, maximum=MAX_GRACE),
}
_EXPIRE: Final[dict[str, b.Field]] = {"at": b.timestamp}
_LIST: Final[dict[str, b.Field]] = {
    "limit": b.query_int(1, MAX_PAGE_SIZE),
    "cursor": b.string(200),
    "owner": b.string(v.MAX_OWNER_LENGTH),
    "status": b.string(20),
    "scope": b.string(200),
    "expiring_within": b.duration(allow_zero=True),
}
_LIMIT: Final[dict[str, b.Field]] = {"limit": b.query_int(1, MAX_PAGE_SIZE)}
_USAGE: Final[dict[str, b.Field]] = {"days": b.query_int(1, MAX_USAGE_DAYS)}
_OWNER_USAGE: Final[dict[str, b.Field]] = {
    "days": b.query_int(1, MAX_USAGE_DAYS),
    "owner": b.string(v.MAX_OWNER_LENGTH),
}
_REVOKE_QUERY: Final[dict[str, b.Field]] = {
    "reason": b.string(v.MAX_REASON_LENGTH),
    "cascade": b.string(5),
}


def _checked(field: str, check: Any, value: Any) -> Any:
    """Run a management validator; its error names ``field`` (in the ``field`` member) and
    keeps the validator's own message as the detail — the message the CLI prints locally."""
    try:
        return check(value)
    except (ScopeError, ConfigurationError) as exc:
        raise ApiError(ErrorCode.INVALID_FIELD, str(exc), field=field) from None


def _idempotency(request: ApiRequest, *parts: Any) -> Idempotency | None:
    values = request.header_values(IDEMPOTENCY_HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(
            ErrorCode.INVALID_FIELD,
            f"{IDEMPOTENCY_HEADER} appears more than once",
            field=IDEMPOTENCY_HEADER,
        )
    value = values[0].strip()
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "\x21" <= c <= "\x7e" for c in value
    ):
        raise ApiError(
            ErrorCode.INVALID_FIELD,
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
            "characters (e.g. a UUID)",
            field=IDEMPOTENCY_HEADER,
        )
    return Idempotency(value, fingerprint(*parts))


def _existing(api: ManagementAPI, key_id: str) -> KeyRecord:
    """The key a request names (404 if unknown). Changes are then refused, and audited, by
    the key manager's authority rule."""
    try:
        return api.manager.get(key_id)
    except KeyguardError as exc:
        raise from_exception(exc) from None


def _target(api: ManagementAPI, caller: Caller, key_id: str) -> KeyRecord:
    """The key a read names, if the caller may see it (404 unknown, 403 outside)."""
    record = _existing(api, key_id)
    if not sees(api.manager, caller, record):
        raise ApiError(
            ErrorCode.PERMISSION_DENIED,
            f"key {record.key_id} is outside the authority of the acting key {caller.key_id}",
        )
    return record


def _created(api: ManagementAPI, made: CreatedKey, status: int, **extra: Any) -> ApiResponse:
    api.changed(made.key_id)
    payload = {"key": made.plaintext, "record": made.record.public_dict(api.now()), **extra}
    return json_response(status, payload, [("location", api.location(made.key_id))])


# -- create ----------------------------------------------------------------------------------
def create(api: ManagementAPI, caller: Caller, request: ApiRequest) -> ApiResponse:
    data = b.fields(b.json_body(request, max_bytes=api.max_body), _CREATE, required=("name",))
    if "expires_in" in data and "expires_at" in data:
        raise ApiError(
            ErrorCode.INVALID_FIELD,
            "expires_in: give expires_in or expires_at, not both",
            field="expires_in",
        )
    manager = api.manager
    name = _checked("name", lambda x: v.text(x, "name", v.MAX_NAME_LENGTH), data["name"])
    description = _checked("description", v.description, data.get("description"))
    scopes = _checked("scopes", manager.catalog.validate, data.get("scopes", []))
    owner = _checked("owner", v.owner, data.get("owner"))
    rate_limit = _checked("rate_limit", v.rate_limit, data.get("rate_limit"))
    metadata = _checked("metadata", v.metadata, data.get("metadata", {}))
    networks = (
        _checked("allowed_networks", parse_networks, data["allowed_networks"])
        if "allowed_networks" in data
        else None
    )
    now = api.now()
    expires_at, warnings = api.lifetime.resolve(data, now, caller.record.expires_at)
    idem = _idempotency(request, "create", data)
    try:
        made = manager.create(
            name,
            scopes,
            owner=owner,
            expires_at=expires_at,
            rate_limit=rate_limit,
            metadata=metadata,
            description=description,
            allowed_networks=networks,
            actor=caller.actor,
            parent=caller.record,
            idempotency=idem,
        )
    except KeyguardError as exc:
        raise from_exception(exc) from None
    extra: dict[str, Any] = {"warnings": warnings} if warnings else {}
    return _created(api, made, 201, **extra)


# -- read ------------------------------------------------------------------------------------
def list_keys(api: ManagementAPI, caller: Caller, request: ApiRequest) -> ApiResponse:
    q = b.query(request, _LIST)
    status = q.get("status")
    if status is not None:
        try:
            status = KeyStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in KeyStatus)
            raise ApiError(
                ErrorCode.INVALID_FIELD, f"status: expected one of {allowed}", field="status"
            ) from None
    filters = Filters(
        owner=q.get("owner"),
        status=status,
        scope=q.get("scope"),
        expiring_within=q.get("expiring_within"),
    )
    now = api.now()
    try:
        page = list_page(
            api.manager, caller, filters, limit=q.get("limit", 100), cursor=q.get("cursor"), now=now
        )
    except ConfigurationError as exc:
        raise ApiError(ErrorCode.INVALID_FIELD, f"cursor: {exc}", field="cursor") from None
    return json_response(
        200,
        {"keys": [r.public_dict(now) for r in page.items], "next_cursor": page.next_cursor},
    )


def show(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    b.query(request, {})
    return json_response(200, {"record": _target(api, caller, key_id).public_dict(api.now())})


def me(api: ManagementAPI, record: KeyRecord, request: ApiRequest) -> ApiResponse:
    b.query(request, {})
    return json_response(200, {"record": record.public_dict(api.now())})


def audit_key(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    limit = b.query(request, _LIMIT).get("limit", 100)
    target = _target(api, caller, key_id)
    events = audit_events(api.manager, caller, key_id=target.key_id, limit=limit)
    return json_response(200, {"events": [e.to_dict() for e in events]})


def audit_all(api: ManagementAPI, caller: Caller, request: ApiRequest) -> ApiResponse:
    limit = b.query(request, _LIMIT).get("limit", 100)
    events = audit_events(api.manager, caller, key_id=None, limit=limit)
    return json_response(200, {"events": [e.to_dict() for e in events]})


# -- usage -----------------------------------------------------------------------------------
def _usage_reader(api: ManagementAPI, method: str) -> Any:
    found = getattr(api.manager, method, None)
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, "usage counting is not available in this keyguard")
    return found


def usage_key(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    """Requests per day of a key the caller may see (the authority rule of every read)."""
    days = b.query(request, _USAGE).get("days", 30)
    target = _target(api, caller, key_id)
    try:
        report = _usage_reader(api, "usage")(target.key_id, days=days)
    except KeyguardError as exc:
        raise from_exception(exc) from None
    return json_response(200, {"usage": report_dict(report, name=target.name)})


def usage_owner(api: ManagementAPI, caller: Caller, request: ApiRequest) -> ApiResponse:
    """Requests per day summed over an owner's keys: ``admin`` only, since the sum covers keys
    outside any narrower authority (an ancestor's, a sibling's)."""
    q = b.query(request, _OWNER_USAGE)
    owner = q.get("owner")
    if owner is None:
        raise ApiError(ErrorCode.INVALID_FIELD, "owner: required", field="owner")
    if not caller.admin:
        raise ApiError(
            ErrorCode.PERMISSION_DENIED,
            f"per-owner usage needs an admin key; the acting key {caller.key_id} may read the "
            "usage of each key it manages (GET /{key_id}/usage)",
        )
    try:
        report = _usage_reader(api, "owner_usage")(owner, days=q.get("days", 30))
    except KeyguardError as exc:
        raise from_exception(exc) from None
    return json_response(200, {"usage": report_dict(report)})


# -- change ----------------------------------------------------------------------------------
def update(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    data = b.fields(b.json_body(request, max_bytes=api.max_body), _UPDATE)
    if not data:
        raise ApiError(ErrorCode.INVALID_FIELD, "the body changes nothing", field=None)
    if "reason" in data and data.get("enabled") is not False:
        raise ApiError(
            ErrorCode.INVALID_FIELD, 'reason: only with "enabled": false', field="reason"
        )
    manager = api.manager
    name = (
        _checked("name", lambda x: v.text(x, "name", v.MAX_NAME_LENGTH), data["name"])
        if "name" in data
        else None
    )
    description = _checked("description", v.description, data.get("description"))
    metadata = _checked("metadata", v.metadata, data["metadata"]) if "metadata" in data else None
    scopes = (
        _checked("scopes", manager.catalog.validate, data["scopes"]) if "scopes" in data else None
    )
    reason = _checked("reason", v.reason, data["reason"]) if "reason" in data else None
    target = _existing(api, key_id)
    if scopes is not None and not manager.catalog.covers(target.scopes, scopes):
        raise api.refuse(
            caller,
            "update",
            target.key_id,
            f"key {target.key_id}: PATCH may only narrow a key's scopes (create a new key for "
            "more)",
        )
    enabled = data.get("enabled")
    only_enabled = set(data) <= {"enabled", "reason"}
    try:
        if only_enabled and enabled is False:
            record = manager.suspend(
                target.key_id,
                reason=reason or "suspended via the management API",
                actor=caller.actor,
                parent=caller.record,
            )
        elif only_enabled:
            record = manager.resume(target.key_id, actor=caller.actor, parent=caller.record)
        else:
            record = manager.update(
                target.key_id,
                name=name,
                description=description if "description" in data else v.UNSET,
                metadata=metadata,
                scopes=scopes,
                enabled=enabled,
                suspend_reason=reason,
                actor=caller.actor,
                parent=caller.record,
            )
    except KeyguardError as exc:
        raise from_exception(exc) from None
    api.changed(record.key_id)
    return json_response(200, {"record": record.public_dict(api.now())})


def revoke(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    data = b.fields(b.json_body(request, max_bytes=api.max_body, required=False), _REVOKE)
    q = b.query(request, _REVOKE_QUERY)
    for name, value in q.items():
        if name in data:
            raise ApiError(
                ErrorCode.INVALID_FIELD, f"{name}: given in the query and the body", field=name
            )
        if name == "cascade":
            if value not in ("true", "false"):
                raise ApiError(ErrorCode.INVALID_FIELD, "cascade: true or false", field="cascade")
            data["cascade"] = value == "true"
        else:
            data[name] = value
    reason = _checked("reason", v.reason, data.get("reason", "revoked via the management API"))
    target = _existing(api, key_id)
    try:
        revoked = api.manager.revoke(
            target.key_id,
            reason=reason,
            actor=caller.actor,
            cascade=data.get("cascade", api.cascade),
            parent=caller.record,
        )
    except KeyguardError as exc:
        raise from_exception(exc) from None
    api.changed(*revoked)
    return json_response(200, {"revoked": revoked})


def rotate(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    data = b.fields(b.json_body(request, max_bytes=api.max_body, required=False), _ROTATE)
    grace = data.get("grace_period", DEFAULT_GRACE)
    target = _existing(api, key_id)
    idem = _idempotency(request, "rotate", target.key_id, grace)
    try:
        made = api.manager.rotate(
            target.key_id, grace=grace, actor=caller.actor, parent=caller.record, idempotency=idem
        )
    except KeyguardError as exc:
        raise from_exception(exc, field="grace_period") from None
    until = made.record.previous_expires_at
    return _created(api, made, 200, old_secret_valid_until=to_iso(until))


def expire(api: ManagementAPI, caller: Caller, request: ApiRequest, key_id: str) -> ApiResponse:
    data = b.fields(b.json_body(request, max_bytes=api.max_body, required=False), _EXPIRE)
    target = _existing(api, key_id)
    try:
        record = api.manager.expire(
            target.key_id, at=data.get("at"), actor=caller.actor, parent=caller.record
        )
    except KeyguardError as exc:
        raise from_exception(exc, field="at") from None
    api.changed(record.key_id)
    return json_response(200, {"record": record.public_dict(api.now())})
