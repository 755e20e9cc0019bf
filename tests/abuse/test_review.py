"""``keyguard review``: each finding fires on its pattern and only then; usage-based scope
narrowing through a fed usage source; the CLI's JSON, exit statuses and read-only promise."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from keyguard.abuse.review import DAY, Review, ReviewPolicy, ReviewReport, Severity
from keyguard.abuse.usage import MappingUsageSource, UsageSource, load_usage
from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.core.records import KeyRecord
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.management.cli_support import Runner, init, isolate

NOW = 1_900_000_000.0


def kinds(report: ReviewReport, key_id: str) -> set[str]:
    return {f.kind for f in report.findings if f.key_id == key_id}


@pytest.fixture
def factory() -> KeyFactory:
    return KeyFactory(MemoryStore())


def healthy(factory: KeyFactory, *scopes: str, **fields: object) -> KeyRecord:
    """A key with nothing to report unless ``fields`` say otherwise."""
    values: dict[str, object] = {
        "created_at": NOW - 10 * DAY,
        "expires_at": NOW + 60 * DAY,
        "last_used_at": NOW - 3600,
    }
    values.update(fields)
    return factory.issue(*(scopes or ("agents:read",)), **values).record


def review(factory: KeyFactory, **kw: object) -> ReviewReport:
    records = list(factory.store.list(limit=1000).items)
    return Review(clock=lambda: NOW, **kw).run(records)  # type: ignore[arg-type]


def test_each_finding_on_its_pattern(factory: KeyFactory) -> None:
    fine = healthy(factory)
    admin = healthy(factory, "admin")
    no_expiry = healthy(factory, expires_at=None)
    old = healthy(factory, created_at=NOW - 200 * DAY)
    rotated = healthy(factory, created_at=NOW - 200 * DAY, rotated_at=NOW - 5 * DAY)
    expiring = healthy(factory, expires_at=NOW + 2 * DAY)
    idle = healthy(factory, last_used_at=NOW - 45 * DAY)
    never = healthy(factory, last_used_at=None, created_at=NOW - 40 * DAY)
    fresh_never = healthy(factory, last_used_at=None, created_at=NOW - 2 * DAY)
    report = review(factory)
    assert kinds(report, fine.key_id) == set()
    assert kinds(report, admin.key_id) == {"admin_scope"}
    assert kinds(report, no_expiry.key_id) == {"no_expiry"}
    assert kinds(report, old.key_id) == {"rotation_due"}
    assert kinds(report, rotated.key_id) == set()
    assert kinds(report, expiring.key_id) == {"expiring_soon"}
    assert kinds(report, idle.key_id) == {"unused"}
    assert kinds(report, never.key_id) == {"unused"}
    assert kinds(report, fresh_never.key_id) == set()
    assert report.findings[0].severity is Severity.HIGH  # most severe first
    assert report.keys_reviewed == 9


def test_dead_keys_are_not_reviewed(factory: KeyFactory) -> None:
    healthy(factory, "admin", revoked_at=NOW - DAY)
    healthy(factory, "admin", expires_at=NOW - DAY)
    report = review(factory)
    assert report.findings == ()
    assert report.keys_reviewed == 0


def test_many_descendants_counts_active_keys_transitively(factory: KeyFactory) -> None:
    root = healthy(factory, "admin")
    child = healthy(factory, created_by=root.key_id)
    for _ in range(6):
        healthy(factory, created_by=root.key_id)
    for _ in range(4):
        healthy(factory, created_by=child.key_id)
    for _ in range(5):
        healthy(factory, created_by=root.key_id, revoked_at=NOW - DAY)
    report = review(factory)
    (finding,) = [f for f in report.findings if f.kind == "many_children"]
    assert finding.key_id == root.key_id
    assert finding.details["descendants"] == 11
    assert "many_children" not in kinds(
        review(factory, policy=ReviewPolicy(max_descendants=11)), root.key_id
    )


def usage(counts: Mapping[str, Mapping[str, int]], since: float = NOW - 40 * DAY) -> UsageSource:
    return MappingUsageSource(counts, since=since)


def test_scopes_granted_but_unused_with_the_narrower_set(factory: KeyFactory) -> None:
    reader = healthy(factory, "agents:read", "agents:write", created_at=NOW - 60 * DAY)
    wild = healthy(factory, "agents:*", "tasks:read", created_at=NOW - 60 * DAY)
    exact = healthy(factory, "agents:read", created_at=NOW - 60 * DAY)
    young = healthy(factory, "agents:read", "agents:write", created_at=NOW - 5 * DAY)
    idle = healthy(factory, "agents:read", "agents:write", created_at=NOW - 5 * DAY)
    source = usage(
        {
            reader.key_id: {"agents:read": 120},
            wild.key_id: {"agents:read": 3, "tasks:read": 1, "tasks:write": 0},
            exact.key_id: {"agents:read": 9},
            young.key_id: {"agents:read": 1},
        }
    )
    report = review(factory, usage=source)
    by_key = {f.key_id: f for f in report.findings if f.kind == "unused_scopes"}
    assert set(by_key) == {reader.key_id, wild.key_id, young.key_id}
    # A key younger than the window is judged over its whole life, and says so; one that
    # made no request at all is "unused", not over-scoped.
    assert by_key[young.key_id].details["unused"] == ["agents:write"]
    assert by_key[young.key_id].details["window_days"] == 5.0
    assert "since it was created (5 days ago)" in by_key[young.key_id].message
    assert "in the last 30 days" in by_key[reader.key_id].message
    assert idle.key_id not in by_key
    narrow = by_key[reader.key_id]
    assert narrow.details["unused"] == ["agents:write"]
    assert narrow.details["suggested"] == ["agents:read"]
    assert "agents:write" in narrow.message
    assert "narrow it to agents:read" in narrow.message
    assert by_key[wild.key_id].details["broader"] == ["agents:*"]
    assert by_key[wild.key_id].details["suggested"] == ["agents:read", "tasks:read"]
    assert report.usage_checked


def test_no_suggestion_without_data_for_the_whole_window(factory: KeyFactory) -> None:
    key = healthy(factory, "agents:read", "agents:write", created_at=NOW - 60 * DAY)
    late = usage({key.key_id: {"agents:read": 5}}, since=NOW - 3 * DAY)
    assert "unused_scopes" not in kinds(review(factory, usage=late), key.key_id)
    silent = usage({})
    assert "unused_scopes" not in kinds(review(factory, usage=silent), key.key_id)
    assert not review(factory).usage_checked


def test_ignore_kinds(factory: KeyFactory) -> None:
    key = healthy(factory, "admin", expires_at=None)
    assert kinds(review(factory, ignore={"no_expiry"}), key.key_id) == {"admin_scope"}


def test_usage_file_format() -> None:
    source = load_usage('{"since": "2030-01-01T00:00:00Z", "keys": {"abc": {"agents:read": 3}}}')
    assert source.scope_usage("abc", source.since) == {"agents:read": 3}
    assert source.scope_usage("other", source.since) == {}
    assert source.scope_usage("abc", source.since - 1) is None
    for bad in (
        '{"keys": {}}',
        '{"since": "2030-01-01", "keys": {}}',
        "[]",
        "nope",
        '{"since": 0, "keys": {"a": {"agents:read": -1}}}',
        '{"since": 0, "keys": {"a": {"Not A Scope": 1}}}',
    ):
        with pytest.raises(ConfigurationError):
            load_usage(bad)


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: Path) -> Runner:
    runner = Runner(capsys, monkeypatch)
    init(runner)
    return runner


def populate(db: Path) -> dict[str, str]:
    """Keys made 100 days ago (so past the rotation policy), through the real manager."""
    import time

    then = time.time() - 100 * DAY
    with KeyManager(
        f"sqlite:///{db}", hasher=Hasher(pepper_from_env=False), clock=lambda: then
    ) as keys:
        return {
            "admin": keys.create("ops", ["admin"], expires_in=200 * DAY).key_id,
            "writer": keys.create("reporting-bot", ["agents:read", "agents:write"]).key_id,
        }


def test_cli_json_names_the_over_scoped_key(run: Runner, db: Path, tmp_path: Path) -> None:
    ids = populate(db)
    usage_file = tmp_path / "usage.json"
    usage_file.write_text(
        json.dumps({"since": "2000-01-01T00:00:00Z", "keys": {ids["writer"]: {"agents:read": 42}}})
    )
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = run("review", "--json", "--usage", str(usage_file))
    assert r.code == 1, r.err
    data = json.loads(r.out)
    found = {(f["key_id"], f["kind"]) for f in data["findings"]}
    assert (ids["admin"], "admin_scope") in found
    assert (ids["admin"], "rotation_due") in found
    assert (ids["writer"], "no_expiry") in found
    assert (ids["writer"], "unused_scopes") in found
    (scopes,) = [f for f in data["findings"] if f["kind"] == "unused_scopes"]
    assert scopes["details"]["unused"] == ["agents:write"]
    assert scopes["details"]["suggested"] == ["agents:read"]
    assert data["failed"] is True
    assert data["keys_reviewed"] == 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read-only


def test_cli_json_names_a_new_key_holding_write_that_only_ever_read(
    run: Runner, db: Path, tmp_path: Path
) -> None:
    # The issue's check as an operator runs it: a key created just now, used only to read.
    with KeyManager(f"sqlite:///{db}", hasher=Hasher(pepper_from_env=False)) as keys:
        key_id = keys.create("fresh-bot", ["agents:read", "agents:write"]).key_id
    usage_file = tmp_path / "usage.json"
    usage_file.write_text(
        json.dumps({"since": "2000-01-01T00:00:00Z", "keys": {key_id: {"agents:read": 3}}})
    )
    r = run("review", "--json", "--usage", str(usage_file))
    data = json.loads(r.out)
    (scopes,) = [f for f in data["findings"] if f["kind"] == "unused_scopes"]
    assert (scopes["key_id"], scopes["details"]["unused"]) == (key_id, ["agents:write"])
    assert scopes["details"]["suggested"] == ["agents:read"]
    assert "since it was created" in scopes["message"]


def test_cli_fail_on_and_text(run: Runner, db: Path) -> None:
    populate(db)
    r = run("review")
    assert r.code == 1
    assert "admin_scope" in r.out
    assert "high" in r.out
    assert "scope usage not checked" in r.err
    assert run("review", "--fail-on", "never").code == 0
    assert run("review", "--fail-on", "99").code == 0
    assert run("review", "--fail-on", "high").code == 1
    assert run("review", "--fail-on", "high", "--ignore", "admin_scope").code == 0
    assert run("review", "--fail-on", "sometimes").code == 2
    assert run("review", "--rotate-after", "0").code == 2
    r = run("review", "--usage", "/nonexistent/usage.json")
    assert r.code == 2
    assert "cannot read --usage" in r.err


def test_cli_clean_store_exits_0(run: Runner, db: Path) -> None:
    r = run("review", "--json")
    assert r.code == 0
    assert json.loads(r.out)["findings"] == []
