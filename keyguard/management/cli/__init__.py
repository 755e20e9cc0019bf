"""The ``keyguard`` command line: manage API keys in any keyguard store from a shell.

Every command is a thin skin over :class:`~keyguard.management.manager.KeyManager`, so the
CLI enforces exactly the rules the library does. Output is a readable table by default and
JSON with ``--json``. A key's plaintext is printed once, by ``keys create`` and
``keys rotate``, and nowhere else: ``keys verify`` reads a key from stdin or an environment
variable (never from the command line, where it would land in shell history and ``ps``) and
never echoes it. User errors end with one ``keyguard: error: ...`` line on stderr and a
non-zero exit status (2 for usage, 1 for a refused or failed operation), never a traceback.

Adding a subcommand: write ``register(subparsers)`` that calls ``subparsers.add_parser(...)``
and ``set_defaults(handler=...)`` (a ``handler(args) -> int``; :func:`open_manager` gives it
a manager for the chosen store), then append ``register`` to :data:`EXTRA_COMMANDS` or list
its module in :data:`PLUGIN_MODULES`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, TypeAlias
from urllib.parse import unquote

from keyguard.core.clock import to_iso
from keyguard.core.errors import KeyguardError
from keyguard.core.keys import DEFAULT_PREFIX, KeyFormat
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus
from keyguard.core.scopes import ScopeCatalog
from keyguard.management.manager import DEFAULT_GRACE, CreatedKey, KeyManager
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV, redact_url

__all__ = [
    "EXTRA_COMMANDS",
    "PLUGIN_MODULES",
    "UsageError",
    "build_parser",
    "main",
    "open_manager",
    "parse_duration",
    "parse_time",
]

PREFIX_ENV: Final = "KEYGUARD_KEY_PREFIX"
ACTOR_ENV: Final = "KEYGUARD_ACTOR"
DEBUG_ENV: Final = "KEYGUARD_DEBUG"
SHOWN_ONCE: Final = "Store this key now: it will not be shown again."

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]

#: Functions that add top-level subcommands to the parser (see the module docstring).
EXTRA_COMMANDS: list[Callable[[Subparsers], None]] = []
#: Modules imported when the parser is built, if importable, whose ``register_cli(subparsers)``
#: adds their subcommands (for example a ``demo`` command shipped by an optional module).
PLUGIN_MODULES: list[str] = ["keyguard.demo"]


class UsageError(KeyguardError):
    """The command line itself is wrong (exit status 2)."""


# -- value parsers ----------------------------------------------------------------------------
_UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_RE: Final = re.compile(r"(?:[0-9]{1,9}[wdhms])+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]{1,9})([wdhms])")


def parse_duration(text: str) -> float:
    """``90d``, ``24h``, ``30m``, ``45s``, ``2w`` or combinations such as ``1d12h`` (or ``0``),
    in seconds."""
    value = text.strip()
    if value == "0":
        return 0.0
    if not _DURATION_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit (w, d, h, m, s), "
            "e.g. 90d, 24h, 30m, 45s, 2w or 1d12h"
        )
    parts = _DURATION_PART_RE.findall(value)
    units = [u for _, u in parts]
    if len(set(units)) != len(units):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: a unit appears twice")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def parse_time(text: str) -> float:
    """An ISO-8601 date or time (``2030-01-31``, ``2030-01-31T12:00:00Z``); UTC unless it
    names an offset. Returns epoch seconds."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO-8601, e.g. 2030-01-31 or 2030-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _meta_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid metadata {text!r}: use key=value")
    return key, value


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return n


def _scopes(values: Iterable[str] | None) -> list[str]:
    # --scope a --scope b and --scope a,b are the same.
    return [s.strip() for v in values or () for s in v.split(",") if s.strip()]


# -- output -----------------------------------------------------------------------------------
def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _print_json(value: Any) -> None:
    _print(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        _print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _time(ts: float | None) -> str:
    return to_iso(ts) or "-"


def _record_lines(record: KeyRecord, now: float) -> list[tuple[str, str]]:
    lines = [
        ("key id", record.key_id),
        ("name", record.name),
        ("status", record.status(now).value),
        ("scopes", ", ".join(sorted(record.scopes)) or "-"),
        ("owner", record.owner or "-"),
        ("created", _time(record.created_at)),
        ("expires", _time(record.expires_at) if record.expires_at is not None else "never"),
        ("last used", _time(record.last_used_at) if record.last_used_at else "never"),
        ("rate limit", record.rate_limit or "default"),
    ]
    if record.created_by:
        lines.append(("created by", record.created_by))
    if record.rotated_at is not None:
        lines.append(("rotated", _time(record.rotated_at)))
    if record.previous_expires_at is not None and record.previous_expires_at > now:
        lines.append(("old secret until", _time(record.previous_expires_at)))
    if record.revoked_at is not None:
        lines.append(("revoked", _time(record.revoked_at)))
        lines.append(("reason", record.revoked_reason or "-"))
    if record.metadata:
        meta = ", ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in sorted(record.metadata.items())
        )
        lines.append(("metadata", meta))
    return lines


def _print_record(record: KeyRecord, now: float, extra: Sequence[tuple[str, str]] = ()) -> None:
    lines = [*_record_lines(record, now), *extra]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        _print(f"{label.ljust(width)}  {value}")


def _audit_rows(events: Iterable[AuditEvent]) -> list[list[str]]:
    return [
        [
            _time(e.at),
            e.action,
            e.key_id,
            e.actor,
            json.dumps(dict(e.details), sort_keys=True, separators=(",", ":"), default=str),
        ]
        for e in events
    ]


_AUDIT_HEADERS: Final = ("TIME", "ACTION", "KEY ID", "ACTOR", "DETAILS")


def _print_created(args: argparse.Namespace, created: CreatedKey, now: float, **extra: Any) -> None:
    """The only place a plaintext key is ever printed."""
    _note(SHOWN_ONCE)
    if args.json:
        _print_json({"key": created.plaintext, "record": created.record.public_dict(now), **extra})
    elif getattr(args, "quiet", False):
        _print(created.plaintext)
    else:
        shown = [(k.replace("_", " "), str(v)) for k, v in extra.items() if v is not None]
        _print_record(created.record, now, shown)
        _print()
        _print(f"api key  {created.plaintext}")


# -- plumbing ---------------------------------------------------------------------------------
def _store_url(args: argparse.Namespace) -> str:
    url: str = args.store or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    return url


def _check_store_exists(url: str) -> None:
    """Read-only commands must not create an empty SQLite file (a typo in the path would
    otherwise look like a store without keys)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite":
        return
    path = unquote(rest.partition("?")[0].partition("#")[0])[1:]
    if path and path != ":memory:" and not os.path.exists(path):
        raise KeyguardError(
            f"no key store at {path!r} (create a key first, or pass --store / set {STORE_URL_ENV})"
        )


def open_manager(args: argparse.Namespace, *, must_exist: bool = False) -> KeyManager:
    """A manager for the store and key prefix the command line (or environment) selects."""
    url = _store_url(args)
    if must_exist:
        _check_store_exists(url)
    prefix = args.prefix or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX
    key_format = KeyFormat(prefix)
    try:
        return KeyManager(url, key_format=key_format)
    except KeyguardError as exc:
        shown = redact_url(url)
        if shown in str(exc):
            raise
        raise KeyguardError(f"{exc} (store {shown})") from exc


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = "unknown"
    return f"cli:{user}"


def _now() -> float:
    return datetime.now(UTC).timestamp()


# -- commands ---------------------------------------------------------------------------------
def _cmd_create(args: argparse.Namespace) -> int:
    metadata = dict(args.meta) if args.meta else None
    with open_manager(args) as manager:
        created = manager.create(
            args.name,
            _scopes(args.scope),
            owner=args.owner,
            expires_at=args.expires_at,
            expires_in=args.expires_in,
            rate_limit=args.rate_limit,
            metadata=metadata,
            actor=_actor(args),
        )
        _print_created(args, created, _now())
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    now = _now()
    with open_manager(args, must_exist=True) as manager:
        filters: dict[str, Any] = {"owner": args.owner, "status": args.status}
        if args.all:
            records = list(manager.iter_all(**filters))
            cursor = None
        else:
            page = manager.list(**filters, limit=args.limit, cursor=args.cursor)
            records, cursor = list(page.items), page.next_cursor
    if args.json:
        _print_json({"keys": [r.public_dict(now) for r in records], "next_cursor": cursor})
        return 0
    if not records:
        _note("no keys")
        return 0
    _table(
        ("KEY ID", "NAME", "STATUS", "SCOPES", "OWNER", "EXPIRES", "LAST USED"),
        (
            [
                r.key_id,
                _clip(r.name, 30),
                r.status(now).value,
                _clip(",".join(sorted(r.scopes)) or "-", 40),
                _clip(r.owner or "-", 20),
                _time(r.expires_at) if r.expires_at is not None else "never",
                _time(r.last_used_at) if r.last_used_at else "never",
            ]
            for r in records
        ),
    )
    if cursor is not None:
        _note(f"more keys: pass --cursor {cursor} for the next page, or --all")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    now = _now()
    with open_manager(args, must_exist=True) as manager:
        record = manager.get(args.key_id)
        events = manager.audit(record.key_id, limit=args.events)
    if args.json:
        _print_json({"record": record.public_dict(now), "audit": [e.to_dict() for e in events]})
        return 0
    _print_record(record, now)
    if events:
        _print()
        _print("recent events:")
        _table(_AUDIT_HEADERS, _audit_rows(events))
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    with open_manager(args, must_exist=True) as manager:
        revoked = manager.revoke(
            args.key_id, reason=args.reason, actor=_actor(args), cascade=not args.no_cascade
        )
    if args.json:
        _print_json({"revoked": revoked})
    elif revoked:
        _print(f"revoked: {', '.join(revoked)}")
    else:
        _print(f"{args.key_id} was already revoked; nothing changed")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    with open_manager(args, must_exist=True) as manager:
        created = manager.rotate(args.key_id, grace=args.grace, actor=_actor(args))
    until = created.record.previous_expires_at
    _print_created(
        args,
        created,
        _now(),
        old_secret_valid_until=to_iso(until) if until is not None else "no longer valid",
    )
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
    now = _now()
    with open_manager(args, must_exist=True) as manager:
        record = manager.expire(args.key_id, at=args.at, actor=_actor(args))
    if args.json:
        _print_json({"record": record.public_dict(now)})
    else:
        _print(f"{record.key_id} expires at {_time(record.expires_at)}")
    return 0


def _cmd_expiring(args: argparse.Namespace) -> int:
    now = _now()
    with open_manager(args, must_exist=True) as manager:
        records = manager.expiring(args.within)
    if args.json:
        _print_json({"keys": [r.public_dict(now) for r in records]})
        return 0
    if not records:
        _note("no active key expires within that window")
        return 0
    _table(
        ("KEY ID", "NAME", "OWNER", "EXPIRES", "IN"),
        (
            [
                r.key_id,
                _clip(r.name, 30),
                _clip(r.owner or "-", 20),
                _time(r.expires_at),
                _left((r.expires_at or now) - now),
            ]
            for r in records
        ),
    )
    return 0


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    minutes = rest // 60
    return f"{hours}h{minutes}m" if hours else f"{minutes}m"


def _read_key(args: argparse.Namespace) -> str:
    if args.env:
        value = os.environ.get(args.env)
        if value is None:
            raise UsageError(f"environment variable {args.env} is not set")
        return value.strip()
    stdin = sys.stdin
    if stdin is None:
        raise UsageError("no key given: pipe it on stdin or use --env VAR")
    if stdin.isatty():
        # Interactive: read without echo, so the key does not land in the scrollback.
        return getpass.getpass("API key: ").strip()
    return stdin.readline().strip()


def _cmd_verify(args: argparse.Namespace) -> int:
    key = _read_key(args)
    with open_manager(args, must_exist=True) as manager:
        decision = manager.verify(key)
    del key
    principal = decision.principal
    if decision.allowed and principal is not None:
        scopes = sorted(principal.record.scopes)
        if args.json:
            _print_json(
                {
                    "valid": True,
                    "key_id": principal.key_id,
                    "name": principal.name,
                    "owner": principal.owner,
                    "scopes": scopes,
                }
            )
        else:
            _print(
                f"valid: {principal.key_id} ({principal.name}), scopes: {', '.join(scopes) or '-'}"
            )
        return 0
    code = decision.code.value if decision.code is not None else "invalid"
    if args.json:
        _print_json({"valid": False, "code": code, "detail": decision.detail})
    else:
        _print(f"invalid: {code} — {decision.detail}")
    return 1


def _cmd_scopes(args: argparse.Namespace) -> int:
    catalog = ScopeCatalog.platform()
    if args.json:
        _print_json(dict(catalog.items()))
    else:
        _table(("SCOPE", "DESCRIPTION"), ([s, d] for s, d in catalog.items()))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    with open_manager(args, must_exist=True) as manager:
        events = manager.audit(args.key, limit=args.limit)
    if args.json:
        _print_json({"events": [e.to_dict() for e in events]})
    elif events:
        _table(_AUDIT_HEADERS, _audit_rows(events))
    else:
        _note("no audit events")
    return 0


# -- parser -----------------------------------------------------------------------------------
def _version() -> str:
    try:
        return version("keyguard")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--json", action="store_true", help="machine-readable JSON output (for scripts)"
    )
    return parser


def _add_keys(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="create, list, show, revoke, rotate and expire keys")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = _common(actions.add_parser("create", help="create a key (printed once)"))
    p.add_argument("--name", required=True, help="a descriptive name")
    p.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="a scope to grant (repeatable, or comma-separated); see 'keyguard scopes'",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--expires-in", type=parse_duration, metavar="DURATION", help="e.g. 90d")
    when.add_argument("--expires-at", type=parse_time, metavar="TIME", help="ISO-8601, UTC")
    p.add_argument("--owner", help="who the key belongs to")
    p.add_argument("--rate-limit", metavar="SPEC", help='per-key override, e.g. "1000/minute"')
    p.add_argument("--meta", action="append", type=_meta_item, metavar="KEY=VALUE", help="metadata")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    p.set_defaults(handler=_cmd_create)

    p = _common(actions.add_parser("list", help="list keys (never their secrets)"))
    p.add_argument("--owner")
    p.add_argument("--status", choices=[s.value for s in KeyStatus])
    p.add_argument("--limit", type=_positive_int, default=100, help="page size (default 100)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--all", action="store_true", help="every matching key, all pages")
    p.set_defaults(handler=_cmd_list)

    p = _common(actions.add_parser("show", help="one key and its recent audit events"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--events", type=_positive_int, default=10, help="audit events to show")
    p.set_defaults(handler=_cmd_show)

    p = _common(actions.add_parser("revoke", help="revoke a key and the keys it created"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.add_argument("--no-cascade", action="store_true", help="leave keys created by this key alone")
    p.set_defaults(handler=_cmd_revoke)

    p = _common(actions.add_parser("rotate", help="new secret, same key id (printed once)"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="how long the old secret keeps working (default 24h; 0 ends it now)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    p.set_defaults(handler=_cmd_rotate)

    p = _common(actions.add_parser("expire", help="make a key expire now"))
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--at", type=parse_time, metavar="TIME", help="expire at this time instead")
    p.set_defaults(handler=_cmd_expire)

    p = _common(actions.add_parser("expiring", help="active keys expiring soon"))
    p.add_argument("--within", type=parse_duration, metavar="DURATION", help="window (default 7d)")
    p.set_defaults(handler=_cmd_expiring)

    p = _common(
        actions.add_parser(
            "verify",
            help="check a key read from stdin or --env (exit 0 if valid)",
            description="Check a key as a request would. The key is read from the first line "
            "of stdin, or from an environment variable, never from the command line.",
        )
    )
    p.add_argument("--env", metavar="VAR", help="read the key from this environment variable")
    p.set_defaults(handler=_cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    """The full ``keyguard`` argument parser, extensions included."""
    parser = argparse.ArgumentParser(
        prog="keyguard",
        description="Manage keyguard API keys.",
        epilog=f"The store defaults to ${STORE_URL_ENV}, else {DEFAULT_STORE_URL}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--store", metavar="URL", help="memory:// or sqlite:///path (see epilog)")
    parser.add_argument(
        "--prefix", help=f"key prefix (default ${PREFIX_ENV}, else {DEFAULT_PREFIX!r})"
    )
    parser.add_argument(
        "--actor", help=f"who to record in the audit log (default ${ACTOR_ENV}, else cli:<user>)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_keys(sub)

    p = _common(sub.add_parser("scopes", help="list the scopes keys may hold"))
    p.set_defaults(handler=_cmd_scopes)

    p = _common(sub.add_parser("audit", help="recent audit events"))
    p.add_argument("--key", metavar="KEY_ID", help="only this key's events")
    p.add_argument("--limit", type=_positive_int, default=50, help="how many (default 50)")
    p.set_defaults(handler=_cmd_audit)

    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # optional extra not installed
        module.register_cli(sub)
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# -- entry point ------------------------------------------------------------------------------
def _error(message: str) -> None:
    one_line = " ".join(str(message).split())
    with contextlib.suppress(OSError, ValueError):
        _note(f"keyguard: error: {one_line}")


def _silence_stdout() -> None:
    # After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot raise
    # again (the recipe from the Python signal docs).
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 refused/failed, 2 usage, 130 interrupted)."""
    for stream in (sys.stdout, sys.stderr):
        # Names and metadata may hold any printable text; a terminal or pipe that cannot
        # encode it must not turn a listing into a crash.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, usage errors (already printed)
            return _exit_status(exc.code)
        handler: Handler = args.handler
        status = handler(args)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except UsageError as exc:
        _error(str(exc))
        return 2
    except KeyguardError as exc:
        _error(str(exc))
        return 1
    except OSError as exc:
        _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
