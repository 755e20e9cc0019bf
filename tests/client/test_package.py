"""``keyguard.client`` imports no HTTP library; a missing one is one line naming the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_package_imports_neither_httpx_nor_requests() -> None:
    result = run(
        "import sys, keyguard.client, keyguard.client.errors, keyguard.client.retry;"
        "print(sorted(m for m in ('httpx', 'requests') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_a_missing_http_library_names_the_extra(library: str) -> None:
    result = run(
        f"import sys; sys.modules[{library!r}] = None\n"
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda n, *a: None if n == {library!r} else real(n, *a)\n"
        "try:\n"
        f"    import keyguard.client.{library}\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "pip install 'keyguard[client]'" in message
    assert "\n" not in message
