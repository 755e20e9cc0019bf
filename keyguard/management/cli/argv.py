"""The command line before argparse reads it: refuse keys, and let values start with ``-``.

A key given as an argument lands in shell history, ``ps`` output and CI logs, and argparse
would quote it back in an error ("unrecognized arguments: kg_…"). :func:`refuse_keys` therefore
looks at every argument — options, values, ``--name=…`` forms, anything after ``--`` — before
argparse does, and refuses the whole command with a fixed message that never contains it.

argparse also reads a value such as ``-5d`` as an option, so ``--expires-in -5d`` failed with
"expected one argument" instead of "a duration cannot be negative".
:func:`join_negative_values` rewrites ``--opt -5d`` as ``--opt=-5d`` for options that take a
value, so the value's own parser gives the real reason.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from typing import Final

from keyguard.management.cli.errors import KEY_LIKE, UsageError

__all__ = ["KEY_ON_COMMAND_LINE", "join_negative_values", "refuse_keys", "value_options"]

#: The fixed refusal: it names no argument, so it cannot leak one.
KEY_ON_COMMAND_LINE: Final = (
    "an argument looks like an API key; keyguard never takes a key on the command line "
    "(shell history, ps and CI logs would keep it): pipe it in, as in "
    "printf '%s\\n' \"$KEY\" | keyguard keys verify, or pass --env VAR. "
    "If that was a real key, consider it exposed and rotate it"
)

# A value that argparse would take for an option: a dash, then a digit ("-5d", "-1h", "-3").
_NEGATIVE_VALUE_RE: Final = re.compile(r"-[0-9]")


def refuse_keys(argv: Iterable[str]) -> None:
    """Raise :class:`UsageError` (with a message that quotes nothing) if any argument holds
    something shaped like an API key."""
    if any(KEY_LIKE.search(arg) for arg in argv):
        raise UsageError(KEY_ON_COMMAND_LINE)


def value_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The long options of ``parser`` and all its subcommands that take one value."""
    found: set[str] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.nargs is None:  # exactly one value (flags have nargs=0)
                found.update(s for s in action.option_strings if s.startswith("--"))
    return frozenset(found)


def join_negative_values(argv: Sequence[str], options: frozenset[str]) -> list[str]:
    """``argv`` with ``--opt -5d`` written as ``--opt=-5d`` wherever ``--opt`` takes a value.

    Nothing after ``--`` is touched.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg in options and following is not None and _NEGATIVE_VALUE_RE.match(following):
            out.append(f"{arg}={following}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out
