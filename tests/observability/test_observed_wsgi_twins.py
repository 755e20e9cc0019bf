"""The observed WSGI middleware answers exactly as the plain one: the same status, the same
header fields in the same order, the same body, for apps that set no headers, their own
headers (a list or a tuple), or a rate-limit field keyguard also sends (in any case), for a
key about to expire (an ``API-Key-Expires`` field beside the rate-limit ones), with headers
off, and for denials; and the observed one counts each admitted request's status once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.observability import Emitter, ListSink, Observer, UsageCounter
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.observability.support import twin_verifier

APP_HEADERS: dict[str, Any] = {
    "empty": [],
    "own": [("Content-Type", "application/json"), ("X-App", "1")],
    "clashing": [("X-RateLimit-Limit", "999"), ("X-App", "1")],
    "clashing-lower": [("ratelimit-policy", "x"), ("x-app", "1")],
    "clashing-expiry": [("api-key-expires", "y"), ("X-App", "1")],
    "tuple": (("X-App", "1"),),
}


def app_sending(kind: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        headers = APP_HEADERS[kind]
        start_response("201 Created", list(headers) if type(headers) is list else headers)
        return [b"{}"]

    return app


def middleware(store: MemoryStore, app: Any, observer: Observer | None, **options: Any) -> Any:
    return KeyGuardWSGIMiddleware(app, verifier=twin_verifier(store, observer, **options))


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    answered: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answered.append((status, list(headers)))
        return lambda data: None

    body = b"".join(app(dict(environ), start_response))
    status, headers = answered[-1]
    headers = [(k, v if k.lower() != "x-request-id" else "rid") for k, v in headers]
    return status, headers, body if b"request_id" not in body else b"<problem>"


@pytest.mark.parametrize("headers_on", [True, False], ids=["headers", "no-headers"])
@pytest.mark.parametrize("kind", list(APP_HEADERS))
def test_the_observed_wsgi_middleware_answers_as_the_plain_one(kind: str, headers_on: bool) -> None:
    store = MemoryStore()
    factory = KeyFactory(store)
    keys = [
        factory.issue("agents:read"),
        factory.issue("agents:read", expires_at=time.time() + 3600),  # warned: API-Key-Expires
    ]
    switches = {} if headers_on else {"ietf_headers": False, "legacy_headers": False}
    usage = UsageCounter(store, start=False)
    observer = Observer(events=Emitter([ListSink()]), usage=usage)
    plain = middleware(store, app_sending(kind), None, **switches)
    observed = middleware(store, app_sending(kind), observer, **switches)
    environs: list[dict[str, Any]] = []
    for key in keys:
        good = f"UserKey {key.plaintext}"
        environs += [
            {"HTTP_AUTHORIZATION": good, "PATH_INFO": "/agents"},
            {"HTTP_AUTHORIZATION": good, "PATH_INFO": "/agents", "HTTP_X_FORWARDED_FOR": "1.2.3.4"},
        ]
    environs += [
        {"HTTP_AUTHORIZATION": "UserKey not-a-key", "PATH_INFO": "/agents"},
        {"PATH_INFO": "/open"},
    ]
    base = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "203.0.113.7"}
    answers = []
    for _ in range(3):  # the rate limit (3 a minute) runs out on the way: 429s too
        for extra in environs:
            environ = {**base, **extra}
            want = call(plain, environ)
            got = call(observed, environ)
            assert got == want, environ
            answers.append(got)
    statuses = [status for status, _, _ in answers]
    assert statuses.count("201 Created") == 3 * 2 + 3  # each key 3 a minute; /open every time
    assert statuses.count("429 Too Many Requests") == 3 * 2
    assert any(k == "API-Key-Expires" for _, headers, _ in answers for k, _ in headers)
    # Every request of a key's holder counted once, with the status it got (the
    # application's 201, or the limiter's 429).
    counted = sorted(status for _, status, _ in usage._pending())
    assert counted == [201] * 6 + [429] * 6
    observer.close()
