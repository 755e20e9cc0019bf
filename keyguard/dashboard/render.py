"""Templates and static files of the dashboard, shipped inside the package.

Jinja2 renders the pages (``templates/``) with autoescaping on and undefined names as errors;
``static/`` holds the one style sheet and the one small script, served by the dashboard itself
(nothing is loaded from the network, nothing is built). Times are shown in UTC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

try:
    import jinja2
except ImportError as exc:  # pragma: no cover - exercised by the packaging test
    raise ImportError("keyguard.dashboard needs Jinja2: pip install 'keyguard[dashboard]'") from exc

__all__ = ["Renderer", "StaticFile", "ago", "shown", "when"]

_STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def when(ts: float | None) -> str:
    """``2030-01-31 12:00 UTC`` (``—`` for none)."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(ts: float | None, now: float) -> str:
    """``3 days ago``, ``in 5 hours``, ``never``."""
    if ts is None:
        return "never"
    delta = ts - now
    seconds = abs(delta)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            break
    else:
        return "just now"
    return f"in {text}" if delta > 0 else f"{text} ago"


def shown(value: object) -> str:
    """An audit detail for people: ``—`` for none, lists joined, the rest as text."""
    if value is None or value == []:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


class Renderer:
    """The template environment and the static files, loaded once."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("keyguard.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = when
        self.env.filters["shown"] = shown
        self.static: dict[str, StaticFile] = {}
        root = resources.files("keyguard.dashboard").joinpath("static")
        for entry in root.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in _STATIC_TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                self.static[entry.name] = StaticFile(body, _STATIC_TYPES[suffix], etag)

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
