"""``keyguard notify --check`` end to end: printed and webhook deliveries, once per condition,
also when two processes run it at the same moment against one SQLite file or one Redis."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from keyguard.observability.notifications import DAY
from keyguard.stores import from_url
from tests.keyfactory import KeyFactory
from tests.management.cli_support import (
    Runner,
    assert_one_line_error,
    console_script,
    entry_env,
    init,
    isolate,
)
from tests.observability.receiver import receiver

SECRET = "whsec-0123456789abcdef-test"


@pytest.fixture
def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Runner:
    isolate(tmp_path, monkeypatch)
    runner = Runner(capsys, monkeypatch)
    init(runner)
    return runner


def issue(url: str, **fields: object) -> str:
    with from_url(url) as store:
        return KeyFactory(store).issue(**fields).key_id  # type: ignore[arg-type]


def test_notify_prints_each_condition_once(run: Runner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    soon = issue(url, expires_at=time.time() + 3 * DAY, name="ci")
    old = issue(url, created_at=time.time() - 100 * DAY, name="legacy")
    issue(url, expires_at=time.time() + 30 * DAY)

    dry = run("notify", "--check", "--dry-run")
    assert dry.code == 0
    assert len(dry.out.splitlines()) == 2
    r = run("notify", "--check")
    assert r.code == 0, r.err
    lines = sorted(r.out.strip().splitlines())
    assert len(lines) == 2
    assert lines[0].startswith(f"expiring: key {soon} (ci) expires soon: it expires at 20")
    assert lines[1].startswith(
        f"rotation_due: key {old} (legacy) is due for rotation: its secret was issued at 20"
    )
    again = run("notify", "--check")
    assert again.code == 0
    assert again.out == ""
    assert "nothing new" in again.err
    # --dry-run still lists what is due (it never claims)
    assert run("notify", "--check", "--dry-run", "--json").out.count('"notification"') == 2


def test_notify_json_and_webhook(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    key_id = issue(url, expires_at=time.time() + 3 * DAY)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    with receiver(SECRET) as rx:
        r = run(
            "notify",
            "--check",
            "--json",
            "--webhook",
            rx.url,
            "--webhook-secret-env",
            "HOOK_SECRET",
        )
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [n["key"]["key_id"] for n in data["sent"]] == [key_id]
    assert data["failed"] == 0
    (got,) = rx.received
    assert got.signature_ok
    assert got.json["notification"] == "expiring"


def test_an_undelivered_webhook_fails_the_run(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue(f"sqlite:///{tmp_path / 'k.db'}", expires_at=time.time() + 3 * DAY)
    monkeypatch.setenv("KEYGUARD_WEBHOOK_SECRET", SECRET)
    with receiver(SECRET, statuses=[403]) as rx:
        r = run("notify", "--check", "--webhook", rx.url)
        assert "not delivered" in assert_one_line_error(r, 1)
        assert run("notify", "--check", "--webhook", rx.url).code == 0  # retried, delivered
    assert [x.headers["x-answered"] for x in rx.received] == ["403", "200"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(("notify",), {}, "--check", id="no-check"),
        pytest.param(
            ("notify", "--check", "--webhook", "https://example.com/h"),
            {},
            "KEYGUARD_WEBHOOK_SECRET",
            id="no-secret",
        ),
        pytest.param(
            ("notify", "--check", "--webhook", "ftp://example.com/h"),
            {"KEYGUARD_WEBHOOK_SECRET": SECRET},
            "https://",
            id="bad-url",
        ),
        pytest.param(
            ("notify", "--check", "--webhook", "https://example.com/h"),
            {"KEYGUARD_WEBHOOK_SECRET": "short"},
            "at least 16",
            id="short-secret",
        ),
        pytest.param(("notify", "--check", "--expiring-within", "0"), {}, "positive", id="zero"),
    ],
)
def test_usage_errors(
    run: Runner,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("KEYGUARD_WEBHOOK_SECRET", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    line = assert_one_line_error(run(*args), 2)
    assert message in line


def _two_processes_at_once(
    store_url: str, db: Path, hook: str
) -> list[subprocess.CompletedProcess[str]]:
    env = entry_env(db, KEYGUARD_WEBHOOK_SECRET=SECRET)
    command = [console_script(), "--store", store_url, "notify", "--check", "--webhook", hook]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.slow
def test_two_processes_send_one_expiry_notification_sqlite(run: Runner, tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    key_id = issue(f"sqlite:///{db}", expires_at=time.time() + 3 * DAY)
    with receiver(SECRET) as rx:
        results = _two_processes_at_once(f"sqlite:///{db}", db, rx.url)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    (got,) = rx.received
    assert got.signature_ok
    assert got.json["key"]["key_id"] == key_id
    assert sum(r.stdout.count("sent: expiring") for r in results) == 1


@pytest.mark.slow
@pytest.mark.redis
def test_two_processes_send_one_expiry_notification_redis(redis_url: str, tmp_path: Path) -> None:
    key_id = issue(redis_url, expires_at=time.time() + 3 * DAY)
    with receiver(SECRET) as rx:
        results = _two_processes_at_once(redis_url, tmp_path / "unused.db", rx.url)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        # a later cron run sends nothing more
        again = _two_processes_at_once(redis_url, tmp_path / "unused.db", rx.url)
    assert [r.returncode for r in again] == [0, 0]
    (got,) = rx.received
    assert got.signature_ok
    assert got.json["key"]["key_id"] == key_id
