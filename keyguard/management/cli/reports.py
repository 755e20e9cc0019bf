"""``keyguard scopes`` and ``keyguard audit``: what keys may hold, and who did what.

``scopes`` lists the platform's 14 scopes in the order its documentation gives them, then the
scopes keyguard adds (``keys:manage``, for key management), each marked with where it comes
from. It opens no store. ``audit`` only reads.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from keyguard.core.scopes import PLATFORM_SCOPES, ScopeCatalog
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_manager
from keyguard.management.cli.values import positive_int

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["register"]


def _scopes(args: argparse.Namespace) -> int:
    catalog = dict(ScopeCatalog.platform().items())
    rows = [(s, d, "platform") for s, d in PLATFORM_SCOPES.items() if s in catalog]
    rows += [(s, d, "keyguard") for s, d in catalog.items() if s not in PLATFORM_SCOPES]
    if args.json:
        out.emit_json(
            {"scopes": [{"scope": s, "description": d, "source": src} for s, d, src in rows]}
        )
        return 0
    out.table(("SCOPE", "DESCRIPTION", "FROM"), ([s, d, src] for s, d, src in rows))
    ours = [s for s, _, src in rows if src == "keyguard"]
    platform = len(rows) - len(ours)
    if ours:
        out.note(
            f"{platform} platform scopes, plus {', '.join(ours)}: keyguard's own, for keys that "
            "manage other keys"
        )
    return 0


def _audit(args: argparse.Namespace) -> int:
    with open_manager(args, write=False, remote=True) as manager:
        if args.key is not None:
            manager.get(args.key)  # an unknown id is an error, as in every other command
        events = manager.audit(args.key, limit=args.limit)
    if args.json:
        out.emit_json({"events": [e.to_dict() for e in events]})
    elif events:
        out.table(out.AUDIT_HEADERS, out.audit_rows(events))
    else:
        out.note("no audit events")
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keyguard scopes`` and ``keyguard audit``."""
    p = out.add_json(sub.add_parser("scopes", help="list the scopes keys may hold"))
    p.set_defaults(handler=_scopes)

    p = out.add_json(sub.add_parser("audit", help="recent audit events"))
    p.add_argument("--key", metavar="KEY_ID", help="only this key's events")
    p.add_argument("--limit", type=positive_int, default=50, help="how many (default 50)")
    p.set_defaults(handler=_audit)
