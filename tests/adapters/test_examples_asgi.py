"""The FastAPI and Starlette examples import, serve, and enforce the platform's scopes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from examples import fastapi_app, starlette_app
from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from tests.adapters.cases import World, make_world
from tests.adapters.test_starlette import httpx_send
from tests.keyfactory import KeyFactory


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(scope="module")
def executor(world: World) -> str:
    return "UserKey " + KeyFactory(world.store).issue("tasks:read", "tasks:execute").plaintext


def fastapi_example(world: World) -> Any:
    return fastapi_app.create_app(Verifier(world.store, hasher=Hasher(pepper_from_env=False)))


def starlette_example(world: World) -> Any:
    verifier = Verifier(
        world.store, policy=starlette_app.POLICY, hasher=Hasher(pepper_from_env=False)
    )
    return starlette_app.create_app(verifier)


EXAMPLES = [
    pytest.param(fastapi_example, id="fastapi"),
    pytest.param(starlette_example, id="starlette"),
]


@pytest.mark.parametrize("module", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
def test_module_level_app_serves(module: Any) -> None:
    send = httpx_send(module.app)  # memory:// store from the environment's default
    assert send("GET", "/health", []).status == 200
    missing = send("GET", "/agents", [])
    assert missing.status == 401
    assert json.loads(missing.body)["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"].startswith("UserKey ")


@pytest.mark.parametrize("build", EXAMPLES)
def test_routes_and_scopes(build: Any, world: World, executor: str) -> None:
    send = httpx_send(build(world))
    assert send("GET", "/health", []).status == 200
    assert send("GET", "/agents", []).status == 401
    reader = [("Authorization", world.header("reader"))]
    assert send("GET", "/agents", reader).status == 200
    assert send("GET", "/agents", [("Authorization", world.header("wildcard"))]).status == 200
    assert send("POST", "/agents", [("Authorization", world.header("writer"))]).status == 201
    assert send("POST", "/agents", reader).status == 403
    assert send("GET", "/tasks", reader).status == 403
    assert send("GET", "/tasks", [("Authorization", executor)]).status == 200
    refused = send("POST", "/tasks/t-1/execute", reader)
    assert refused.status == 403
    assert json.loads(refused.body)["code"] == "insufficient_scope"
    accepted = send("POST", "/tasks/t-1/execute", [("Authorization", executor)])
    assert accepted.status == 202
    assert json.loads(accepted.body)["task_id"] == "t-1"
    assert send("GET", "/agents", [("Authorization", world.header("revoked"))]).status == 401


def test_fastapi_example_documents_its_security(world: World) -> None:
    schema = fastapi_example(world).openapi()
    assert schema["components"]["securitySchemes"]["UserKey"]["name"] == "Authorization"
    paths = schema["paths"]
    expected = {
        ("get", "/agents"): ["agents:read"],
        ("post", "/agents"): ["agents:write"],
        ("get", "/tasks"): ["tasks:read"],
        ("post", "/tasks/{task_id}/execute"): ["tasks:execute"],
    }
    for (method, path), scopes in expected.items():
        operation = paths[path][method]
        assert operation["security"] == [{"UserKey": scopes}]
        assert operation["x-required-scopes"] == scopes
    assert "security" not in paths["/health"]["get"]
