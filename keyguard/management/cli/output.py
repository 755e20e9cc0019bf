"""How the CLI prints: tables and ``label  value`` blocks for people, JSON for scripts.

:func:`print_created` is the only function that ever prints a key's plaintext (after
``keys create`` and ``keys rotate``), with a warning on stderr that it will not be shown again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.records import AuditEvent, KeyRecord
from keyguard.management.manager import CreatedKey

__all__ = [
    "AUDIT_HEADERS",
    "SHOWN_ONCE",
    "add_json",
    "audit_rows",
    "clip",
    "emit",
    "emit_json",
    "note",
    "now",
    "old_secret",
    "print_created",
    "print_record",
    "table",
    "when",
]

SHOWN_ONCE: Final = "Store this key now: it will not be shown again."
AUDIT_HEADERS: Final = ("TIME", "ACTION", "KEY ID", "ACTOR", "DETAILS")


def add_json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give a command the ``--json`` option every command has."""
    parser.add_argument(
        "--json", action="store_true", help="machine-readable JSON output (for scripts)"
    )
    return parser


def now() -> float:
    return datetime.now(UTC).timestamp()


def emit(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def emit_json(value: Any) -> None:
    emit(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def note(text: str) -> None:
    """A remark for the person at the terminal (stderr, so pipes carry only data)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        emit("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def when(ts: float | None) -> str:
    return to_iso(ts) or "-"


def old_secret(until: float | None, at: float) -> str:
    """What a rotated key's previous secret is worth now."""
    if until is None or until <= at:
        return "no longer valid"
    return f"valid until {when(until)}"


def _record_lines(record: KeyRecord, at: float) -> list[tuple[str, str]]:
    lines = [
        ("key id", record.key_id),
        ("name", record.name),
        ("status", record.status(at).value),
        ("scopes", ", ".join(sorted(record.scopes)) or "-"),
        ("owner", record.owner or "-"),
        ("created", when(record.created_at)),
        ("expires", when(record.expires_at) if record.expires_at is not None else "never"),
        ("last used", when(record.last_used_at) if record.last_used_at else "never"),
        ("rate limit", record.rate_limit or "default"),
    ]
    if record.created_by:
        lines.append(("created by", record.created_by))
    if record.rotated_at is not None:
        lines.append(("rotated", when(record.rotated_at)))
    if record.previous_expires_at is not None and record.previous_expires_at > at:
        lines.append(("old secret", old_secret(record.previous_expires_at, at)))
    if record.revoked_at is not None:
        lines.append(("revoked", when(record.revoked_at)))
        lines.append(("reason", record.revoked_reason or "-"))
    if record.metadata:
        meta = ", ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in sorted(record.metadata.items())
        )
        lines.append(("metadata", meta))
    return lines


def print_record(record: KeyRecord, at: float, extra: Sequence[tuple[str, str]] = ()) -> None:
    """A record as aligned ``label  value`` lines; ``extra`` lines replace same-label ones."""
    labels = {label for label, _ in extra}
    lines = [line for line in _record_lines(record, at) if line[0] not in labels]
    lines.extend(extra)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        emit(f"{label.ljust(width)}  {value}")


def audit_rows(events: Iterable[AuditEvent]) -> list[list[str]]:
    return [
        [
            when(e.at),
            e.action,
            e.key_id,
            e.actor,
            json.dumps(dict(e.details), sort_keys=True, separators=(",", ":"), default=str),
        ]
        for e in events
    ]


def print_created(
    args: argparse.Namespace,
    created: CreatedKey,
    at: float,
    *,
    json_extra: dict[str, Any] | None = None,
    text_extra: Sequence[tuple[str, str]] = (),
) -> None:
    """The only place a plaintext key is ever printed."""
    note(SHOWN_ONCE)
    if args.json:
        emit_json(
            {
                "key": created.plaintext,
                "record": created.record.public_dict(at),
                **(json_extra or {}),
            }
        )
    elif getattr(args, "quiet", False):
        emit(created.plaintext)
    else:
        print_record(created.record, at, text_extra)
        emit()
        emit(f"api key  {created.plaintext}")
