"""``keyguard keys …``: create, list, show, revoke, rotate, expire, suspend, resume, expiring
and verify.

Each handler is a thin skin over :class:`~keyguard.management.manager.KeyManager` — or, with
``--url``, over the same operations of a remote management API
(:class:`~keyguard.management.cli.remote.RemoteManager`) — so the CLI enforces exactly the
library's rules, and prints the same either way. ``list``, ``show``, ``expiring`` and
``verify`` only read (see :mod:`keyguard.management.cli.context`); ``verify`` reads the key
from stdin or an environment variable, never from the command line, and never echoes it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any

from keyguard.core.records import KeyStatus
from keyguard.management.cli import output as out
from keyguard.management.cli.context import actor, open_manager
from keyguard.management.cli.errors import UsageError
from keyguard.management.cli.values import (
    meta_item,
    parse_duration,
    parse_time,
    positive_int,
    scope_list,
)
from keyguard.management.manager import DEFAULT_GRACE, KeyManager
from keyguard.management.reader import suspension

if TYPE_CHECKING:
    from keyguard.core.decision import Decision
    from keyguard.management.cli.parser import Subparsers

__all__ = ["register"]


# -- handlers -------------------------------------------------------------------------------
def _create(args: argparse.Namespace) -> int:
    scopes = scope_list(args.scope)
    if not scopes and not args.no_scopes:
        raise UsageError(
            "keys create: give at least one --scope (see 'keyguard scopes'), or --no-scopes "
            "for a key that can authenticate but is allowed nothing else"
        )
    metadata = dict(args.meta) if args.meta else None
    with open_manager(args, write=True, remote=True) as manager:
        created = manager.create(
            args.name,
            scopes,
            owner=args.owner,
            expires_at=args.expires_at,
            expires_in=args.expires_in,
            rate_limit=args.rate_limit,
            metadata=metadata,
            description=args.description,
            allowed_networks=args.network,
            actor=actor(args),
        )
        out.print_created(args, created, out.now())
    return 0


def _list(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=False, remote=True) as manager:
        filters: dict[str, Any] = {"owner": args.owner, "status": args.status}
        if args.all:
            records = list(manager.iter_all(**filters))
            cursor = None
        else:
            page = manager.list(**filters, limit=args.limit, cursor=args.cursor)
            records, cursor = list(page.items), page.next_cursor
    if args.json:
        out.emit_json({"keys": [r.public_dict(at) for r in records], "next_cursor": cursor})
        return 0
    if not records:
        out.note("no keys")
        return 0
    out.table(
        ("KEY ID", "NAME", "STATUS", "SCOPES", "OWNER", "EXPIRES", "LAST USED"),
        (
            [
                r.key_id,
                out.clip(r.name, 30),
                r.status(at).value,
                out.clip(",".join(sorted(r.scopes)) or "-", 40),
                out.clip(r.owner or "-", 20),
                out.when(r.expires_at) if r.expires_at is not None else "never",
                out.when(r.last_used_at) if r.last_used_at else "never",
            ]
            for r in records
        ),
    )
    if cursor is not None:
        out.note(f"more keys: pass --cursor {cursor} for the next page, or --all")
    return 0


def _show(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=False, remote=True) as manager:
        record = manager.get(args.key_id)
        events = manager.audit(record.key_id, limit=args.events)
    if args.json:
        out.emit_json({"record": record.public_dict(at), "audit": [e.to_dict() for e in events]})
        return 0
    out.print_record(record, at)
    if events:
        out.emit()
        out.emit("recent events:")
        out.table(out.AUDIT_HEADERS, out.audit_rows(events))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with open_manager(args, write=True, remote=True) as manager:
        revoked = manager.revoke(
            args.key_id, reason=args.reason, actor=actor(args), cascade=not args.no_cascade
        )
    if args.json:
        out.emit_json({"revoked": revoked})
    elif revoked:
        out.emit(f"revoked: {', '.join(revoked)}")
    else:
        out.emit(f"{args.key_id} was already revoked; nothing changed")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    with open_manager(args, write=True, remote=True) as manager:
        created = manager.rotate(args.key_id, grace=args.grace, actor=actor(args))
    at = out.now()
    until = created.record.previous_expires_at
    valid = until is not None and until > at
    out.print_created(
        args,
        created,
        at,
        json_extra={"old_secret_valid_until": out.when(until) if valid else "no longer valid"},
        text_extra=[("old secret", out.old_secret(until, at))],
    )
    return 0


def _expire(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=True, remote=True) as manager:
        record = manager.expire(args.key_id, at=args.at, actor=actor(args))
    if args.json:
        out.emit_json({"record": record.public_dict(at)})
    else:
        out.emit(f"{record.key_id} expires at {out.when(record.expires_at)}")
    return 0


def _suspend(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=True, remote=True) as manager:
        record = manager.suspend(args.key_id, reason=args.reason, actor=actor(args))
    if args.json:
        out.emit_json({"record": record.public_dict(at)})
    else:
        out.emit(f"{record.key_id} is suspended: {record.suspended_reason}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=True, remote=True) as manager:
        record = manager.resume(args.key_id, actor=actor(args))
    if args.json:
        out.emit_json({"record": record.public_dict(at)})
    else:
        out.emit(f"{record.key_id} is {record.status(at).value}")
    return 0


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    minutes = rest // 60
    return f"{hours}h{minutes}m" if hours else f"{minutes}m"


def _expiring(args: argparse.Namespace) -> int:
    at = out.now()
    with open_manager(args, write=False, remote=True) as manager:
        records = manager.expiring(args.within)
    if args.json:
        out.emit_json({"keys": [r.public_dict(at) for r in records]})
        return 0
    if not records:
        out.note("no active key expires within that window")
        return 0
    out.table(
        ("KEY ID", "NAME", "OWNER", "EXPIRES", "IN"),
        (
            [
                r.key_id,
                out.clip(r.name, 30),
                out.clip(r.owner or "-", 20),
                out.when(r.expires_at),
                _left((r.expires_at or at) - at),
            ]
            for r in records
        ),
    )
    return 0


def _read_key(args: argparse.Namespace) -> str:
    if args.env:
        value = os.environ.get(args.env)
        if value is None:
            raise UsageError(f"environment variable {args.env} is not set")
        if not value.strip():
            raise UsageError(f"environment variable {args.env} is empty")
        return value.strip()
    stdin = sys.stdin
    if stdin is None:
        raise UsageError("no key given: pipe it on standard input or use --env VAR")
    # Interactive: read without echo, so the key does not land in the scrollback.
    key = (getpass.getpass("API key: ") if stdin.isatty() else stdin.readline()).strip()
    if not key:
        raise UsageError(
            "no key on standard input: pipe one in, as in "
            "printf '%s\\n' \"$KEY\" | keyguard keys verify, or use --env VAR"
        )
    return key


def _verify(args: argparse.Namespace) -> int:
    # Imported here: the verifier pulls in route-policy machinery no other command needs.
    from keyguard.core.verifier import Verifier

    key = _read_key(args)
    with open_manager(args, write=False, remote=True) as manager:
        if not isinstance(manager, KeyManager):
            # Remote: the service answers as it would answer a request made with this key.
            decision = manager.verify(key)
            del key
            return _verified(args, decision)
        # Read-only: a diagnostic must never re-hash a digest or touch last_used_at, which
        # would change what a running service (perhaps with another pepper) sees.
        verifier = Verifier(
            manager.store,
            catalog=manager.catalog,
            key_format=manager.key_format,
            hasher=manager.hasher,
            cache_ttl=0,
            negative_cache_ttl=0,
            rate_limits=None,
            brute_force=None,
            read_only=True,
        )
        decision = suspension(verifier.authenticate(f"UserKey {key}"))
    del key
    return _verified(args, decision)


def _verified(args: argparse.Namespace, decision: Decision) -> int:
    principal = decision.principal
    if decision.allowed and principal is not None:
        scopes = sorted(principal.record.scopes)
        if args.json:
            out.emit_json(
                {
                    "valid": True,
                    "key_id": principal.key_id,
                    "name": principal.name,
                    "owner": principal.owner,
                    "scopes": scopes,
                }
            )
        else:
            out.emit(
                f"valid: {principal.key_id} ({principal.name}), scopes: {', '.join(scopes) or '-'}"
            )
        return 0
    code = decision.code.value if decision.code is not None else "invalid"
    if args.json:
        out.emit_json({"valid": False, "code": code, "detail": decision.detail})
    else:
        out.emit(f"invalid: {code} — {decision.detail}")
    return 1


# -- parser ---------------------------------------------------------------------------------
def register(sub: Subparsers) -> None:
    """Add ``keyguard keys`` and its actions."""
    keys = sub.add_parser("keys", help="create, list, show, revoke, rotate and expire keys")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = out.add_json(actions.add_parser("create", help="create a key (printed once)"))
    p.add_argument("--name", required=True, help="a descriptive name")
    granted = p.add_mutually_exclusive_group()
    granted.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="a scope to grant (repeatable, or comma-separated); see 'keyguard scopes'",
    )
    granted.add_argument(
        "--no-scopes",
        action="store_true",
        help="grant nothing: the key can authenticate but is allowed no scoped action",
    )
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=parse_duration, metavar="DURATION", help="e.g. 90d")
    expiry.add_argument("--expires-at", type=parse_time, metavar="TIME", help="ISO-8601, UTC")
    p.add_argument("--owner", help="who the key belongs to")
    p.add_argument("--rate-limit", metavar="SPEC", help='per-key override, e.g. "1000/minute"')
    p.add_argument("--meta", action="append", type=meta_item, metavar="KEY=VALUE", help="metadata")
    p.add_argument("--description", help="what the key is for")
    p.add_argument(
        "--network",
        action="append",
        metavar="CIDR",
        help="allow the key only from this network (repeatable), e.g. 10.0.0.0/8",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    p.set_defaults(handler=_create)

    p = out.add_json(actions.add_parser("list", help="list keys (never their secrets)"))
    p.add_argument("--owner")
    p.add_argument("--status", choices=[s.value for s in KeyStatus])
    p.add_argument("--limit", type=positive_int, default=100, help="page size (default 100)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--all", action="store_true", help="every matching key, all pages")
    p.set_defaults(handler=_list)

    p = out.add_json(actions.add_parser("show", help="one key and its recent audit events"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--events", type=positive_int, default=10, help="audit events to show")
    p.set_defaults(handler=_show)

    p = out.add_json(actions.add_parser("revoke", help="revoke a key and the keys it created"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.add_argument("--no-cascade", action="store_true", help="leave keys created by this key alone")
    p.set_defaults(handler=_revoke)

    p = out.add_json(actions.add_parser("rotate", help="new secret, same key id (printed once)"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="how long the old secret keeps working (default 24h; 0 ends it now)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    p.set_defaults(handler=_rotate)

    p = out.add_json(actions.add_parser("expire", help="make a key expire now"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--at", type=parse_time, metavar="TIME", help="expire at this time instead")
    p.set_defaults(handler=_expire)

    p = out.add_json(actions.add_parser("suspend", help="disable a key until it is resumed"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.set_defaults(handler=_suspend)

    p = out.add_json(actions.add_parser("resume", help="re-enable a suspended key"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(handler=_resume)

    p = out.add_json(actions.add_parser("expiring", help="active keys expiring soon"))
    p.add_argument("--within", type=parse_duration, metavar="DURATION", help="window (default 7d)")
    p.set_defaults(handler=_expiring)

    p = out.add_json(
        actions.add_parser(
            "verify",
            help="check a key read from stdin or --env (exit 0 if valid); never writes",
            description="Check a key as a request would, without changing the store. The key "
            "is read from the first line of stdin, or from an environment variable, never from "
            "the command line.",
        )
    )
    p.add_argument("--env", metavar="VAR", help="read the key from this environment variable")
    p.set_defaults(handler=_verify)
