"""Key management over HTTP: one framework-free handler, served through ASGI, WSGI and every
framework adapter.

::

    from keyguard.management import KeyManager
    from keyguard.management.api import ManagementAPI

    api = ManagementAPI(KeyManager("sqlite:///keys.db"), prefix="/api-keys")
    asgi_app = api.asgi_app()   # or api.wsgi_app(), or an adapter's mount_management(...)

Routes (below the prefix): ``POST /`` create (plaintext once, ``201``), ``GET /`` list,
``GET /{id}``, ``PATCH /{id}``, ``DELETE /{id}`` revoke, ``POST /{id}/rotate``,
``POST /{id}/expire``, ``GET /{id}/audit``, ``GET /audit``, ``GET /{id}/usage``,
``GET /usage?owner=…`` (admin), ``GET /self`` and the public
``GET /openapi.json``. Callers authenticate with ``Authorization: UserKey <key>`` and need
``admin`` or ``keys:manage``; every change goes through the authority rule
(:mod:`keyguard.management.authority`) on the caller's fresh record. By job:
:mod:`.handler` (routing, authentication), :mod:`.views` (the operations), :mod:`.body`
(reading requests), :mod:`.listing` (what a caller sees), :mod:`.policy` (lifetime of keys
made here), :mod:`.problems` (errors), :mod:`.openapi`, and the skins :mod:`.asgi`, :mod:`.wsgi`.
"""

from __future__ import annotations

from keyguard.management.api.handler import DEFAULT_PREFIX, ManagementAPI
from keyguard.management.api.http import ApiRequest, ApiResponse
from keyguard.management.api.openapi import merge_openapi, openapi_document
from keyguard.management.api.policy import DEFAULT_HTTP_MAX_LIFETIME, LifetimePolicy

__all__ = [
    "DEFAULT_HTTP_MAX_LIFETIME",
    "DEFAULT_PREFIX",
    "ApiRequest",
    "ApiResponse",
    "LifetimePolicy",
    "ManagementAPI",
    "merge_openapi",
    "openapi_document",
]
