"""keyguard denials inside FastAPI: :class:`KeyGuardHTTPException` and the handler that renders
it as the shared problem+json response."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from fastapi.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from keyguard.core.decision import Decision
from keyguard.core.render import Problem

# Header names the HTTPException must not carry: FastAPI's default handler writes its own body.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length"})


class KeyGuardHTTPException(HTTPException):
    """A keyguard denial as an ``HTTPException``: ``decision`` says why, ``problem`` is the
    rendered problem+json response.

    ``status_code`` and ``headers`` (``WWW-Authenticate``, ``Cache-Control``, ``X-Request-ID``,
    ``Retry-After``, rate-limit headers) are set even without keyguard's handler installed;
    ``detail`` is the denial's public detail, never key material.
    """

    def __init__(self, decision: Decision, problem: Problem) -> None:
        headers = {k: v for k, v in problem.headers if k not in _BODY_HEADERS}
        super().__init__(status_code=problem.status, detail=decision.detail, headers=headers)
        self.decision = decision
        self.problem = problem


async def keyguard_exception_handler(request: Request, exc: Exception) -> Response:
    """Render a :class:`KeyGuardHTTPException` as the shared problem+json response."""
    if not isinstance(exc, KeyGuardHTTPException):  # pragma: no cover - registered for it only
        raise exc
    problem = exc.problem
    response = Response(problem.body, status_code=problem.status)
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers]
    return response


def install_exception_handlers(app: FastAPI) -> None:
    """Render keyguard denials from dependencies as problem+json (status, code, headers
    identical to :class:`~keyguard.adapters.asgi.KeyGuardMiddleware`)."""
    app.add_exception_handler(KeyGuardHTTPException, keyguard_exception_handler)
