"""The ``keyguard`` CLI: the acceptance flow, output hygiene, and errors without tracebacks."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyguard.management.cli import SHOWN_ONCE, main, parse_duration, parse_time
from keyguard.management.cli import parser as cli_parser
from tests.management.cli_support import (
    Runner,
    assert_one_line_error,
    console_script,
    create,
    entry_env,
    init,
    isolate,
    run_process,
    typo,
)

RunFn = Runner


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def bare(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    """The CLI, with no store created yet."""
    return Runner(capsys, monkeypatch)


@pytest.fixture
def run(bare: Runner) -> Runner:
    """The CLI, on a store made with ``keyguard init``."""
    init(bare)
    return bare


# -- the acceptance flow ---------------------------------------------------------------------
def test_acceptance_flow(bare: RunFn, db: Path) -> None:
    run = bare
    made = run("init")
    assert made.code == 0, made.err
    assert str(db) in made.out
    assert db.exists()
    r = run(
        "keys",
        "create",
        "--name",
        "ci deploy",
        "--scope",
        "agents:read",
        "--scope",
        "tasks:execute",
        "--expires-in",
        "90d",
        "--owner",
        "team-a",
        "--rate-limit",
        "1000/minute",
        "--meta",
        "env=prod",
    )
    assert r.code == 0, r.err
    assert SHOWN_ONCE in r.err
    key = next(line.split()[-1] for line in r.out.splitlines() if line.startswith("api key"))
    assert r.out.count(key) == 1
    key_id = key.split("_")[1]
    secret = key.split("_")[2]
    assert "agents:read, tasks:execute" in r.out

    listing = run("keys", "list")
    assert listing.code == 0
    assert key_id in listing.out
    assert "ci deploy" in listing.out
    assert "active" in listing.out
    assert secret[:16] not in listing.out
    assert key not in listing.out
    header = listing.out.splitlines()[0].split()
    assert header[:3] == ["KEY", "ID", "NAME"]
    as_json = json.loads(run("keys", "list", "--json").out)
    assert [k["key_id"] for k in as_json["keys"]] == [key_id]
    assert secret[:16] not in json.dumps(as_json)
    assert "digest" not in json.dumps(as_json)

    ok = run("keys", "verify", stdin=key + "\n")
    assert ok.code == 0
    assert ok.out.strip() == f"valid: {key_id} (ci deploy), scopes: agents:read, tasks:execute"
    assert secret[:16] not in ok.out + ok.err

    bad = run("keys", "verify", stdin=typo(key))
    assert bad.code == 1
    assert bad.out.startswith("invalid: invalid_api_key_format")

    revoked = run("keys", "revoke", key_id, "--reason", "rotated out")
    assert revoked.code == 0
    assert revoked.out.strip() == f"revoked: {key_id}"
    gone = run("keys", "verify", stdin=key)
    assert gone.code == 1
    assert gone.out.startswith("invalid: revoked_api_key")
    assert secret[:16] not in gone.out + gone.err

    show = run("keys", "show", key_id)
    assert show.code == 0
    assert "revoked" in show.out
    assert "rotated out" in show.out
    assert "recent events:" in show.out
    assert "tester" in show.out
    assert secret[:16] not in show.out
    shown = json.loads(run("keys", "show", key_id, "--json").out)
    assert [e["action"] for e in shown["audit"]] == ["revoke", "create"]
    assert shown["record"]["status"] == "revoked"


def test_expired_key_is_rejected(run: RunFn) -> None:
    key, record = create(run, "--name", "short", "--expires-in", "1h")
    r = run("keys", "expire", record["key_id"])
    assert r.code == 0
    assert "expires at" in r.out
    v = run("keys", "verify", stdin=key)
    assert v.code == 1
    assert v.out.startswith("invalid: expired_api_key")


def test_verify_from_env_and_json(
    run: RunFn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, record = create(run, "--name", "envkey", "--scope", "agents:read")
    monkeypatch.setenv("MY_KEY", key)
    r = run("keys", "verify", "--env", "MY_KEY", "--json")
    assert r.code == 0
    assert json.loads(r.out) == {
        "valid": True,
        "key_id": record["key_id"],
        "name": "envkey",
        "owner": None,
        "scopes": ["agents:read"],
    }
    assert key.split("_")[2] not in r.out
    monkeypatch.setenv("MY_KEY", "kg_nope")
    r = run("keys", "verify", "--env", "MY_KEY", "--json")
    assert r.code == 1
    assert json.loads(r.out)["code"] == "invalid_api_key_format"
    assert "kg_nope" not in r.out
    unset = run("keys", "verify", "--env", "NOT_SET_ANYWHERE")
    assert_one_line_error(unset, code=2)


def test_rotate_prints_the_new_key_once_and_honours_grace(run: RunFn) -> None:
    old, record = create(run, "--name", "rot")
    r = run("keys", "rotate", record["key_id"], "--grace", "1h", "--quiet")
    assert r.code == 0
    assert SHOWN_ONCE in r.err
    new = r.out.strip()
    assert new.split("_")[1] == record["key_id"]
    assert new != old
    assert run("keys", "verify", stdin=new).code == 0
    assert run("keys", "verify", stdin=old).code == 0
    r = run("keys", "rotate", record["key_id"], "--grace", "0", "--json")
    newest = json.loads(r.out)["key"]
    assert json.loads(r.out)["old_secret_valid_until"] == "no longer valid"
    assert run("keys", "verify", stdin=newest).code == 0
    stale = run("keys", "verify", stdin=new)
    assert stale.out.startswith("invalid: invalid_api_key —")


@pytest.mark.parametrize(
    ("grace", "expected"),
    [("2h", "valid until 20"), ("0", "no longer valid")],
    ids=["grace", "no-grace"],
)
def test_rotate_says_once_what_the_old_secret_is_worth(
    run: RunFn, grace: str, expected: str
) -> None:
    _, record = create(run, "--name", "rot")
    r = run("keys", "rotate", record["key_id"], "--grace", grace)
    assert r.code == 0, r.err
    lines = [line for line in r.out.splitlines() if "old secret" in line]
    assert len(lines) == 1, r.out
    label, value = lines[0].split(None, 2)[:2], lines[0].split(None, 2)[2]
    assert label == ["old", "secret"]
    assert value.startswith(expected)


def test_list_filters_paging_and_expiring(run: RunFn) -> None:
    ids = [
        create(run, "--name", f"k{i}", "--owner", "o" if i % 2 else "p")[1]["key_id"]
        for i in range(3)
    ]
    create(run, "--name", "soon", "--expires-in", "2d")
    page = run("keys", "list", "--limit", "2")
    assert len(page.out.strip().splitlines()) == 3  # header + 2
    assert "--cursor" in page.err
    everything = json.loads(run("keys", "list", "--all", "--json").out)
    assert len(everything["keys"]) == 4
    assert everything["next_cursor"] is None
    owned = json.loads(run("keys", "list", "--owner", "o", "--json").out)
    assert [k["key_id"] for k in owned["keys"]] == [ids[1]]
    run("keys", "revoke", ids[0], "--reason", "x")
    revoked = json.loads(run("keys", "list", "--status", "revoked", "--json").out)
    assert [k["key_id"] for k in revoked["keys"]] == [ids[0]]
    soon = run("keys", "expiring")
    assert "soon" in soon.out
    assert ids[1] not in soon.out
    none = run("keys", "expiring", "--within", "1h")
    assert none.code == 0
    assert none.out == ""


def test_audit(run: RunFn) -> None:
    _, record = create(run, "--name", "a")
    run("keys", "revoke", record["key_id"], "--reason", "bye")
    audit = json.loads(run("audit", "--json").out)
    assert [e["action"] for e in audit["events"]] == ["revoke", "create"]
    assert all(e["actor"] == "tester" for e in audit["events"])
    one = run("audit", "--key", record["key_id"], "--limit", "1")
    assert "revoke" in one.out
    assert "create" not in one.out


def test_custom_prefix(run: RunFn, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = create(run, "--name", "p")
    r = run("--prefix", "acme", "keys", "create", "--name", "acme", "--no-scopes", "-q")
    acme = r.out.strip()
    assert acme.startswith("acme_")
    assert run("--prefix", "acme", "keys", "verify", stdin=acme).code == 0
    monkeypatch.setenv("KEYGUARD_KEY_PREFIX", "acme")
    assert run("keys", "verify", stdin=acme).code == 0
    assert run("keys", "verify", stdin=key).out.startswith("invalid: invalid_api_key_format")


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        pytest.param(
            ["keys", "create", "--name", "x", "--scope", "agents:read,nope:write"],
            1,
            "nope:write",
            id="unknown-scope",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--expires-in", "90 days", "--no-scopes"],
            2,
            "invalid duration",
            id="bad-duration",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--expires-in", "1d1d", "--no-scopes"],
            2,
            "twice",
            id="repeated-unit",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--expires-at", "tomorrow", "--no-scopes"],
            2,
            "invalid time",
            id="bad-time",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--expires-at", "2001-01-01", "--no-scopes"],
            1,
            "not in the future",
            id="past-time",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--rate-limit", "fast", "--no-scopes"],
            1,
            "rate-limit",
            id="limit",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--meta", "novalue", "--no-scopes"],
            2,
            "key=value",
            id="meta",
        ),
        pytest.param(["keys", "create", "--name", "", "--no-scopes"], 1, "name", id="empty-name"),
        pytest.param(["keys", "create"], 2, "--name", id="missing-name"),
        pytest.param(["keys", "show", "AAAAAAAAAAAA"], 1, "no key", id="unknown-id"),
        pytest.param(["keys", "revoke", "AAAAAAAAAAAA"], 2, "--reason", id="missing-reason"),
        pytest.param(["keys", "revoke", "AAAAAAAAAAAA", "--reason", " "], 1, "reason", id="blank"),
        pytest.param(["keys", "rotate", "AAAAAAAAAAAA", "--grace", "31d"], 1, "grace", id="grace"),
        pytest.param(["--store", "foo://bar", "keys", "list"], 1, "unknown store", id="scheme"),
        pytest.param(
            ["--store", "not a url", "keys", "create", "--name", "x", "--no-scopes"],
            1,
            "URL",
            id="url",
        ),
        pytest.param(
            [
                "--store",
                "sqlite:////nonexistent/dir/k.db",
                "keys",
                "create",
                "--name",
                "x",
                "--no-scopes",
            ],
            1,
            "does not exist",
            id="bad-dir",
        ),
        pytest.param(
            ["--prefix", "Bad_Prefix", "keys", "create", "--name", "x", "--no-scopes"],
            1,
            "prefix",
            id="prefix",
        ),
        pytest.param(["keys", "list", "--limit", "0"], 2, "positive", id="limit-0"),
        pytest.param(["keys", "list", "--status", "zombie"], 2, "invalid choice", id="status"),
        pytest.param(["keys", "list", "--cursor", "!!!"], 1, "cursor", id="cursor"),
        pytest.param(
            ["keys", "create", "--name", "x", "--no-scopes", "--expires-in", "-5d"],
            2,
            "argument --expires-in: invalid duration '-5d': a duration cannot be negative",
            id="negative-expiry",
        ),
        pytest.param(
            ["keys", "rotate", "AAAAAAAAAAAA", "--grace", "-1h"],
            2,
            "cannot be negative",
            id="negative-grace",
        ),
        pytest.param(["keys", "expiring", "--within", "-2d"], 2, "negative", id="negative-within"),
        pytest.param(["keys", "list", "--limit", "-5"], 2, "positive", id="negative-limit"),
        pytest.param(
            ["keys", "create", "--name", "x"],
            2,
            "keys create: give at least one --scope (see 'keyguard scopes'), or --no-scopes",
            id="no-scope",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--scope", ","],
            2,
            "--no-scopes",
            id="empty-scope",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--scope", "agents:read", "--no-scopes"],
            2,
            "not allowed with",
            id="scope-and-no-scopes",
        ),
        pytest.param(["audit", "--key", "AAAAAAAAAAAA"], 1, "no key with id", id="audit-unknown"),
        pytest.param(["audit", "--key", "not-an-id"], 1, "no key with id", id="audit-bad-id"),
        pytest.param(
            ["keys", "create", "--name"],
            2,
            "keys create: argument --name: expected one argument "
            "(see 'keyguard keys create --help')",
            id="usage-names-the-command",
        ),
        pytest.param(["keys"], 2, "required", id="no-action"),
        pytest.param([], 2, "required", id="no-command"),
        pytest.param(["frobnicate"], 2, "invalid choice", id="unknown-command"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    run: RunFn,
    args: list[str],
    code: int,
    needle: str,
) -> None:
    create(run, "--name", "exists")
    r = run(*args)
    line = assert_one_line_error(r, code)  # no usage block, no traceback: one line
    assert needle in line
    assert r.out == ""


def test_operation_errors(run: RunFn) -> None:
    _, record = create(run, "--name", "x")
    run("keys", "revoke", record["key_id"], "--reason", "r")
    r = run("keys", "rotate", record["key_id"])
    assert_one_line_error(r)
    assert "revoked" in r.err
    again = run("keys", "revoke", record["key_id"], "--reason", "r")
    assert again.code == 0
    assert "already revoked" in again.out


def test_help_and_version(run: RunFn) -> None:
    r = run("--version")
    assert r.code == 0
    assert r.out.startswith("keyguard ")
    h = run("keys", "--help")
    assert h.code == 0
    assert "rotate" in h.out


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        pytest.param(KeyboardInterrupt(), 130, None, id="ctrl-c"),
        pytest.param(RuntimeError("boom"), 1, "unexpected RuntimeError: boom", id="bug"),
        pytest.param(
            PermissionError(13, "Permission denied", "/x"), 1, "Permission denied", id="os"
        ),
    ],
)
def test_extra_commands_and_last_resort_handling(
    run: RunFn,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    code: int,
    message: str | None,
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise exc

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        sub.add_parser("boom", help="test command").set_defaults(handler=handler)

    monkeypatch.setattr(cli_parser, "EXTRA_COMMANDS", [register])
    r = run("boom")
    assert r.code == code
    assert "Traceback" not in r.err
    if message is None:
        assert r.err == ""
    else:
        assert_one_line_error(r)
        assert message in r.err


def test_broken_pipe_is_quiet(run: RunFn, monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    create(run, "--name", "x")
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["keys", "list"]) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86400),
        ("24h", 86400),
        ("30m", 1800),
        ("45s", 45),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1w2d3h4m5s", 788645),
        ("0", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "90", "-1d", "1.5h", "1y", "1d 2h", "1h1h", "9" * 12 + "s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_parse_time() -> None:
    assert parse_time("2030-01-01") == parse_time("2030-01-01T00:00:00Z") == 1893456000
    assert parse_time("2030-01-01T01:00:00+01:00") == 1893456000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("01/02/2030")


# -- the database never holds a key ---------------------------------------------------------
def test_sqlite_files_never_contain_plaintext(run: RunFn, db: Path) -> None:
    keys = [create(run, "--name", f"canary{i}", "--scope", "agents:read")[0] for i in range(3)]
    _, record = create(run, "--name", "rot")
    r = run("keys", "rotate", record["key_id"], "-q")
    keys.append(r.out.strip())
    run("keys", "verify", stdin=keys[0])
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert db in files
    blob = b"".join(p.read_bytes() for p in files)
    assert record["key_id"].encode() in blob  # the canary can see what is stored
    for key in keys:
        secret = key.split("_")[2]
        assert key.encode() not in blob
        assert secret[:20].encode() not in blob
        assert secret[-20:].encode() not in blob


# -- the installed entry points -----------------------------------------------------------------
def test_console_script_init_create_and_verify(db: Path) -> None:
    env = entry_env(db)
    script = console_script()
    made = run_process([script, "init"], env)
    assert made.code == 0, made.err
    created = run_process(
        [script, "keys", "create", "--name", "sub", "--scope", "agents:read", "-q"], env
    )
    assert created.code == 0, created.err
    key = created.out.strip()
    assert SHOWN_ONCE in created.err
    verified = run_process([script, "keys", "verify"], env, stdin=key + "\n")
    assert verified.code == 0, verified.err
    assert verified.out.startswith("valid: ")
    assert key.split("_")[2] not in verified.out + verified.err


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_a_missing_console_script_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    if ci:
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="CI=true"):
            console_script()
    else:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception):
            console_script()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(["keys", "show", "AAAAAAAAAAAA"], 1, id="unknown-key"),
        pytest.param(
            ["--store", "nope://x", "keys", "create", "--name", "x", "--no-scopes"],
            1,
            id="bad-store",
        ),
        pytest.param(
            ["keys", "create", "--name", "x", "--no-scopes", "--expires-in", "soon"],
            2,
            id="usage",
        ),
        pytest.param(["keys", "create", "--name", "x"], 2, id="no-scopes"),
    ],
)
def test_python_m_keyguard_errors_are_one_line(db: Path, args: list[str], code: int) -> None:
    env = entry_env(db)
    assert run_process([sys.executable, "-m", "keyguard", "init"], env).code == 0
    r = run_process([sys.executable, "-m", "keyguard", *args], env)
    assert_one_line_error(r, code)


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_a_closed_pipe_does_not_traceback(db: Path, json_output: bool) -> None:
    """``keyguard keys list | head -1``: the reader goes away before the CLI is done.

    Closing our read end before the CLI writes makes the EPIPE deterministic (with ``head``
    it depends on pipe buffer sizes and timing).
    """
    from keyguard.management import KeyManager

    with KeyManager(f"sqlite:///{db}") as m:
        for i in range(20):
            m.create(f"key-{i}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyguard", "keys", "list", *(["--json"] if json_output else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=entry_env(db),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert err == ""
