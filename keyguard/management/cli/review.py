"""``keyguard review``: the least-privilege and hygiene report (:mod:`keyguard.abuse.review`).

Read-only: the store is opened as every read-only command opens it. Exit status 1 when the
findings pass the ``--fail-on`` threshold — a number (fail when there are more findings than
that; the default 0 fails on any), a severity (fail when any finding is at least that severe)
or ``never`` — so a CI job can run it on a schedule; 0 otherwise; 2 for usage errors.
``--usage FILE`` feeds scope usage counted elsewhere (see :mod:`keyguard.abuse.usage`), which
adds the ``unused_scopes`` finding and its narrower suggestion; without it, the usage counted in
the key store itself (:mod:`keyguard.observability.usage`) is used when there is any.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyguard.abuse.review import DAY, Review, ReviewPolicy, ReviewReport, Severity
from keyguard.abuse.usage import MappingUsageSource, UsageSource, load_usage
from keyguard.core.errors import ConfigurationError, KeyguardError
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_manager
from keyguard.management.cli.errors import UsageError
from keyguard.management.cli.values import parse_duration

if TYPE_CHECKING:
    from keyguard.core.store import KeyStore
    from keyguard.management.cli.parser import Subparsers

__all__ = ["FailOn", "parse_fail_on", "register"]

_KINDS = (
    "admin_scope",
    "rotation_due",
    "no_expiry",
    "unused",
    "many_children",
    "unused_scopes",
    "expiring_soon",
)


@dataclass(frozen=True)
class FailOn:
    """When ``keyguard review`` exits 1: more than ``count`` findings at least ``severity``
    severe; ``count=None`` never."""

    count: int | None
    severity: Severity = Severity.LOW

    def failed(self, report: ReviewReport) -> bool:
        return self.count is not None and report.count(self.severity) > self.count

    def describe(self) -> str:
        if self.count is None:
            return "never"
        if self.severity is not Severity.LOW:
            return f"any {self.severity} finding"
        return f"more than {self.count} finding(s)"


def parse_fail_on(text: str) -> FailOn:
    value = text.strip().lower()
    if value == "never":
        return FailOn(None)
    if value.isdigit():
        return FailOn(int(value))
    try:
        return FailOn(0, Severity.parse(value))
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f"invalid --fail-on {text!r}: a number of findings (0 fails on any), a severity "
            "(low, medium, high) or never"
        ) from None


def _positive(seconds: float, option: str) -> float:
    if seconds <= 0:
        raise UsageError(f"review: {option} must be positive")
    return seconds


def _usage(path: str | None) -> MappingUsageSource | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"review: cannot read --usage {path!r}: {exc.strerror}") from None
    try:
        return load_usage(text)
    except ConfigurationError as exc:
        raise UsageError(f"review: --usage {path!r}: {exc}") from None


def _store_usage(store: KeyStore) -> UsageSource | None:
    """The store's own usage counts, when usage counting has written to it (``usage=True``
    on the adapters; see :mod:`keyguard.observability.sources`)."""
    if not store.keeps_usage:
        return None
    from keyguard.observability.sources import StoreScopeUsage

    source = StoreScopeUsage(store)
    try:
        return source if source.since is not None else None
    except KeyguardError:
        return None


def _review(args: argparse.Namespace) -> int:
    if args.max_descendants < 0:
        raise UsageError("review: --max-descendants must be >= 0")
    policy = ReviewPolicy(
        rotate_after=_positive(args.rotate_after, "--rotate-after"),
        expiring_within=_positive(args.expiring_within, "--expiring-within"),
        unused_for=_positive(args.unused_for, "--unused-for"),
        max_descendants=args.max_descendants,
        usage_window=_positive(args.usage_window, "--usage-window"),
    )
    usage: UsageSource | None = _usage(args.usage)
    with open_manager(args, write=False) as manager:
        store = getattr(manager, "store", None)  # a remote manager has none: no usage there
        if usage is None and store is not None:
            usage = _store_usage(store)
        review = Review(
            policy,
            usage=usage,
            ignore=args.ignore or (),
            privileged=manager.catalog.privileged,
        )
        report = review.run(manager.iter_all(owner=args.owner))
    failed = args.fail_on.failed(report)
    if args.json:
        data = report.to_dict()
        data["failed"] = failed
        data["fail_on"] = args.fail_on.describe()
        out.emit_json(data)
    else:
        _print(report)
        summary = ", ".join(f"{n} {s}" for s, n in reversed(report.by_severity().items()) if n)
        keys = len({f.key_id for f in report.findings})
        verdict = f"; failing ({args.fail_on.describe()})" if failed else ""
        out.note(
            f"{len(report.findings)} finding(s) in {keys} of {report.keys_reviewed} active "
            f"key(s)" + (f": {summary}" if summary else "") + verdict
        )
        if usage is None:
            out.note("scope usage not checked (no --usage source, no usage counted in the store)")
    return 1 if failed else 0


def _print(report: ReviewReport) -> None:
    if not report.findings:
        return
    out.table(
        ("SEVERITY", "FINDING", "KEY ID", "NAME", "DETAIL"),
        (
            [str(f.severity), f.kind, f.key_id, out.clip(f.name, 24), f.message]
            for f in report.findings
        ),
    )


def register(sub: Subparsers) -> None:
    """Add ``keyguard review``."""
    p = out.add_json(
        sub.add_parser(
            "review",
            help="least-privilege and hygiene report over active keys (read-only)",
            description="Report keys holding admin, keys past the rotation policy, keys without "
            "expiry or expiring soon, unused keys, keys with many descendants and (with "
            "--usage) scopes held but not needed, with a narrower set suggested. Never writes. "
            "Exit status 1 when the findings pass --fail-on.",
        )
    )
    p.add_argument(
        "--rotate-after",
        type=parse_duration,
        default=90 * DAY,
        metavar="DURATION",
        help="rotation policy: secrets older than this are due (default 90d)",
    )
    p.add_argument(
        "--expiring-within",
        type=parse_duration,
        default=7 * DAY,
        metavar="DURATION",
        help="report keys expiring this soon (default 7d)",
    )
    p.add_argument(
        "--unused-for",
        type=parse_duration,
        default=30 * DAY,
        metavar="DURATION",
        help="report keys not used for this long (default 30d)",
    )
    p.add_argument(
        "--max-descendants",
        type=int,
        default=10,
        metavar="N",
        help="report keys with more active descendants than this (default 10)",
    )
    p.add_argument(
        "--usage",
        metavar="FILE",
        help="scope usage per key as JSON (see docs/scanning.md): enables unused_scopes",
    )
    p.add_argument(
        "--usage-window",
        type=parse_duration,
        default=30 * DAY,
        metavar="DURATION",
        help="how far back scope usage counts (default 30d)",
    )
    p.add_argument("--owner", help="only keys of this owner")
    p.add_argument(
        "--ignore",
        action="append",
        choices=_KINDS,
        metavar="KIND",
        help=f"leave out a finding kind (repeatable): {', '.join(_KINDS)}",
    )
    p.add_argument(
        "--fail-on",
        type=parse_fail_on,
        default=FailOn(0),
        metavar="N|SEVERITY|never",
        help="exit 1 when there are more than N findings (default 0: any), when any finding "
        "is at least SEVERITY (low, medium, high), or never",
    )
    p.set_defaults(handler=_review)
