"""A key-management dashboard in the browser, mountable in any ASGI or WSGI application.

::

    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

    dashboard = Dashboard(ManagementAPI(manager, verifier=verifier))   # at /keyguard
    app.mount("/keyguard", dashboard.asgi_app())   # or an adapter's mount_dashboard(...)

Operators sign in with a key holding ``admin`` or the management scope; the dashboard keeps a
signed session naming the key, never the key (:mod:`.sessions`), re-checks the key on every
request, and changes keys only through the management API's operations under its authority
rule (:mod:`.operator`). Server-rendered with Jinja2 (the ``dashboard`` extra), one style
sheet and one small script shipped in the package, nothing from the network.

By job: :mod:`.app` (routing, CSRF), :mod:`.gate` (the session check), :mod:`.sessions`
(tokens), :mod:`.signin`, :mod:`.pages` (keys), :mod:`.actions` (forms that change keys),
:mod:`.views` (usage, activity), :mod:`.usage` (the usage protocol, an in-memory source),
:mod:`.store_usage` (the usage counters in the store, the default source),
:mod:`.charts` (SVG geometry), :mod:`.http` (requests, cookies, security headers),
:mod:`.render` and the skins :mod:`.skins`.
"""

from __future__ import annotations

from keyguard.dashboard.app import DEFAULT_PREFIX, Dashboard
from keyguard.dashboard.sessions import SECRET_ENV, SECRET_FILE_ENV
from keyguard.dashboard.store_usage import ManagerUsage
from keyguard.dashboard.usage import (
    STATUS_CLASSES,
    DayUsage,
    MemoryUsage,
    UsageRecorder,
    UsageRecorderWSGI,
    UsageSource,
)

__all__ = [
    "DEFAULT_PREFIX",
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "STATUS_CLASSES",
    "Dashboard",
    "DayUsage",
    "ManagerUsage",
    "MemoryUsage",
    "UsageRecorder",
    "UsageRecorderWSGI",
    "UsageSource",
]
