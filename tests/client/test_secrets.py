"""The caller's key never leaks: a mistyped key never leaves the process (no connection is
made), and a canary key never shows up in a repr, a log line or an exception — not even when
the server echoes it back."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from keyguard.client import APIError, APIKeyFormatError, load_api_key
from keyguard.client.httpx import UserKeyAuth as HttpxAuth
from keyguard.client.requests import UserKeyAuth as RequestsAuth
from keyguard.core.keys import KeyFormat
from tests.client.conftest import Demo, Listener, Served

CANARY = KeyFormat().generate().plaintext
SECRET = CANARY.split("_")[2]
FRAGMENTS = (CANARY, SECRET, SECRET[:12], SECRET[-12:])


def assert_clean(text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, "key material leaked"


def _typo(key: str) -> str:
    i = 25
    return key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1 :]


AUTHS = [pytest.param(HttpxAuth, id="httpx"), pytest.param(RequestsAuth, id="requests")]


def get(url: str, auth: Any) -> Any:
    """A GET with the auth's own HTTP library."""
    if isinstance(auth, HttpxAuth):
        return httpx.get(url, auth=auth, timeout=10)
    return requests.get(url, auth=auth, timeout=10)


@pytest.mark.parametrize("auth_class", AUTHS)
def test_a_mistyped_key_fails_before_any_connection(
    auth_class: Any, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_API_KEY", _typo(CANARY))
    with httpx.Client(base_url=listener.base, timeout=2) as client:
        with pytest.raises(APIKeyFormatError) as info:
            client.get("/agents", auth=auth_class())
        with pytest.raises(APIKeyFormatError):
            requests.get(listener.base + "/agents", auth=auth_class(), timeout=2)
    assert info.value.part == "checksum"
    assert "KEYGUARD_API_KEY" in str(info.value)
    assert_clean(str(info.value) + repr(info.value))
    assert listener.accepted == 0, "a request went out with a malformed key"
    # The listener does count connections: a well-formed key does reach it.
    monkeypatch.setenv("KEYGUARD_API_KEY", CANARY)
    with pytest.raises((httpx.HTTPError, requests.RequestException)):
        get(listener.base + "/agents", auth_class())
    assert listener.accepted >= 1


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "urllib3", "keyguard", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in ("httpx", "httpcore", "urllib3", "keyguard", "uvicorn"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def echoing_app() -> Any:
    """A hostile or careless server: it echoes the Authorization header in its denial."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        header = dict(scope["headers"]).get(b"authorization", b"").decode()
        body = json.dumps(
            {
                "type": "urn:keyguard:error:invalid_api_key",
                "title": "Invalid API key",
                "status": 401,
                "detail": f"no such key: {header}",
                "code": "invalid_api_key",
                "request_id": header[-20:],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/problem+json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def test_canary_never_in_reprs_logs_or_exceptions(
    demo: Demo, everything_logged: pytest.LogCaptureFixture
) -> None:
    key = load_api_key(CANARY)
    auths = [HttpxAuth(CANARY, retry=demo.clock.policy()), RequestsAuth(key)]
    texts = [repr(key), str(key), f"{key}"]
    texts += [repr(a) for a in auths] + [str(a.retry) for a in auths]
    errors: list[BaseException] = []
    # Unknown to the demo: a 401 through every client, with retries configured.
    for auth in auths:
        try:
            get(demo.base + "/agents", auth)
        except APIError as exc:
            errors.append(exc)

    async def go() -> None:
        async with httpx.AsyncClient(base_url=demo.base) as client:
            await client.get("/agents", auth=auths[0])

    with pytest.raises(APIError) as info:
        asyncio.run(go())
    errors.append(info.value)
    # A server that echoes the key back: its text is redacted before it reaches a message.
    with Served(echoing_app()) as served:
        for auth in auths:
            with pytest.raises(APIError) as echoed:
                get(served.base + "/x", auth)
            errors.append(echoed.value)
            assert echoed.value.detail.endswith("_<redacted>")
    assert len(errors) == 5
    for error in errors:
        texts += [str(error), repr(error), repr(error.args), error.detail, error.advice]
        texts += [str(error.request_id)]
        texts.append("".join(traceback.format_exception(error)))
    texts.append(everything_logged.text)
    for text in texts:
        assert_clean(text)
    assert "invalid_api_key" in str(errors[0])
