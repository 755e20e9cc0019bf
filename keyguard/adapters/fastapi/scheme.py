"""The ``UserKey`` OpenAPI security scheme, and a requirement as the scope alternatives OpenAPI
can express (an ``any_of`` becomes several ``security`` entries)."""

from __future__ import annotations

import itertools
from typing import Final

from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from keyguard.core.scopes import AUTHENTICATED, DENY, AllOf, AnyOf, Requirement, Scope

SCHEME_NAME: Final = "UserKey"
DEFAULT_SCHEME_DESCRIPTION: Final = (
    "Send `Authorization: UserKey <key>`. In the *Authorize* dialog paste the whole value, "
    "`UserKey kg_…`, not the key alone. Each operation lists the scopes it requires "
    "(`x-required-scopes`); `admin` and wildcard grants such as `agents:*` satisfy them."
)
# Beyond this many alternatives an operation's ``security`` lists just the scheme.
_MAX_ALTERNATIVES: Final = 16


class UserKeyHeader(APIKeyHeader):
    """The ``UserKey`` security scheme: an OpenAPI ``apiKey`` in the ``Authorization`` header.

    The value is the whole header, ``UserKey <key>``, which is exactly what Swagger UI sends
    after a user pastes it into *Authorize*. As a dependency it returns that header (or
    ``None``) and never refuses on its own: keyguard's dependencies decide, with keyguard's
    error contract.
    """

    def __init__(
        self,
        *,
        scheme_name: str = SCHEME_NAME,
        description: str = DEFAULT_SCHEME_DESCRIPTION,
    ) -> None:
        super().__init__(
            name="Authorization",
            scheme_name=scheme_name,
            description=description,
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> str | None:
        return request.headers.get("authorization")


DEFAULT_SCHEME: Final = UserKeyHeader()


def _alternatives(requirement: Requirement) -> list[tuple[str, ...]] | None:
    """The requirement as a disjunction of scope sets (``[]``: unsatisfiable; ``None``: too
    many, or a custom Requirement whose shape is unknown)."""
    if requirement is DENY:
        return []
    if requirement is AUTHENTICATED:
        return [()]
    if isinstance(requirement, Scope):
        return [(requirement.name,)]
    if isinstance(requirement, AnyOf):
        out: list[tuple[str, ...]] = []
        for member in requirement.requirements:
            alts = _alternatives(member)
            if alts is None:
                return None
            out.extend(alts)
        return _minimal(out)
    if isinstance(requirement, AllOf):
        return _conjunction(list(requirement.requirements))
    return None


def _conjunction(requirements: list[Requirement]) -> list[tuple[str, ...]] | None:
    result: list[tuple[str, ...]] = [()]
    for member in requirements:
        alts = _alternatives(member)
        if alts is None:
            return None
        result = [tuple(dict.fromkeys(a + b)) for a, b in itertools.product(result, alts)]
        if len(result) > _MAX_ALTERNATIVES:
            return None
    return _minimal(result)


def _minimal(alternatives: list[tuple[str, ...]]) -> list[tuple[str, ...]] | None:
    """Drop duplicates and alternatives that demand more than another one does."""
    sets = [frozenset(a) for a in alternatives]
    kept: list[tuple[str, ...]] = []
    seen: set[frozenset[str]] = set()
    for alt, s in zip(alternatives, sets, strict=True):
        if s in seen or any(other < s for other in sets):
            continue
        seen.add(s)
        kept.append(alt)
    return kept if len(kept) <= _MAX_ALTERNATIVES else None
