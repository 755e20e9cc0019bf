"""The dashboard's security properties: headers on every response, no inline script or style,
CSRF refused on every form, cookies, HTTPS, the authority rule, and the canary — no key
material in any page, cookie, URL or log line, except the one page that shows a new key."""

from __future__ import annotations

import logging
import re

import pytest

from keyguard.dashboard.http import CSP
from tests.dashboard.support import (
    PREFIX,
    Browser,
    World,
    asgi_browser,
    browser,
    make_world,
    new_key_in,
)

POSTS = [
    "/keys/new",
    "/keys/{id}/rotate",
    "/keys/{id}/suspend",
    "/keys/{id}/resume",
    "/keys/{id}/revoke",
    "/sign-out",
]


def fragments(plaintext: str) -> list[str]:
    """The key, its secret and every 8-character piece of the secret."""
    secret = plaintext.split("_", 2)[2]
    return [plaintext, secret, *(secret[i : i + 8] for i in range(len(secret) - 7))]


def leaks(text: str, plaintext: str) -> list[str]:
    return [f for f in fragments(plaintext) if f in text]


def test_every_response_carries_the_security_headers(world: World) -> None:
    with browser(world) as b:
        responses = [
            b.get("/sign-in"),
            b.get("/keys"),  # redirect to sign in
            b.get("/static/dashboard.css"),
            b.get("/static/nope.css"),  # 404
            b.client.put(b.url("/keys")),  # 405
        ]
        b.sign_in(world.key("admin"))
        responses += [b.get(p) for p in ("/keys", "/keys/new", "/usage", "/activity")]
        responses.append(b.post("/keys/new", csrf="wrong"))
        responses.append(b.post("/keys/new", content=b"x", csrf=None, headers={}))
    for r in responses:
        h = r.headers
        assert h["content-security-policy"] == CSP, r.url
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-content-type-options"] == "nosniff"
        if not r.url.path.startswith(f"{PREFIX}/static/") or r.status_code == 404:
            assert h["cache-control"] == "no-store", r.url
    assert "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP
    assert "script-src 'self'" in CSP
    assert "style-src 'self'" in CSP


def test_no_inline_script_style_or_remote_assets_in_any_page(world: World) -> None:
    world.usage.record(world.id("admin"), owner="acme", route="GET /agents", status=200)
    with browser(world) as b:
        pages = [b.get("/sign-in").text]
        b.sign_in(world.key("admin"))
        created, _ = b.create("x", ["agents:read"])
        pages.append(created.text)
        pages += [
            b.get(p).text
            for p in (
                "/keys",
                "/keys/new",
                "/usage",
                "/activity?show=all",
                f"/keys/{world.id('admin')}",
                f"/keys/{world.id('mgr')}",
            )
        ]
    for page in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
        assert "<style" not in page, "inline style element"
        assert not re.search(r"\sstyle=", page), "inline style attribute"
        assert not re.search(r"\son[a-z]+=", page), "inline event handler"
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page), "remote asset"
        assert "javascript:" not in page


def test_static_files_come_from_the_package(world: World) -> None:
    with browser(world) as b:
        css = b.get("/static/dashboard.css")
        js = b.get("/static/dashboard.js")
        assert css.status_code == js.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert js.headers["content-type"].startswith("text/javascript")
        again = b.get("/static/dashboard.css", headers={"if-none-match": css.headers["etag"]})
        assert again.status_code == 304
        assert b.get("/static/../app.py").status_code == 404
        assert "@import" not in css.text
        assert "url(" not in css.text


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("token", ["missing", "wrong", "other-session"])
def test_csrf_is_refused_on_every_form(world: World, path: str, token: str) -> None:
    target = world.id("child")
    before = world.manager.get(target)
    with browser(world) as other:
        other.sign_in(world.key("admin"))
        their_token = other.csrf()
    with browser(world) as b:
        b.sign_in(world.key("admin"))
        sent = {"missing": None, "wrong": "x" * 43, "other-session": their_token}[token]
        data = {
            "name": "x",
            "scopes": "agents:read",
            "reason": "r",
            "confirm": "yes",
            "grace_period": "0",
        }
        response = b.post(path.format(id=target), data, csrf=sent)
        assert response.status_code == 403
        assert "CSRF token missing or wrong" in response.text
        assert b.get("/keys").status_code == 200  # still signed in
    assert world.manager.get(target) == before
    assert {e.action for e in world.store.audit(limit=100)} <= {"create", "dashboard.sign_in"}


def test_over_https_cookies_are_secure_and_prefixed(world: World) -> None:
    with asgi_browser(world.dashboard.asgi_app(), https=True) as b:
        b.get("/sign-in")
        assert b.sign_in(world.key("admin")).status_code == 303
        assert b.get("/keys").status_code == 200
        cookies = b.cookie_headers()
    session = next(c for c in cookies if c.startswith("__Secure-kg_dashboard="))
    assert "; Secure" in session
    assert "HttpOnly" in session
    assert "SameSite=Strict" in session
    assert all("; Secure" in c for c in cookies)


def test_secure_cookies_can_be_forced_behind_a_tls_proxy() -> None:
    world = make_world(secure_cookies=True)
    with browser(world) as b:
        page = b.get("/sign-in")
    assert all("; Secure" in c for c in page.headers.get_list("set-cookie"))


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        pytest.param(b"k=" + b"a" * 70_000, {}, 413, id="too-large"),
        pytest.param(b'{"key": "x"}', {"content-type": "application/json"}, 415, id="json"),
        pytest.param(b"key=\xff", {}, 400, id="bad-utf8"),
    ],
)
def test_malformed_forms_get_clear_errors(
    world: World, body: bytes, headers: dict[str, str], status: int
) -> None:
    with browser(world) as b:
        b.get("/sign-in")
        h = {"content-type": "application/x-www-form-urlencoded", **headers}
        response = b.client.post(b.url("/sign-in"), content=body, headers=h)
    assert response.status_code == status
    assert "<h1>" in response.text
    assert "Traceback" not in response.text


def test_unknown_pages_and_methods(world: World) -> None:
    with browser(world) as b:
        assert b.get("/nope").status_code == 404  # routed before the session is checked
        assert b.get("/keys").status_code == 303  # a page: sign in first
        b.sign_in(world.key("admin"))
        assert b.get("/nope").status_code == 404
        assert b.get("/keys/AAAAAAAAAAAA/nope").status_code == 404
        assert b.client.delete(b.url("/keys")).status_code == 405
        assert b.get("/keys/new", follow=False).status_code == 200
        assert b.client.get("/elsewhere").status_code == 404  # outside the prefix


def test_a_manager_sees_and_acts_only_within_its_authority(world: World) -> None:
    with browser(world) as b:
        b.sign_in(world.key("mgr"))
        listed = set(re.findall(r'<tr data-key-id="([^"]+)"', b.get("/keys").text))
        assert listed == {world.id("mgr"), world.id("child")}
        for outsider in ("admin", "reader", "stranger"):
            page = b.get(f"/keys/{world.id(outsider)}")
            assert page.status_code == 403
            assert "outside the authority" in page.text
            assert b.get(f"/usage?key={world.id(outsider)}").status_code == 403
        before = world.manager.get(world.id("reader"))
        b.get(f"/keys/{world.id('mgr')}")
        refused = b.post(f"/keys/{world.id('reader')}/revoke", {"reason": "r", "confirm": "yes"})
        assert refused.status_code == 403
        assert world.manager.get(world.id("reader")) == before
        activity = b.get("/activity?show=all").text
        assert world.id("stranger") not in activity
        assert world.id("reader") not in activity
        # Its own subtree it manages.
        b.get(f"/keys/{world.id('child')}")
        ok = b.post(f"/keys/{world.id('child')}/suspend", {"reason": "r"})
        assert ok.status_code == 303
    assert world.manager.get(world.id("child")).suspended_at is not None


def test_canary_no_key_material_in_pages_cookies_urls_or_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = world.key("admin")
    with browser(world) as b:
        b.sign_in(admin)
        created, made = b.create("canary", ["agents:read"], metadata="team=x")
        key_id = made.split("_")[1]
        b.get(f"/keys/{key_id}")
        rotated_page = b.post(
            f"/keys/{key_id}/rotate", {"grace_period": "60", "request_id": b.request_id()}
        )
        rotated = new_key_in(rotated_page.text)
        assert rotated is not None
        world.usage.record(key_id, owner="acme", route="GET /agents", status=200)
        for path in (
            "/keys",
            f"/keys/{key_id}",
            "/usage",
            "/activity?show=all",
            f"/usage?key={key_id}",
            "/keys/new",
        ):
            b.get(path)
        b.get(f"/keys/{key_id}")
        b.post(f"/keys/{key_id}/suspend", {"reason": "canary"})
        b.post(f"/keys/{key_id}/revoke", {"reason": "canary", "confirm": "yes"})
        b.sign_in(made)  # a non-managing key: refused
        b.post("/sign-out")
        seen: list[Browser] = [b]
    shown_once = {id(created): made, id(rotated_page): rotated}
    for response in seen[0].seen:
        text = response.text
        exposed = "\n".join(
            [
                str(response.url),
                *response.headers.get_list("set-cookie"),
                response.headers.get("location", ""),
            ]
        )
        for plaintext in (admin, made, rotated):
            assert not leaks(exposed, plaintext), (response.url, "header or URL")
            if shown_once.get(id(response)) == plaintext:
                assert text.count(plaintext) == 1  # the one page that shows it
                continue
            assert not leaks(text, plaintext), response.url
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for plaintext in (admin, made, rotated):
        assert not leaks(logged, plaintext)
    audit = repr([e.to_dict() for e in world.store.audit(limit=1000)])
    for plaintext in (admin, made, rotated):
        assert not leaks(audit, plaintext)
