"""Exceptions and the stable error codes of keyguard's denial contract.

Expected denials on the request path are *values* (:class:`keyguard.core.decision.Decision`),
never exceptions. Exceptions are reserved for misuse of the library and for infrastructure
failures. Every exception keyguard raises derives from :class:`KeyguardError`::

    KeyguardError
    ├── ConfigurationError        misuse: bad arguments, bad settings, bad store URL
    ├── StoreError                a store failed
    │   └── StoreUnavailable      ...because it cannot be reached (fail closed: 503)
    ├── KeyFormatError            a string is not a keyguard key (management/CLI input)
    ├── ScopeError                a scope is malformed or not in the catalog
    └── ManagementError           a key-lifecycle operation was refused
        ├── KeyNotFound
        ├── KeyExists
        ├── ConflictError         a concurrent update won the race
        ├── PermissionDenied      privilege escalation, missing management scope
        ├── InvalidOperation      e.g. rotating a revoked key
        └── AlreadyProcessed      a retried request (same Idempotency-Key) already ran

No exception message ever contains key material.
"""

from __future__ import annotations

import enum
from typing import Final


class KeyguardError(Exception):
    """Root of every exception keyguard raises."""


class ConfigurationError(KeyguardError, ValueError):
    """The library was configured or called wrongly."""


class StoreError(KeyguardError):
    """A key store failed."""


class StoreUnavailable(StoreError):
    """The key store (or rate-limit backend) cannot be reached. Requests fail closed with 503."""


class KeyFormatError(KeyguardError, ValueError):
    """A string that should be an API key is not one (wrong prefix, length, alphabet, checksum)."""


class ScopeError(KeyguardError, ValueError):
    """A scope is malformed, or unknown to the scope catalog."""


class ManagementError(KeyguardError):
    """A key lifecycle operation was refused."""


class KeyNotFound(ManagementError, LookupError):
    """No key with that id exists."""


class KeyExists(ManagementError):
    """A key with that id exists already."""


class ConflictError(ManagementError):
    """The record changed underneath an update (optimistic concurrency check failed)."""


class PermissionDenied(ManagementError):
    """The acting key may not perform this operation (missing scope or privilege escalation)."""


class InvalidOperation(ManagementError, ValueError):
    """The operation does not apply to the key in its current state."""


class AlreadyProcessed(ManagementError):
    """A request with this idempotency key was already carried out (by an earlier attempt).

    ``key_id`` names the key it created or rotated. The plaintext of that attempt is gone for
    good (it is never stored): rotate the key to get a new one. ``reused`` is true when the
    earlier request was a *different* one (same idempotency key, another body): a client bug.
    """

    def __init__(self, message: str, *, key_id: str, reused: bool = False) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.reused = reused


class ErrorCode(enum.StrEnum):
    """The stable machine codes of every denial. Applications may restyle bodies, never codes.

    The first group is the request path's denial contract (DESIGN.md); the second is what the
    HTTP key-management API (:mod:`keyguard.management.api`) answers besides those.
    """

    MISSING_API_KEY = "missing_api_key"
    INVALID_REQUEST = "invalid_request"
    INVALID_API_KEY_FORMAT = "invalid_api_key_format"
    INVALID_API_KEY = "invalid_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    REVOKED_API_KEY = "revoked_api_key"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    SUSPENDED_API_KEY = "suspended_api_key"
    NETWORK_NOT_ALLOWED = "network_not_allowed"
    RATE_LIMITED = "rate_limited"
    AUTH_UNAVAILABLE = "auth_unavailable"
    # -- the key-management API ------------------------------------------------------------
    MALFORMED_BODY = "malformed_body"
    INVALID_FIELD = "invalid_field"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    BODY_TOO_LARGE = "body_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PERMISSION_DENIED = "permission_denied"
    INVALID_STATE = "invalid_state"
    ALREADY_PROCESSED = "already_processed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


#: HTTP status of each code (the error contract in DESIGN.md).
STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.MISSING_API_KEY: 401,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_API_KEY_FORMAT: 401,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.EXPIRED_API_KEY: 401,
    ErrorCode.REVOKED_API_KEY: 401,
    ErrorCode.INSUFFICIENT_SCOPE: 403,
    ErrorCode.SUSPENDED_API_KEY: 401,
    ErrorCode.NETWORK_NOT_ALLOWED: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.AUTH_UNAVAILABLE: 503,
    ErrorCode.MALFORMED_BODY: 400,
    ErrorCode.INVALID_FIELD: 422,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.ALREADY_PROCESSED: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
}

#: Short human titles (the problem+json ``title``).
TITLES: Final[dict[ErrorCode, str]] = {
    ErrorCode.MISSING_API_KEY: "Missing API key",
    ErrorCode.INVALID_REQUEST: "Invalid request",
    ErrorCode.INVALID_API_KEY_FORMAT: "Invalid API key format",
    ErrorCode.INVALID_API_KEY: "Invalid API key",
    ErrorCode.EXPIRED_API_KEY: "Expired API key",
    ErrorCode.REVOKED_API_KEY: "Revoked API key",
    ErrorCode.INSUFFICIENT_SCOPE: "Insufficient permissions",
    ErrorCode.SUSPENDED_API_KEY: "Suspended API key",
    ErrorCode.NETWORK_NOT_ALLOWED: "Network not allowed",
    ErrorCode.RATE_LIMITED: "Rate limited",
    ErrorCode.AUTH_UNAVAILABLE: "Authentication unavailable",
    ErrorCode.MALFORMED_BODY: "Malformed request body",
    ErrorCode.INVALID_FIELD: "Invalid field",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type",
    ErrorCode.BODY_TOO_LARGE: "Request body too large",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ErrorCode.PERMISSION_DENIED: "Permission denied",
    ErrorCode.INVALID_STATE: "Invalid state",
    ErrorCode.ALREADY_PROCESSED: "Already processed",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "Idempotency key reused",
}
