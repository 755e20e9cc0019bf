"""The ``keyguard`` command line: create a key store, and manage API keys in it from a shell.

Every command is a thin skin over :class:`~keyguard.management.manager.KeyManager`, so the
CLI enforces exactly the rules the library does. Output is a readable table by default and
JSON with ``--json``. A key's plaintext is printed once, by ``keys create`` and
``keys rotate``, and nowhere else; a key is never accepted on the command line (where it would
land in shell history, ``ps`` and CI logs): ``keys verify`` reads it from stdin or an
environment variable. Only ``keyguard init`` (and the demo's first run) creates a store, and
read-only commands never write to one. Errors end with one ``keyguard: error: ...`` line on
stderr and a non-zero exit status (2 for usage, 1 for a refused or failed operation), never a
traceback.

The package, by job:

* :mod:`.entry` — :func:`main`: reads the command line safely, runs a command, maps errors to
  exit statuses;
* :mod:`.argv` — what happens to the command line before argparse sees it (keys refused,
  ``--expires-in -5d`` read as a value);
* :mod:`.parser` — the argument parser (usage errors as one line) and the extension points;
* :mod:`.context` — which store, prefix and actor, and opening a store safely (or, with
  ``--url``, the remote management API: :mod:`.remote`, acting with ``$KEYGUARD_API_KEY``);
* :mod:`.values`, :mod:`.output`, :mod:`.errors` — option values, printing, error lines;
* :mod:`.init`, :mod:`.keys`, :mod:`.reports`, :mod:`.demo` — the commands.

Adding a subcommand: write ``register(subparsers)`` that calls ``subparsers.add_parser(...)``
and ``set_defaults(handler=...)`` (a ``handler(args) -> int``; :func:`open_manager` gives it
a manager for the chosen store, ``write=False`` for commands that only read), then append
``register`` to :data:`EXTRA_COMMANDS` or list its module in :data:`PLUGIN_MODULES`.
"""

from __future__ import annotations

from keyguard.management.cli.context import open_manager
from keyguard.management.cli.entry import main
from keyguard.management.cli.errors import UsageError
from keyguard.management.cli.output import SHOWN_ONCE
from keyguard.management.cli.parser import EXTRA_COMMANDS, PLUGIN_MODULES, build_parser
from keyguard.management.cli.values import parse_duration, parse_time

__all__ = [
    "EXTRA_COMMANDS",
    "PLUGIN_MODULES",
    "SHOWN_ONCE",
    "UsageError",
    "build_parser",
    "main",
    "open_manager",
    "parse_duration",
    "parse_time",
]
