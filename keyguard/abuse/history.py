"""Scanning a git repository's whole history for keyguard keys (``keyguard scan --git``).

A key deleted in a later commit is still in the repository, and in every clone of it. The scan
covers every commit reachable from any ref (``--all``: branches, tags, remotes, the stash),
with three git processes however long the history:

1. ``git log --all --reverse -m --raw -z`` lists, oldest first, every file version each commit
   added (merges diffed against each parent, so content that appears only in a merge is
   seen): the first commit and path of each blob;
2. ``git cat-file --batch-check`` gives each blob's size (huge ones are skipped, and reported);
3. ``git cat-file --batch`` streams each blob once, and each commit object (for keys pasted
   into commit messages), through the same single-pass matcher as files.

Each distinct blob is read once, however many commits contain it. A key is reported once per
path, at the oldest commit that added it there (``commit:path:line``), and once per commit
message. Binary blobs follow the file scanner's rule. Not covered: objects reachable only from
the reflog (history rewritten away but not yet garbage-collected) and refs pointing straight
at a blob or tree.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import IO, Final

from keyguard.abuse.findings import COMMIT_MESSAGE, HISTORY, Finding, ScanReport, Skipped
from keyguard.abuse.matching import SNIFF, is_binary, iter_keys
from keyguard.abuse.scanner import DEFAULT_MAX_SIZE
from keyguard.core.errors import KeyguardError

__all__ = ["GitError", "HistoryScanner", "git_dir"]

_NULL_SHA: Final = "0" * 40
#: File modes whose blob is content (regular, executable, symbolic link); gitlinks are skipped.
_BLOB_MODES: Final = frozenset({"100644", "100755", "120000"})
_READ: Final = 1 << 16


class GitError(KeyguardError):
    """git is missing, the path is not in a repository, or a git command failed."""


def _git(args: list[str], cwd: str) -> list[str]:
    return ["git", "-C", cwd, "-c", "core.quotepath=off", *args]


def git_dir(path: str) -> str:
    """The absolute git directory of the repository holding ``path`` (a work tree or a bare
    repository); :class:`GitError` if there is none."""
    where = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        out = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            _git(["rev-parse", "--absolute-git-dir"], where),
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (--git needs it)") from None
    if out.returncode != 0:
        raise GitError(f"{path!r} is not inside a git repository (--git needs one)")
    return out.stdout.strip()


def _records(stream: IO[bytes]) -> Iterator[bytes]:
    """NUL-terminated records from a stream, read in blocks."""
    pending = b""
    while True:
        data = stream.read(_READ)
        if not data:
            if pending:
                yield pending
            return
        pending += data
        *complete, pending = pending.split(b"\0")
        yield from complete


def _feed(stream: IO[bytes], lines: Iterable[str]) -> threading.Thread:
    """Write object names to a git process from a thread (git answers while we write)."""

    def run() -> None:
        try:
            for line in lines:
                stream.write(line.encode("ascii") + b"\n")
        except BrokenPipeError:  # git died; its exit status says why
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                stream.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class _Exact:
    """``read(n)`` over the next ``size`` bytes of a stream, then ``b""``."""

    __slots__ = ("left", "stream")

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(min(n, self.left))
        if not data:
            raise GitError("git cat-file ended early")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.read(_READ):
            pass


class HistoryScanner:
    """Finds keys in every commit of one repository (see the module docstring)."""

    def __init__(
        self,
        repository: str,
        *,
        prefixes: Collection[str] | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        binary: bool = False,
    ) -> None:
        self.repository = repository
        self.git_dir = git_dir(repository)
        self.prefixes = None if prefixes is None else frozenset(prefixes)
        self.max_size = max_size
        self.binary = binary

    @contextlib.contextmanager
    def _git(self, args: list[str], what: str, feed: Iterable[str] = ()) -> Iterator[IO[bytes]]:
        """Run git, write ``feed`` (object names) to it from a thread, yield its stdout.

        On leaving, a git that failed is reported as :class:`GitError`; one still running
        (we stopped reading early) is killed. stderr goes to a file: a pipe nobody reads
        could fill up and stall git.
        """
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(  # noqa: S603 - fixed git arguments, no shell
                ["git", "--git-dir", self.git_dir, "-c", "core.quotepath=off", *args],  # noqa: S607
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
            assert proc.stdin is not None
            assert proc.stdout is not None
            writer = _feed(proc.stdin, feed)
            failed = True
            try:
                yield proc.stdout
                failed = False
            finally:
                if failed:
                    proc.kill()
                proc.stdout.close()
                writer.join()
                status = proc.wait()
            errors.seek(0)
            err = errors.read(4096).decode("utf-8", "replace").strip()
        if status != 0:
            first = err.splitlines()[0] if err else f"exit status {status}"
            raise GitError(f"git {what} failed: {first}")

    def _introductions(self) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """blob → (oldest commit adding it, its path there); and every commit, oldest first."""
        args = [
            "log",
            "--all",
            "--reverse",
            "-m",
            "--raw",
            "--no-abbrev",
            "--no-renames",
            "--root",
            "--no-color",
            "-z",
            "--format=%x01%H",
        ]
        blobs: dict[str, tuple[str, str]] = {}
        commits: dict[str, None] = {}
        commit = ""
        with self._git(args, "log") as out:
            records = _records(out)
            for record in records:
                record = record.lstrip(b"\n")
                if record.startswith(b"\x01"):
                    commit = record[1:].decode("ascii")
                    commits[commit] = None
                elif record.startswith(b":"):
                    fields = record[1:].decode("ascii").split(" ")
                    mode, sha, status = fields[1], fields[3], fields[4]
                    path = next(records, b"").decode("utf-8", "replace")
                    if status[:1] in ("R", "C"):  # two paths (not with --no-renames)
                        path = next(records, b"").decode("utf-8", "replace")
                    if mode in _BLOB_MODES and sha != _NULL_SHA and sha not in blobs:
                        blobs[sha] = (commit, path)
        return blobs, list(commits)

    def _sizes(self, blobs: Iterable[str]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        check = "--batch-check=%(objectname) %(objectsize)"
        with self._git(["cat-file", check], "cat-file --batch-check", blobs) as out:
            for raw in out:
                parts = raw.split()
                if len(parts) == 2 and parts[1].isdigit():  # "<name> missing" if shallow
                    sizes[parts[0].decode("ascii")] = int(parts[1])
        return sizes

    def _contents(self, names: list[str], each: Callable[[str, str, int, _Exact], None]) -> None:
        """Stream each object through ``each(name, type, size, reader)``."""
        with self._git(["cat-file", "--batch"], "cat-file --batch", names) as out:
            for _ in names:
                header = out.readline().split()
                if len(header) != 3:
                    raise GitError("git cat-file --batch: unexpected output")
                name, kind, size = header[0].decode(), header[1].decode(), int(header[2])
                reader = _Exact(out, size)
                each(name, kind, size, reader)
                reader.drain()
                out.read(1)  # the newline after each object

    def scan(self) -> ScanReport:
        report = ScanReport()
        blobs, commits = self._introductions()
        sizes = self._sizes(blobs)
        wanted: list[str] = []
        for sha, (commit, path) in blobs.items():
            size = sizes.get(sha)
            if size is None:
                report.skipped.append(
                    Skipped(f"{commit}:{path}", "object missing (shallow clone?)")
                )
            elif self.max_size is not None and size > self.max_size:
                report.skipped.append(
                    Skipped(f"{commit}:{path}", f"too large ({size} bytes > {self.max_size})")
                )
            else:
                wanted.append(sha)
        seen: set[tuple[str, str]] = set()

        def each(name: str, kind: str, size: int, reader: _Exact) -> None:
            head = reader.read(SNIFF)
            report.bytes += size
            if kind == "commit":
                report.commits += 1
                self._message(name, head, reader, report)
                return
            commit, path = blobs[name]
            if not self.binary and is_binary(head):
                report.skipped.append(Skipped(f"{commit}:{path}", "binary"))
                return
            report.blobs += 1
            for m in iter_keys(reader.read, prefixes=self.prefixes, first=head):
                if (m.key.full, path) in seen:
                    continue
                seen.add((m.key.full, path))
                report.findings.append(
                    Finding(path, m.line, m.column, m.key, commit=commit, source=HISTORY)
                )

        self._contents(wanted + commits, each)
        return report

    def _message(self, commit: str, head: bytes, reader: _Exact, report: ScanReport) -> None:
        # A commit object is headers, a blank line, then the message: count message lines.
        header_lines: int | None = None
        for m in iter_keys(reader.read, prefixes=self.prefixes, first=head):
            if header_lines is None:
                # The headers fit in the first block the matcher saw (they are short).
                end = head.find(b"\n\n")
                header_lines = head.count(b"\n", 0, end + 2) if end >= 0 else 0
            # Line 0: in the headers (an author name?) rather than the message.
            line = max(m.line - header_lines, 0)
            report.findings.append(
                Finding(None, line, m.column, m.key, commit=commit, source=COMMIT_MESSAGE)
            )
