"""The ``keyguard`` argument parser: every command, and usage errors as one line.

:class:`Parser` turns each argparse error into a :class:`~keyguard.management.cli.errors.UsageError`
(exit status 2) that names the command and where to find its help, instead of argparse's usage
block, with anything shaped like a key redacted.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, TypeAlias, cast

from keyguard.core.keys import DEFAULT_PREFIX
from keyguard.management.cli import (
    demo,
    doctor,
    init,
    keys,
    notify,
    reports,
    review,
    scan,
    usage,
)
from keyguard.management.cli.context import ACTOR_ENV, PREFIX_ENV
from keyguard.management.cli.errors import UsageError, redact
from keyguard.management.cli.remote import API_KEY_ENV, API_URL_ENV
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV

__all__ = ["EXTRA_COMMANDS", "PLUGIN_MODULES", "Handler", "Parser", "Subparsers", "build_parser"]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]

#: Functions that add top-level subcommands to the parser (see the package docstring).
EXTRA_COMMANDS: list[Callable[[Subparsers], None]] = []
#: Modules imported when the parser is built, if importable, whose ``register_cli(subparsers)``
#: adds their subcommands (for commands shipped by an optional module).
PLUGIN_MODULES: list[str] = []


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and never end the process itself."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("keyguard").strip()
        where = f"{command}: " if command else ""
        # argparse quotes arguments in its messages ("unrecognized arguments: …"): redact here
        # too, behind the check that refuses keys on the command line before parsing.
        raise UsageError(redact(f"{where}{message} (see '{self.prog} --help')"))


def _version() -> str:
    try:
        return version("keyguard")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full ``keyguard`` argument parser, extensions included."""
    parser = Parser(
        prog="keyguard",
        description="Manage keyguard API keys.",
        epilog=f"The store defaults to ${STORE_URL_ENV}, else {DEFAULT_STORE_URL}; create it "
        "once with 'keyguard init'. Keys are never taken from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--store", metavar="URL", help="sqlite:///path/keys.db (see epilog; memory:// is refused)"
    )
    parser.add_argument(
        "--prefix", help=f"key prefix (default ${PREFIX_ENV}, else {DEFAULT_PREFIX!r})"
    )
    parser.add_argument(
        "--actor", help=f"who to record in the audit log (default ${ACTOR_ENV}, else cli:<user>)"
    )
    parser.add_argument(
        "--url",
        dest="api_url",
        metavar="URL",
        help=f"work against a management API instead of a store (default ${API_URL_ENV}); "
        f"the acting key is read from ${API_KEY_ENV}",
    )
    # Subcommands are Parser instances too (argparse uses the parent's class), so their usage
    # errors are one line as well.
    sub = cast(Subparsers, parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    init.register(sub)
    keys.register(sub)
    reports.register(sub)
    demo.register(sub)
    doctor.register(sub)
    scan.register(sub)
    review.register(sub)
    notify.register(sub)
    usage.register(sub)
    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # optional extra not installed
        module.register_cli(sub)
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser
