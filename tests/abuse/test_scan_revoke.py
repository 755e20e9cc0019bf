"""``keyguard scan --revoke``: live keys found are revoked; a key id alone, an unknown key or a
dead secret changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from keyguard.abuse.findings import Finding
from keyguard.abuse.leaks import Outcome, revoke_found
from keyguard.core.hashing import Hasher
from keyguard.core.keys import parse_key
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore
from tests.abuse.support import commit_file, forged, git, key, new_repo
from tests.management.cli_support import Runner, init, isolate


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Path) -> Runner:
    runner = Runner(capsys, monkeypatch)
    init(runner)
    monkeypatch.chdir(db.parent)
    return runner


def manager(db: Path) -> KeyManager:
    return KeyManager(f"sqlite:///{db}", hasher=Hasher(pepper_from_env=False))


def test_revoke_live_keys_only(run: Runner, db: Path) -> None:
    with manager(db) as keys:
        live = keys.create("leaky", ["agents:read"])
        child = keys.create("child", ["agents:read"], parent=keys.create("p", ["admin"]).record)
        victim = keys.create("victim", ["agents:read"])
        gone = keys.create("gone", [])
        keys.revoke(gone.key_id, reason="earlier")
        rotated = keys.create("rotated", [])
        keys.rotate(rotated.key_id, grace=3600)
        current = keys.get(rotated.key_id)  # its grace period is over now:
        keys.store.update(current.evolve(previous_expires_at=time.time() - 1))
    unknown = key()
    planted = {
        "live.env": f"KEY={live.plaintext}\n",
        "child.env": f"KEY={child.plaintext}\n",
        "forged.env": f"KEY={forged(victim.plaintext)}\n",  # a real id, a made-up secret
        "unknown.env": f"KEY={unknown}\n",
        "gone.env": f"KEY={gone.plaintext}\n",
        "old.env": f"KEY={rotated.plaintext}\n",  # rotated out: no longer accepted
    }
    for name, text in planted.items():
        Path(name).write_text(text)

    r = run("scan", "--revoke", "--json", *planted)
    assert r.code == 1, r.err
    data = json.loads(r.out)
    results = {d["location"].split(":")[0]: d["result"] for d in data["revocations"]}
    assert results == {
        "live.env": "revoked",
        "child.env": "revoked",
        "forged.env": "not_matching",
        "unknown.env": "unknown",
        "gone.env": "already_revoked",
        "old.env": "rotated_out",
    }
    for item in data["revocations"]:
        assert set(item) == {"key_id", "masked", "location", "result", "revoked", "error"}
    with manager(db) as keys:
        leaked = keys.get(live.key_id)
        assert leaked.revoked_at is not None
        assert leaked.revoked_reason == "found by keyguard scan at live.env:1"
        assert keys.get(child.key_id).revoked_at is not None
        assert keys.get(victim.key_id).revoked_at is None
        assert keys.get(rotated.key_id).revoked_at is None
        assert keys.verify(live.plaintext).code == "revoked_api_key"
        assert keys.audit(live.key_id)[0].action == "revoke"


def test_revoke_from_git_history_names_the_commit(run: Runner, db: Path, tmp_path: Path) -> None:
    with manager(db) as keys:
        leaked = keys.create("ci", ["agents:read"])
    repo = new_repo(tmp_path / "repo")
    first = commit_file(repo, "ci/.env", f"KEY={leaked.plaintext}\n")
    git(repo, "rm", "-q", "ci/.env")
    git(repo, "commit", "-q", "-m", "oops")
    r = run("scan", "--git", "--revoke", str(repo))
    assert r.code == 1
    assert f"key {leaked.key_id} ({first}:ci/.env:1): revoked" in r.out
    with manager(db) as keys:
        assert (
            keys.get(leaked.key_id).revoked_reason == f"found by keyguard scan at {first}:ci/.env:1"
        )


def test_text_output_and_nothing_found_opens_no_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    # No store exists at all: a clean scan with --revoke must not need one.
    monkeypatch.chdir(db.parent)
    Path("clean.txt").write_text("nothing\n")
    assert Runner(capsys, monkeypatch)("scan", "--revoke", "clean.txt").code == 0
    assert not db.exists()


def test_each_distinct_key_is_revoked_once() -> None:
    store = MemoryStore()
    with KeyManager(store, hasher=Hasher(pepper_from_env=False)) as keys:
        leaked = keys.create("twice", [])
    parsed = parse_key(leaked.plaintext)
    assert parsed is not None
    found = [Finding("a", 1, 1, parsed), Finding("b", 7, 1, parsed)]
    with KeyManager(store, hasher=Hasher(pepper_from_env=False)) as keys:
        results = revoke_found(keys, found, actor="test")
        assert [(r.location, r.outcome) for r in results] == [("a:1", Outcome.REVOKED)]
        assert len(keys.audit(leaked.key_id)) == 2  # create, one revoke
