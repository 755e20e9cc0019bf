"""``keyguard scan PATH…``: find keyguard keys in files (and, with ``--git``, in git history).

Exit status: 1 when a key is found (with or without ``--revoke``), 0 when none is, 2 for a
usage error (a path that does not exist, ``--git`` outside a repository). Each finding is one
line, ``location: prefix_keyid_abcd**** (key id …)``; the secret is never printed. What is
scanned and skipped is described in :mod:`keyguard.abuse.scanner` and
:mod:`keyguard.abuse.history`. ``--revoke`` opens the store (``--store``) only when something
was found, and revokes each live key whose whole secret matches the store's digest.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING

from keyguard.abuse.findings import ScanReport
from keyguard.abuse.history import GitError, HistoryScanner, git_dir
from keyguard.abuse.leaks import RevocationResult, revoke_found
from keyguard.abuse.scanner import DEFAULT_MAX_SIZE, FileScanner
from keyguard.core.errors import ConfigurationError
from keyguard.management.cli import output as out
from keyguard.management.cli.context import actor, open_manager
from keyguard.management.cli.errors import UsageError
from keyguard.management.manager import KeyManager

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["parse_size", "register"]

_SIZE_RE = re.compile(r"([0-9]{1,12})([kKmMgG]?)")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,15}")


def parse_size(text: str) -> int:
    """``100M``, ``512k``, ``2G`` or a number of bytes; ``0`` means no limit."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: a number of bytes, or with k, M or G (e.g. 100M); 0 for no "
            "limit"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _prefix(text: str) -> str:
    if _PREFIX_RE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"invalid prefix {text!r}: a key prefix is [a-z][a-z0-9]{{0,15}}"
        )
    return text


def _scan(args: argparse.Namespace) -> int:
    paths: list[str] = args.paths or ["."]
    for path in paths:
        if not os.path.lexists(path):
            raise UsageError(f"scan: {path!r} does not exist")
    max_size = args.max_size or None
    prefixes = frozenset(args.only_prefix) if args.only_prefix else None
    try:
        files = FileScanner(
            prefixes=prefixes,
            max_size=max_size,
            binary=args.binary,
            exclude=args.exclude or (),
            default_excludes=not args.no_default_excludes,
        )
        report = files.scan(paths)
        if args.git:
            repositories: dict[str, str] = {}
            for path in paths:
                repositories.setdefault(git_dir(path), path)
            for path in repositories.values():
                scanner = HistoryScanner(
                    path, prefixes=prefixes, max_size=max_size, binary=args.binary
                )
                report.merge(scanner.scan())
    except GitError as exc:
        raise UsageError(f"scan: {exc}") from None
    except ConfigurationError as exc:
        raise UsageError(f"scan: {exc}") from None

    revocations: list[RevocationResult] | None = None
    if args.revoke and report.findings:
        with open_manager(args, write=True) as manager:
            assert isinstance(manager, KeyManager)  # scan --revoke works on a local store
            revocations = revoke_found(manager, report.findings, actor=actor(args))
    _print(args, report, revocations)
    return 1 if report.findings else 0


def _print(
    args: argparse.Namespace, report: ScanReport, revocations: list[RevocationResult] | None
) -> None:
    if args.json:
        data: dict[str, object] = {
            "findings": [f.to_dict() for f in report.findings],
            "skipped": [s.to_dict() for s in report.skipped],
            "scanned": report.counts(),
        }
        if args.revoke:
            data["revocations"] = [r.to_dict() for r in revocations or []]
        out.emit_json(data)
        return
    for f in report.findings:
        out.emit(f"{f.short_location()}: {f.masked} (key id {f.key_id})")
    for r in revocations or []:
        out.emit(f"key {r.key_id} ({r.location}): {r.explain()}")
    for s in report.skipped:
        out.note(f"skipped {s.path}: {s.reason}")
    scanned = f"{report.files} file(s)"
    if args.git:
        scanned += f", {report.blobs} blob(s) and {report.commits} commit(s) of git history"
    distinct = len({f.key.full for f in report.findings})
    if report.findings:
        out.note(
            f"found {len(report.findings)} occurrence(s) of {distinct} key(s) in {scanned}; "
            "treat every key found as exposed: revoke or rotate it"
            + ("" if args.revoke else " (keyguard scan --revoke revokes them)")
        )
    else:
        out.note(f"no keyguard keys found in {scanned}")


def register(sub: Subparsers) -> None:
    """Add ``keyguard scan``."""
    p = out.add_json(
        sub.add_parser(
            "scan",
            help="find keyguard keys in files and git history (exit 1 if any)",
            description="Find keyguard API keys in files, directories and (--git) every commit "
            "of a repository, by prefix and checksum (look-alikes are not reported). Prints "
            "where each key is, its key id and a masked secret, never the secret. Files "
            "ignored by git ARE scanned (a leaked .env matters most); .git, virtual "
            "environments, node_modules and tool caches are not, unless "
            "--no-default-excludes. Exit status 1 if a key is found, 0 if not, 2 on usage "
            "errors.",
        )
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default .)")
    p.add_argument(
        "--git",
        action="store_true",
        help="also scan every commit of the git repository holding each PATH (all refs)",
    )
    p.add_argument(
        "--prefix",
        dest="only_prefix",
        action="append",
        type=_prefix,
        metavar="PREFIX",
        help="report only keys with this prefix (repeatable; default: any prefix)",
    )
    p.add_argument(
        "--max-size",
        type=parse_size,
        default=DEFAULT_MAX_SIZE,
        metavar="SIZE",
        help="skip (and list) files larger than this (default 100M; 0 for no limit)",
    )
    p.add_argument("--binary", action="store_true", help="scan binary files too")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="skip files and directories matching this glob (name or path; repeatable)",
    )
    p.add_argument(
        "--no-default-excludes",
        action="store_true",
        help="also scan .git, virtual environments, node_modules and tool caches",
    )
    p.add_argument(
        "--revoke",
        action="store_true",
        help="revoke each live key found whose secret matches the store (--store); keys not "
        "in the store are reported as unknown",
    )
    p.set_defaults(handler=_scan)
