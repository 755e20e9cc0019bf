"""``keyguard doctor``: each refusal kind explained correctly, locally and over HTTP, and the
key never printed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.records import KeyRecord
from keyguard.management import KeyManager
from keyguard.management.cli.diagnose import STATUS_EXPLAINERS, Question, diagnose
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore
from tests.keyfactory import KeyFactory
from tests.management.cli_support import Result, Runner, isolate

NOW = time.time()
HOUR = 3600.0


@dataclass
class Store:
    path: Path
    keys: dict[str, str]
    ids: dict[str, str]


def _typo(key: str, at: int = 25) -> str:
    return key[:at] + ("A" if key[at] != "A" else "B") + key[at + 1 :]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    path = isolate(tmp_path, monkeypatch)
    with SQLiteStore(path) as db:
        factory = KeyFactory(db, Hasher())
        issued = {
            "reader": factory.issue("agents:read", name="reader"),
            "admin": factory.issue("admin", name="admin"),
            "expired": factory.issue("agents:read", expires_at=NOW - 3 * 86400),
            "revoked": factory.issue("agents:read", revoked_at=NOW - HOUR, revoked_reason="leaked"),
            "rotated": factory.issue("agents:read", name="rotated"),
            "graced": factory.issue("agents:read", name="graced"),
            "limited": factory.issue("agents:read", rate_limit="1/minute"),
        }
        keys = {name: k.plaintext for name, k in issued.items()}
        ids = {name: k.key_id for name, k in issued.items()}
        old = keys.pop("rotated")
        factory.rotate(issued["rotated"], grace_until=NOW - HOUR)
        factory.change(issued["rotated"], rotated_at=NOW - 2 * HOUR)
        keys["rotated_out"] = old
        graced_old = keys.pop("graced")
        factory.rotate(issued["graced"], grace_until=NOW + HOUR)
        keys["in_grace"] = graced_old
        keys["wrong_secret"] = KeyFormat().generate(ids["reader"]).plaintext
        keys["unknown"] = KeyFormat().generate().plaintext
        keys["typo"] = _typo(keys["reader"])
        keys["truncated"] = keys["reader"][:-4]
        keys["other_prefix"] = KeyFormat("acme").generate().plaintext
    return Store(path, keys, ids)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(capsys, monkeypatch)


def assert_no_key(result: Result, key: str) -> None:
    text = result.out + result.err
    secret = key.split("_")[-1]
    for fragment in (key, secret, secret[:10], secret[-10:]):
        if len(fragment) >= 8:
            assert fragment not in text, "doctor printed key material"


POLICY = ("--policy", "keyguard.demo:demo_policy")

LOCAL = [
    pytest.param(
        "typo",
        (),
        "format",
        "invalid_api_key_format",
        ["malformed (checksum:", '"part": "checksum"'],
        id="checksum",
    ),
    pytest.param(
        "truncated", (), "format", "invalid_api_key_format", ["malformed (length:"], id="length"
    ),
    pytest.param(
        "other_prefix", (), "prefix", "invalid_api_key_format", ["'acme'", "'kg'"], id="prefix"
    ),
    pytest.param("unknown", (), "unknown", "invalid_api_key", ["no key with id"], id="unknown"),
    pytest.param(
        "wrong_secret", (), "wrong_secret", "invalid_api_key", ["secret does not"], id="secret"
    ),
    pytest.param(
        "rotated_out",
        (),
        "rotated_out",
        "invalid_api_key",
        ["before its rotation at", "grace period ended at", "(1 hour ago)", "(2 hours ago)"],
        id="rotated-out",
    ),
    pytest.param(
        "revoked", (), "revoked", "revoked_api_key", ["revoked at", "leaked"], id="revoked"
    ),
    pytest.param("expired", (), "expired", "expired_api_key", ["(3 days ago)"], id="expired"),
    pytest.param(
        "reader",
        ("--method", "POST", "--path", "/agents", *POLICY),
        "scope",
        "insufficient_scope",
        ["POST /agents needs agents:write", "holds: agents:read"],
        id="missing-scope",
    ),
    pytest.param(
        "admin",
        ("--path", "/nowhere", *POLICY),
        "no_route",
        "insufficient_scope",
        ["denied by default"],
        id="no-rule",
    ),
    pytest.param("reader", ("--path", "/agents", *POLICY), None, None, ["accepted"], id="ok"),
    pytest.param("in_grace", (), None, None, ["previous secret", "accepted until"], id="in-grace"),
    pytest.param("reader", ("--path", "/health", *POLICY), None, None, ["public"], id="public"),
    pytest.param(
        "reader", ("--path", "/agents"), None, None, ["--policy", "agents:read"], id="no-policy"
    ),
]


@pytest.mark.parametrize(("who", "options", "reason", "code", "says"), LOCAL)
def test_local_refusals_are_explained(
    who: str,
    options: tuple[str, ...],
    reason: str | None,
    code: str | None,
    says: list[str],
    store: Store,
    run: Runner,
) -> None:
    key = store.keys[who]
    text = run("doctor", *options, stdin=key + "\n")
    data = run("doctor", "--json", *options, stdin=key + "\n")
    assert_no_key(text, key)
    assert_no_key(data, key)
    report = json.loads(data.out)
    assert report["reason"] == reason
    assert report["code"] == code
    assert report["accepted"] is (reason is None)
    assert text.code == data.code == (0 if reason is None else 1)
    whole = text.out + json.dumps(report)
    for phrase in says:
        assert phrase in whole, (phrase, text.out)
    if code is not None:
        assert f"refused: {code}" in text.out
        assert report["advice"]
        assert report["advice"] in text.out


def test_the_store_is_not_written(store: Store, run: Runner) -> None:
    before = store.path.read_bytes()
    mtime = store.path.stat().st_mtime_ns
    for key in store.keys.values():
        run("doctor", "--json", stdin=key + "\n")
    assert store.path.read_bytes() == before
    assert store.path.stat().st_mtime_ns == mtime


def test_key_sources_and_usage_errors(
    store: Store, run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = store.keys["reader"]
    monkeypatch.setenv("MY_KEY", key)
    assert run("doctor", "--env", "MY_KEY").code == 0
    path = tmp_path / "key"
    path.write_text(key + "\n")
    assert run("doctor", "--file", str(path)).code == 0
    refused = run("doctor", key)
    assert refused.code == 2
    assert "never takes a key on the command line" in refused.err
    assert_no_key(refused, key)
    assert run("doctor", stdin="").code == 2
    assert run("doctor", "--env", "UNSET_VAR").code == 2
    assert run("doctor", "--url", "http://127.0.0.1:9", stdin=key).code == 2  # needs --path
    bad = run("doctor", "--policy", "nope", stdin=key)
    assert bad.code == 2
    assert "module:attr" in bad.err
    missing = run("doctor", "--policy", "no.such.module:policy", stdin=key)
    assert missing.code == 1
    assert "cannot load the policy" in missing.err


def test_a_deployment_prefix_is_honoured(store: Store, run: Runner) -> None:
    other = store.keys["other_prefix"]
    result = run("--prefix", "acme", "doctor", "--json", stdin=other)
    assert json.loads(result.out)["reason"] == "unknown"  # right prefix; not in this store


# -- statuses and records that only newer records have ----------------------------------------
@dataclass(frozen=True)
class _Status:
    value: str


class FutureRecord(KeyRecord):
    """A record with the fields the management API adds (suspension, network restrictions)."""

    def status(self, now: float) -> Any:
        return _Status(getattr(self, "state", "active"))


def _future(
    store: MemoryStore, **extra: Any
) -> tuple[str, KeyManager, Callable[[Question], dict[str, Any]]]:
    fmt = KeyFormat()
    generated = fmt.generate()
    hasher = Hasher(pepper_from_env=False)
    record = FutureRecord(
        key_id=generated.key_id,
        name="future",
        digest=hasher.digest(generated.plaintext),
        scopes=frozenset({"agents:read"}),
    )
    for name, value in extra.items():
        object.__setattr__(record, name, value)
    store.create(record)
    manager = KeyManager(store, hasher=hasher)

    def ask(question: Question) -> dict[str, Any]:
        return diagnose(generated.plaintext, manager, now=NOW, ask=question).to_dict()

    return generated.plaintext, manager, ask


def test_a_suspended_key_is_explained() -> None:
    _, _, ask = _future(
        MemoryStore(), state="suspended", suspended_at=NOW - 60, suspended_reason="abuse"
    )
    report = ask(Question())
    assert report["reason"] == "suspended"
    assert report["code"] == "suspended_api_key"
    assert "suspended since" in report["message"]
    assert "abuse" in report["message"]
    assert "resume" in report["advice"]


def test_an_unknown_status_is_still_a_refusal() -> None:
    _, _, ask = _future(MemoryStore(), state="quarantined")
    report = ask(Question())
    assert report["reason"] == "status"
    assert "quarantined" in report["message"]
    assert "quarantined" not in STATUS_EXPLAINERS


def test_network_restrictions_are_checked_when_the_record_has_them() -> None:
    _, _, ask = _future(MemoryStore(), allowed_networks=("10.0.0.0/8",))
    refused = ask(Question(client_address="127.0.0.1"))
    assert refused["reason"] == "network"
    assert refused["code"] == "network_not_allowed"
    assert "10.0.0.0/8" in refused["message"]
    assert ask(Question(client_address="10.1.2.3"))["accepted"] is True
    noted = ask(Question())
    assert noted["accepted"] is True
    assert any("--client-address" in c["message"] for c in noted["checks"])


@pytest.mark.redis
def test_rate_limited_until_when_from_redis(store: Store, run: Runner, redis_url: str) -> None:
    from keyguard.core.ratelimit import parse_windows
    from keyguard.stores.redis_ratelimit import RedisRateLimiter

    limiter = RedisRateLimiter.from_url(redis_url)
    try:
        _check_rate_limited(store, run, redis_url, limiter, parse_windows)
    finally:
        limiter.close()


def _check_rate_limited(
    store: Store, run: Runner, redis_url: str, limiter: Any, parse_windows: Any
) -> None:
    assert limiter.hit(store.ids["limited"], parse_windows("1/minute")).allowed
    key = store.keys["limited"]
    result = run("doctor", "--json", "--ratelimit-url", redis_url, stdin=key)
    report = json.loads(result.out)
    assert report["reason"] == "rate_limited"
    assert report["code"] == "rate_limited"
    assert 1 <= report["facts"]["retry_after"] <= 60
    assert "until" in report["message"]
    # Peeking consumed nothing.
    assert not limiter.peek(store.ids["limited"], parse_windows("1/minute")).allowed
    other = run("doctor", "--json", "--ratelimit-url", redis_url, stdin=store.keys["reader"])
    assert json.loads(other.out)["accepted"] is True
    assert_no_key(result, key)


# -- against the service ----------------------------------------------------------------------
@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    from keyguard.core.ratelimit import MemoryRateLimiter
    from keyguard.demo import create_app
    from tests.client.conftest import Served, demo_keys

    memory = MemoryStore()
    keys = demo_keys(memory, time.time())
    keys["unknown"] = KeyFormat().generate().plaintext
    keys["typo"] = _typo(keys["reader"])
    app = create_app(
        store=memory,
        hasher=Hasher(pepper_from_env=False),
        rate_limits="3/minute",
        limiter=MemoryRateLimiter(),
    )
    with Served(app) as served:
        yield served.base, keys


REMOTE = [
    pytest.param("reader", "GET", "/agents", None, None, id="accepted"),
    pytest.param("expired", "GET", "/agents", "expired", "expired_api_key", id="expired"),
    pytest.param("revoked", "GET", "/agents", "revoked", "revoked_api_key", id="revoked"),
    pytest.param("unknown", "GET", "/agents", "invalid", "invalid_api_key", id="unknown"),
    pytest.param("reader", "POST", "/agents", "scope", "insufficient_scope", id="scope"),
    pytest.param("admin", "GET", "/nowhere", "no_route", "insufficient_scope", id="no-rule"),
    pytest.param("admin", "GET", "/agents/999", "http_error", None, id="app-404"),
]


@pytest.mark.parametrize(("who", "method", "path", "reason", "code"), REMOTE)
def test_remote_answers_are_explained(
    who: str,
    method: str,
    path: str,
    reason: str | None,
    code: str | None,
    service: tuple[str, dict[str, str]],
    run: Runner,
) -> None:
    base, keys = service
    key = keys[who]
    result = run("doctor", "--json", "--url", base, "--method", method, "--path", path, stdin=key)
    report = json.loads(result.out)
    assert report["reason"] == reason, report
    assert report["code"] == code
    assert result.code == (0 if reason is None else 1)
    assert_no_key(result, key)
    if reason == "scope":
        assert report["facts"]["required_scopes"] == ["agents:write"]
    if reason == "http_error":
        assert "404" in report["message"]
    text = run("doctor", "--url", base, "--method", method, "--path", path, stdin=key)
    assert_no_key(text, key)


def test_remote_rate_limit_says_until_when(
    service: tuple[str, dict[str, str]], run: Runner
) -> None:
    base, keys = service
    for _ in range(3):
        assert run("doctor", "--url", base, "--path", "/agents", stdin=keys["reader"]).code == 0
    result = run("doctor", "--json", "--url", base, "--path", "/agents", stdin=keys["reader"])
    report = json.loads(result.out)
    assert report["reason"] == "rate_limited"
    assert 1 <= report["facts"]["retry_after"] <= 60
    assert report["facts"]["until"].endswith("Z")
    assert "Retry after" in report["message"]


def test_remote_mistyped_key_is_never_sent(run: Runner) -> None:
    from tests.client.conftest import Listener

    listener = Listener()
    try:
        key = _typo(KeyFormat().generate().plaintext)
        result = run("doctor", "--json", "--url", listener.base, "--path", "/agents", stdin=key)
        report = json.loads(result.out)
        assert report["reason"] == "format"
        assert "nothing was sent" in report["message"]
        assert listener.accepted == 0
        assert_no_key(result, key)
    finally:
        listener.close()


def test_remote_unreachable_service(run: Runner) -> None:
    from tests.client.conftest import free_port

    key = KeyFormat().generate().plaintext
    url = f"http://127.0.0.1:{free_port()}"
    result = run("doctor", "--json", "--url", url, "--path", "/agents", stdin=key)
    report = json.loads(result.out)
    assert report["reason"] == "unreachable"
    assert "check the base URL" in report["message"]
    assert_no_key(result, key)
