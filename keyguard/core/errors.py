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
        └── InvalidOperation      e.g. rotating a revoked key

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


class ErrorCode(enum.StrEnum):
    """The stable machine codes of every denial. Applications may restyle bodies, never codes."""

    MISSING_API_KEY = "missing_api_key"
    INVALID_REQUEST = "invalid_request"
    INVALID_API_KEY_FORMAT = "invalid_api_key_format"
    INVALID_API_KEY = "invalid_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    REVOKED_API_KEY = "revoked_api_key"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    RATE_LIMITED = "rate_limited"
    AUTH_UNAVAILABLE = "auth_unavailable"


#: HTTP status of each code (the error contract in DESIGN.md).
STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.MISSING_API_KEY: 401,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_API_KEY_FORMAT: 401,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.EXPIRED_API_KEY: 401,
    ErrorCode.REVOKED_API_KEY: 401,
    ErrorCode.INSUFFICIENT_SCOPE: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.AUTH_UNAVAILABLE: 503,
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
    ErrorCode.RATE_LIMITED: "Rate limited",
    ErrorCode.AUTH_UNAVAILABLE: "Authentication unavailable",
}
