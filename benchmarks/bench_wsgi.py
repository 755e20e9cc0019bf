"""Per-request overhead of keyguard's WSGI middleware and Flask extension over bare Flask.

Run: ``python benchmarks/bench_wsgi.py`` (under a minute; ``--quick`` for a smoke run,
``--json PATH`` to keep the figures). Every app is the same Flask app with one route,
``GET /agents`` answering a small JSON body, called in-process as a WSGI server would:
``app(environ, start_response)`` with a shallow copy of one prebuilt environ (in every row,
so it cancels out of the overheads), a ``start_response`` that does nothing, the body
iterated and closed. No HTTP client, no server, no test client. keyguard rows are cache hits
on a memory store: the run fails if the store is read while timed. The keyguard rows are the
same as in ``bench_asgi.py``: auth + scope; + the platform's three-window rate limit in memory
(headers on, then off); the 429 path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flask import Flask, g, request
from werkzeug.test import EnvironBuilder

from benchmarks._inprocess import (
    BODY,
    NARROW,
    NO_KEY,
    NOTE_429,
    NOTE_LIMITED,
    NOTE_NO_HEADERS,
    NOTE_NO_LIMIT,
    PATH,
    RATE_LIMIT_HEADERS,
    REQUESTS,
    SCOPE,
    Keys,
    Variant,
    admitting_limiter,
    frozen_limiter,
    parse_args,
    run,
)
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware

# The Flask extension is new: measure it when it is there, say why when it is not.
KeyGuard: Any
try:
    from keyguard.adapters.flask import KeyGuard
except Exception as exc:  # a half-written module must not stop the other rows
    KeyGuard, _MISSING_EXTENSION = None, f"{type(exc).__name__}: {exc}"

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def _write(data: bytes) -> None:
    return None


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _write


def make_environ(authorization: str | None) -> Environ:
    headers = {"Host": "bench.local", "User-Agent": "bench", "Accept": "*/*"}
    if authorization is not None:
        headers["Authorization"] = authorization
    builder = EnvironBuilder(path=PATH, method="GET", headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


class WSGIDriver:
    def __init__(self, keys: Keys) -> None:
        self.environs = {kind: make_environ(keys.header[kind]) for kind in REQUESTS}

    def probe(self, app: WSGIApp, request: str) -> tuple[int, list[str], bytes]:
        seen: list[str] = []
        names: list[str] = []

        def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append(status)
            names[:] = [k.lower() for k, _ in headers]
            return _write

        body = app(self.environs[request].copy(), record)
        try:
            data = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (int(seen[-1].split()[0]) if seen else -1), names, data

    def timed(self, app: WSGIApp, request: str, number: int) -> int:
        copy = self.environs[request].copy
        start = time.perf_counter_ns()
        for _ in range(number):
            body = app(copy(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return time.perf_counter_ns() - start


def flask_app() -> Flask:
    app = Flask("bench")

    @app.get(PATH)
    def agents() -> dict[str, Any]:
        return BODY

    return app


# -- hand-written floors -------------------------------------------------------------------
class FloorGuard:
    """The least an API-key check can do in WSGI: look ``HTTP_AUTHORIZATION`` up in a dict of
    key → scopes, check one scope, put the scopes in the environ. No hashing, no format check,
    no expiry or revocation, no problem body — the floor, not a design."""

    def __init__(self, app: WSGIApp, table: dict[str, frozenset[str]], required: str) -> None:
        self.app = app
        self.table = table
        self.required = required

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        scopes = self.table.get(environ.get("HTTP_AUTHORIZATION", ""))
        if scopes is None:
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"denied"]
        if self.required not in scopes:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"denied"]
        environ["bench.scopes"] = scopes
        return self.app(environ, start_response)


def with_middleware(wrap: Callable[[WSGIApp], WSGIApp]) -> Callable[[], Flask]:
    def build() -> Flask:
        app = flask_app()
        app.wsgi_app = wrap(app.wsgi_app)  # type: ignore[method-assign]
        return app

    return build


def flask_before_request(keys: Keys) -> Flask:
    """The same check as the floor, the Flask way: a ``before_request`` hook."""
    app = flask_app()
    table = keys.table

    @app.before_request
    def guard() -> tuple[str, int] | None:
        scopes = table.get(request.headers.get("Authorization", ""))
        if scopes is None:
            return "denied", 401
        if SCOPE not in scopes:
            return "denied", 403
        g.scopes = scopes
        return None

    return app


def flask_extension(keys: Keys, **options: Any) -> Flask:
    app = flask_app()
    assert KeyGuard is not None
    KeyGuard(app, verifier=keys.verifier(**options))
    return app


# -- the rows ----------------------------------------------------------------------------------
BARE = "Flask, bare"


def variants(keys: Keys) -> list[Variant]:
    """Every row, in print order. Adding a variant is one entry here."""

    def middleware(**options: Any) -> Callable[[], Flask]:
        return with_middleware(
            lambda app: KeyGuardWSGIMiddleware(app, verifier=keys.verifier(**options))
        )

    def limited(**options: Any) -> Callable[[], Flask]:
        return middleware(limiter=admitting_limiter(), **options)

    rows = [
        Variant(BARE, flask_app),
        Variant(
            "Flask + keyguard WSGI middleware: auth + scope",
            middleware(rate_limits=None),
            BARE,
            goal_us=3.0,
            note="KeyGuardWSGIMiddleware around app.wsgi_app. " + NOTE_NO_LIMIT,
        ),
        Variant(
            "Flask + keyguard WSGI middleware: auth + scope + 3-window limit (memory)",
            lambda: limited()(),
            BARE,
            goal_us=3.0,
            headers_has=RATE_LIMIT_HEADERS,
            note=NOTE_LIMITED,
        ),
        Variant(
            "Flask + keyguard WSGI middleware: ... same, rate-limit headers off",
            lambda: limited(ietf_headers=False, legacy_headers=False)(),
            BARE,
            goal_us=3.0,
            headers_lack=RATE_LIMIT_HEADERS,
            note=NOTE_NO_HEADERS,
        ),
        Variant(
            "Flask + hand-written WSGI guard (floor)",
            with_middleware(lambda app: FloorGuard(app, keys.table, SCOPE)),
            BARE,
            note="dict lookup of HTTP_AUTHORIZATION + one scope check; no hashing, no rate limit.",
        ),
        Variant(
            "Flask + hand-written before_request guard",
            lambda: flask_before_request(keys),
            BARE,
            note="the floor's check as a Flask before_request hook (what an extension pays "
            "for living inside Flask's dispatch).",
        ),
    ]
    if KeyGuard is not None:
        rows += [
            Variant(
                "Flask + KeyGuard extension: auth + scope",
                lambda: flask_extension(keys, rate_limits=None),
                BARE,
                note="keyguard.adapters.flask.KeyGuard(app, verifier=...): before_request "
                "hook with the policy, principal on flask.g.",
            ),
            Variant(
                "Flask + KeyGuard extension: auth + scope + 3-window limit (memory)",
                lambda: flask_extension(keys, limiter=admitting_limiter()),
                BARE,
                headers_has=RATE_LIMIT_HEADERS,
                note="the same with the platform's windows, as in the middleware row; the "
                "headers are added in an after_request hook.",
            ),
        ]
    rows += [
        Variant(
            "Flask + keyguard middleware: 401, no key",
            middleware(),
            BARE,
            request=NO_KEY,
            status=401,
            note="denials are answered by the middleware (problem+json, fresh request id); "
            "Flask never runs, so the overhead is against serving the request.",
        ),
        Variant(
            "Flask + keyguard middleware: 403, scope missing",
            middleware(),
            BARE,
            request=NARROW,
            status=403,
        ),
        Variant(
            "Flask + keyguard middleware: 429, burst spent (memory)",
            middleware(limiter=frozen_limiter()),
            BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            goal_us=10.0,
            goal_absolute=True,
            note=NOTE_429.replace("Starlette's middleware stack", "Flask.__call__"),
        ),
    ]
    if KeyGuard is not None:
        rows += [
            Variant(
                "Flask + KeyGuard extension: 401, no key",
                lambda: flask_extension(keys),
                BARE,
                request=NO_KEY,
                status=401,
            ),
            Variant(
                "Flask + KeyGuard extension: 403, scope missing",
                lambda: flask_extension(keys),
                BARE,
                request=NARROW,
                status=403,
            ),
            Variant(
                "Flask + KeyGuard extension: 429, burst spent (memory)",
                lambda: flask_extension(keys, limiter=frozen_limiter()),
                BARE,
                status=429,
                prime=20,
                body_has=b'"rate_limited"',
                headers_has=("retry-after",),
            ),
        ]
    return rows


def main() -> None:
    args = parse_args(__doc__, number=1_000, repeat=35)
    if KeyGuard is None:
        print(
            "note: Flask + KeyGuard extension rows skipped: keyguard.adapters.flask.KeyGuard "
            f"is not importable ({_MISSING_EXTENSION})\n"
        )
    keys = Keys()
    run(
        "WSGI (Flask)",
        variants(keys),
        WSGIDriver(keys),
        number=args.number,
        repeat=args.repeat,
        expected_body=json.dumps(BODY, separators=(",", ":")).encode() + b"\n",
        keys=keys,
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
