"""``keyguard scan --git``: keys in old commits, other branches and commit messages, each
reported once as commit:path:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyguard.abuse.findings import COMMIT_MESSAGE, HISTORY
from keyguard.abuse.history import GitError, HistoryScanner
from tests.abuse.support import bad_checksum, commit_file, git, key, new_repo
from tests.management.cli_support import Runner, isolate


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Runner:
    isolate(tmp_path, monkeypatch)
    return Runner(capsys, monkeypatch)


def test_a_key_deleted_in_a_later_commit_is_found_in_the_old_one(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    k = key()
    first = commit_file(repo, "config/.env", f"# settings\nAPI_KEY={k}\nlook={bad_checksum(k)}\n")
    git(repo, "rm", "-q", "config/.env")
    git(repo, "commit", "-q", "-m", "remove the key")
    commit_file(repo, "README", "nothing to see\n")
    assert not (repo / "config" / ".env").exists()

    report = HistoryScanner(str(repo)).scan()
    (finding,) = report.findings
    assert finding.source == HISTORY
    assert (finding.commit, finding.path, finding.line, finding.column) == (
        first,
        "config/.env",
        2,
        9,
    )
    assert finding.key.full == k
    assert finding.location == f"{first}:config/.env:2"
    assert report.commits == 3


def test_every_ref_and_commit_messages(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    commit_file(repo, "a.txt", "hello\n")
    on_branch, in_message, binary = key(), key(), key()
    git(repo, "checkout", "-q", "-b", "experiment")
    commit_file(repo, "src/x.py", f"K = '{on_branch}'\n", message="try it")
    (repo / "blob.bin").write_bytes(b"\0" + binary.encode())
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-q", "-m", f"oops\n\nused {in_message} to test")
    git(repo, "checkout", "-q", "main")

    report = HistoryScanner(str(repo)).scan()
    got = {(f.source, f.path, f.line, f.key.full) for f in report.findings}
    assert got == {
        (HISTORY, "src/x.py", 1, on_branch),
        (COMMIT_MESSAGE, None, 3, in_message),
    }
    assert [s.reason for s in report.skipped] == ["binary"]
    assert len(HistoryScanner(str(repo), binary=True).scan().findings) == 3


def test_one_finding_per_key_and_path_at_the_oldest_commit(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    k = key()
    first = commit_file(repo, "settings.ini", f"key={k}\n")
    for i in range(3):
        commit_file(repo, "settings.ini", f"key={k}\nrevision={i}\n")
    commit_file(repo, "copy.ini", f"\n{k}\n")
    findings = HistoryScanner(str(repo)).scan().findings
    assert sorted((f.path, f.commit == first) for f in findings) == [
        ("copy.ini", False),
        ("settings.ini", True),
    ]


def test_merges_and_unusual_paths(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    commit_file(repo, "base.txt", "base\n")
    git(repo, "checkout", "-q", "-b", "side")
    commit_file(repo, "side.txt", "side\n")
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "main.txt", "main\n")
    git(repo, "merge", "-q", "--no-edit", "--no-commit", "side")
    k = key()
    (repo / "dir with spaces").mkdir()
    (repo / "dir with spaces" / "é.txt").write_text(k + "\n")  # only in the merge commit
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "merge")
    (finding,) = HistoryScanner(str(repo)).scan().findings
    assert finding.path == "dir with spaces/é.txt"
    assert finding.commit == git(repo, "rev-parse", "HEAD")


def test_empty_repository_and_not_a_repository(tmp_path: Path) -> None:
    report = HistoryScanner(str(new_repo(tmp_path / "empty"))).scan()
    assert (report.findings, report.commits) == ([], 0)
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="not inside a git repository"):
        HistoryScanner(str(tmp_path / "plain"))


def test_cli_git_history(run: Runner, tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    k = key()
    first = commit_file(repo, "app.env", f"KEY={k}\n")
    git(repo, "rm", "-q", "app.env")
    git(repo, "commit", "-q", "-m", "remove")
    assert run("scan", str(repo)).code == 0  # the working tree is clean
    r = run("scan", "--git", str(repo))
    assert r.code == 1, r.err
    assert f"{first[:12]}:app.env:1: {k[:20]}****" in r.out
    assert k[20:] not in r.out + r.err
    data = json.loads(run("scan", "--git", "--json", str(repo)).out)
    assert [(f["commit"], f["path"], f["line"]) for f in data["findings"]] == [
        (first, "app.env", 1)
    ]
