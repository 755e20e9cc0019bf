"""Command papercuts: the scope listing, an empty ``keys verify``, and ``keyguard demo``'s
wiring (``--json`` included)."""

from __future__ import annotations

import io
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest

from keyguard import demo
from keyguard.core.scopes import PLATFORM_SCOPES
from keyguard.demo import DemoKeys
from keyguard.management.cli import SHOWN_ONCE
from tests.management.cli_support import Runner, assert_one_line_error, init, isolate


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def run(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(capsys, monkeypatch)


# -- scopes -----------------------------------------------------------------------------------
def test_scopes_lists_the_platforms_14_then_keyguards_own(run: Runner) -> None:
    r = run("scopes", "--json")
    assert r.code == 0, r.err
    scopes = json.loads(r.out)["scopes"]
    platform = [s for s in scopes if s["source"] == "platform"]
    ours = [s for s in scopes if s["source"] == "keyguard"]
    assert len(platform) == 14
    assert [s["scope"] for s in platform] == list(PLATFORM_SCOPES)  # the documentation's order
    assert "admin" in [s["scope"] for s in platform]
    assert [s["scope"] for s in ours] == ["keys:manage"]
    assert scopes[-1]["scope"] == "keys:manage"
    assert all(s["description"] for s in scopes)


def test_scopes_table_marks_where_each_scope_comes_from(run: Runner) -> None:
    r = run("scopes")
    assert r.code == 0
    rows = [line.split() for line in r.out.splitlines()]
    assert rows[0] == ["SCOPE", "DESCRIPTION", "FROM"]
    assert [(row[0], row[-1]) for row in rows[1:]] == [
        *((s, "platform") for s in PLATFORM_SCOPES),
        ("keys:manage", "keyguard"),
    ]
    assert "14 platform scopes, plus keys:manage: keyguard's own" in r.err


# -- keys verify with nothing to verify -------------------------------------------------------
@pytest.mark.parametrize("stdin", ["", "\n", "   \n"], ids=["empty", "blank-line", "spaces"])
def test_verify_with_nothing_on_stdin_says_so(run: Runner, stdin: str) -> None:
    init(run)
    r = run("keys", "verify", stdin=stdin)
    line = assert_one_line_error(r, code=2)
    assert line.startswith("keyguard: error: no key on standard input")
    assert "--env VAR" in line
    assert "UserKey" not in r.out + r.err  # not the HTTP error text
    assert r.out == ""


def test_verify_with_an_empty_variable_says_so(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    init(run)
    monkeypatch.setenv("EMPTY_KEY", "")
    r = run("keys", "verify", "--env", "EMPTY_KEY")
    assert "environment variable EMPTY_KEY is empty" in assert_one_line_error(r, code=2)


# -- keyguard demo ----------------------------------------------------------------------------
class FakeRun:
    """Stands in for :func:`keyguard.demo.run`: records its arguments, shows a banner."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        workers: int = 1,
        new_keys: bool = False,
        url: str | None = None,
        ratelimit: Any = None,
        out: TextIO = sys.stdout,
        banner: Any = demo.print_banner,
    ) -> None:
        self.calls.append(
            {"host": host, "port": port, "workers": workers, "new_keys": new_keys, "url": url}
        )
        self.ratelimit = ratelimit
        keys = DemoKeys(
            created={"admin": "kg_ADMINADMINAD_secret"}, existing={"read-only": "READREADREAD"}
        )
        banner(keys, f"http://{host}:{port}", out)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(demo, "run", fake)
    return fake


def test_demo_json_prints_its_startup_as_one_object(
    run: Runner, fake_run: FakeRun, db: Path
) -> None:
    r = run("demo", "--json", "--port", "8123")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {
        "url": "http://127.0.0.1:8123",
        "store": f"sqlite:///{db}",
        "keys": {
            "admin": {"key": "kg_ADMINADMINAD_secret", "new": True},
            "read-only": {
                "key_id": "READREADREAD",
                "new": False,
                "note": "created on an earlier run; 'keyguard demo --new-keys' replaces it",
            },
        },
    }
    assert r.out.count("kg_ADMINADMINAD_secret") == 1
    assert SHOWN_ONCE in r.err


def test_demo_keeps_its_options_and_creates_its_store(
    run: Runner, fake_run: FakeRun, db: Path
) -> None:
    """The documented first run: no ``keyguard init`` needed, a banner, not JSON."""
    r = run(
        "--store",
        f"sqlite:///{db}",
        "demo",
        "--host",
        "0.0.0.0",  # noqa: S104 - only passed through to the fake
        "--port",
        "9000",
        "--workers",
        "2",
        "--new-keys",
    )
    assert r.code == 0, r.err
    assert fake_run.calls == [
        {
            "host": "0.0.0.0",  # noqa: S104
            "port": 9000,
            "workers": 2,
            "new_keys": True,
            "url": f"sqlite:///{db}",
        }
    ]
    assert "admin key: kg_ADMINADMINAD_secret" in r.out
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.out)


def test_demo_takes_the_limiter_settings_from_options_and_environment(
    run: Runner, fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_RATELIMIT_TIMEOUT", "0.25")
    r = run("demo", "--ratelimit-mode", "deny", "--ratelimit-url", "redis://127.0.0.1:6379/0")
    assert r.code == 0, r.err
    settings = fake_run.ratelimit
    assert (settings.mode, settings.timeout, settings.url) == (
        "deny",
        0.25,
        "redis://127.0.0.1:6379/0",
    )
    bad = run("demo", "--ratelimit-mode", "sometimes")
    assert "--ratelimit-mode" in assert_one_line_error(bad, code=2)


def test_demo_errors_are_one_line(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(**kwargs: Any) -> None:
        from keyguard.core.errors import ConfigurationError

        raise ConfigurationError("the demo needs uvicorn: pip install 'keyguard[server]'")

    monkeypatch.setattr(demo, "run", failing_run)
    r = run("demo")
    assert "keyguard[server]" in assert_one_line_error(r)


def test_json_banner_flushes(fake_run: FakeRun) -> None:
    from keyguard.management.cli.demo import json_banner

    class Stream(io.StringIO):
        flushed = False

        def flush(self) -> None:
            self.flushed = True

    stream = Stream()
    json_banner(DemoKeys(created={}, existing={}), "http://h:1", stream, store="s")
    assert json.loads(stream.getvalue()) == {"url": "http://h:1", "store": "s", "keys": {}}
    assert stream.flushed  # the server starts right after: the reader must not wait for it


@pytest.mark.slow
def test_demo_first_run_creates_its_store_through_the_cli(tmp_path: Path) -> None:
    """The README's quick start: ``keyguard demo`` with no store yet, no ``keyguard init``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyguard", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True)
    reader.start()
    try:
        banner: list[str] = []
        while not any("admin key:" in line for line in banner):
            banner.append(lines.get(timeout=60))
        admin = next(line for line in banner if "admin key:" in line).split()[-1]
        assert (tmp_path / "keyguard.db").exists()
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                assert proc.poll() is None, banner
                time.sleep(0.1)
        assert health.status_code == 200
        agents = httpx.get(
            f"http://127.0.0.1:{port}/agents",
            headers={"Authorization": f"UserKey {admin}"},
            timeout=5,
        )
        assert agents.status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        stdout.close()
