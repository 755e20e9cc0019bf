"""The key-management scope is privileged: only itself or ``admin`` grants it, never a wildcard.

Checked at every place scopes are compared: the grant predicate, :class:`Grants` (what the
adapters' route checks use), requirement trees, the catalog's ``covers`` (minting a child
key), implications, a renamed management scope, and end to end through the ASGI middleware
and :class:`KeyManager`.
"""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.errors import ErrorCode, PermissionDenied
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.scopes import (
    DEFAULT_PRIVILEGED,
    MANAGE_SCOPE,
    Grants,
    ScopeCatalog,
    all_of,
    any_of,
    grant_satisfies,
    require,
)
from keyguard.core.verifier import Verifier
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore
from tests.adapters.asgi_driver import call
from tests.keyfactory import KeyFactory

GRANTS_AND_MANAGE = [
    pytest.param(["keys:manage"], True, id="exact"),
    pytest.param(["admin"], True, id="admin"),
    pytest.param(["*:*"], False, id="double-wildcard"),
    pytest.param(["*:manage"], False, id="action-wildcard"),
    pytest.param(["keys:*"], False, id="resource-wildcard"),
    pytest.param(["*:*", "*:manage", "keys:*", "agents:read"], False, id="every-wildcard"),
    pytest.param(["keys:read"], False, id="other-action"),
]


@pytest.mark.parametrize(("held", "expected"), GRANTS_AND_MANAGE)
def test_only_the_scope_itself_or_admin_grants_key_management(
    held: list[str], expected: bool
) -> None:
    assert {MANAGE_SCOPE} == DEFAULT_PRIVILEGED
    assert any(grant_satisfies(g, MANAGE_SCOPE) for g in held) is expected
    grants = Grants(held)
    assert grants.satisfies(MANAGE_SCOPE) is expected
    # What routes and adapters evaluate: plain and combined requirements.
    assert require(MANAGE_SCOPE).is_satisfied_by(grants) is expected
    assert all_of(MANAGE_SCOPE, "agents:read").is_satisfied_by(grants) is (
        expected and grants.satisfies("agents:read")
    )
    assert any_of(MANAGE_SCOPE, "billing").is_satisfied_by(grants) is expected
    catalog = ScopeCatalog.platform()
    assert catalog.grants(held).satisfies(MANAGE_SCOPE) is expected
    # The rule survives pickling (Grants travel to worker processes inside principals).
    restored = pickle.loads(pickle.dumps(grants))  # noqa: S301 - our own object
    assert restored == grants
    assert restored.satisfies(MANAGE_SCOPE) is expected


@pytest.mark.parametrize("wildcard", ["*:*", "*:manage", "keys:*"])
def test_wildcards_still_grant_every_ordinary_scope(wildcard: str) -> None:
    catalog = ScopeCatalog.platform()
    grants = catalog.grants([wildcard])
    reached = set(catalog.matching(wildcard))
    assert MANAGE_SCOPE not in reached
    for scope in catalog:
        if scope in ("admin", MANAGE_SCOPE):
            assert not grants.satisfies(scope)
        else:
            assert grants.satisfies(scope) is (scope in reached)
    if wildcard == "*:manage":
        assert reached == {"runners:manage", "webhooks:manage", "workflows:manage"}


@pytest.mark.parametrize("wildcard", ["*:*", "*:manage", "keys:*"])
def test_a_wildcard_cannot_delegate_key_management(wildcard: str) -> None:
    catalog = ScopeCatalog.platform()
    assert not catalog.covers([wildcard], [MANAGE_SCOPE])
    assert catalog.covers([MANAGE_SCOPE], [MANAGE_SCOPE])
    assert catalog.covers(["admin"], [MANAGE_SCOPE])
    # The wildcard can still be handed on as it is: it carries no management either.
    assert catalog.covers([wildcard], [wildcard])


def test_an_implication_from_the_manage_scope_fires_only_for_an_exact_grant() -> None:
    catalog = ScopeCatalog.platform(implications={MANAGE_SCOPE: ["agents:read"]})
    assert catalog.grants([MANAGE_SCOPE]).satisfies("agents:read")
    assert not catalog.grants(["keys:*"]).satisfies("agents:read")
    assert not catalog.grants(["*:*"]).satisfies(MANAGE_SCOPE)


def test_a_renamed_management_scope_is_the_privileged_one() -> None:
    catalog = ScopeCatalog.platform(manage_scope="apikeys:admin")
    assert catalog.privileged == {"apikeys:admin"}
    for wildcard in ("*:*", "apikeys:*", "*:admin"):
        assert not catalog.grants([wildcard]).satisfies("apikeys:admin")
        assert not catalog.covers([wildcard], ["apikeys:admin"])
    assert catalog.grants(["apikeys:admin"]).satisfies("apikeys:admin")
    # keys:manage is not in this catalog and is an ordinary scope name here.
    assert catalog.grants(["keys:*"]).satisfies("keys:manage")
    assert Grants(["*:*"], privileged=()).satisfies(MANAGE_SCOPE)
    assert Grants(["*:*"]) != Grants(["*:*"], privileged=())


@pytest.mark.parametrize(
    ("held", "status"),
    [
        pytest.param("keys:manage", 200, id="exact"),
        pytest.param("admin", 200, id="admin"),
        pytest.param("*:*", 403, id="double-wildcard"),
        pytest.param("*:manage", 403, id="action-wildcard"),
        pytest.param("keys:*", 403, id="resource-wildcard"),
    ],
)
def test_a_route_requiring_key_management_refuses_wildcards(held: str, status: int) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue(held)
    policy = RoutePolicy({"POST /keys": MANAGE_SCOPE, "POST /runners": "runners:manage"})
    verifier = Verifier(store, policy=policy, hasher=Hasher(pepper_from_env=False))

    async def app(scope: object, receive: object, send: object) -> None:
        del scope, receive
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    guarded = KeyGuardMiddleware(app, verifier=verifier)
    reply = asyncio.run(call(guarded, "POST", "/keys", [("Authorization", key.header)]))
    assert reply.status == status
    if status == 403:
        body = json.loads(reply.body)
        assert body["code"] == ErrorCode.INSUFFICIENT_SCOPE
    if held in ("*:*", "*:manage"):  # the wildcard itself still works for ordinary scopes
        ok = asyncio.run(call(guarded, "POST", "/runners", [("Authorization", key.header)]))
        assert ok.status == 200


@pytest.mark.parametrize("wildcard", ["*:*", "*:manage", "keys:*"])
def test_a_wildcard_key_cannot_act_as_a_manager(wildcard: str) -> None:
    manager = KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False))
    holder = manager.create("wild", [wildcard]).record
    with pytest.raises(PermissionDenied, match="keys:manage"):
        manager.create("child", [], parent=holder)
    with pytest.raises(PermissionDenied, match="keys:manage"):
        manager.rotate(holder.key_id, parent=holder)
