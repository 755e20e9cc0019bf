"""Helpers shared by the CLI tests: run ``keyguard`` in-process or as a real process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyguard.core.keys import BASE62
from keyguard.management.cli import main

#: Environment that changes what the CLI does; every test starts without it.
ENV_VARS = (
    "KEYGUARD_STORE_URL",
    "KEYGUARD_KEY_PREFIX",
    "KEYGUARD_PEPPER",
    "KEYGUARD_PEPPER_FILE",
    "KEYGUARD_ACCEPT_UNPEPPERED",
    "KEYGUARD_ACTOR",
    "KEYGUARD_DEBUG",
)
PEPPER = "a-pepper-of-at-least-16-bytes"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Runner:
    """``keyguard …`` in this process, with stdin given and stdout/stderr captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self._capsys = capsys
        self._monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = main(list(args))
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear the CLI's environment and point it at ``tmp_path/k.db`` (not created)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "k.db"
    monkeypatch.setenv("KEYGUARD_STORE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("KEYGUARD_ACTOR", "tester")
    return path


def init(run: Runner, *args: str) -> None:
    r = run(*args, "init")
    assert r.code == 0, r.err


def create(run: Runner, *args: str) -> tuple[str, dict[str, Any]]:
    """Create a key (with ``--no-scopes`` unless a scope is given); its plaintext and record."""
    scoped = any(a == "--scope" or a.startswith("--scope=") for a in args)
    r = run("keys", "create", "--json", *args, *(() if scoped else ("--no-scopes",)))
    assert r.code == 0, r.err
    data = json.loads(r.out)
    return data["key"], data["record"]


def assert_one_line_error(r: Result, code: int = 1) -> str:
    """Exactly one line on stderr, ``keyguard: error: …``, no traceback; returns the line."""
    assert r.code == code, r
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("keyguard: error: "), r.err
    return lines[0]


def typo(key: str) -> str:
    i = len(key) - 12
    return key[:i] + BASE62[(BASE62.index(key[i]) + 1) % 62] + key[i + 1 :]


def entry_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["KEYGUARD_STORE_URL"] = f"sqlite:///{db}"
    env.update(extra)
    return env


def console_script() -> str:
    """The installed ``keyguard`` script; missing is a skip locally, a failure under CI=true."""
    path = Path(sys.executable).parent / "keyguard"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the keyguard console script is not installed at {path} (CI=true)")
        pytest.skip("the keyguard console script is not installed (pip install -e .)")
    return str(path)


def run_process(
    command: list[str], env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
) -> Result:
    """A real process (``console_script()`` or ``sys.executable -m keyguard``)."""
    proc = subprocess.run(
        command,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
