"""Settings of a minimal Django project protected by keyguard (no database needed).

Needs: pip install ".[django]"   (from the repository root)
Run:   python examples/django_project/manage.py runserver

Plain Django views are guarded by :class:`keyguard.adapters.django.KeyGuardMiddleware` and the
route policy below; the DRF views under ``/api/`` additionally use keyguard's DRF
authentication and scope permission (they reuse the principal the middleware verified).

Run it against a real store (the default, ``memory://``, lives and dies with the process)::

    KEYGUARD_STORE_URL=sqlite:///./keys.db python examples/django_project/manage.py runserver
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "keyguard-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

ROOT_URLCONF = "examples.django_project.urls"
WSGI_APPLICATION = "examples.django_project.wsgi.application"
INSTALLED_APPS: list[str] = []  # DRF works without django.contrib.auth: see REST_FRAMEWORK
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

MIDDLEWARE = ["keyguard.adapters.django.KeyGuardMiddleware"]

KEYGUARD = {
    "STORE_URL": os.environ.get("KEYGUARD_STORE_URL", "memory://"),
    "POLICY": {
        "GET /agents": "agents:read",
        "POST /agents": "agents:write",
        "GET /tasks": "tasks:read",
        "POST /tasks/{task_id}/execute": "tasks:execute",
        "GET /api/agents": "agents:read",
        "POST /api/agents": "agents:write",
        "POST /api/tasks/{task_id}/execute": "tasks:execute",
    },
    "PUBLIC": ["/health"],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["keyguard.adapters.drf.KeyGuardAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["keyguard.adapters.drf.HasScopes"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "keyguard.adapters.drf.exception_handler",
    # No django.contrib.auth: anonymous requests get request.user = None.
    "UNAUTHENTICATED_USER": None,
}
