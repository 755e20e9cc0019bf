"""A key on the command line is refused before argparse sees it, and never printed back.

``keyguard keys verify <KEY>`` used to fail with argparse's "unrecognized arguments: kg_…",
writing the whole key to stderr (and so to CI logs). Whatever the command and wherever the key
sits, the CLI now answers with one fixed line that names no argument.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core.keys import KeyFormat
from keyguard.management.cli import entry
from keyguard.management.cli.argv import (
    KEY_ON_COMMAND_LINE,
    join_negative_values,
    refuse_keys,
    value_options,
)
from keyguard.management.cli.errors import KEY_LIKE, UsageError, redact
from keyguard.management.cli.parser import build_parser
from tests.management.cli_support import (
    Runner,
    assert_one_line_error,
    console_script,
    create,
    entry_env,
    init,
    isolate,
    run_process,
)

REFUSAL = f"keyguard: error: {KEY_ON_COMMAND_LINE}"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def run(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    runner = Runner(capsys, monkeypatch)
    init(runner)
    return runner


@pytest.fixture
def key(run: Runner) -> str:
    """A real key of the store under test."""
    plaintext, _ = create(run, "--name", "real", "--scope", "agents:read")
    return plaintext


def _pieces(key: str) -> list[str]:
    """Fragments that would betray the key: its secret's start, middle and end."""
    secret = key.split("_", 2)[2]
    return [secret[:12], secret[12:24], secret[-12:]]


PLACES = [
    pytest.param(lambda k: ["keys", "verify", k], id="verify-positional"),
    pytest.param(lambda k: ["keys", "verify", "--env", k], id="verify-env-value"),
    pytest.param(lambda k: ["keys", "verify", "--json", "--", k], id="after-double-dash"),
    pytest.param(lambda k: ["keys", "show", k], id="show-as-key-id"),
    pytest.param(lambda k: ["keys", "revoke", k, "--reason", "leak"], id="revoke"),
    pytest.param(lambda k: ["keys", "create", "--name", k, "--no-scopes"], id="create-name"),
    pytest.param(lambda k: ["keys", "create", f"--name={k}", "--no-scopes"], id="name-equals"),
    pytest.param(lambda k: ["--actor", f"UserKey {k}", "keys", "list"], id="inside-a-value"),
    pytest.param(lambda k: ["--store", k, "keys", "list"], id="store"),
    pytest.param(lambda k: ["audit", "--key", k], id="audit"),
    pytest.param(lambda k: ["scopes", k], id="scopes"),
    pytest.param(lambda k: ["init", k], id="init"),
    pytest.param(lambda k: ["demo", "--host", k], id="demo"),
    pytest.param(lambda k: [k], id="alone"),
    pytest.param(lambda k: ["frobnicate", k], id="unknown-command"),
    pytest.param(lambda k: ["keys", "list", "--help", k], id="with-help"),
    pytest.param(lambda k: ["keys", "verify", k.upper()], id="upper-case"),
    pytest.param(lambda k: ["keys", "verify", k[:-20]], id="truncated"),
    pytest.param(lambda k: ["keys", "verify", "acme" + k[2:]], id="another-prefix"),
]


@pytest.mark.parametrize("place", PLACES)
def test_a_key_anywhere_on_the_command_line_is_refused_unprinted(
    run: Runner, key: str, place: Callable[[str], list[str]], db: Path
) -> None:
    before = db.read_bytes()
    r = run(*place(key))
    line = assert_one_line_error(r, code=2)
    assert line == REFUSAL
    for piece in [key, *_pieces(key)]:
        assert piece not in r.out + r.err
    assert db.read_bytes() == before  # nothing ran


def test_the_refusal_names_the_safe_ways(run: Runner, key: str) -> None:
    r = run("keys", "verify", key)
    assert "--env VAR" in r.err
    assert "| keyguard keys verify" in r.err
    assert "rotate" in r.err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["keys", "create", "--name", "svc_payments_prod", "--no-scopes"], id="name"),
        pytest.param(["keys", "create", "--name", "kg_AAAAAAAAAAAA", "--no-scopes"], id="id-only"),
        pytest.param(["keys", "show", "AAAAAAAAAAAA"], id="key-id"),
    ],
)
def test_ordinary_arguments_are_not_mistaken_for_keys(run: Runner, args: list[str]) -> None:
    r = run(*args)
    assert KEY_ON_COMMAND_LINE not in r.err


def test_argparse_errors_are_redacted_even_past_the_check(
    run: Runner, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence: were a key to reach argparse, its message hides it."""
    monkeypatch.setattr(entry, "refuse_keys", lambda argv: None)
    r = run("keys", "verify", key)
    line = assert_one_line_error(r, code=2)
    assert "unrecognized arguments: <redacted>" in line
    for piece in [key, *_pieces(key)]:
        assert piece not in r.out + r.err
    with pytest.raises(UsageError) as info:
        build_parser().parse_args(["keys", "list", "--status", key])
    assert key not in str(info.value)
    assert "<redacted>" in str(info.value)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "keyguard"], id="python-m"),
        pytest.param(None, id="console-script"),
    ],
)
def test_a_real_process_never_prints_the_key(db: Path, command: list[str] | None) -> None:
    cmd = command if command is not None else [console_script()]
    env = entry_env(db)
    assert run_process([*cmd, "init"], env).code == 0
    made = run_process([*cmd, "keys", "create", "--name", "k", "--no-scopes", "-q"], env)
    assert made.code == 0, made.err
    key = made.out.strip()
    r = run_process([*cmd, "keys", "verify", key], env)
    assert assert_one_line_error(r, code=2) == REFUSAL
    for piece in [key, *_pieces(key)]:
        assert piece not in r.out + r.err


@given(
    prefix=st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True),
    secret_length=st.integers(min_value=32, max_value=64),
)
def test_every_key_of_every_format_looks_like_a_key(prefix: str, secret_length: int) -> None:
    plaintext = KeyFormat(prefix, secret_length=secret_length).generate().plaintext
    assert KEY_LIKE.search(plaintext)
    assert redact(f"x {plaintext} y") == "x <redacted> y"
    with pytest.raises(UsageError) as info:
        refuse_keys(["keys", "verify", plaintext])
    assert str(info.value) == KEY_ON_COMMAND_LINE


def test_negative_values_are_joined_only_for_value_options() -> None:
    options = value_options(build_parser())
    assert {"--expires-in", "--grace", "--within", "--store", "--limit"} <= options
    assert "--json" not in options
    assert join_negative_values(
        ["keys", "create", "--expires-in", "-5d", "--json", "-q", "--", "--grace", "-1h"], options
    ) == ["keys", "create", "--expires-in=-5d", "--json", "-q", "--", "--grace", "-1h"]
    # An option followed by another option is left for argparse to report.
    assert join_negative_values(["--name", "-q"], options) == ["--name", "-q"]
