"""``keyguard``'s entry point: read the command line safely, run the command, map errors to
exit statuses (0 ok, 1 refused or failed, 2 usage, 130 interrupted) — never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Final

from keyguard.core.errors import KeyguardError
from keyguard.management.cli.argv import join_negative_values, refuse_keys, value_options
from keyguard.management.cli.errors import UsageError, report
from keyguard.management.cli.parser import Handler, build_parser

__all__ = ["DEBUG_ENV", "main"]

DEBUG_ENV: Final = "KEYGUARD_DEBUG"


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
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        # Before argparse, which would quote a key back in its error messages.
        refuse_keys(arguments)
        parser = build_parser()
        try:
            args = parser.parse_args(join_negative_values(arguments, value_options(parser)))
        except SystemExit as exc:  # --help and --version (usage errors raise UsageError)
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
        report(str(exc))
        return 2
    except KeyguardError as exc:
        report(str(exc))
        return 1
    except OSError as exc:
        report(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        report(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback)")
        return 1
