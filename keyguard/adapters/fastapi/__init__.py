"""keyguard for FastAPI: scope dependencies, problem+json denials and OpenAPI security docs.

A :class:`KeyGuard` holds one verifier and renderer; ``guard.require("agents:read")`` is a
dependency (``Depends(...)`` or ``Security(...)``) that returns the caller's
:class:`~keyguard.core.decision.Principal`. It works with or without
:class:`~keyguard.adapters.asgi.KeyGuardMiddleware`: when the middleware has already
authenticated the request, the dependency only checks scopes against ``scope["keyguard"]`` (no
second verification); otherwise it verifies the request itself with ``averify``, so store I/O
never blocks the event loop. A denial raises :class:`KeyGuardHTTPException`, an
``HTTPException`` whose status and headers (``WWW-Authenticate``, ``Cache-Control: no-store``,
``X-Request-ID``, ``Retry-After``) are already right, so FastAPI's default handler degrades
gracefully; the handler :meth:`KeyGuard.install` registers renders the full problem+json body,
byte-for-byte what the middleware sends. :meth:`KeyGuard.install` also documents security in
the OpenAPI schema: the ``UserKey`` apiKey scheme (header ``Authorization``, so Swagger UI's
*Authorize* dialog takes ``UserKey kg_…`` verbatim), ``security`` requirements whose scope lists
are exact alternatives, and an ``x-required-scopes`` list on every protected operation, derived
from dependencies and from the middleware's route policy.

Dependencies built without a guard (``RequireScopes("agents:read")``) find their verifier at
request time: the guard installed on the application, else the ``KeyGuardMiddleware`` in its
middleware stack; with neither they fail closed (500, :class:`ConfigurationError`).
"""

from __future__ import annotations

from keyguard.adapters._extras import require_extra

require_extra(__name__, "fastapi", "fastapi", "starlette")

# The middleware is re-exported: FastAPI applications import everything from here.
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.fastapi.dependencies import KeyGuard, PolicyCheck, RequireScopes
from keyguard.adapters.fastapi.errors import (
    KeyGuardHTTPException,
    install_exception_handlers,
    keyguard_exception_handler,
)
from keyguard.adapters.fastapi.mounts import mount_dashboard, mount_management
from keyguard.adapters.fastapi.openapi import annotate_openapi, install_openapi
from keyguard.adapters.fastapi.scheme import DEFAULT_SCHEME_DESCRIPTION, UserKeyHeader

__all__ = [
    "DEFAULT_SCHEME_DESCRIPTION",
    "KeyGuard",
    "KeyGuardHTTPException",
    "KeyGuardMiddleware",
    "PolicyCheck",
    "RequireScopes",
    "UserKeyHeader",
    "annotate_openapi",
    "install_exception_handlers",
    "install_openapi",
    "keyguard_exception_handler",
    "mount_dashboard",
    "mount_management",
]
