"""Which store the CLI opens, and how: ``keyguard init``, missing and ephemeral stores, stores
that cannot be read, and read-only commands that never write (pepper included)."""

from __future__ import annotations

import json
import os
import pwd
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyguard import stores
from keyguard.core.hashing import NO_PEPPER, Hasher
from keyguard.core.pepper import PEPPER_SETTING
from keyguard.core.records import KeyRecord
from keyguard.management import KeyManager
from keyguard.management.cli import main
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore
from tests.keyfactory import KeyFactory
from tests.management.cli_support import (
    PEPPER,
    Result,
    Runner,
    assert_one_line_error,
    create,
    entry_env,
    init,
    isolate,
    run_process,
)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def run(db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(capsys, monkeypatch)


def _record(db: Path, key_id: str) -> KeyRecord:
    store = SQLiteStore(db)
    try:
        record = store.get(key_id)
        assert record is not None
        return record
    finally:
        store.close()


def _setting(db: Path) -> str | None:
    store = SQLiteStore(db)
    try:
        return store.get_setting(PEPPER_SETTING)
    finally:
        store.close()


def _audit_count(db: Path) -> int:
    store = SQLiteStore(db)
    try:
        return len(store.audit(limit=1000))
    finally:
        store.close()


# Every command that uses a store, with arguments that would otherwise succeed or fail later.
STORE_COMMANDS = [
    pytest.param(["keys", "create", "--name", "x", "--no-scopes"], id="create"),
    pytest.param(["keys", "list"], id="list"),
    pytest.param(["keys", "show", "AAAAAAAAAAAA"], id="show"),
    pytest.param(["keys", "revoke", "AAAAAAAAAAAA", "--reason", "r"], id="revoke"),
    pytest.param(["keys", "rotate", "AAAAAAAAAAAA"], id="rotate"),
    pytest.param(["keys", "expire", "AAAAAAAAAAAA"], id="expire"),
    pytest.param(["keys", "expiring"], id="expiring"),
    pytest.param(["keys", "verify"], id="verify"),
    pytest.param(["audit"], id="audit"),
]
STDIN = "kg_AAAAAAAAAAAA_" + "A" * 38 + "\n"


# -- keyguard init -------------------------------------------------------------------------------
def test_init_creates_a_private_store_and_says_so(run: Runner, db: Path) -> None:
    r = run("init")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == f"created the key store sqlite:///{db}"
    assert str(db) in r.out
    assert "pepper    none" in r.out
    assert "keyguard keys create" in r.err
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert _setting(db) == NO_PEPPER
    assert run("keys", "list").code == 0


def test_init_json(run: Runner, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPER", PEPPER)
    r = run("init", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    fingerprint = Hasher(PEPPER).fingerprint
    assert data == {
        "created": True,
        "store": f"sqlite:///{db}",
        "path": str(db),
        "pepper_fingerprint": fingerprint,
    }
    assert PEPPER not in r.out + r.err
    assert _setting(db) == fingerprint


def test_init_refuses_an_existing_store_and_changes_nothing(run: Runner, db: Path) -> None:
    init(run)
    _, record = create(run, "--name", "keep me")
    before = db.read_bytes()
    r = run("init")
    line = assert_one_line_error(r)
    assert "already exists" in line
    assert "nothing changed" in line
    assert db.read_bytes() == before
    assert run("keys", "show", record["key_id"]).code == 0


def test_init_refuses_a_directory_and_a_missing_directory(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    r = run("--store", f"sqlite:///{tmp_path / 'adir'}", "init")
    assert "directory already exists" in assert_one_line_error(r)
    missing = tmp_path / "nope" / "k.db"
    r = run("--store", f"sqlite:///{missing}", "init")
    assert "does not exist" in assert_one_line_error(r)
    assert not missing.parent.exists()


def test_init_leaves_nothing_behind_when_it_fails(
    run: Runner, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPER", "short")
    assert "at least 16 bytes" in assert_one_line_error(run("init"))
    assert not db.exists()

    def broken(url: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.delenv("KEYGUARD_PEPPER")
    monkeypatch.setattr("keyguard.management.cli.context.from_url", broken)
    assert "Input/output error" in assert_one_line_error(run("init"))
    assert not db.exists()


class SharedStore:
    """A ``shared://`` store URL: one MemoryStore that outlives each command."""

    store = MemoryStore()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        return cls.store


def test_init_on_a_store_without_files_refuses_one_in_use(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores that are not files: "exists" means a recorded pepper or a key."""
    monkeypatch.setattr(SharedStore, "store", MemoryStore())
    monkeypatch.setitem(stores._REGISTRY, "shared", f"{__name__}:SharedStore")
    r = run("--store", "shared://x", "init")
    assert r.code == 0, r.err
    assert SharedStore.store.get_setting(PEPPER_SETTING) == NO_PEPPER
    again = run("--store", "shared://x", "init")
    assert "already in use" in assert_one_line_error(again)
    # A store with keys but no recorded pepper (made before fingerprints) is in use too.
    monkeypatch.setattr(SharedStore, "store", MemoryStore())
    KeyFactory(SharedStore.store).issue("agents:read")  # written before fingerprints existed
    old = run("--store", "shared://x", "init")
    assert "already in use" in assert_one_line_error(old)
    assert SharedStore.store.get_setting(PEPPER_SETTING) is None


# -- no store appears by accident ------------------------------------------------------------
@pytest.mark.parametrize("args", STORE_COMMANDS)
def test_a_missing_store_is_refused_and_not_created(run: Runner, db: Path, args: list[str]) -> None:
    r = run(*args, stdin=STDIN)
    line = assert_one_line_error(r)
    assert f"no key store at '{db}'" in line
    assert "keyguard init" in line
    assert not db.exists()
    assert list(db.parent.iterdir()) == []


def test_a_deleted_database_is_not_silently_recreated(run: Runner, db: Path) -> None:
    """The ghost: a server still holds the unlinked file; the CLI must not make a new one."""
    init(run)
    _, record = create(run, "--name", "served")
    for path in db.parent.iterdir():
        path.unlink()
    r = run("keys", "create", "--name", "new", "--no-scopes")
    assert "keyguard init" in assert_one_line_error(r)
    assert not db.exists()
    revoke = run("keys", "revoke", record["key_id"], "--reason", "leak")
    line = assert_one_line_error(revoke)
    assert "no key store" in line
    assert "no key with id" not in line


@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:"])
@pytest.mark.parametrize("args", [*STORE_COMMANDS, pytest.param(["init"], id="init")])
def test_a_store_that_dies_with_the_command_is_refused(
    run: Runner, url: str, args: list[str]
) -> None:
    r = run("--store", url, *args, stdin=STDIN)
    line = assert_one_line_error(r)
    assert "lives only inside one process" in line
    assert "every keyguard command would start with an empty store" in line


def test_memory_store_is_fine_where_no_store_is_used(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_STORE_URL", "memory://")
    assert run("scopes").code == 0
    assert run("keys", "create", "--help").code == 0
    assert run("--version").code == 0


# -- stores that cannot be used -------------------------------------------------------------
def test_a_directory_is_not_a_store(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    r = run("--store", f"sqlite:///{tmp_path / 'adir'}", "keys", "list")
    assert "is a directory, not a key store" in assert_one_line_error(r)


def test_a_file_that_is_not_a_database(run: Runner, db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * 100)
    r = run("keys", "list")
    assert "file is not a database" in assert_one_line_error(r)


@pytest.fixture
def unreadable_store() -> Iterator[Path]:
    """A store file only root may read, in a directory anyone may enter."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the unprivileged child must reach the file
        path = Path(tmp) / "k.db"
        with KeyManager(f"sqlite:///{path}") as manager:
            manager.create("x")
        path.chmod(0o000)
        yield path


def test_an_unreadable_store_is_one_line(
    unreadable_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--store", f"sqlite:///{unreadable_store}", "keys", "list"]
    # The same command once as ourselves, so that every module it imports is loaded before
    # the child gives up the right to read root's files.
    unreadable_store.chmod(0o600)
    assert main(args) == 0
    unreadable_store.chmod(0o000)
    capsys.readouterr()
    r = _main_unprivileged(args)
    line = assert_one_line_error(r)
    assert str(unreadable_store) in line
    assert "unable to open" in line


def _main_unprivileged(args: list[str]) -> Result:
    """``main(args)`` in a forked child that cannot read a mode-0 file: as root, the child
    drops to ``nobody`` (the interpreter is already loaded, so it needs no files of root's)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.close(out_r)
            os.close(err_r)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            sys.stdout = os.fdopen(out_w, "w")
            sys.stderr = os.fdopen(err_w, "w")
            code = main(args)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), stdout, stderr)


# -- read-only commands never write; the pepper is checked ----------------------------------
@pytest.fixture
def unpeppered(run: Runner) -> tuple[str, str]:
    """A store set up without a pepper, holding one key: (key, key id)."""
    init(run)
    key, record = create(run, "--name", "served", "--scope", "agents:read")
    return key, record["key_id"]


def test_verify_with_a_migrating_pepper_does_not_rehash(
    run: Runner, db: Path, unpeppered: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 7 item 8: a diagnostic run with a pepper must not lock out the running app."""
    key, key_id = unpeppered
    before = _record(db, key_id)
    monkeypatch.setenv("KEYGUARD_PEPPER", PEPPER)
    monkeypatch.setenv("KEYGUARD_ACCEPT_UNPEPPERED", "1")
    r = run("keys", "verify", stdin=key)
    assert r.code == 0, r.err
    after = _record(db, key_id)
    assert after.digest == before.digest
    assert after.digest.startswith("sha256$")
    assert after.last_used_at is None
    assert _setting(db) == NO_PEPPER
    monkeypatch.delenv("KEYGUARD_PEPPER")
    monkeypatch.delenv("KEYGUARD_ACCEPT_UNPEPPERED")
    assert run("keys", "verify", stdin=key).code == 0  # the app without the pepper still can


def test_verify_does_not_touch_last_used(
    run: Runner, db: Path, unpeppered: tuple[str, str]
) -> None:
    key, key_id = unpeppered
    before = db.read_bytes()
    assert run("keys", "verify", stdin=key).code == 0
    assert _record(db, key_id).last_used_at is None
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        *STORE_COMMANDS,
        pytest.param(["keys", "show", "{id}"], id="show-known"),
        pytest.param(["keys", "rotate", "{id}"], id="rotate-known"),
        pytest.param(["keys", "revoke", "{id}", "--reason", "r"], id="revoke-known"),
    ],
)
def test_a_pepper_mismatch_is_one_error_and_changes_nothing(
    run: Runner,
    db: Path,
    unpeppered: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    key, key_id = unpeppered
    events = _audit_count(db)
    monkeypatch.setenv("KEYGUARD_PEPPER", PEPPER)
    r = run(*(a.replace("{id}", key_id) for a in args), stdin=key)
    line = assert_one_line_error(r)
    assert line.startswith("keyguard: error: pepper mismatch: ")
    assert PEPPER not in r.err
    assert r.out == ""
    assert _audit_count(db) == events
    assert _record(db, key_id).status(0).value == "active"
    assert _setting(db) == NO_PEPPER


READ_ONLY = [
    pytest.param(["keys", "list"], id="list"),
    pytest.param(["keys", "show", "{id}"], id="show"),
    pytest.param(["keys", "expiring"], id="expiring"),
    pytest.param(["keys", "verify"], id="verify"),
    pytest.param(["audit"], id="audit"),
    pytest.param(["audit", "--key", "{id}"], id="audit-key"),
]


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_record_no_pepper(
    run: Runner, db: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """A store made before fingerprints existed keeps none until something writes to it."""
    with SQLiteStore(db) as store:  # a store written before fingerprints existed
        created = KeyFactory(store).issue("agents:read", name="old")
    assert _setting(db) is None
    monkeypatch.setenv("KEYGUARD_PEPPER", PEPPER)
    monkeypatch.setenv("KEYGUARD_ACCEPT_UNPEPPERED", "1")
    r = run(*(a.replace("{id}", created.key_id) for a in args), stdin=created.plaintext)
    assert r.code == 0, r.err
    assert _setting(db) is None
    assert _record(db, created.key_id).digest.startswith("sha256$")


def test_a_mutating_command_records_the_pepper(run: Runner, db: Path) -> None:
    with SQLiteStore(db) as store:  # a store written before fingerprints existed
        KeyFactory(store).issue(name="old")
    assert _setting(db) is None
    create(run, "--name", "new")
    assert _setting(db) == NO_PEPPER


def test_a_pepper_setting_that_cannot_be_used_is_one_line(
    run: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    init(run)
    monkeypatch.setenv("KEYGUARD_PEPPER_FILE", str(tmp_path / "missing"))
    r = run("keys", "list")
    assert "KEYGUARD_PEPPER_FILE" in assert_one_line_error(r)


def test_init_then_use_as_a_real_process(db: Path) -> None:
    env = entry_env(db)
    cmd = [sys.executable, "-m", "keyguard"]
    missing = run_process([*cmd, "keys", "list"], env)
    assert "keyguard init" in assert_one_line_error(missing)
    assert run_process([*cmd, "init"], env).code == 0
    assert run_process([*cmd, "keys", "list"], env).code == 0
