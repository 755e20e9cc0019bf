"""The rate-limit backend's settings: environment variables, explicit overrides, and errors
that name the variable at fault (never the URL, which may hold a password)."""

from __future__ import annotations

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.settings import ENV, LimiterSettings


def test_defaults_without_environment() -> None:
    s = LimiterSettings.from_env({})
    assert s == LimiterSettings()
    assert (s.url, s.mode, s.timeout, s.budget, s.failures, s.cooldown) == (
        None,
        "local",
        0.1,
        0.5,
        3,
        5.0,
    )


def test_every_setting_comes_from_its_variable() -> None:
    env = {
        "KEYGUARD_RATELIMIT_URL": "redis://127.0.0.1:6379/0?prefix=kg",
        "KEYGUARD_RATELIMIT_MODE": "DENY",
        "KEYGUARD_RATELIMIT_TIMEOUT": "0.25",
        "KEYGUARD_RATELIMIT_BUDGET": "2",
        "KEYGUARD_RATELIMIT_FAILURES": "5",
        "KEYGUARD_RATELIMIT_COOLDOWN": "30",
    }
    s = LimiterSettings.from_env(env)
    assert s == LimiterSettings("redis://127.0.0.1:6379/0?prefix=kg", "deny", 0.25, 2.0, 5, 30.0)
    # And back, as worker processes read them.
    assert LimiterSettings.from_env(s.environ()) == s


def test_explicit_options_win_over_the_environment() -> None:
    env = {"KEYGUARD_RATELIMIT_MODE": "deny", "KEYGUARD_RATELIMIT_BUDGET": "2"}
    s = LimiterSettings.from_env(env, mode="allow", budget=None)
    assert (s.mode, s.budget) == ("allow", 2.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("KEYGUARD_RATELIMIT_MODE", "sometimes", id="mode"),
        pytest.param("KEYGUARD_RATELIMIT_TIMEOUT", "fast", id="timeout-text"),
        pytest.param("KEYGUARD_RATELIMIT_TIMEOUT", "0", id="timeout-zero"),
        pytest.param("KEYGUARD_RATELIMIT_BUDGET", "-1", id="budget-negative"),
        pytest.param("KEYGUARD_RATELIMIT_BUDGET", "0.05", id="budget-below-timeout"),
        pytest.param("KEYGUARD_RATELIMIT_FAILURES", "2.5", id="failures-fraction"),
        pytest.param("KEYGUARD_RATELIMIT_FAILURES", "0", id="failures-zero"),
        pytest.param("KEYGUARD_RATELIMIT_COOLDOWN", "nan", id="cooldown-nan"),
        pytest.param("KEYGUARD_RATELIMIT_URL", "localhost:6379", id="url-not-a-url"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LimiterSettings.from_env({variable: value})
    assert variable in str(info.value)


def test_unknown_overrides_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        LimiterSettings.from_env({}, modes="deny")


def test_the_password_never_shows() -> None:
    s = LimiterSettings.from_env({ENV["url"]: "redis://user:s3cret@redis.internal:6379/0"})
    assert "s3cret" not in repr(s)
    assert "redis.internal" in repr(s)
    with pytest.raises(ConfigurationError) as info:
        LimiterSettings.from_env({ENV["url"]: "s3cret", ENV["mode"]: "deny"})
    assert "s3cret" not in str(info.value)


def test_command_line_options_default_to_the_environment() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    LimiterSettings.add_arguments(parser)
    env = {"KEYGUARD_RATELIMIT_MODE": "deny", "KEYGUARD_RATELIMIT_COOLDOWN": "9"}
    args = parser.parse_args(["--ratelimit-url", "redis://h/0", "--ratelimit-budget", "2"])
    assert LimiterSettings.from_args(args, env) == LimiterSettings(
        "redis://h/0", "deny", budget=2.0, cooldown=9.0
    )
    args = parser.parse_args(["--ratelimit-mode", "ALLOW", "--ratelimit-failures", "4"])
    assert LimiterSettings.from_args(args, env) == LimiterSettings(
        mode="allow", failures=4, cooldown=9.0
    )
    for bad in (["--ratelimit-mode", "maybe"], ["--ratelimit-timeout", "soon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
