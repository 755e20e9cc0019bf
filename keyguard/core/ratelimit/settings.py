"""Where the rate-limit counts live and what happens when that place fails, as plain settings:
read from ``KEYGUARD_RATELIMIT_*`` environment variables, overridden by explicit options, and
checked once, at start-up, with errors that name the variable at fault.

- ``KEYGUARD_RATELIMIT_URL``: ``redis://host:6379/0?prefix=kg`` (also ``rediss://``,
  ``unix://``) shares the counts between every process; unset or ``memory://``: in-process.
- ``KEYGUARD_RATELIMIT_MODE`` (``local``): what a Redis outage admits, ``local``, ``allow``
  or ``deny`` (see :class:`~keyguard.core.ratelimit.ResilientLimiter`).
- ``KEYGUARD_RATELIMIT_TIMEOUT`` (``0.1``): seconds one Redis call may take before it is
  retried (a late reply is never counted twice).
- ``KEYGUARD_RATELIMIT_BUDGET`` (``0.5``): seconds one decision may take, retry included,
  before the mode decides it.
- ``KEYGUARD_RATELIMIT_FAILURES`` (``3``): consecutive failures that open the breaker (a
  refused connection opens it at once).
- ``KEYGUARD_RATELIMIT_COOLDOWN`` (``5``): seconds the open breaker skips Redis before one
  request probes it again.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final, cast

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.resilient import MODES, Mode

#: Default seconds a single Redis call may take before it counts as slow.
DEFAULT_TIMEOUT: Final = 0.1
#: Default seconds one decision may take in all, retry included.
DEFAULT_BUDGET: Final = 0.5

#: Setting name → environment variable.
ENV: Final = {
    "url": "KEYGUARD_RATELIMIT_URL",
    "mode": "KEYGUARD_RATELIMIT_MODE",
    "timeout": "KEYGUARD_RATELIMIT_TIMEOUT",
    "budget": "KEYGUARD_RATELIMIT_BUDGET",
    "failures": "KEYGUARD_RATELIMIT_FAILURES",
    "cooldown": "KEYGUARD_RATELIMIT_COOLDOWN",
}


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """The rate-limit backend a deployment asks for (see the module docstring's table).

    ``url`` None means the in-process limiter; the other fields then change nothing. Build
    one with :meth:`from_env`; :func:`keyguard.stores.ratelimit_url.limiter_from_settings`
    turns it into a limiter. The repr hides the URL's password.
    """

    url: str | None = None
    mode: Mode = "local"
    timeout: float = DEFAULT_TIMEOUT
    budget: float = DEFAULT_BUDGET
    failures: int = 3
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        url = self.url
        if url is not None and (not isinstance(url, str) or "://" not in url):
            raise ConfigurationError(
                f"{ENV['url']} must be a URL such as redis://host:6379/0 or memory://"
            )
        if self.mode not in MODES:
            raise ConfigurationError(
                f"{ENV['mode']} must be 'local', 'allow' or 'deny', got {self.mode!r}"
            )
        for name in ("timeout", "budget", "cooldown"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(
                    f"{ENV[name]} must be a number of seconds > 0, got {value!r}"
                )
        if self.budget < self.timeout:
            raise ConfigurationError(
                f"{ENV['budget']} ({self.budget:g}s) must be at least "
                f"{ENV['timeout']} ({self.timeout:g}s)"
            )
        failures = self.failures
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ConfigurationError(f"{ENV['failures']} must be an integer >= 1, got {failures!r}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> LimiterSettings:
        """Settings from ``environ`` (default ``os.environ``); an override that is not None
        wins over its variable. Raises :class:`ConfigurationError` naming the bad variable."""
        env = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigurationError(f"unknown rate-limit settings {unknown}")
        values: dict[str, object] = {}
        for name in names:
            given = overrides.get(name)
            if given is not None:
                values[name] = given
                continue
            raw = env.get(ENV[name], "").strip()
            if raw:
                values[name] = _parse(name, raw)
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add ``--ratelimit-url``, ``--ratelimit-mode``, ``--ratelimit-timeout``,
        ``--ratelimit-budget``, ``--ratelimit-failures`` and ``--ratelimit-cooldown`` to a
        command; each defaults to its variable. Read them back with :meth:`from_args`."""
        group = parser.add_argument_group(
            "rate limits",
            "where counts live and what a Redis outage admits; each option defaults to its "
            "KEYGUARD_RATELIMIT_* environment variable",
        )
        group.add_argument(
            "--ratelimit-url",
            metavar="URL",
            help="redis://host:6379/0 to share counts between processes (default: in-process)",
        )
        group.add_argument(
            "--ratelimit-mode",
            type=str.lower,
            choices=MODES,
            help="while Redis is out: count per process (local, the default), admit all "
            "(allow), or answer 503 (deny)",
        )
        for name, default, what in (
            ("timeout", DEFAULT_TIMEOUT, "one Redis call's timeout before it is retried"),
            ("budget", DEFAULT_BUDGET, "one decision's time, retry included"),
            ("cooldown", 5, "how long an open breaker skips Redis"),
        ):
            group.add_argument(
                f"--ratelimit-{name}",
                type=_seconds_arg,
                metavar="SECONDS",
                help=f"{what} (default {default:g})",
            )
        group.add_argument(
            "--ratelimit-failures",
            type=int,
            metavar="N",
            help="consecutive failures that open the breaker (default 3)",
        )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> LimiterSettings:
        """The settings of :meth:`add_arguments`' options, each defaulting to its variable."""
        return cls.from_env(
            environ, **{f.name: getattr(args, f"ratelimit_{f.name}", None) for f in fields(cls)}
        )

    def environ(self) -> dict[str, str]:
        """These settings as environment variables (for worker processes to read back)."""
        out = {ENV[f.name]: str(getattr(self, f.name)) for f in fields(self) if f.name != "url"}
        if self.url is not None:
            out[ENV["url"]] = self.url
        return out

    def __repr__(self) -> str:
        shown = None if self.url is None else _redact(self.url)
        return (
            f"LimiterSettings(url={shown!r}, mode={self.mode!r}, timeout={self.timeout:g}, "
            f"budget={self.budget:g}, failures={self.failures}, cooldown={self.cooldown:g})"
        )


def _parse(name: str, raw: str) -> object:
    if name in ("url", "mode"):
        return raw if name == "url" else cast(Mode, raw.lower())
    try:
        return int(raw) if name == "failures" else float(raw)
    except ValueError:
        kind = "an integer" if name == "failures" else "a number of seconds"
        raise ConfigurationError(f"{ENV[name]} must be {kind}, got {raw!r}") from None


def _seconds_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
