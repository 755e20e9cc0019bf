"""Scanning files and directory trees for keyguard keys (``keyguard scan PATH…``).

What is read, and why:

* **Ignored files are scanned.** ``.gitignore`` is not consulted: a ``.env`` that git ignores
  is exactly where keys leak from (into backups, images, archives, other tools), so a scan of
  a directory reads every regular file in it.
* **Not scanned, by default:** version-control directories (``.git``, ``.hg``, ``.svn``; git
  history has its own, complete scan: :mod:`keyguard.abuse.history`), virtual environments
  (any directory holding ``pyvenv.cfg`` or ``conda-meta``), ``node_modules`` and tool caches
  (:data:`DEFAULT_EXCLUDED_DIRS`). ``default_excludes=False`` scans them too; ``exclude``
  adds glob patterns. A path given explicitly is always scanned.
* **Binary files** (a NUL byte in the first 8000 bytes, git's rule) are skipped unless
  ``binary=True``; keys are ASCII, so scanning them is possible and finds keys baked into
  compiled files or databases, at the cost of reading them.
* **Huge files** (over ``max_size`` bytes, default 100 MiB; ``None`` for no limit) are skipped
  and reported. Below that, a file is read in 1 MiB blocks, so memory does not grow with it.
* Symbolic links met while walking are not followed (no loops, nothing outside the tree);
  FIFOs, sockets and devices are never opened. Unreadable files are reported, not fatal.

Every skip is listed in :attr:`ScanReport.skipped <keyguard.abuse.findings.ScanReport>`
(except the default exclusions), so nothing disappears silently. The work is linear in the
bytes read: one pass of one compiled pattern (:mod:`keyguard.abuse.matching`).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Collection, Iterable, Iterator
from typing import Final

from keyguard.abuse.findings import FILE, Finding, ScanReport, Skipped
from keyguard.abuse.matching import SNIFF, is_binary, iter_keys
from keyguard.core.errors import ConfigurationError

__all__ = ["DEFAULT_EXCLUDED_DIRS", "DEFAULT_MAX_SIZE", "FileScanner"]

DEFAULT_MAX_SIZE: Final = 100 * 1024 * 1024
#: Directory names never descended into unless ``default_excludes=False``.
DEFAULT_EXCLUDED_DIRS: Final = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        ".tox",
        ".nox",
    }
)
#: A directory holding one of these is a virtual environment (venv, virtualenv, conda).
_VENV_MARKERS: Final = ("pyvenv.cfg", "conda-meta")


def _display(path: str) -> str:
    return path[2:] if path.startswith("./") else path


class FileScanner:
    """Finds keys in files and directory trees (see the module docstring for what is read).

    ``prefixes`` restricts the key prefixes reported (default: any ``[a-z][a-z0-9]{0,15}``).
    """

    def __init__(
        self,
        *,
        prefixes: Collection[str] | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        binary: bool = False,
        exclude: Iterable[str] = (),
        default_excludes: bool = True,
    ) -> None:
        if max_size is not None and max_size < 1:
            raise ConfigurationError("max_size must be positive (or None for no limit)")
        self.prefixes = None if prefixes is None else frozenset(prefixes)
        self.max_size = max_size
        self.binary = binary
        self.exclude = tuple(exclude)
        self.default_excludes = default_excludes

    # -- walking -------------------------------------------------------------------------------
    def _excluded(self, rel: str, name: str) -> bool:
        return any(
            fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern)
            for pattern in self.exclude
        )

    def _skip_dir(self, directory: str, rel: str, name: str) -> bool:
        if self._excluded(rel, name):
            return True
        if not self.default_excludes:
            return False
        if name in DEFAULT_EXCLUDED_DIRS:
            return True
        return any(os.path.exists(os.path.join(directory, m)) for m in _VENV_MARKERS)

    def walk(self, root: str) -> Iterator[str]:
        """The regular files under ``root`` (or ``root`` itself), in a stable order."""
        if not os.path.isdir(root):
            yield root
            return
        for directory, dirs, files in os.walk(root, followlinks=False):
            kept = []
            for name in sorted(dirs):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if os.path.islink(path) or self._skip_dir(path, rel, name):
                    continue
                kept.append(name)
            dirs[:] = kept
            for name in sorted(files):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if not self._excluded(rel, name):
                    yield path

    # -- scanning ------------------------------------------------------------------------------
    def scan(self, paths: Iterable[str]) -> ScanReport:
        """Scan each path (a file, or a directory walked recursively)."""
        report = ScanReport()
        for root in paths:
            explicit = not os.path.isdir(root)
            for path in self.walk(root):
                self._scan_file(path, report, explicit=explicit)
        return report

    def _scan_file(self, path: str, report: ScanReport, *, explicit: bool) -> None:
        shown = _display(path)
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not explicit:
                    return  # links met while walking are not followed
                st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                report.skipped.append(Skipped(shown, "not a regular file"))
                return
            if self.max_size is not None and st.st_size > self.max_size:
                report.skipped.append(
                    Skipped(shown, f"too large ({st.st_size} bytes > {self.max_size})")
                )
                return
            with open(path, "rb") as fh:
                head = fh.read(SNIFF)
                if not self.binary and is_binary(head):
                    report.skipped.append(Skipped(shown, "binary"))
                    return
                for m in iter_keys(fh.read, prefixes=self.prefixes, first=head):
                    report.findings.append(Finding(shown, m.line, m.column, m.key, source=FILE))
                report.bytes += fh.tell()
        except OSError as exc:
            report.skipped.append(Skipped(shown, f"unreadable: {exc.strerror or exc}"))
            return
        report.files += 1
