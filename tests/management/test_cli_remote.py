"""``keyguard --url …``: every ``keys`` command against a remote management API prints what it
prints against a local store, and exits with the same status.

Both sides share one SQLite file: the local CLI opens it as a store, the remote CLI talks to a
:class:`ManagementAPI` over it (served in process through httpx's WSGI transport), acting with
an admin key from ``$KEYGUARD_API_KEY``; so their outputs are directly comparable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from keyguard.management import KeyManager
from keyguard.management.api import ManagementAPI
from keyguard.management.cli import remote
from keyguard.management.cli.errors import KEY_LIKE
from keyguard.stores.sqlite import SQLiteStore
from tests.management.cli_support import (
    Result,
    Runner,
    assert_one_line_error,
    create,
    init,
    isolate,
)

URL = "http://127.0.0.1:8000/api-keys"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(capsys, monkeypatch)


@pytest.fixture
def service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Runner
) -> Iterator[dict[str, Any]]:
    db = isolate(tmp_path, monkeypatch)
    init(run)
    admin, admin_record = create(run, "--name", "admin", "--scope", "admin")
    store = SQLiteStore(db)
    manager = KeyManager(store, hasher=Hasher(pepper_from_env=False))
    verifier = Verifier(store, hasher=manager.hasher, rate_limits=None, cache_ttl=0)
    api = ManagementAPI(manager, verifier=verifier, max_lifetime=None)
    transport = httpx.WSGITransport(app=api.wsgi_app(), remote_addr="127.0.0.1")
    monkeypatch.setattr(remote, "transport_for", lambda url: transport)
    monkeypatch.setenv("KEYGUARD_API_KEY", admin)
    yield {"admin": admin, "admin_id": admin_record["key_id"], "db": db, "manager": manager}
    store.close()


def both(run: Runner, *args: str, stdin: str | None = None) -> tuple[Result, Result]:
    """The same command against the store, then against the API."""
    return run(*args, stdin=stdin), run("--url", URL, *args, stdin=stdin)


def same(run: Runner, *args: str, stdin: str | None = None) -> Result:
    local, over_http = both(run, *args, stdin=stdin)
    assert over_http.code == local.code, (local, over_http)
    assert over_http.out == local.out, (local.out, over_http.out)
    assert over_http.err == local.err
    return local


def test_reads_print_the_same(service: dict[str, Any], run: Runner) -> None:
    _, child = create(run, "--name", "child", "--scope", "agents:read", "--owner", "acme")
    run("keys", "rotate", child["key_id"], "--grace", "1h")
    run("keys", "suspend", child["key_id"], "--reason", "looking into it")
    run("--url", URL, "keys", "list")  # the API's first request stamps the admin key's use
    for args in (
        ("keys", "list"),
        ("keys", "list", "--json"),
        ("keys", "list", "--status", "suspended", "--json"),
        ("keys", "list", "--owner", "acme"),
        ("keys", "list", "--limit", "1"),
        ("keys", "list", "--all", "--json"),
        ("keys", "show", child["key_id"]),
        ("keys", "show", child["key_id"], "--json", "--events", "2"),
        ("audit", "--json"),
        ("audit", "--key", child["key_id"]),
        ("keys", "expiring", "--within", "3650d", "--json"),
    ):
        same(run, *args)


def test_changes_print_the_same(service: dict[str, Any], run: Runner) -> None:
    """Each change is made once locally and once remotely, on twin keys; outputs are equal
    once key ids, secrets and times are set aside."""

    def shape(r: Result, key_id: str) -> str:
        text = KEY_LIKE.sub("<key>", r.out).replace(key_id, "<id>")
        return TIME.sub("<time>", text)

    local_key, local = create(run, "--name", "twin", "--scope", "agents:read")
    _, remote_rec = create(run, "--name", "twin", "--scope", "agents:read")
    pairs = [
        ("keys", "rotate", "{id}", "--grace", "2h"),
        ("keys", "rotate", "{id}", "--json"),
        ("keys", "suspend", "{id}", "--reason", "why"),
        ("keys", "resume", "{id}", "--json"),
        ("keys", "suspend", "{id}", "--reason", "again", "--json"),
        ("keys", "resume", "{id}"),
        ("keys", "expire", "{id}", "--at", "2099-01-01T00:00:00Z"),
        ("keys", "revoke", "{id}", "--reason", "done", "--json"),
        ("keys", "revoke", "{id}", "--reason", "done"),
    ]
    for template in pairs:
        args_l = [a.replace("{id}", local["key_id"]) for a in template]
        args_r = [a.replace("{id}", remote_rec["key_id"]) for a in template]
        a, b = run(*args_l), run("--url", URL, *args_r)
        assert a.code == b.code == 0, (a, b)
        assert shape(a, local["key_id"]) == shape(b, remote_rec["key_id"]), (a.out, b.out)
        assert a.err == b.err
    for args in (
        (
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "agents:read",
            "--description",
            "d",
            "--network",
            "10.0.0.0/8",
            "--meta",
            "team=a",
        ),
        ("keys", "create", "--name", "x", "--scope", "agents:read", "--quiet"),
    ):
        a, b = both(run, *args)
        assert a.code == b.code == 0
        ids = [m.group(0).split("_")[1] for m in map(KEY_LIKE.search, (a.out, b.out)) if m]
        assert len(ids) == 2
        # Made over HTTP, the key records its creator (the acting admin key); locally, none.
        theirs = "\n".join(line for line in b.out.splitlines() if not line.startswith("created by"))
        assert shape(a, ids[0]).rstrip("\n") == shape(Result(0, theirs, ""), ids[1])
        assert a.err == b.err  # the "shown once" warning
    assert local_key


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("keys", "show", "AAAAAAAAAAAA"), id="unknown-key"),
        pytest.param(("keys", "revoke", "AAAAAAAAAAAA", "--reason", "x"), id="revoke-unknown"),
        pytest.param(("keys", "create", "--name", "x", "--scope", "agents:fly"), id="bad-scope"),
        pytest.param(("keys", "create", "--name", "x", "--rate-limit", "lots"), id="bad-limit"),
        pytest.param(
            ("keys", "create", "--name", "x", "--no-scopes", "--network", "10.0.0.1/8"),
            id="bad-network",
        ),
        pytest.param(("keys", "create", "--scope", "agents:read"), id="usage-missing-name"),
        pytest.param(("keys", "rotate", "AAAAAAAAAAAA", "--grace", "-5d"), id="usage-negative"),
        pytest.param(("keys", "list", "--status", "sleepy"), id="usage-bad-status"),
    ],
)
def test_errors_are_the_same(service: dict[str, Any], run: Runner, args: tuple[str, ...]) -> None:
    local = same(run, *args)
    assert local.code in (1, 2)
    assert_one_line_error(local, local.code)


def test_a_refused_change_is_one_error_line(
    service: dict[str, Any], run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = service["manager"]
    mgr = manager.create("mgr", ["keys:manage", "agents:read"])
    monkeypatch.setenv("KEYGUARD_API_KEY", mgr.plaintext)
    r = run("--url", URL, "keys", "revoke", service["admin_id"], "--reason", "takeover")
    line = assert_one_line_error(r, 1)
    assert "may not revoke" in line
    assert mgr.plaintext not in r.err + r.out
    assert manager.get(service["admin_id"]).revoked_at is None


@pytest.mark.parametrize("which", ["admin", "unknown", "revoked", "suspended"])
def test_verify_is_the_same(
    service: dict[str, Any], run: Runner, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    manager = service["manager"]
    key = {
        "admin": service["admin"],
        "unknown": "kg_AAAAAAAAAAAA_" + service["admin"].split("_")[2],
    }.get(which)
    if which in ("revoked", "suspended"):
        made = manager.create("gone", ["agents:read"])
        if which == "revoked":
            manager.revoke(made.key_id, reason="x")
        else:
            manager.suspend(made.key_id, reason="x")
        key = made.plaintext
    if which == "unknown":
        from keyguard.core.keys import KeyFormat

        key = KeyFormat().generate().plaintext
    assert key is not None
    monkeypatch.setenv("CHECK_ME", key)
    same(run, "keys", "verify", "--env", "CHECK_ME")
    same(run, "keys", "verify", "--env", "CHECK_ME", "--json")


def test_remote_needs_the_acting_key_in_the_environment(
    service: dict[str, Any], run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYGUARD_API_KEY")
    r = run("--url", URL, "keys", "list")
    assert "KEYGUARD_API_KEY" in assert_one_line_error(r, 2)
    monkeypatch.setenv("KEYGUARD_API_KEY", "kg_AAAAAAAAAAAA_" + "B" * 38)
    r = run("--url", URL, "keys", "list")
    line = assert_one_line_error(r, 1)
    assert "refused the acting key" in line
    assert "B" * 38 not in r.err


def test_urls_are_checked(
    service: dict[str, Any], run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run("--url", "http://keys.example.com/api-keys", "keys", "list")
    assert "in clear" in assert_one_line_error(r, 1)
    r = run("--url", "ftp://x/api-keys", "keys", "list")
    assert "http(s)" in assert_one_line_error(r, 1)
    r = run("--url", URL, "--store", "sqlite:///x.db", "keys", "list")
    assert "not both" in assert_one_line_error(r, 2)
    # The environment names the API too; --store wins over it.
    monkeypatch.setenv("KEYGUARD_API_URL", URL)
    assert run("keys", "list", "--json").code == 0
    assert run("--store", f"sqlite:///{service['db']}", "keys", "list").code == 0


def test_an_unreachable_api_is_one_error_line(
    service: dict[str, Any], run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monkeypatch.setattr(remote, "transport_for", lambda url: httpx.MockTransport(refuse))
    r = run("--url", URL, "keys", "list")
    assert "cannot reach the management API" in assert_one_line_error(r, 1)
