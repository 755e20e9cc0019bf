"""``keyguard --url …``: the CLI's key commands against a remote management API.

:class:`RemoteManager` offers the part of :class:`~keyguard.management.KeyManager` the commands
use, each call one request to :mod:`keyguard.management.api` with httpx, so ``keyguard keys …``
prints the same output and exits with the same status whether it works on a store or on a
service. The acting key comes from ``$KEYGUARD_API_KEY`` (never the command line: shell history,
``ps`` and CI logs would keep it) and the server decides what it may do — its authority, its
audit label (``--actor`` does not apply remotely), its lifetime policy. Problems come back as
the exceptions a local store would raise (``KeyNotFound``, ``PermissionDenied``, …) carrying
the server's detail, so error lines and exit statuses match too. Plain ``http://`` is refused
except to a loopback address: the acting key would cross the network in clear.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from keyguard.core.clock import to_iso
from keyguard.core.decision import Decision, Principal, deny
from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    ErrorCode,
    InvalidOperation,
    KeyguardError,
    KeyNotFound,
    PermissionDenied,
    StoreUnavailable,
)
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page
from keyguard.core.scopes import ScopeCatalog
from keyguard.management.mutations import CreatedKey
from keyguard.management.reader import DEFAULT_EXPIRING_SOON
from keyguard.stores.base import MAX_PAGE_SIZE

__all__ = ["API_KEY_ENV", "API_URL_ENV", "RemoteManager", "transport_for"]

API_KEY_ENV: Final = "KEYGUARD_API_KEY"
API_URL_ENV: Final = "KEYGUARD_API_URL"
DEFAULT_TIMEOUT: Final = 10.0

#: Tests (and embedders) may route requests elsewhere: ``url -> httpx transport or None``.
transport_for: Callable[[str], Any] = lambda url: None  # noqa: E731 - a replaceable hook


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "--url must be the management API's http(s) URL, e.g. https://keys.example.com/api-keys"
        )
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConfigurationError(
                f"refusing to send the acting key in clear to {host}: use https:// "
                "(plain http:// only to localhost)"
            )
    if parts.username or parts.password:
        raise ConfigurationError("--url must not carry credentials; use $KEYGUARD_API_KEY")
    return url.rstrip("/")


def _time(value: object) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).timestamp()


def record_from(d: Mapping[str, Any]) -> KeyRecord:
    """A record from the API's public form (no digest: the server never sends one)."""
    return KeyRecord(
        key_id=str(d["key_id"]),
        name=str(d["name"]),
        digest="",
        scopes=frozenset(d.get("scopes") or ()),
        description=d.get("description"),
        owner=d.get("owner"),
        created_at=_time(d.get("created_at")) or 0.0,
        expires_at=_time(d.get("expires_at")),
        revoked_at=_time(d.get("revoked_at")),
        revoked_reason=d.get("revoked_reason"),
        created_by=d.get("created_by"),
        rate_limit=d.get("rate_limit"),
        metadata=dict(d.get("metadata") or {}),
        last_used_at=_time(d.get("last_used_at")),
        previous_expires_at=_time(d.get("rotation_grace_until")),
        rotated_at=_time(d.get("rotated_at")),
        suspended_at=_time(d.get("suspended_at")),
        suspended_reason=d.get("suspended_reason"),
        allowed_networks=tuple(d.get("allowed_networks") or ()),
        prefix=str(d.get("prefix") or "kg"),
    )


def _event(d: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        at=float(d["at"]),
        action=str(d["action"]),
        key_id=str(d["key_id"]),
        actor=str(d["actor"]),
        details=dict(d.get("details") or {}),
    )


def _seconds(value: float | None) -> int | None:
    return None if value is None else math.ceil(value)


class RemoteManager:
    """Key management through a remote management API (see the module docstring)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        catalog: ScopeCatalog | None = None,
    ) -> None:
        import httpx  # the 'client' extra; imported here so local commands never need it

        self.url = _check_url(url)
        self.catalog = catalog or ScopeCatalog.platform()
        self._httpx = httpx
        self._key = api_key
        self._client = httpx.Client(
            timeout=timeout,
            transport=transport_for(self.url),
            headers={"User-Agent": "keyguard-cli"},
        )

    def __enter__(self) -> RemoteManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RemoteManager({self.url!r})"

    # -- transport -------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Any:
        headers = {"Authorization": f"UserKey {key or self._key}"}
        try:
            return self._client.request(
                method,
                self.url + path,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
            )
        except self._httpx.HTTPError as exc:
            raise StoreUnavailable(
                f"cannot reach the management API at {self.url} ({type(exc).__name__})"
            ) from None

    def _call(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        response = self._request(method, path, json=json, params=params)
        if response.is_success:
            return response.json()
        raise self._problem(response)

    def _problem(self, response: Any) -> KeyguardError:
        try:
            problem = response.json()
            code, detail = str(problem.get("code", "")), str(problem.get("detail", ""))
        except (ValueError, AttributeError):
            code, detail = "", f"HTTP {response.status_code}"
        status = response.status_code
        if code == ErrorCode.NOT_FOUND:
            return KeyNotFound(detail)
        if code in (ErrorCode.ALREADY_PROCESSED, ErrorCode.IDEMPOTENCY_KEY_REUSED):
            return AlreadyProcessed(
                detail,
                key_id=str(problem.get("key_id", "")),
                reused=code == ErrorCode.IDEMPOTENCY_KEY_REUSED,
            )
        if code == ErrorCode.INVALID_STATE:
            return InvalidOperation(detail)
        if status == 401:
            return KeyguardError(
                f"the management API refused the acting key from ${API_KEY_ENV} ({code}): {detail}"
            )
        if status == 403:
            return PermissionDenied(detail)
        if status in (400, 413, 415, 422):
            return ConfigurationError(detail)
        if status in (429, 503):
            retry = response.headers.get("retry-after")
            later = f" (retry after {retry} s)" if retry else ""
            return StoreUnavailable(f"the management API answered {status} {code}{later}")
        return KeyguardError(f"the management API answered {status}: {detail or code}")

    # -- reading ---------------------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord:
        return record_from(self._call("GET", f"/{key_id}")["record"])

    def list(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | str | None = None,
        created_by: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        expiring_within: float | None = None,
    ) -> Page:
        if created_by is not None:
            raise ConfigurationError("filtering by creator is not offered by the management API")
        params = {
            "owner": owner,
            "status": None if status is None else KeyStatus(status).value,
            "limit": limit,
            "cursor": cursor,
            "expiring_within": _seconds(expiring_within),
        }
        page = self._call("GET", "", params=params)
        return Page(tuple(record_from(r) for r in page["keys"]), page.get("next_cursor"))

    def iter_all(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | str | None = None,
        expiring_within: float | None = None,
    ) -> Iterator[KeyRecord]:
        cursor: str | None = None
        while True:
            page = self.list(
                owner=owner,
                status=status,
                limit=MAX_PAGE_SIZE,
                cursor=cursor,
                expiring_within=expiring_within,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def expiring(self, within: float | None = None) -> builtins.list[KeyRecord]:
        window = DEFAULT_EXPIRING_SOON if within is None else within
        found = builtins.list(self.iter_all(expiring_within=window))
        return sorted(found, key=lambda r: (r.expires_at or 0.0, r.key_id))

    def audit(self, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        path = "/audit" if key_id is None else f"/{key_id}/audit"
        return [_event(e) for e in self._call("GET", path, params={"limit": limit})["events"]]

    def verify(self, plaintext: str) -> Decision:
        """Authenticate ``plaintext`` against the service (``GET /self`` with that key), as a
        request to it would be; a refusal is the service's code and detail."""
        response = self._request("GET", "/self", key=plaintext)
        if not response.is_success:
            try:
                problem = response.json()
                code = ErrorCode(problem["code"])
            except (ValueError, KeyError, TypeError):
                raise self._problem(response) from None
            if response.status_code in (401, 403, 429):
                return deny(code, str(problem.get("detail", "")))
            raise self._problem(response)
        record = record_from(response.json()["record"])
        grants = self.catalog.grants(record.scopes)
        principal = Principal(record.key_id, record.name, record.owner, grants, record)
        return Decision(True, principal)

    # -- changing ---------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        scopes: Iterable[str] = (),
        *,
        owner: str | None = None,
        expires_at: float | None = None,
        expires_in: float | None = None,
        rate_limit: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
        allowed_networks: Iterable[str] | None = None,
        actor: str | None = None,
    ) -> CreatedKey:
        del actor  # the server records the acting key
        body: dict[str, Any] = {"name": name, "scopes": builtins.list(scopes)}
        optional = {
            "owner": owner,
            "expires_at": to_iso(expires_at),
            "expires_in": _seconds(expires_in),
            "rate_limit": rate_limit,
            "metadata": None if metadata is None else dict(metadata),
            "description": description,
            "allowed_networks": None
            if allowed_networks is None
            else builtins.list(allowed_networks),
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        made = self._call("POST", "", json=body)
        return CreatedKey(record_from(made["record"]), str(made["key"]))

    def revoke(
        self, key_id: str, *, reason: str, actor: str | None = None, cascade: bool = True
    ) -> builtins.list[str]:
        del actor
        result = self._call("DELETE", f"/{key_id}", json={"reason": reason, "cascade": cascade})
        return [str(k) for k in result["revoked"]]

    def rotate(self, key_id: str, *, grace: float, actor: str | None = None) -> CreatedKey:
        del actor
        made = self._call("POST", f"/{key_id}/rotate", json={"grace_period": math.ceil(grace)})
        return CreatedKey(record_from(made["record"]), str(made["key"]))

    def expire(
        self, key_id: str, *, at: float | None = None, actor: str | None = None
    ) -> KeyRecord:
        del actor
        body = {} if at is None else {"at": to_iso(at)}
        return record_from(self._call("POST", f"/{key_id}/expire", json=body)["record"])

    def suspend(self, key_id: str, *, reason: str, actor: str | None = None) -> KeyRecord:
        del actor
        body = {"enabled": False, "reason": reason}
        return record_from(self._call("PATCH", f"/{key_id}", json=body)["record"])

    def resume(self, key_id: str, *, actor: str | None = None) -> KeyRecord:
        del actor
        return record_from(self._call("PATCH", f"/{key_id}", json={"enabled": True})["record"])
