"""``keyguard scan`` over files and trees: planted keys found, look-alikes ignored, exit statuses,
what is skipped, and the secret never printed."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from keyguard.abuse.scanner import FileScanner
from tests.abuse.support import bad_checksum, key, lookalike
from tests.management.cli_support import Runner, isolate


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Runner:
    isolate(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    return Runner(capsys, monkeypatch)


def secret_of(plaintext: str) -> str:
    return plaintext.split("_", 2)[2]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    """A project with keys planted in several places, and look-alikes everywhere else."""
    root = tmp_path / "project"
    rng = random.Random(7)
    keys = {"env": key(), "config": key("acme", secret_length=48), "deep": key()}
    (root / "src" / "app").mkdir(parents=True)
    (root / ".env").write_text(f"DEBUG=1\nKEYGUARD_API_KEY={keys['env']}\n")
    (root / ".gitignore").write_text(".env\n")  # ignored by git, scanned all the same
    (root / "config.yaml").write_text(f"api:\n  key: '{keys['config']}'\n")
    (root / "src" / "app" / "client.py").write_text(
        "HEADERS = {\n" + f'    "Authorization": "UserKey {keys["deep"]}",\n' + "}\n"
    )
    noise = "\n".join(lookalike(rng) for _ in range(200))
    (root / "src" / "fixtures.txt").write_text(noise + "\n" + bad_checksum(keys["env"]) + "\n")
    # Not scanned by default: a virtual environment, .git, node_modules, a binary file.
    venv = root / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "leaked.py").write_text(f"K = '{key()}'\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(f"# {key()}\n")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text(f"k='{key()}'\n")
    keys["binary"] = key()
    (root / "blob.bin").write_bytes(b"\0\x01\x02" + keys["binary"].encode() + b"\0")
    return keys


def test_finds_every_planted_key_and_nothing_else(tree: dict[str, str], tmp_path: Path) -> None:
    report = FileScanner().scan([str(tmp_path / "project")])
    where = {(Path(f.path or "").name, f.line, f.key.full) for f in report.findings}
    assert where == {
        (".env", 2, tree["env"]),
        ("config.yaml", 2, tree["config"]),
        ("client.py", 2, tree["deep"]),
    }
    assert [Path(s.path).name for s in report.skipped] == ["blob.bin"]
    assert report.skipped[0].reason == "binary"


def test_binary_and_default_excludes_can_be_included(tree: dict[str, str], tmp_path: Path) -> None:
    everything = FileScanner(binary=True, default_excludes=False).scan([str(tmp_path / "project")])
    paths = {
        Path(f.path or "").relative_to(tmp_path / "project").as_posix() for f in everything.findings
    }
    assert {"blob.bin", "venv/lib/leaked.py", ".git/config", "node_modules/pkg/index.js"} <= paths


def test_exclude_globs(tree: dict[str, str], tmp_path: Path) -> None:
    report = FileScanner(exclude=["*.yaml", "src/app"]).scan([str(tmp_path / "project")])
    assert {Path(f.path or "").name for f in report.findings} == {".env"}


def test_huge_files_are_skipped_and_reported(tmp_path: Path) -> None:
    big = tmp_path / "dump.sql"
    big.write_text("x" * 5000 + "\n" + key() + "\n")
    report = FileScanner(max_size=4096).scan([str(big)])
    assert report.findings == []
    assert report.skipped[0].reason.startswith("too large")
    assert len(FileScanner(max_size=None).scan([str(big)]).findings) == 1


def test_symlinks_and_fifos_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text(key() + "\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(outside)
    (root / "loop").symlink_to(root)
    os.mkfifo(root / "pipe")  # opening it would block for ever
    report = FileScanner().scan([str(root)])
    assert report.findings == []
    assert [s.reason for s in report.skipped] == ["not a regular file"]


def test_cli_exit_1_on_a_key_and_0_on_a_clean_tree(run: Runner, tmp_path: Path) -> None:
    k = key()
    dirty = tmp_path / "dirty"
    dirty.mkdir()
    (dirty / "settings.py").write_text(f"API_KEY = '{k}'\n")
    r = run("scan", str(dirty))
    assert r.code == 1, r.err
    assert f"settings.py:1: {k[:20]}**** (key id {k[3:15]})" in r.out
    assert secret_of(k)[4:] not in r.out + r.err
    assert "found 1 occurrence(s) of 1 key(s)" in r.err

    clean = tmp_path / "clean"
    clean.mkdir()
    rng = random.Random(3)
    (clean / "lookalikes.txt").write_text(
        "\n".join([lookalike(rng) for _ in range(500)] + [bad_checksum(k), k[:-3]])
    )
    r = run("scan", str(clean))
    assert r.code == 0, r.out + r.err
    assert r.out == ""
    assert "no keyguard keys found in 1 file(s)" in r.err


def test_cli_json(run: Runner, tmp_path: Path) -> None:
    k = key("acme")
    (tmp_path / "a.txt").write_text(f"\n\n   {k}\n")
    (tmp_path / "b.bin").write_bytes(b"\0" + key().encode())
    r = run("scan", "--json", "--prefix", "acme", "a.txt", "b.bin")
    assert r.code == 1
    data = json.loads(r.out)
    (finding,) = data["findings"]
    assert finding == {
        "source": "file",
        "location": "a.txt:3",
        "path": "a.txt",
        "commit": None,
        "line": 3,
        "column": 4,
        "prefix": "acme",
        "key_id": k.split("_")[1],
        "masked": k[: len("acme_") + 13 + 4] + "****",
    }
    assert data["skipped"] == [{"path": "b.bin", "reason": "binary"}]
    assert data["scanned"]["files"] == 1
    assert secret_of(k)[4:] not in r.out


def test_cli_usage_errors_exit_2(run: Runner, tmp_path: Path) -> None:
    assert run("scan", str(tmp_path / "missing")).code == 2
    assert run("scan", "--prefix", "Bad_Prefix", ".").code == 2
    assert run("scan", "--max-size", "lots", ".").code == 2
    r = run("scan", "--git", str(tmp_path))
    assert r.code == 2
    assert "not inside a git repository" in r.err


def test_cli_prefix_restricts(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "f").write_text(key("other") + "\n")
    assert run("scan", "--prefix", "kg", "f").code == 0
    assert run("scan", "f").code == 1
