"""One Django settings configuration for every Django and DRF test module.

Django settings are process-global and can be configured once, so every test module calls
:func:`configure` (idempotent) and varies settings with ``override_settings`` only; test order
then does not matter. Each test module points ``ROOT_URLCONF`` at itself.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": "keyguard-tests-not-a-secret",
    "ALLOWED_HOSTS": ["testserver"],
    "ROOT_URLCONF": __name__,
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "USE_TZ": True,
    "MIDDLEWARE": [],
    # Never the SQLite default: it would create ./keyguard.db.
    "KEYGUARD": {"STORE_URL": "memory://"},
    "REST_FRAMEWORK": {
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "EXCEPTION_HANDLER": "keyguard.adapters.drf.exception_handler",
        "UNAUTHENTICATED_USER": None,
    },
}

urlpatterns: list[Any] = []


def configure() -> None:
    """Configure Django for the tests, once per process."""
    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()
