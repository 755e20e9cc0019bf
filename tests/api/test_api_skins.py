"""The ASGI and WSGI skins and the caller checks that every route shares: prefixes, HEAD,
lifespan, WebSockets, oversized bodies read no further than the limit, rate limits and the
brute-force guard applied to management callers as to any protected route."""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.verifier import Verifier
from keyguard.management.api import ManagementAPI
from keyguard.management.api.asgi import route_path
from keyguard.management.api.handler import normalize_prefix
from tests.api.support import PEER, asgi_client, make_world, mount_handler, wsgi_client


@pytest.mark.parametrize(
    ("path", "mounted_at", "prefix", "expected"),
    [
        pytest.param("/api-keys", "", "/api-keys", "/", id="served-alone-exact"),
        pytest.param("/api-keys/abc", "", "/api-keys", "/abc", id="served-alone-below"),
        pytest.param("/other", "", "/api-keys", None, id="served-alone-outside"),
        pytest.param("/api-keysX", "", "/api-keys", None, id="not-a-segment-prefix"),
        pytest.param("/abc", "/api-keys", "/api-keys", "/abc", id="mounted-stripped"),
        pytest.param("/api-keys/abc", "/api-keys", "/api-keys", "/abc", id="mounted-full-path"),
        pytest.param("", "/api-keys", "/api-keys", "/", id="mounted-root"),
        pytest.param("/x", "", "", "/x", id="no-prefix"),
    ],
)
def test_route_path(path: str, mounted_at: str, prefix: str, expected: str | None) -> None:
    assert route_path(path, mounted_at, prefix, True) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/api-keys", "/api-keys"), ("api-keys/", "/api-keys"), ("/", ""), ("/a/b", "/a/b")],
)
def test_prefixes(given: str, expected: str) -> None:
    assert normalize_prefix(given) == expected


@pytest.mark.parametrize("bad", ["/a b", "/a//b", "/a?x", 5])
def test_bad_prefixes(bad: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        normalize_prefix(bad)


def test_outside_the_prefix_and_head() -> None:
    world = make_world()
    for serve in (asgi_client(world.api.asgi_app(), ""), wsgi_client(world.api.wsgi_app(), "")):
        with serve as client:
            r = client.request("GET", "/elsewhere", key=world.key("admin"))
            assert r.status_code == 404
            assert r.json()["code"] == "not_found"
            r = client.request("HEAD", "/api-keys", key=world.key("admin"))
            assert r.status_code == 200
            assert r.content == b""


def test_asgi_lifespan_and_websocket() -> None:
    app = make_world().api.asgi_app()
    sent: list[dict[str, Any]] = []

    async def run(scope: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(
        run(
            {"type": "lifespan"},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    asyncio.run(run({"type": "websocket", "path": "/api-keys"}, [{"type": "websocket.connect"}]))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_an_oversized_body_is_not_read_whole() -> None:
    world = make_world()

    class Stream(io.BytesIO):
        asked = 0

        def read(self, size: int | None = -1) -> bytes:
            Stream.asked = size if size is not None else -1
            return super().read(size)

    body = b"{" + b" " * 10_000_000 + b"}"
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api-keys",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"UserKey {world.key('admin')}",
        "REMOTE_ADDR": PEER,
        "wsgi.input": Stream(body),
        "wsgi.errors": sys.stderr,
    }
    statuses: list[str] = []
    world.api.wsgi_app()(environ, lambda status, headers, exc=None: statuses.append(status))
    assert statuses == ["413 Request Entity Too Large"] or statuses[0].startswith("413")
    assert Stream.asked == world.api.max_body + 1


def test_management_callers_are_rate_limited_like_any_route() -> None:
    world = make_world(rate_limits="3/10s")
    with mount_handler(world.api) as client:
        statuses = [
            client.request("GET", "/", key=world.key("admin")).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        r = client.request("GET", "/", key=world.key("admin"))
        assert r.json()["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        ok = client.request("GET", "/", key=world.key("mgr"))
        assert ok.headers["x-ratelimit-limit"] == "3"


def test_guessing_keys_trips_the_brute_force_guard() -> None:
    world = make_world()
    world.api.verifier = Verifier(
        world.store,
        hasher=world.manager.hasher,
        rate_limits=None,
        brute_force=BruteForceGuard(threshold=3, window=60.0),
    )
    from keyguard.core.keys import KeyFormat

    with mount_handler(world.api) as client:
        # The admin key is in use (cached in this process) before the guessing starts.
        assert client.request("GET", "/", key=world.key("admin")).status_code == 200
        codes = [
            client.request("GET", "/", key=KeyFormat().generate().plaintext).json()["code"]
            for _ in range(5)
        ]
        assert codes == ["invalid_api_key"] * 3 + ["rate_limited"] * 2
        # A key in use from the same address still gets in: the guard never locks owners out.
        assert client.request("GET", "/", key=world.key("admin")).status_code == 200
        # A key this process has not seen would need a store read, which a blocked address
        # does not get: it waits for the block to end.
        assert client.request("GET", "/", key=world.key("mgr")).status_code == 429


def test_the_api_can_be_built_from_a_store_url(tmp_path: Any) -> None:
    from keyguard.stores.sqlite import SQLiteStore

    SQLiteStore(tmp_path / "k.db").close()
    api = ManagementAPI(f"sqlite:///{tmp_path / 'k.db'}", prefix="keys/")
    assert api.prefix == "/keys"
    assert api.location("AAAAAAAAAAAA") == "/keys/AAAAAAAAAAAA"
    assert "keys" in repr(api)
    api.manager.close()
    with pytest.raises(ValueError, match="max_body"):
        ManagementAPI(api.manager, max_body=10)
