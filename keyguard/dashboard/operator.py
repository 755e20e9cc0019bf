"""The signed-in operator, and how the dashboard acts for it through the management API.

The dashboard has no key-management logic of its own. Signing in authenticates the pasted key
exactly as a management API request would (the API's own authentication: the verifier with the
client address, so the brute-force guard counts failures; then the management scope, then the
key's rate limit). Every change is one of the management API's operations
(:mod:`keyguard.management.api.views`) called with a JSON request built from the form and the
caller re-read from the store and checked as the API does, so the same validation, lifetime
policy, idempotency and authority rule (:mod:`keyguard.management.authority`) apply, and
refusals are audited the same way. Reads use the API's listing rules
(:mod:`keyguard.management.api.listing`): a key sees exactly the keys it could act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyguard.core.errors import ErrorCode, KeyguardError
from keyguard.core.records import KeyRecord
from keyguard.management.api import ManagementAPI
from keyguard.management.api.http import ApiRequest, ApiResponse
from keyguard.management.api.listing import Caller
from keyguard.management.api.problems import ApiError, from_exception

__all__ = ["ActionError", "Operations", "Operator"]

View = Callable[..., ApiResponse]


@dataclass(frozen=True, slots=True)
class Operator:
    """The key signed in to this request's session, freshly read and checked."""

    caller: Caller
    csrf: str
    client: str | None

    @property
    def record(self) -> KeyRecord:
        return self.caller.record

    @property
    def key_id(self) -> str:
        return self.caller.key_id

    @property
    def admin(self) -> bool:
        return self.caller.admin


class ActionError(Exception):
    """A refused or malformed operation: what to tell the operator (never key material)."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field

    @classmethod
    def of(cls, exc: ApiError) -> ActionError:
        decision = exc.decision
        field = exc.members.get("field")
        named = field if isinstance(field, str) else None
        return cls(decision.status, exc.code.value, exc.detail, named)


class Operations:
    """The management API's authentication and operations, for a caller without a header."""

    def __init__(self, api: ManagementAPI) -> None:
        self.api = api

    def sign_in(self, key: str, client: str | None, forwarded_for: str | None) -> Caller:
        """The caller for a pasted key, authenticated as a management API request would be."""
        request = ApiRequest(
            method="GET",
            path="/",
            headers=[("authorization", f"UserKey {key.strip()}")]
            + ([("x-forwarded-for", forwarded_for)] if forwarded_for else []),
            client=client,
        )
        api = self.api
        try:
            seen, _ = api.authenticate(request, manage=True)
            return api.caller(seen, None, None)
        except ApiError as exc:
            raise ActionError.of(exc) from None
        except KeyguardError as exc:
            raise ActionError.of(from_exception(exc)) from None

    def caller(self, record: KeyRecord) -> Caller:
        """``record`` re-read from the store and checked as the API checks its callers."""
        try:
            return self.api.caller(record, None, None)
        except ApiError as exc:
            raise ActionError.of(exc) from None
        except KeyguardError as exc:
            raise ActionError.of(from_exception(exc)) from None

    def call(
        self,
        operator: Operator,
        view: View,
        action: str,
        *args: str,
        body: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """Run one management operation as ``operator``; its JSON answer, or
        :class:`ActionError`. ``action`` names it for the audit of a refusal."""
        api = self.api
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        request = ApiRequest(
            method="POST",
            path="/",
            headers=[("content-type", "application/json"), *headers],
            body=payload,
            client=operator.client,
        )
        try:
            caller = api.caller(operator.record, action, args[0] if args else None)
            response = view(api, caller, request, *args)
        except ApiError as exc:
            raise ActionError.of(exc) from None
        except KeyguardError as exc:
            raise ActionError.of(from_exception(exc)) from None
        answer = json.loads(response.body)
        if response.status >= 400 or not isinstance(answer, dict):
            raise ActionError(response.status, ErrorCode.INVALID_STATE.value, "unexpected answer")
        return answer
