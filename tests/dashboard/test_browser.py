"""The dashboard in a real browser: Debian's Chromium (``/usr/bin/chromium``) driven by
Playwright, against the demo (``keyguard.demo:create_app``, dashboard at ``/keyguard``) served
by uvicorn on a free port.

The operator signs in with the admin key, creates a key and reads its plaintext once, sees it
listed without its secret, uses it for real requests and sees them charted with the right
counts, rotates, suspends, resumes and revokes it (the key then gets ``401 revoked_api_key``),
and signs out; a form without its CSRF token and a cross-site form are refused; a read-only
key cannot sign in; a session ends when its key is revoked elsewhere; and no key material
appears in any page, cookie, URL or log line except the one page showing a new key. Every page
is screenshotted (laptop and phone sizes) into ``build/screenshots/`` for review.

Without ``/usr/bin/chromium`` (or Playwright) the module is skipped — except under
``CI=true``, where that is a failure (``.ci/run`` installs ``chromium`` and
``chromium-driver``). Playwright never downloads a browser here: it is given the system
executable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyguard.demo import bootstrap, create_app
from keyguard.stores.memory import MemoryStore

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
PREFIX = "/keyguard"

pytestmark = pytest.mark.slow


def _need_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("Playwright is required under CI=true (pip install -e '.[test]')")
        pytest.skip("Playwright not installed")
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is required under CI=true (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)")
    return sync_playwright


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.args!r}")


@dataclass
class Demo:
    base: str
    store: MemoryStore
    keys: dict[str, str]
    app: Any
    logs: _Records
    #: Everything the browser received: (url, headers, body text) of every response.
    seen: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    #: The URL of each page that showed new keys, and the keys (they may appear there only).
    shown: dict[str, list[str]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base}{PREFIX}{path}"


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    from tests.client.conftest import Served

    logs = _Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)
    store = MemoryStore()
    keys = bootstrap(store).created
    app = create_app(store=store)
    try:
        with Served(app) as served:
            yield Demo(served.base, store, keys, app, logs)
    finally:
        root.removeHandler(logs)
        root.setLevel(previous)


@pytest.fixture(scope="module")
def chromium(demo: Demo) -> Iterator[Any]:
    sync_playwright = _need_browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


def _page(chromium: Any, demo: Demo, **options: Any) -> Any:
    context = chromium.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(15_000)

    def keep(response: Any) -> None:
        try:
            body = response.text() if response.request.resource_type == "document" else ""
        except Exception:  # a redirect has no body to read
            body = ""
        demo.seen.append((response.url, dict(response.headers), body))

    page.on("response", keep)
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, demo: Demo, key: str) -> None:
    page.goto(demo.url("/sign-in"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def chart_counts(page: Any) -> dict[str, int]:
    totals = page.locator("[data-total]")
    return {
        totals.nth(i).get_attribute("data-total"): int(totals.nth(i).inner_text())
        for i in range(totals.count())
    }


def test_the_operator_flow(chromium: Any, demo: Demo) -> None:
    page = _page(chromium, demo, viewport={"width": 1280, "height": 900})
    admin = demo.keys["admin"]

    # Sign in: a session cookie, HttpOnly, SameSite=Strict, not the key.
    page.goto(demo.url("/keys"))
    assert page.url == demo.url("/sign-in")
    shot(page, "01-sign-in")
    sign_in(page, demo, admin)
    assert page.url == demo.url("/keys")
    (session,) = [c for c in page.context.cookies() if c["name"] == "kg_dashboard"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert session["path"] == PREFIX
    assert not session["secure"]
    assert page.get_by_role("heading", name="Keys").is_visible()
    shot(page, "02-keys")

    # Create a key: scopes from the catalog, 30 days, metadata; the plaintext once.
    page.get_by_role("link", name="New key").first.click()
    assert page.get_by_text("Read agent configurations and status").is_visible()
    shot(page, "03-new-key")
    page.locator("#name").fill("browser test key")
    page.get_by_label("agents:read", exact=True).check()
    page.get_by_label("tasks:read", exact=True).check()
    page.get_by_label("Expires in").select_option("30d")
    page.get_by_label("Metadata").fill("team=qa")
    page.get_by_role("button", name="Create key").click()
    plaintext = page.get_by_label("API key").input_value()
    assert re.fullmatch(r"kg_[0-9A-Za-z]{12}_[0-9A-Za-z]{38,}", plaintext), plaintext
    demo.shown[page.url] = [plaintext]
    assert page.get_by_text("This is the only time this key is shown").is_visible()
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").or_(
        page.get_by_text("Select the key and copy it by hand.")
    ).wait_for()
    shot(page, "04-created")
    key_id = plaintext.split("_")[1]

    # Listed without its secret.
    page.goto(demo.url("/keys"))
    row = page.locator(f'tr[data-key-id="{key_id}"]')
    assert row.is_visible()
    assert "never used" in row.inner_text()
    assert plaintext.split("_", 2)[2][:8] not in page.content()

    # The key works for real requests; the chart counts them.
    auth = {"Authorization": f"UserKey {plaintext}"}
    with httpx.Client(base_url=demo.base) as http:
        statuses = [http.get("/agents", headers=auth).status_code for _ in range(5)]
        statuses += [http.get("/agents/999", headers=auth).status_code for _ in range(2)]
        statuses.append(http.get("/tasks", headers=auth).status_code)
    assert statuses == [200] * 5 + [404] * 2 + [200]
    page.get_by_role("link", name="browser test key").click()
    assert page.url == demo.url(f"/keys/{key_id}")
    assert chart_counts(page) == {"2xx": 6, "3xx": 0, "4xx": 2, "429": 0, "5xx": 0}
    assert page.locator("svg.days rect.bar").count() >= 2
    assert page.locator('[data-route-count="GET /agents"]').inner_text() == "5"
    assert page.locator('[data-route-count="GET /agents/{agent_id}"]').inner_text() == "2"
    shot(page, "05-key-detail")

    # Rotate: the new secret once; the old one still works during the grace.
    page.get_by_label("Grace period").select_option(label="1 hour")
    page.get_by_role("button", name="Rotate").click()
    rotated = page.get_by_label("New key").input_value()
    demo.shown[page.url] = [*demo.shown.get(page.url, []), rotated]
    assert rotated != plaintext
    assert rotated.split("_")[1] == key_id
    assert page.get_by_text("The old secret keeps working until").is_visible()
    shot(page, "06-rotated")
    with httpx.Client(base_url=demo.base) as http:
        assert http.get("/agents", headers=auth).status_code == 200
        new_auth = {"Authorization": f"UserKey {rotated}"}
        assert http.get("/agents", headers=new_auth).status_code == 200

    # Suspend, resume.
    page.get_by_role("link", name="I have copied it: go to the key").click()
    page.get_by_label("Reason", exact=True).first.fill("investigating")
    page.get_by_role("button", name="Suspend").click()
    assert page.get_by_text("The key is suspended").is_visible()
    with httpx.Client(base_url=demo.base) as http:
        suspended = http.get("/agents", headers=new_auth)
    assert suspended.status_code == 401
    assert suspended.json()["code"] == "suspended_api_key"
    page.get_by_role("button", name="Resume").click()
    assert page.get_by_text("The key is active again").is_visible()

    # Revoke with a reason: the key is refused, 401 revoked_api_key.
    page.locator("#revoke-reason").fill("browser test over")
    page.get_by_label("I understand this cannot be undone").check()
    page.get_by_role("button", name="Revoke").click()
    assert page.get_by_text("The key is revoked").is_visible()
    shot(page, "07-revoked")
    with httpx.Client(base_url=demo.base) as http:
        refused = http.get("/agents", headers=new_auth)
    assert refused.status_code == 401
    assert refused.json()["code"] == "revoked_api_key"
    assert demo.store.get(key_id) is not None
    assert demo.store.get(key_id).revoked_reason == "browser test over"  # type: ignore[union-attr]

    # Usage per owner and the activity view.
    page.get_by_role("link", name="Usage").click()
    shot(page, "08-usage")
    page.get_by_role("link", name="Activity").click()
    page.get_by_role("link", name="everything").click()
    assert page.get_by_text("browser test over").first.is_visible()
    shot(page, "09-activity")

    # The same pages on a phone: one column, nothing wider than the screen.
    phone = _page(chromium, demo, viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.context.add_cookies(page.context.cookies())
    for path, name in (
        (f"/keys/{key_id}", "10-phone-key"),
        ("/keys", "11-phone-keys"),
        ("/keys/new", "12-phone-new"),
    ):
        phone.goto(demo.url(path))
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, (path, width)
        shot(phone, name)
    phone.context.close()

    # Sign out: the session is gone.
    page.get_by_role("button", name="Sign out").click()
    assert page.url == demo.url("/sign-in?m=signed-out")
    assert page.get_by_text("You are signed out.").is_visible()
    page.goto(demo.url("/keys"))
    assert page.url == demo.url("/sign-in")
    page.context.close()


def test_forms_need_their_csrf_token(chromium: Any, demo: Demo) -> None:
    page = _page(chromium, demo)
    sign_in(page, demo, demo.keys["admin"])
    before = len(demo.store.list(limit=1000).items)
    page.goto(demo.url("/keys/new"))
    page.locator("#name").fill("forged")
    page.locator('form.stack input[name="csrf_token"]').evaluate("e => e.remove()")
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_text("CSRF token missing or wrong").is_visible()
    shot(page, "13-csrf-refused")
    # A form on another site (localhost is not the same site as 127.0.0.1) posting to the
    # dashboard: the Strict cookie is not sent, and the form has no token anyway.
    page.goto(demo.base.replace("127.0.0.1", "localhost") + "/health")
    page.set_content(
        f'<form method="post" action="{demo.url("/keys/new")}">'
        '<input name="name" value="cross-site"><button>go</button></form>'
    )
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state()
    assert page.url.startswith(demo.url("/sign-in"))
    assert len(demo.store.list(limit=1000).items) == before
    page.context.close()


def test_a_read_only_key_cannot_sign_in(chromium: Any, demo: Demo) -> None:
    page = _page(chromium, demo)
    sign_in(page, demo, demo.keys["read-only"])
    assert page.get_by_role("alert").inner_text().startswith("This key cannot manage keys")
    assert page.url == demo.url("/sign-in")
    assert not [c for c in page.context.cookies() if c["name"] == "kg_dashboard"]
    shot(page, "14-read-only-refused")
    page.context.close()


def test_a_session_ends_after_its_key_is_revoked(chromium: Any, demo: Demo) -> None:
    with httpx.Client(base_url=demo.base) as http:
        made = http.post(
            "/api-keys",
            json={"name": "second operator", "scopes": ["keys:manage", "agents:read"]},
            headers={"Authorization": f"UserKey {demo.keys['admin']}"},
        )
        assert made.status_code == 201, made.text
        operator = made.json()["key"]
        page = _page(chromium, demo)
        sign_in(page, demo, operator)
        assert page.url == demo.url("/keys")
        key_id = operator.split("_")[1]
        revoked = http.delete(
            f"/api-keys/{key_id}",
            headers={"Authorization": f"UserKey {demo.keys['admin']}"},
        )
        assert revoked.status_code == 200
    page.goto(demo.url("/keys"))
    assert page.url == demo.url("/sign-in?m=ended")
    assert page.get_by_text("Your session ended").is_visible()
    shot(page, "15-session-ended")
    page.context.close()
    demo.keys["second-operator"] = operator


def test_keyboard_navigation_and_labels(chromium: Any, demo: Demo) -> None:
    page = _page(chromium, demo)
    sign_in(page, demo, demo.keys["admin"])
    page.goto(demo.url("/keys/new"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                  .filter(e => e.labels.length === 0).map(e => e.name)"""
    )
    assert unlabeled == []
    page.context.close()


def test_no_key_material_anywhere(demo: Demo) -> None:
    """Runs last: everything the browser received, the cookies it held, every URL it
    visited and every log line, against every key made in this module."""
    assert demo.seen, "the browser tests ran first"
    shown = {k for keys in demo.shown.values() for k in keys}
    keys = [*demo.keys.values(), *shown]
    assert len(keys) >= 4

    def pieces(plaintext: str) -> list[str]:
        secret = plaintext.split("_", 2)[2]
        return [plaintext, *(secret[i : i + 8] for i in range(len(secret) - 7))]

    showing: dict[str, list[str]] = {key: [] for key in keys}
    for url, headers, body in demo.seen:
        exposed = url + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
        for key in keys:
            assert not [p for p in pieces(key) if p in exposed], (url, "URL or header")
            if key in shown and body.count(key) == 1:
                showing[key].append(url)  # the page that shows it once, checked below
                body = body.replace(key, "")
            assert not [p for p in pieces(key) if p in body], url
    for key in keys:
        # A new key is in exactly one page, the answer to the form that made it.
        expected = [u for u, ks in demo.shown.items() if key in ks]
        assert showing[key] == expected, key.split("_")[1]
    logged = "\n".join(demo.logs.lines)
    assert logged, "log records were captured"
    for key in keys:
        assert not [p for p in pieces(key) if p in logged]
