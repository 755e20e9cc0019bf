"""keyguard's security in a FastAPI application's OpenAPI document: the ``UserKey`` scheme,
``security`` alternatives and ``x-required-scopes`` per operation, derived from keyguard's
dependencies and from the middleware's route policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from fastapi import FastAPI
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.fastapi.dependencies import KeyGuard, _Dependency
from keyguard.adapters.fastapi.scheme import (
    DEFAULT_SCHEME,
    UserKeyHeader,
    _conjunction,
)
from keyguard.core.policy import RoutePolicy
from keyguard.core.scopes import AUTHENTICATED, DENY, Requirement
from keyguard.core.verifier import Verifier

_PROBLEM_SCHEMA: Final = "KeyguardProblem"


class _OpenAPIHook:
    """Replaces ``app.openapi``: FastAPI's schema, annotated by keyguard once per schema that
    FastAPI generates (it caches one, and regenerates when routes change)."""

    def __init__(
        self,
        app: FastAPI,
        original: Any,
        policy: RoutePolicy | None,
        scheme: UserKeyHeader,
    ) -> None:
        self.app = app
        self.original = original
        self.policy = policy
        self.scheme = scheme
        self._annotated: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.original()
        if schema is not self._annotated:
            annotate_openapi(schema, self.app, policy=self.policy, scheme=self.scheme)
            self._annotated = schema
        return schema


def install_openapi(
    app: FastAPI,
    *,
    policy: RoutePolicy | None = None,
    scheme: UserKeyHeader | None = None,
) -> None:
    """Document keyguard security in ``app``'s OpenAPI schema (see :func:`annotate_openapi`).

    ``policy`` is the route policy enforced in front of the app; by default it is read from a
    ``KeyGuardMiddleware`` added with ``app.add_middleware``. Calling this again replaces the
    previous settings.
    """
    current = app.openapi
    original = current.original if isinstance(current, _OpenAPIHook) else current
    hook = _OpenAPIHook(app, original, policy, scheme or DEFAULT_SCHEME)
    # FastAPI's documented way to customise the schema is to replace this method.
    app.openapi = hook  # type: ignore[method-assign]
    app.openapi_schema = None


def annotate_openapi(
    schema: dict[str, Any],
    app: FastAPI,
    *,
    policy: RoutePolicy | None = None,
    scheme: UserKeyHeader | None = None,
) -> dict[str, Any]:
    """Add keyguard's security documentation to an OpenAPI ``schema`` generated for ``app``.

    For every operation guarded by keyguard (by the route ``policy``, the policy of a
    ``KeyGuardMiddleware`` in ``app.user_middleware``, or keyguard dependencies):

    * ``security``: one ``{"UserKey": [scopes]}`` entry per way of satisfying the requirement
      (``any_of`` becomes alternatives, as OpenAPI intends); public operations get ``[]``;
    * ``x-required-scopes``: every scope the requirement names; ``x-scope-requirement``: its
      exact form (``any_of(agents:read, tasks:read)``), since apiKey schemes carry no scopes;
    * a line in the description, and 401/403 ``application/problem+json`` responses.

    The ``UserKey`` scheme is added to ``components.securitySchemes``. Returns ``schema``.
    """
    scheme = scheme or DEFAULT_SCHEME
    if policy is None:
        policy = _middleware_policy(app)
    app_guard = getattr(app.state, "keyguard", None)
    paths: dict[str, Any] = schema.get("paths", {})
    used = False
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        item = paths.get(route.path_format)
        if item is None:
            continue
        for method in sorted(route.methods or ()):
            operation = item.get(method.lower())
            if operation is None:
                continue
            requirements = _operation_requirements(route, method, policy, app_guard)
            if requirements is None:
                continue
            _annotate_operation(operation, requirements, scheme.scheme_name)
            used = used or bool(requirements)
    if used:
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[scheme.scheme_name] = jsonable_encoder(
            scheme.model, by_alias=True, exclude_none=True
        )
        components.setdefault("schemas", {}).setdefault(_PROBLEM_SCHEMA, _problem_schema())
    return schema


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route with its effective path, methods and dependant (router prefixes and
    router-level dependencies applied)."""
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if contexts is None:  # FastAPI before lazily included routers: routes are flat
        yield from (r for r in app.routes if isinstance(r, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def _middleware_policy(app: FastAPI) -> RoutePolicy | None:
    for entry in app.user_middleware:
        factory: object = entry.cls
        if factory is not KeyGuardMiddleware:
            continue
        verifier = entry.kwargs.get("verifier")
        policy = verifier.policy if isinstance(verifier, Verifier) else entry.kwargs.get("policy")
        # Without a policy the middleware requires a valid key everywhere.
        return policy if isinstance(policy, RoutePolicy) else RoutePolicy.allow_all()
    return None


def _keyguard_dependencies(dependant: Dependant) -> Iterator[tuple[_Dependency, list[str]]]:
    stack = dependant.dependencies[::-1]  # depth first, in declaration order
    while stack:
        sub = stack.pop()
        if isinstance(sub.call, _Dependency):
            extra = list(
                dict.fromkeys([*(sub.parent_oauth_scopes or ()), *(sub.own_oauth_scopes or ())])
            )
            yield sub.call, extra
        stack.extend(sub.dependencies[::-1])


def _operation_requirements(
    route: Any, method: str, policy: RoutePolicy | None, app_guard: object
) -> list[Requirement] | None:
    """What an operation needs (all of the list), ``[]`` if public, ``None`` if not keyguard's."""
    path = route.path_format
    found: list[Requirement] = []
    known = policy is not None
    policies = [policy] if policy is not None else []
    for dependency, extra in _keyguard_dependencies(route.dependant):
        known = True
        guard = dependency.guard if dependency.guard is not None else app_guard
        if isinstance(guard, KeyGuard) and guard.policy is not None:
            policies.append(guard.policy)
        requirement = dependency.requirement_for(extra)
        if requirement is not None:
            found.append(requirement)
    if not known:
        return None
    for p in dict.fromkeys(policies):
        rule = p.match(method, path).requirement
        if rule is not None:
            found.insert(0, rule)
    return list(dict.fromkeys(found))


def _annotate_operation(
    operation: dict[str, Any], requirements: list[Requirement], scheme_name: str
) -> None:
    others = [e for e in operation.get("security", []) if scheme_name not in e]
    if not requirements:
        operation["security"] = others  # public: explicitly no keyguard security
        return
    alternatives = _conjunction(requirements)
    if alternatives:
        entries: list[dict[str, list[str]]] = [{scheme_name: list(a)} for a in alternatives]
    else:  # denied to everyone, or too many alternatives to list
        entries = [{scheme_name: []}]
    operation["security"] = entries + others
    scopes = list(dict.fromkeys(s for r in requirements for s in r.scopes))
    described = _describe(requirements)
    operation["x-required-scopes"] = scopes
    operation["x-scope-requirement"] = described
    if described == "deny":
        note = "Denied to every key by the route policy."
    elif described == "authenticated":
        note = "Requires a valid API key (any scope)."
    else:
        note = f"Requires an API key with `{described}`."
    text = operation.get("description")
    operation["description"] = f"{text}\n\n{note}" if text else note
    responses = operation.setdefault("responses", {})
    ref = {"$ref": f"#/components/schemas/{_PROBLEM_SCHEMA}"}
    for status, title in (("401", "Missing or invalid API key"), ("403", "Insufficient scope")):
        responses.setdefault(
            status,
            {"description": title, "content": {"application/problem+json": {"schema": ref}}},
        )


def _describe(requirements: list[Requirement]) -> str:
    if DENY in requirements:
        return "deny"
    named = [r for r in requirements if r is not AUTHENTICATED]
    if not named:
        return "authenticated"
    if len(named) == 1:
        return named[0].describe()
    return f"all_of({', '.join(r.describe() for r in named)})"


def _problem_schema() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "type": "object",
        "description": "An RFC 9457 problem; `code` is keyguard's stable machine code.",
        "properties": {
            "type": string,
            "title": string,
            "status": {"type": "integer"},
            "detail": string,
            "code": string,
            "request_id": string,
            "required_scopes": {"type": "array", "items": string},
            "retry_after": {"type": "integer"},
        },
        "required": ["type", "title", "status", "code", "request_id"],
    }
