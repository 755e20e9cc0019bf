"""Views of the example project: plain Django views (guarded by the middleware's policy) and
DRF views (keyguard's authentication class and scope permission on top)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keyguard.adapters.drf import HasScopes, KeyGuardAuthentication

AGENTS: list[dict[str, Any]] = [{"id": "agt_1", "name": "triage"}]
TASKS: list[dict[str, Any]] = []


def _key_id(request: HttpRequest) -> str | None:
    principal = getattr(request, "keyguard_principal", None)
    return principal.key_id if principal is not None else None


async def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_http_methods(["GET", "POST"])
def agents(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        body = json.loads(request.body or b"{}")
        agent = {"id": f"agt_{len(AGENTS) + 1}", "name": str(body.get("name", "unnamed"))}
        AGENTS.append(agent)
        return JsonResponse({"agent": agent, "key_id": _key_id(request)}, status=201)
    return JsonResponse({"agents": AGENTS, "key_id": _key_id(request)})


@require_http_methods(["GET"])
async def tasks(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"tasks": TASKS, "key_id": _key_id(request)})


@require_http_methods(["POST"])
def execute_task(request: HttpRequest, task_id: str) -> JsonResponse:
    task = {"id": task_id, "status": "queued", "by": _key_id(request)}
    TASKS.append(task)
    return JsonResponse({"task": task, "key_id": _key_id(request)}, status=202)


class AgentList(APIView):
    """DRF: scopes per method, enforced by HasScopes.

    (The classes are also REST_FRAMEWORK's defaults in settings.py; naming them here keeps the
    view correct whatever the defaults were when DRF was first imported.)
    """

    authentication_classes = [KeyGuardAuthentication]
    permission_classes = [HasScopes]
    required_scopes = {"GET": "agents:read", "POST": "agents:write"}

    def get(self, request: Request) -> Response:
        return Response({"agents": AGENTS, "key_id": request.auth.key_id})

    def post(self, request: Request) -> Response:
        agent = {"id": f"agt_{len(AGENTS) + 1}", "name": str(request.data.get("name", "unnamed"))}
        AGENTS.append(agent)
        return Response({"agent": agent, "key_id": request.auth.key_id}, status=201)


class ExecuteTask(APIView):
    """DRF: one requirement for the whole view."""

    authentication_classes = [KeyGuardAuthentication]
    permission_classes = [HasScopes.require("tasks:execute")]

    def post(self, request: Request, task_id: str) -> Response:
        task = {"id": task_id, "status": "queued", "by": request.auth.key_id}
        TASKS.append(task)
        return Response({"task": task, "key_id": request.auth.key_id}, status=202)
