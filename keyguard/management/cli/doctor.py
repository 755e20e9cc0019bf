"""``keyguard doctor``: say exactly why a key would be refused — without ever printing it.

The key is read from stdin (without echo on a terminal), ``--env VAR`` or ``--file PATH``,
never from the command line. Checked first, offline, whatever else is asked: its format, part
by part (:func:`keyguard.client.keycheck.check_key`). Then either

* **against the key store** (the default; read-only, nothing is written): this deployment's
  prefix, whether the key id exists, whether the secret matches — the current one, the previous
  one inside its rotation grace, or a previous one whose grace ended ("rotated out", when) —
  then the key's status (revoked: when and why; expired: when; suspended…: see
  :data:`STATUS_EXPLAINERS`), its allowed networks if the record has them, the scope a route
  needs (``--method``/``--path``, with the deployment's route policy from ``--policy
  module:attr``), and, when the rate-limit counts live in Redis (``KEYGUARD_RATELIMIT_URL``),
  whether it is rate-limited and until when; or
* **against the service** (``--url``): one request with the key, and the problem+json answer
  explained (:func:`keyguard.client.diagnosis.probe`).

Exit status 0 when the key would be accepted, 1 when it would be refused, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keyguard.client.diagnosis import Diagnosis, Finding, probe, refused
from keyguard.client.keycheck import check_key, parse_any_prefix
from keyguard.core.errors import KeyguardError
from keyguard.core.policy import RoutePolicy
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_manager
from keyguard.management.cli.diagnose import RATELIMIT_URL_ENV, Question, diagnose
from keyguard.management.cli.errors import UsageError
from keyguard.management.manager import KeyManager

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["load_policy", "register"]


# -- the command ------------------------------------------------------------------------------
def _read_key(args: argparse.Namespace) -> str:
    if args.env:
        value = os.environ.get(args.env)
        if not value or not value.strip():
            raise UsageError(f"doctor: environment variable {args.env} is not set or is empty")
        return value.strip()
    if args.file:
        try:
            with open(args.file, "rb") as fh:
                data = fh.read(4097)
        except OSError as exc:
            raise UsageError(f"doctor: cannot read {args.file}: {exc.strerror or exc}") from None
        if len(data) > 4096:
            raise UsageError(f"doctor: {args.file} is too large to hold just a key")
        return data.decode("utf-8", "replace").strip()
    stdin = sys.stdin
    if stdin is None:
        raise UsageError("doctor: no key given: pipe it on stdin, or use --env VAR or --file PATH")
    key = (getpass.getpass("API key: ") if stdin.isatty() else stdin.readline()).strip()
    if not key:
        raise UsageError(
            "doctor: no key on standard input: pipe one in, as in "
            "printf '%s\\n' \"$KEY\" | keyguard doctor, or use --env VAR or --file PATH"
        )
    return key


def load_policy(spec: str) -> RoutePolicy:
    """``module:attr`` → a RoutePolicy (the attribute may be one, a mapping of rules, or a
    callable returning either)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"doctor: --policy wants module:attr, e.g. myapp.auth:policy; got {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the app's own modules
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise KeyguardError(f"doctor: cannot load the policy {spec!r}: {exc}") from None
    if callable(found) and not isinstance(found, RoutePolicy):
        found = found()
    if isinstance(found, Mapping):
        found = RoutePolicy(found)
    if not isinstance(found, RoutePolicy):
        raise KeyguardError(f"doctor: {spec!r} is a {type(found).__name__}, not a RoutePolicy")
    return found


def _limiter(url: str | None) -> Any:
    if not url:
        return None
    from keyguard.stores.redis_ratelimit import RedisRateLimiter

    return RedisRateLimiter.from_url(url, socket_timeout=2.0)


def _print(diagnosis: Diagnosis, args: argparse.Namespace) -> None:
    if args.json:
        out.emit_json(diagnosis.to_dict())
        return
    verdict = "accepted" if diagnosis.accepted else f"refused: {diagnosis.code or diagnosis.reason}"
    lines = [("verdict", verdict)]
    if diagnosis.key_id:
        lines.insert(0, ("key id", diagnosis.key_id))
    lines.append(("why" if not diagnosis.accepted else "detail", diagnosis.message))
    if diagnosis.advice:
        lines.append(("to do", diagnosis.advice))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        out.emit(f"{label.ljust(width)}  {value}")
    if diagnosis.findings:
        out.emit()
        out.emit("checks:")
        for f in diagnosis.findings:
            out.emit(f"  {'ok ' if f.ok else 'NO '} {f.check:<10} {f.message}")


def _doctor(args: argparse.Namespace) -> int:
    if args.url and not args.path:
        raise UsageError("doctor: --url needs --path (the route to try, e.g. --path /agents)")
    method = (args.method or "GET").upper()
    path = args.path
    if path is not None and not path.startswith("/"):
        raise UsageError(f"doctor: --path must start with '/', got {path!r}")
    key = _read_key(args)
    now = out.now()
    if args.url:
        findings: list[Finding] = []
        problem = check_key(key)
        if problem is not None:
            diagnosis = refused(
                "format",
                f"the key is malformed ({problem}); nothing was sent",
                findings,
                part=problem.part,
            )
        else:
            parsed = parse_any_prefix(key)
            findings.append(Finding("format", True, "well formed, checksum correct"))
            diagnosis = probe(
                args.url,
                method,
                path,
                key,
                key_id=parsed.key_id if parsed else None,
                timeout=args.timeout,
                findings=findings,
                now=now,
            )
    else:
        policy = load_policy(args.policy) if args.policy else None
        limiter = _limiter(args.ratelimit_url or os.environ.get(RATELIMIT_URL_ENV))
        try:
            with open_manager(args, write=False) as manager:
                assert isinstance(manager, KeyManager)  # doctor reads a local store (not remote)
                ask = Question(method, path, policy, args.client_address, limiter)
                diagnosis = diagnose(key, manager, now=now, ask=ask)
        finally:
            if limiter is not None:
                limiter.close()  # its connections (in-process callers run doctor repeatedly)
    del key
    _print(diagnosis, args)
    return 0 if diagnosis.accepted else 1


def register(sub: Subparsers) -> None:
    """Add ``keyguard doctor``."""
    p = out.add_json(
        sub.add_parser(
            "doctor",
            help="explain why a key (from stdin, --env or --file) would be refused",
            description="Say exactly why a key would be refused: format (and which part), "
            "prefix, unknown id, wrong or rotated-out secret, revoked, expired, missing scope "
            "for a route, network, rate limit. Reads the key store (never writes), or asks the "
            "service with --url. The key is read from stdin, --env or --file, never from the "
            "command line, and never printed.",
        )
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--env", metavar="VAR", help="read the key from this variable")
    source.add_argument("--file", metavar="PATH", help="read the key from this file")
    p.add_argument("--method", help="the request's method (default GET)")
    p.add_argument("--path", help="the route to check, e.g. /agents")
    p.add_argument("--policy", metavar="MODULE:ATTR", help="the deployment's RoutePolicy")
    p.add_argument("--url", metavar="BASE_URL", help="ask the running service instead")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds, with --url")
    p.add_argument(
        "--client-address", metavar="IP", help="check the key's allowed networks for this"
    )
    p.add_argument(
        "--ratelimit-url",
        metavar="URL",
        help=f"the Redis the rate limits live in (default ${RATELIMIT_URL_ENV})",
    )
    p.set_defaults(handler=_doctor)
