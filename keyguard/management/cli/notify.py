"""``keyguard notify --check``: the periodic notification checks, for cron.

It scans the store once for active keys expiring within ``--expiring-within`` (default 7 days)
and keys whose secret is older than ``--rotation-after`` (default 90 days), and delivers each
condition not yet delivered — to ``--webhook`` receivers (signed with the secret in the
environment variable ``--webhook-secret-env`` names, never on the command line), and to stdout
(one line each, or ``--json``) when no webhook is given. Markers in the store
(:meth:`~keyguard.core.store.KeyStore.claim_notification`) make each one go out once, however
often cron runs and however many hosts run it. ``--dry-run`` only lists what is due.

Exit status 0 when everything due was delivered; 1 when a delivery failed (it is retried by the
next run); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Final

from keyguard.core.errors import ConfigurationError, KeyguardError
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_manager
from keyguard.management.cli.errors import UsageError
from keyguard.management.cli.values import parse_duration
from keyguard.management.manager import KeyManager
from keyguard.observability.notifications import (
    DEFAULT_EXPIRING_WITHIN,
    DEFAULT_ROTATION_AFTER,
    Notification,
)
from keyguard.observability.notifier import Notifier
from keyguard.observability.webhooks import Webhook

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["WEBHOOK_SECRET_ENV", "register"]

WEBHOOK_SECRET_ENV: Final = "KEYGUARD_WEBHOOK_SECRET"  # noqa: S105 - a variable's name


def _positive(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, not {text!r}")
    return value


def _webhooks(args: argparse.Namespace) -> list[Webhook]:
    if not args.webhook:
        return []
    env = args.webhook_secret_env
    secret = os.environ.get(env, "")
    if not secret:
        raise UsageError(
            f"--webhook needs its signing secret in ${env} (never on the command line)"
        )
    try:
        return [Webhook(url, secret) for url in args.webhook]
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _line(notification: Notification) -> dict[str, object]:
    return notification.payload()


def _notify(args: argparse.Namespace) -> int:
    if not args.check:
        raise UsageError("notify: say --check (run the periodic checks once)")
    webhooks = _webhooks(args)
    printed: list[Notification] = []

    def to_stdout(notification: Notification) -> None:
        printed.append(notification)
        if not args.json:
            out.emit(f"{notification.kind.value}: {notification.message}")

    with open_manager(args, write=False) as manager:
        assert isinstance(manager, KeyManager)  # notify works on a store, never --url
        notifier = Notifier(
            manager.store,
            callbacks=() if webhooks else (to_stdout,),
            webhooks=webhooks,
            expiring_within=args.expiring_within,
            rotation_after=args.rotation_after,
        )
        try:
            if args.dry_run:
                due = [n for n, _ in notifier.pending()]
                if args.json:
                    out.emit_json({"due": [_line(n) for n in due], "sent": []})
                else:
                    for n in due:
                        out.emit(f"due: {n.kind.value}: {n.message}")
                    if not due:
                        out.note("nothing due")
                return 0
            sent = notifier.check()
        finally:
            notifier.close()
    if args.json:
        out.emit_json({"sent": [_line(n) for n in sent], "failed": notifier.failures})
    elif webhooks:
        for n in sent:
            out.emit(f"sent: {n.kind.value}: {n.message}")
    if notifier.failures:
        raise KeyguardError(
            f"{notifier.failures} notification(s) not delivered; the next check retries them"
        )
    if not sent and not args.json:
        out.note("nothing new to notify")
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keyguard notify``."""
    p = out.add_json(
        sub.add_parser(
            "notify",
            help="send notifications about keys expiring soon or due for rotation (for cron)",
            description="Run the periodic notification checks once: keys expiring soon and keys "
            "due for rotation, each notified once (markers kept in the store).",
        )
    )
    p.add_argument("--check", action="store_true", help="run the checks once (required)")
    p.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the key store (as keyguard --store)",
    )
    p.add_argument(
        "--webhook",
        metavar="URL",
        action="append",
        help="POST each notification here, signed (repeatable); without it, print them",
    )
    p.add_argument(
        "--webhook-secret-env",
        metavar="VAR",
        default=WEBHOOK_SECRET_ENV,
        help=f"the environment variable holding the signing secret (default {WEBHOOK_SECRET_ENV})",
    )
    p.add_argument(
        "--expiring-within",
        type=_positive,
        default=DEFAULT_EXPIRING_WITHIN,
        metavar="DURATION",
        help="notify keys expiring within this (default 7d)",
    )
    p.add_argument(
        "--rotation-after",
        type=_positive,
        default=DEFAULT_ROTATION_AFTER,
        metavar="DURATION",
        help="notify keys whose secret is older than this (default 90d)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what is due, send nothing")
    p.set_defaults(handler=_notify)
