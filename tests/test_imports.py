"""``import keyguard`` must load no web framework and no database driver."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = {"starlette", "fastapi", "flask", "werkzeug", "django", "rest_framework", "redis"}


def test_import_keyguard_loads_no_framework_or_driver() -> None:
    code = (
        "import sys, keyguard, keyguard.stores, keyguard.core.verifier;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_public_api_is_resolvable() -> None:
    # Its order is kept by ruff (RUF022).
    import keyguard

    assert len(set(keyguard.__all__)) == len(keyguard.__all__)
    for name in keyguard.__all__:
        assert hasattr(keyguard, name), name
