"""``keyguard demo``: the CLI wiring of :mod:`keyguard.demo` (which owns what the demo does).

Unlike every other command, the demo creates its store on first run (its documented quick
start), so it does not go through :func:`~keyguard.management.cli.context.open_manager`.
``--json`` prints the startup information — the URL, the store and each demo key (new keys
once, in plaintext) — as one JSON object on stdout instead of the banner, for scripts that
start the demo and then call it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from keyguard.core.ratelimit.settings import LimiterSettings
from keyguard.management.cli import output as out
from keyguard.management.cli.context import store_url
from keyguard.stores import redact_url

if TYPE_CHECKING:
    from keyguard.demo import DemoKeys
    from keyguard.management.cli.parser import Subparsers

__all__ = ["json_banner", "register"]


def json_banner(keys: DemoKeys, base_url: str, stream: TextIO, *, store: str) -> None:
    """The demo's startup information as one JSON object (a plaintext key appears once)."""
    demo_keys: dict[str, dict[str, Any]] = {
        role: {"key": plaintext, "new": True} for role, plaintext in keys.created.items()
    }
    for role, key_id in keys.existing.items():
        demo_keys[role] = {
            "key_id": key_id,
            "new": False,
            "note": "created on an earlier run; 'keyguard demo --new-keys' replaces it",
        }
    if keys.created:
        out.note(out.SHOWN_ONCE)
    stream.write(
        json.dumps(
            {"url": base_url, "store": store, "keys": demo_keys},
            indent=2,
            sort_keys=True,
            ensure_ascii=False,
        )
        + "\n"
    )
    stream.flush()


def _demo(args: argparse.Namespace) -> int:
    from keyguard import demo

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "new_keys": args.new_keys,
        "url": args.store,
        "ratelimit": LimiterSettings.from_args(args),
        "out": sys.stdout,
    }
    if args.json:
        shown = redact_url(store_url(args))

        def banner(keys: DemoKeys, base_url: str, stream: TextIO) -> None:
            json_banner(keys, base_url, stream, store=shown)

        options["banner"] = banner
    demo.run(**options)
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keyguard demo``."""
    p = out.add_json(
        sub.add_parser(
            "demo",
            help="run the demo API service (creates its store and demo keys on first run)",
            description="Serve an example of the platform's API protected by keyguard. On first "
            "run it creates its store, an admin key and a read-only key, and prints each key "
            "once.",
        )
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--new-keys",
        action="store_true",
        help="revoke the demo keys of earlier runs and print new ones",
    )
    LimiterSettings.add_arguments(p)
    p.set_defaults(handler=_demo)
