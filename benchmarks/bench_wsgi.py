"""Per-request cost of keyguard's WSGI paths: a raw WSGI app, Flask and Django, with floors.

Run: ``python benchmarks/bench_wsgi.py`` (about a minute; ``--quick`` for a smoke run,
``--json PATH`` to keep the figures). Every app answers ``GET /agents`` with a small JSON body
and is called in-process as a WSGI server would: ``app(environ, start_response)`` with a
shallow copy of one of 10,000 prebuilt environs (one per client address, in turn; the copy is
in every row, so it cancels out of the overheads), a ``start_response`` that does nothing, the
body iterated and closed. No HTTP client, no server, no test client. keyguard rows are cache
hits on a memory store: the run fails if the store is read while timed.

Rows: a raw WSGI app (one function) bare, with the hand-written WSGI floor (``_floor.py``) and
with ``KeyGuardWSGIMiddleware`` (full path; auth + scope only), and each one's 401 / 403 /
429; Flask bare, with the floor, the WSGI middleware and the ``KeyGuard`` extension (full
path); Django bare, with the WSGI middleware around its handler and with
``keyguard.adapters.django.KeyGuardMiddleware`` (full path). The goals judged on these rows
are printed at the end (see ``goals.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flask import Flask
from werkzeug.test import EnvironBuilder

from benchmarks import _labels as L
from benchmarks._floor import Floor, WSGIFloorGuard
from benchmarks._inprocess import (
    BODY,
    CLIENTS,
    NARROW,
    NOTE_429,
    NOTE_FLOOR,
    NOTE_LIMITED,
    NOTE_NO_LIMIT,
    PATH,
    RATE_LIMIT_HEADERS,
    REQUESTS,
    UNKNOWN,
    Keys,
    Variant,
    admitting_clock,
    admitting_limiter,
    client_address,
    frozen_clock,
    frozen_limiter,
    parse_args,
    run,
    select,
)
from keyguard.adapters.flask import KeyGuard
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def _write(data: bytes) -> None:
    return None


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _write


def make_environ(authorization: str | None, client: str = "127.0.0.1") -> Environ:
    headers = {"Host": "bench.local", "User-Agent": "bench", "Accept": "*/*"}
    if authorization is not None:
        headers["Authorization"] = authorization
    builder = EnvironBuilder(
        path=PATH, method="GET", headers=headers, environ_base={"REMOTE_ADDR": client}
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


class WSGIDriver:
    def __init__(self, keys: Keys, clients: int = CLIENTS) -> None:
        self.environs = {
            kind: itertools.cycle(
                [make_environ(keys.header[kind], client_address(i)) for i in range(clients)]
            )
            for kind in REQUESTS
        }

    def probe(self, app: WSGIApp, request: str) -> tuple[int, list[str], bytes]:
        seen: list[str] = []
        names: list[str] = []

        def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append(status)
            names[:] = [k.lower() for k, _ in headers]
            return _write

        body = app(next(self.environs[request]).copy(), record)
        try:
            data = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (int(seen[-1].split()[0]) if seen else -1), names, data

    def timed(self, app: WSGIApp, request: str, number: int) -> int:
        environs = self.environs[request]
        start = time.perf_counter_ns()
        for environ in itertools.islice(environs, number):
            body = app(environ.copy(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return time.perf_counter_ns() - start


# -- the apps --------------------------------------------------------------------------------
_BODY = json.dumps(BODY).encode()
_HEADERS = (("Content-Type", "application/json"), ("Content-Length", str(len(_BODY))))


def raw_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The least a WSGI app can do: one status, two headers (a fresh list: a guard may append
    to it), one body chunk."""
    start_response("200 OK", [*_HEADERS])
    return [_BODY]


def flask_app() -> Flask:
    app = Flask("bench")

    @app.get(PATH)
    def agents() -> dict[str, Any]:
        return BODY

    return app


def with_middleware(wrap: Callable[[WSGIApp], WSGIApp]) -> Callable[[], Flask]:
    def build() -> Flask:
        app = flask_app()
        app.wsgi_app = wrap(app.wsgi_app)  # type: ignore[method-assign]
        return app

    return build


def flask_extension(keys: Keys, **options: Any) -> Flask:
    app = flask_app()
    KeyGuard(app, verifier=keys.verifier(**options))
    return app


class Django:
    """A minimal Django project in this process: no apps, one URL, settings configured once;
    each handler loads the middleware list it is built with."""

    def __init__(self, keys: Keys) -> None:
        import django
        from django.conf import settings
        from django.http import JsonResponse
        from django.urls import path

        def agents(request: Any) -> Any:
            return JsonResponse(BODY)

        urls = types.ModuleType("kgbench_urls")
        urls.urlpatterns = [path(PATH.lstrip("/"), agents)]  # type: ignore[attr-defined]
        sys.modules[urls.__name__] = urls
        if not settings.configured:
            settings.configure(
                DEBUG=False,
                ALLOWED_HOSTS=["*"],
                ROOT_URLCONF=urls.__name__,
                INSTALLED_APPS=[],
                MIDDLEWARE=[],
                USE_TZ=True,
                # The verifier object itself: the same full-path verifier as the other rows.
                KEYGUARD={"VERIFIER": keys.verifier(limiter=admitting_limiter())},
            )
        django.setup()
        self.keys = keys

    def handler(self, *middleware: str) -> Any:
        from django.conf import settings
        from django.core.handlers.wsgi import WSGIHandler

        settings.MIDDLEWARE = list(middleware)
        try:
            return WSGIHandler()
        finally:
            settings.MIDDLEWARE = []


# -- the rows ----------------------------------------------------------------------------------
def variants(keys: Keys) -> list[Variant]:
    """Every row, in print order. Adding a row is one entry here."""

    def keyguard(app: WSGIApp, **options: Any) -> WSGIApp:
        return KeyGuardWSGIMiddleware(app, verifier=keys.verifier(**options))

    def full(app: WSGIApp) -> WSGIApp:
        return keyguard(app, limiter=admitting_limiter())

    def floor(app: WSGIApp, clock: Callable[[], float] | None = None) -> WSGIApp:
        return WSGIFloorGuard(app, Floor(keys, clock or admitting_clock()))

    limited = {"headers_has": RATE_LIMIT_HEADERS}
    deny = "whole-request denial: the guard answers, the app never runs."
    rows = [
        Variant(L.W_BARE, lambda: raw_app),
        Variant(L.W_FLOOR, lambda: floor(raw_app), L.W_BARE, note=NOTE_FLOOR),
        Variant(L.W_KG_FULL, lambda: full(raw_app), L.W_BARE, note=NOTE_LIMITED, **limited),
        Variant(
            L.W_KG_AUTH,
            lambda: keyguard(raw_app, rate_limits=None),
            L.W_BARE,
            note=NOTE_NO_LIMIT,
        ),
        Variant(
            L.W_FLOOR_401, lambda: floor(raw_app), L.W_BARE, request=UNKNOWN, status=401, note=deny
        ),
        Variant(
            L.W_KG_401, lambda: full(raw_app), L.W_BARE, request=UNKNOWN, status=401, note=deny
        ),
        Variant(
            L.W_FLOOR_403, lambda: floor(raw_app), L.W_BARE, request=NARROW, status=403, note=deny
        ),
        Variant(L.W_KG_403, lambda: full(raw_app), L.W_BARE, request=NARROW, status=403, note=deny),
        Variant(
            L.W_FLOOR_429,
            lambda: floor(raw_app, frozen_clock()),
            L.W_BARE,
            status=429,
            prime=20,
            headers_has=("retry-after",),
            note=deny,
        ),
        Variant(
            L.W_KG_429,
            lambda: keyguard(raw_app, limiter=frozen_limiter()),
            L.W_BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            note=NOTE_429,
        ),
        Variant(L.FL_BARE, flask_app),
        Variant(L.FL_FLOOR, with_middleware(floor), L.FL_BARE, note=NOTE_FLOOR),
        Variant(
            L.FL_KG_WSGI,
            with_middleware(full),
            L.FL_BARE,
            note="app.wsgi_app = KeyGuardWSGIMiddleware(app.wsgi_app, verifier=...)",
            **limited,
        ),
        Variant(
            L.FL_KG_EXTENSION,
            lambda: flask_extension(keys, limiter=admitting_limiter()),
            L.FL_BARE,
            note="keyguard.adapters.flask.KeyGuard(app, verifier=...): before_request hook "
            "with the policy, principal on flask.g, rate-limit headers in after_request.",
            **limited,
        ),
    ]
    django = Django(keys)
    rows += [
        Variant(L.DJ_BARE, django.handler),
        Variant(
            L.DJ_KG_WSGI,
            lambda: full(django.handler()),
            L.DJ_BARE,
            note="KeyGuardWSGIMiddleware around Django's WSGIHandler.",
            **limited,
        ),
        Variant(
            L.DJ_KG_MIDDLEWARE,
            lambda: django.handler("keyguard.adapters.django.KeyGuardMiddleware"),
            L.DJ_BARE,
            note="MIDDLEWARE = ['keyguard.adapters.django.KeyGuardMiddleware'], "
            "KEYGUARD = {'VERIFIER': <the full-path verifier>}.",
            **limited,
        ),
    ]
    return rows


def collect(args: Any) -> dict[str, Any]:
    keys = Keys()
    clients = 200 if args.quick else CLIENTS
    return run(
        "wsgi",
        "WSGI (raw, Flask, Django)",
        select(variants(keys), getattr(args, "rows", None)),
        WSGIDriver(keys, clients),
        number=args.number,
        repeat=args.repeat,
        keys=keys,
        json_path=args.json,
        clients=clients,
    )


def main() -> None:
    args = parse_args(__doc__, number=1_000, repeat=35)
    data = collect(args)
    from benchmarks.goals import print_goals

    print_goals({"wsgi": data})


if __name__ == "__main__":
    main()
