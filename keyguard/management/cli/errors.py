"""What the CLI says when something is wrong: one ``keyguard: error: …`` line, never a key.

Every error the CLI prints goes through :func:`report`, which flattens the message onto one
line and replaces anything shaped like an API key with ``<redacted>`` — a last line of defence
behind :mod:`keyguard.management.cli.argv`, which refuses a key on the command line before
argparse (whose messages quote arguments) ever sees it.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Final

from keyguard.core.errors import KeyguardError

__all__ = ["KEY_LIKE", "UsageError", "redact", "report"]

#: Anything shaped like a keyguard key: a prefix, ``_``, a 12-character key id, ``_``, and at
#: least 16 secret characters (a real key has 38 or more; 16 already carry ~95 bits, so a
#: truncated key is still worth hiding). Any prefix, any case: a key of another deployment, or
#: one mangled by a shell, is as secret as ours. Not anchored: it is found inside
#: ``--name=kg_…`` or ``"UserKey kg_…"`` too.
KEY_LIKE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}_[0-9A-Za-z]{12}_[0-9A-Za-z]{16,}")


class UsageError(KeyguardError):
    """The command line itself is wrong (exit status 2)."""


def redact(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``<redacted>``."""
    return KEY_LIKE.sub("<redacted>", text)


def report(message: str) -> None:
    """Print ``keyguard: error: <message>`` as one line on stderr."""
    one_line = " ".join(redact(str(message)).split())
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(f"keyguard: error: {one_line}\n")
        sys.stderr.flush()
