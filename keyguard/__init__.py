"""keyguard: API-key authentication, scopes, per-key rate limits and key lifecycle for any
ASGI or WSGI application.

The public API is re-exported here; adapters are imported by full path, for example
``from keyguard.adapters.fastapi import RequireScopes``. Importing ``keyguard`` loads no web
framework and no database driver.
"""

from __future__ import annotations

from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    ErrorCode,
    InvalidOperation,
    KeyExists,
    KeyFormatError,
    KeyguardError,
    KeyNotFound,
    ManagementError,
    PermissionDenied,
    ScopeError,
    StoreError,
    StoreUnavailable,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import GeneratedKey, KeyFormat, ParsedKey, generate_key, parse_key
from keyguard.core.policy import PUBLIC, RoutePolicy, Rule
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page
from keyguard.core.render import Problem, ProblemRenderer
from keyguard.core.scopes import (
    ADMIN,
    MANAGE_SCOPE,
    PLATFORM_SCOPES,
    Grants,
    Requirement,
    ScopeCatalog,
    all_of,
    any_of,
    require,
)
from keyguard.core.verifier import Verifier
from keyguard.stores import KeyStore, MemoryStore, from_url

__version__ = "0.1.0.dev0"

__all__ = [
    "ADMIN",
    "MANAGE_SCOPE",
    "PLATFORM_SCOPES",
    "PUBLIC",
    "AuditEvent",
    "ConfigurationError",
    "ConflictError",
    "Decision",
    "ErrorCode",
    "GeneratedKey",
    "Grants",
    "Hasher",
    "InvalidOperation",
    "KeyExists",
    "KeyFormat",
    "KeyFormatError",
    "KeyNotFound",
    "KeyRecord",
    "KeyStatus",
    "KeyStore",
    "KeyguardError",
    "ManagementError",
    "MemoryStore",
    "Page",
    "ParsedKey",
    "PermissionDenied",
    "Principal",
    "Problem",
    "ProblemRenderer",
    "Requirement",
    "RoutePolicy",
    "Rule",
    "ScopeCatalog",
    "ScopeError",
    "StoreError",
    "StoreUnavailable",
    "Verifier",
    "__version__",
    "all_of",
    "any_of",
    "from_url",
    "generate_key",
    "parse_key",
    "require",
]
