"""One clear error when an adapter's framework is not installed.

Each framework adapter calls :func:`require_extra` before importing its framework, so that
``import keyguard.adapters.django`` without Django says which extra to install in one line,
instead of failing deep inside an import chain (``No module named 'asgiref'``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["require_extra"]


def require_extra(adapter: str, extra: str, *modules: str) -> None:
    """Raise :class:`ModuleNotFoundError` naming ``keyguard[extra]`` unless every top-level
    module in ``modules`` can be imported."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            error = ModuleNotFoundError(
                f"{adapter} needs {module!r}, which is not installed: "
                f"pip install 'keyguard[{extra}]'"
            )
            error.name = module
            raise error
