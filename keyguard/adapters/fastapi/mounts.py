"""keyguard's own applications inside a FastAPI application: the key-management API (its routes
and its OpenAPI document merged into the application's) and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

if TYPE_CHECKING:
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI


# -- the key-management API ----------------------------------------------------------------------
class _ManagementOpenAPI:
    """Wraps ``app.openapi``: the application's schema with the management API's merged in."""

    def __init__(self, original: Any, document: dict[str, Any]) -> None:
        self.original = original
        self.document = document
        self._merged: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        from keyguard.management.api.openapi import merge_openapi

        schema: dict[str, Any] = self.original()
        if schema is not self._merged:
            merge_openapi(schema, self.document)
            self._merged = schema
        return schema


def mount_management(app: FastAPI, api: ManagementAPI, *, openapi: bool = True) -> None:
    """Serve ``api`` (a :class:`~keyguard.management.api.ManagementAPI`) in ``app`` at
    ``api.prefix``, and (``openapi``) merge its routes into ``app``'s OpenAPI document.

    The API authenticates its callers itself: with a ``KeyGuardMiddleware`` route policy in
    front, list ``api.public_paths()`` as public there (or requests are verified twice).
    """
    from keyguard.adapters.starlette import management_routes
    from keyguard.management.api.openapi import openapi_document

    app.router.routes.extend(management_routes(api))
    if openapi:
        hook = _ManagementOpenAPI(app.openapi, openapi_document(api.prefix))
        app.openapi = hook  # type: ignore[method-assign]
        app.openapi_schema = None


# -- the dashboard --------------------------------------------------------------------------------
def mount_dashboard(app: FastAPI, dashboard: Dashboard) -> None:
    """Serve ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) in ``app`` at
    ``dashboard.prefix`` (outside the OpenAPI document: it is a set of HTML pages).

    The dashboard signs its users in itself: with a ``KeyGuardMiddleware`` route policy in
    front, list ``dashboard.public_paths()`` as public there.
    """
    from keyguard.adapters.starlette import dashboard_routes

    app.router.routes.extend(dashboard_routes(dashboard))
