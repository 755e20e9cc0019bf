"""What a scan reports: a found key (:class:`Finding`), something not scanned (:class:`Skipped`),
and the whole result (:class:`ScanReport`).

A finding knows the key it found (``--revoke`` must check the secret against the store before it
acts), but never shows it: ``repr``, ``str``, :meth:`Finding.to_dict` and every location string
carry the key id and the masked secret (:func:`~keyguard.abuse.matching.mask`) only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from keyguard.abuse.matching import mask
from keyguard.core.keys import ParsedKey

__all__ = ["COMMIT_MESSAGE", "FILE", "HISTORY", "Finding", "ScanReport", "Skipped"]

#: Kinds of place a key is found in.
FILE: Final = "file"
HISTORY: Final = "history"
COMMIT_MESSAGE: Final = "commit-message"


@dataclass(frozen=True, slots=True)
class Finding:
    """One occurrence of a key.

    ``source`` is :data:`FILE` (``path`` on disk), :data:`HISTORY` (``path`` inside ``commit``,
    the oldest commit that added this key at this path) or :data:`COMMIT_MESSAGE` (the message
    of ``commit``; ``line`` counts from its first line).
    """

    path: str | None
    line: int
    column: int
    key: ParsedKey = field(repr=False)
    commit: str | None = None
    source: str = FILE

    @property
    def prefix(self) -> str:
        return self.key.prefix

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def masked(self) -> str:
        return mask(self.key)

    @property
    def location(self) -> str:
        """``path:line``, ``commit:path:line`` or ``commit:(commit message):line``."""
        if self.source == COMMIT_MESSAGE:
            return f"{self.commit}:(commit message):{self.line}"
        if self.commit is not None:
            return f"{self.commit}:{self.path}:{self.line}"
        return f"{self.path}:{self.line}"

    def short_location(self) -> str:
        """:attr:`location` with the commit abbreviated to 12 characters (for people)."""
        if self.commit is None:
            return self.location
        return self.commit[:12] + self.location[len(self.commit) :]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the secret."""
        return {
            "source": self.source,
            "location": self.location,
            "path": self.path,
            "commit": self.commit,
            "line": self.line,
            "column": self.column,
            "prefix": self.prefix,
            "key_id": self.key_id,
            "masked": self.masked,
        }

    def __repr__(self) -> str:
        return f"Finding({self.location!r}, key_id={self.key_id!r}, masked={self.masked!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something that was not scanned, and why (``binary``, ``too large``, ``unreadable``...)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(slots=True)
class ScanReport:
    """Everything one scan found and left out, and how much it read."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0
    blobs: int = 0
    commits: int = 0
    bytes: int = 0

    def merge(self, other: ScanReport) -> None:
        self.findings.extend(other.findings)
        self.skipped.extend(other.skipped)
        self.files += other.files
        self.blobs += other.blobs
        self.commits += other.commits
        self.bytes += other.bytes

    def counts(self) -> dict[str, int]:
        return {
            "files": self.files,
            "blobs": self.blobs,
            "commits": self.commits,
            "bytes": self.bytes,
        }
