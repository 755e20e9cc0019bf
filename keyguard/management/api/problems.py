"""Errors of the management API, rendered like every keyguard denial.

An :class:`ApiError` carries an :class:`~keyguard.core.errors.ErrorCode`, a detail for people
and optional members for programs (``field`` naming the offending body field or query
parameter, ``key_id`` for a replayed request). :func:`render_problem` sends it — and any
:class:`~keyguard.core.decision.Decision` the verifier refused — through the application's
:class:`~keyguard.core.render.ProblemRenderer`, so a management 403 looks exactly like a 403
from a protected route (problem+json, ``Cache-Control: no-store``, request id, challenge); the
extra members are added to the default JSON body (a renderer whose body hook returns raw bytes
is left alone). Exceptions from :class:`~keyguard.management.KeyManager` map to codes in
:func:`from_exception`, and their messages (which never hold key material) become the detail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from keyguard.core.decision import Decision, deny
from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    ConflictError,
    ErrorCode,
    InvalidOperation,
    KeyExists,
    KeyFormatError,
    KeyguardError,
    KeyNotFound,
    PermissionDenied,
    ScopeError,
    StoreUnavailable,
)
from keyguard.core.render import ProblemRenderer
from keyguard.management.api.http import ApiResponse

__all__ = ["ApiError", "from_exception", "render_problem"]


class ApiError(Exception):
    """A refusal the management API answers with problem+json (never a 500)."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        field: str | None = None,
        members: Mapping[str, Any] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        retry_after: int | None = None,
        required: tuple[str, ...] = (),
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.members: dict[str, Any] = dict(members or {})
        if field is not None:
            self.members["field"] = field
        self.headers = headers
        self.retry_after = retry_after
        self.required = required

    @property
    def decision(self) -> Decision:
        return deny(
            self.code,
            self.detail,
            required=self.required,
            retry_after=self.retry_after,
            headers=self.headers,
        )


def from_exception(exc: KeyguardError, *, field: str | None = None) -> ApiError:
    """The API error for an exception raised by key management."""
    message = str(exc)
    if isinstance(exc, AlreadyProcessed):
        code = ErrorCode.IDEMPOTENCY_KEY_REUSED if exc.reused else ErrorCode.ALREADY_PROCESSED
        return ApiError(code, message, members={"key_id": exc.key_id})
    if isinstance(exc, PermissionDenied):
        return ApiError(ErrorCode.PERMISSION_DENIED, message)
    if isinstance(exc, KeyNotFound):
        return ApiError(ErrorCode.NOT_FOUND, message)
    if isinstance(exc, InvalidOperation | ConflictError | KeyExists):
        return ApiError(ErrorCode.INVALID_STATE, message)
    if isinstance(exc, StoreUnavailable):
        return ApiError(
            ErrorCode.AUTH_UNAVAILABLE,
            "The key store is temporarily unavailable; retry later.",
            retry_after=1,
        )
    if isinstance(exc, ScopeError):
        return ApiError(ErrorCode.INVALID_FIELD, message, field=field or "scopes")
    if isinstance(exc, ConfigurationError | KeyFormatError):
        return ApiError(ErrorCode.INVALID_FIELD, message, field=field)
    return ApiError(ErrorCode.INVALID_STATE, message)


def render_problem(
    renderer: ProblemRenderer,
    decision: Decision,
    request_id: str,
    members: Mapping[str, Any] | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> ApiResponse:
    """``decision`` (a denial) rendered by ``renderer``, with ``members`` added to the body."""
    problem = renderer.render(decision, request_id)
    headers = [(k.lower(), v) for k, v in problem.headers]
    body = problem.body
    if members:
        try:
            shaped = json.loads(body)
        except ValueError:
            shaped = None
        if isinstance(shaped, dict):
            shaped.update({k: v for k, v in members.items() if k not in shaped})
            body = json.dumps(shaped, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            headers = [(k, v) for k, v in headers if k != "content-length"]
            headers.append(("content-length", str(len(body))))
    headers.extend((k.lower(), v) for k, v in extra_headers)
    return ApiResponse(decision.status, headers, body)
