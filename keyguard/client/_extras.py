"""One line naming the extra to install when a client skin's HTTP library is missing."""

from __future__ import annotations

import importlib.util


def require_extra(skin: str, module: str) -> None:
    """Raise :class:`ModuleNotFoundError` naming ``keyguard[client]`` unless ``module`` can be
    imported."""
    if importlib.util.find_spec(module) is None:
        error = ModuleNotFoundError(
            f"{skin} needs {module!r}, which is not installed: pip install 'keyguard[client]'"
        )
        error.name = module
        raise error
