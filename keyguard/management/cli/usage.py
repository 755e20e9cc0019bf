"""``keyguard usage``: requests per day for one key, one owner, or every key that was used.

For each subject a table of the last ``--days`` UTC days (today included): requests per status
class (``2xx``, ``3xx``, ``4xx`` other than 429, ``429``, ``5xx``: disjoint, they add up to the
day's total), the total, and a bar drawn in the terminal — stacked by class with a different
block per class (``█`` 2xx, ``▓`` 3xx, ``▒`` 4xx, ``░`` 429, ``×`` 5xx), so it reads without
color, scaled to the terminal's width (``COLUMNS``), in ASCII when the terminal cannot show
the blocks. Then when the key was last used and from which client, and its most called route
templates. ``--json`` prints the same data for scripts. The counts are what the usage counters
have flushed to the store (see :meth:`~keyguard.management.KeyManager.usage`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.errors import KeyguardError
from keyguard.core.keys import is_key_id
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_manager
from keyguard.management.cli.errors import UsageError
from keyguard.management.cli.values import positive_int
from keyguard.observability.model import STATUS_CLASSES, UsageReport, escape
from keyguard.observability.reports import report_dict

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["MAX_DAYS", "bar", "register", "render", "report_dict"]

MAX_DAYS: Final = 366
#: The block drawn for each status class, and its ASCII stand-in.
BLOCKS: Final = {"2xx": "█", "3xx": "▓", "4xx": "▒", "429": "░", "5xx": "×"}
ASCII_BLOCKS: Final = {"2xx": "#", "3xx": "=", "4xx": "-", "429": ".", "5xx": "x"}
TOP_ROUTES: Final = 5


def bar(counts: dict[str, int], scale_max: int, width: int, blocks: dict[str, str]) -> str:
    """``counts`` (per status class) as a stacked bar of at most ``width`` cells, where
    ``scale_max`` requests fill the width. A day with requests gets at least one cell; each
    class gets its share of the cells by largest remainder."""
    total = sum(counts.values())
    if total <= 0 or scale_max <= 0 or width <= 0:
        return ""
    cells = max(1, round(total / scale_max * width))
    exact = {c: counts.get(c, 0) * cells / total for c in STATUS_CLASSES}
    given = {c: int(v) for c, v in exact.items()}
    left = cells - sum(given.values())
    for c in sorted(
        STATUS_CLASSES, key=lambda c: (-(exact[c] - given[c]), STATUS_CLASSES.index(c))
    ):
        if left <= 0:
            break
        if counts.get(c, 0):
            given[c] += 1
            left -= 1
    return "".join(blocks[c] * given[c] for c in STATUS_CLASSES)


def _blocks() -> dict[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "".join(BLOCKS.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return dict(ASCII_BLOCKS)
    return dict(BLOCKS)


def _title(report: UsageReport, name: str | None) -> str:
    if report.key_id is not None:
        subject = f"key {report.key_id}" + (f" ({escape(name, 60)})" if name else "")
    else:
        subject = f"owner {escape(report.owner or '', 60)}"
    days = len(report.days)
    return f"{subject} · last {days} day{'s' if days != 1 else ''} · {report.total} requests"


def render(report: UsageReport, *, name: str | None = None, width: int | None = None) -> list[str]:
    """The lines ``keyguard usage`` prints for one report."""
    blocks = _blocks()
    columns = width if width is not None else shutil.get_terminal_size((100, 24)).columns
    headers = ["DAY", *STATUS_CLASSES, "TOTAL"]
    rows = [
        [d.day.isoformat(), *(str(d.by_status.get(c, 0)) for c in STATUS_CLASSES), str(d.total)]
        for d in report.days
    ]
    sums = [sum(d.by_status.get(c, 0) for d in report.days) for c in STATUS_CLASSES]
    footer = ["TOTAL", *(str(n) for n in sums), str(report.total)]
    widths = [max(len(r[i]) for r in [headers, *rows, footer]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    table_width = len(line(headers))
    room = max(10, columns - table_width - 2)
    peak = max((d.total for d in report.days), default=0)
    lines = [_title(report, name), "", line(headers)]
    for day, row in zip(report.days, rows, strict=True):
        drawn = bar(dict(day.by_status), peak, room, blocks)
        lines.append((line(row) + "  " + drawn).rstrip())
    lines.append(line(footer))
    legend = "  ".join(f"{blocks[c]} {c}" for c in STATUS_CLASSES)
    lines.append(f"bars: {legend}  (longest = {peak} requests)")
    if report.last_used_at is not None:
        client = f" from {escape(report.last_client, 64)}" if report.last_client else ""
        lines.append(f"last used: {to_iso(report.last_used_at)}{client}")
    elif report.key_id is not None:
        lines.append("last used: never (in this window's counts)")
    routes: Counter[str] = Counter()
    for d in report.days:
        routes.update(dict(d.by_route))
    if routes:
        top = sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ROUTES]
        lines.append("top routes: " + ", ".join(f"{escape(r, 80)} {n}" for r, n in top))
    return lines


def _reader(manager: Any, method: str) -> Any:
    found = getattr(manager, method, None)
    if found is None:
        raise KeyguardError("this keyguard has no usage counters (KeyManager.usage is missing)")
    return found


def _usage(args: argparse.Namespace) -> int:
    if args.key_id is not None and args.owner is not None:
        raise UsageError("usage: give a key id or --owner, not both")
    if args.key_id is not None and not is_key_id(args.key_id):
        raise UsageError(
            f"usage: {escape(args.key_id, 40)!r} is not a key id (12 letters and digits)"
        )
    if not 1 <= args.days <= MAX_DAYS:
        raise UsageError(f"usage: --days must be from 1 to {MAX_DAYS}")
    reports: list[tuple[UsageReport, str | None]] = []
    with open_manager(args, write=False) as manager:
        if args.key_id is not None:
            record = manager.get(args.key_id)  # an unknown id is an error here
            reports.append((_reader(manager, "usage")(record.key_id, days=args.days), record.name))
        elif args.owner is not None:
            reports.append((_reader(manager, "owner_usage")(args.owner, days=args.days), None))
        else:
            read = _reader(manager, "usage")
            for record in manager.iter_all():
                found = read(record.key_id, days=args.days)
                if found.total:
                    reports.append((found, record.name))
            reports.sort(key=lambda rn: (-rn[0].total, rn[0].key_id or ""))
    if args.json:
        body = [report_dict(r, name=n) for r, n in reports]
        out.emit_json(body[0] if args.key_id or args.owner else {"keys": body, "days": args.days})
        return 0
    if not reports:
        out.note(f"no requests recorded in the last {args.days} days")
        return 0
    for i, (report, name) in enumerate(reports):
        if i:
            out.emit()
        for text in render(report, name=name):
            out.emit(text)
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keyguard usage``."""
    p = out.add_json(
        sub.add_parser(
            "usage",
            help="requests per day of a key, an owner, or every key used (table and chart)",
            description="Requests per UTC day by status class, with a bar chart; without a "
            "key id or --owner, every key with requests in the window.",
        )
    )
    p.add_argument("key_id", nargs="?", metavar="ID", help="the key's id (not the key)")
    p.add_argument("--owner", help="sum the keys of this owner")
    p.add_argument(
        "--days",
        type=positive_int,
        default=30,
        help=f"how many days, today included (default 30, at most {MAX_DAYS})",
    )
    p.set_defaults(handler=_usage)
