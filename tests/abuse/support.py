"""Helpers for the abuse tests: keys, look-alikes and throwaway git repositories."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from keyguard.core.keys import BASE62, KeyFormat


def key(prefix: str = "kg", secret_length: int = 32) -> str:
    return KeyFormat(prefix, secret_length=secret_length).generate().plaintext


def bad_checksum(plaintext: str) -> str:
    """The same key with its last character changed: the checksum no longer matches."""
    last = plaintext[-1]
    return plaintext[:-1] + BASE62[(BASE62.index(last) + 1) % 62]


def forged(plaintext: str, prefix: str = "kg") -> str:
    """A key with the same (public) id, another secret and a valid checksum: what anyone who
    knows an id can compute."""
    key_id = plaintext.split("_")[1]
    return KeyFormat(prefix).generate(key_id).plaintext


def lookalike(rng: random.Random, prefix: str = "kg") -> str:
    """A random string of exactly a key's shape (it fails the checksum but once in ~4e9)."""
    pick = "".join
    return (
        f"{prefix}_{pick(rng.choice(BASE62) for _ in range(12))}_"
        f"{pick(rng.choice(BASE62) for _ in range(38))}"
    )


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Tester",
        GIT_AUTHOR_EMAIL="tester@example.com",
        GIT_COMMITTER_NAME="Tester",
        GIT_COMMITTER_EMAIL="tester@example.com",
    )
    return env


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env=git_env(),
        check=True,
    )
    return out.stdout.strip()


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def commit_file(repo: Path, name: str, text: str, message: str = "change") -> str:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")
