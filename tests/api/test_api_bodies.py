"""Bad request bodies: a table of what clients get wrong (each a 4xx problem naming the field,
nothing written), and Hypothesis throwing arbitrary JSON and bytes at every route: never a
5xx, never a partial write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.support import World, make_world, mount_handler

BAD_CREATES = [
    pytest.param({}, 422, "name", id="missing-name"),
    pytest.param({"name": 5}, 422, "name", id="name-not-a-string"),
    pytest.param({"name": ""}, 422, "name", id="empty-name"),
    pytest.param({"name": "a\nb"}, 422, "name", id="name-with-newline"),
    pytest.param({"name": "x" * 201}, 422, "name", id="name-too-long"),
    pytest.param({"name": "x", "scopes": "agents:read"}, 422, "scopes", id="scopes-not-a-list"),
    pytest.param({"name": "x", "scopes": [1]}, 422, "scopes", id="scope-not-a-string"),
    pytest.param({"name": "x", "scopes": ["agents:fly"]}, 422, "scopes", id="unknown-scope"),
    pytest.param({"name": "x", "scopes": ["Agents:Read"]}, 422, "scopes", id="malformed-scope"),
    pytest.param({"name": "x", "expires_in": -5}, 422, "expires_in", id="negative-seconds"),
    pytest.param({"name": "x", "expires_in": "-5d"}, 422, "expires_in", id="negative-duration"),
    pytest.param({"name": "x", "expires_in": 0}, 422, "expires_in", id="zero-duration"),
    pytest.param({"name": "x", "expires_in": "5y"}, 422, "expires_in", id="unknown-unit"),
    pytest.param({"name": "x", "expires_in": 1.5}, 422, "expires_in", id="fractional-seconds"),
    pytest.param({"name": "x", "expires_in": True}, 422, "expires_in", id="boolean-duration"),
    pytest.param({"name": "x", "expires_in": 10**30}, 422, "expires_in", id="absurd-duration"),
    pytest.param({"name": "x", "expires_in": "9999999999d"}, 422, "expires_in", id="absurd-days"),
    pytest.param(
        {"name": "x", "expires_in": "1d", "expires_at": "2027-02-01T00:00:00Z"},
        422,
        "expires_in",
        id="both-expiries",
    ),
    pytest.param(
        {"name": "x", "expires_at": "2027-02-01T00:00:00"}, 422, "expires_at", id="naive-time"
    ),
    pytest.param({"name": "x", "expires_at": "yesterday"}, 422, "expires_at", id="not-a-time"),
    pytest.param(
        {"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, 422, "expires_at", id="past-time"
    ),
    pytest.param({"name": "x", "expires_at": 1900000000}, 422, "expires_at", id="epoch-number"),
    pytest.param({"name": "x", "owner": 7}, 422, "owner", id="owner-not-a-string"),
    pytest.param({"name": "x", "rate_limit": "lots"}, 422, "rate_limit", id="bad-rate-limit"),
    pytest.param({"name": "x", "rate_limit": 100}, 422, "rate_limit", id="rate-limit-number"),
    pytest.param({"name": "x", "metadata": []}, 422, "metadata", id="metadata-not-object"),
    pytest.param(
        {"name": "x", "metadata": {"big": "x" * 20_000}}, 422, "metadata", id="metadata-too-big"
    ),
    pytest.param(
        {"name": "x", "allowed_networks": ["10.0.0.1/8"]},
        422,
        "allowed_networks",
        id="network-host-bits",
    ),
    pytest.param(
        {"name": "x", "allowed_networks": "10.0.0.0/8"},
        422,
        "allowed_networks",
        id="networks-not-a-list",
    ),
    pytest.param({"name": "x", "admin": True}, 422, "admin", id="unknown-field"),
    pytest.param({"name": "x", "key_id": "AAAAAAAAAAAA"}, 422, "key_id", id="choose-own-id"),
]


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.mark.parametrize(("body", "status", "field"), BAD_CREATES)
def test_bad_create_bodies(world: World, body: dict[str, Any], status: int, field: str) -> None:
    before, changes = world.snapshot(), world.changes()
    with mount_handler(world.api) as client:
        r = client.request("POST", "/", key=world.key("admin"), json=body)
    assert r.status_code == status, r.content
    assert r.json()["field"] == field
    assert r.json()["code"] == "invalid_field"
    assert r.json()["detail"]
    assert world.snapshot() == before
    assert world.changes() == changes


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        pytest.param(b"{", "application/json", 400, "malformed_body", id="truncated-json"),
        pytest.param(b"[1,2]", "application/json", 400, "malformed_body", id="array"),
        pytest.param(b'"x"', "application/json", 400, "malformed_body", id="string"),
        pytest.param(b'{"name": NaN}', "application/json", 400, "malformed_body", id="nan"),
        pytest.param(
            b'{"name": "a", "name": "b"}', "application/json", 400, "malformed_body", id="dup"
        ),
        pytest.param(b"\xff\xfe{}", "application/json", 400, "malformed_body", id="not-utf8"),
        pytest.param(
            b"[" * 5000 + b"]" * 5000, "application/json", 400, "malformed_body", id="deep-array"
        ),
        pytest.param(
            b'{"name": "x", "metadata": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
            "application/json",
            400,
            "malformed_body",
            id="deep-object",
        ),
        pytest.param(b"", "application/json", 400, "malformed_body", id="empty"),
        pytest.param(b'{"name": "x"}', "text/plain", 415, "unsupported_media_type", id="text"),
        pytest.param(b'{"name": "x"}', "", 415, "unsupported_media_type", id="no-type"),
        pytest.param(
            b'{"name": "x"}',
            "application/json; charset=latin-1",
            415,
            "unsupported_media_type",
            id="latin1",
        ),
        pytest.param(
            b'{"name": "' + b"x" * 70_000 + b'"}',
            "application/json",
            413,
            "body_too_large",
            id="too-large",
        ),
    ],
)
def test_malformed_bodies(
    world: World, content: bytes, content_type: str, status: int, code: str
) -> None:
    before = world.snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    with mount_handler(world.api) as client:
        r = client.request("POST", "/", key=world.key("admin"), content=content, headers=headers)
    assert r.status_code == status, r.content
    assert r.json()["code"] == code
    assert world.snapshot() == before


def test_json_with_a_charset_and_a_vendor_type_are_accepted(world: World) -> None:
    with mount_handler(world.api) as client:
        for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
            r = client.request(
                "POST",
                "/",
                key=world.key("admin"),
                content=b'{"name": "ok"}',
                headers={"Content-Type": content_type},
            )
            assert r.status_code == 201, content_type


def test_bad_patch_rotate_revoke_bodies(world: World) -> None:
    key = world.key("admin")
    target = world.id("reader")
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("PATCH", f"/{target}", {}, "changes nothing"),
        ("PATCH", f"/{target}", {"enabled": "no"}, "enabled"),
        ("PATCH", f"/{target}", {"reason": "x"}, "reason"),
        ("PATCH", f"/{target}", {"expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
        ("PATCH", f"/{target}", {"owner": "globex"}, "owner"),
        ("PATCH", f"/{target}", {"description": 5}, "description"),
        ("POST", f"/{target}/rotate", {"grace_period": "forever"}, "grace_period"),
        ("POST", f"/{target}/rotate", {"grace": "1h"}, "grace"),
        ("POST", f"/{target}/expire", {"at": "soon"}, "at"),
        ("DELETE", f"/{target}", {"reason": ""}, "reason"),
        ("DELETE", f"/{target}", {"cascade": "yes"}, "cascade"),
    ]
    before = world.snapshot()
    with mount_handler(world.api) as client:
        for method, path, body, field in cases:
            r = client.request(method, path, key=key, json=body)
            assert r.status_code == 422, (method, path, body, r.content)
            assert field in r.json()["detail"] + r.json().get("field", ""), (body, r.json())
    assert world.snapshot() == before


# -- Hypothesis ---------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "name",
    "description",
    "scopes",
    "expires_in",
    "expires_at",
    "owner",
    "rate_limit",
    "metadata",
    "allowed_networks",
    "enabled",
    "reason",
    "cascade",
    "grace_period",
    "at",
]
plausible = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8),
    json_values
    | st.sampled_from(
        ["30d", "12h", "90m", "-1d", "0", "agents:read", "10.0.0.0/8", "2027-02-01T00:00:00Z"]
    )
    | st.lists(st.sampled_from(["agents:read", "admin", "*:*", "10.0.0.0/8", "x"]), max_size=3),
    max_size=6,
)
GOOD: dict[str, list[Any]] = {
    "name": ["svc", "ci deploy"],
    "description": ["deploys", None],
    "scopes": [["agents:read"], [], ["agents:read", "keys:manage"]],
    "expires_in": ["30d", "1h", 3600],
    "owner": ["acme"],
    "rate_limit": ["1/minute, 100/day"],
    "metadata": [{"team": "a"}],
    "allowed_networks": [["10.0.0.0/8"]],
    "enabled": [True, False],
    "reason": ["done"],
    "cascade": [True, False],
    "grace_period": ["1h", 0],
    "at": ["2027-02-01T00:00:00Z"],
}
valid_like = st.fixed_dictionaries(
    {}, optional={name: st.sampled_from(values) for name, values in GOOD.items()}
)

ROUTES = [
    ("POST", "/"),
    ("PATCH", "/{reader}"),
    ("DELETE", "/{reader}"),
    ("POST", "/{reader}/rotate"),
    ("POST", "/{reader}/expire"),
    ("PATCH", "/{grandchild}"),
    ("POST", "/{grandchild}/rotate"),
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(ROUTES),
    actor=st.sampled_from(["admin", "mgr", "child", "reader"]),
    body=valid_like | valid_like | plausible | json_values,
    raw=st.none() | st.none() | st.none() | st.binary(max_size=200),
)
def test_arbitrary_bodies_never_cause_a_5xx_or_a_partial_write(
    route: tuple[str, str], actor: str, body: Any, raw: bytes | None
) -> None:
    world = make_world()
    method, template = route
    path = template.format(reader=world.id("reader"), grandchild=world.id("grandchild"))
    content = raw if raw is not None else json.dumps(body).encode()
    before = {r.key_id: r for r in world.snapshot()}
    changes_before = len(world.changes())
    with mount_handler(world.api) as client:
        r = client.request(
            method,
            path,
            key=world.key(actor),
            content=content,
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code < 500, r.content
    after = {rec.key_id: rec for rec in world.snapshot()}
    new_events = len(world.changes()) - changes_before
    changed = {k for k in after if after[k] != before.get(k)}
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json"
        assert after == before, "a refused request changed something"
        assert new_events == 0
    else:
        # A success changes exactly the keys it reports, each with its audit event.
        assert new_events == len(changed)
        assert len(changed) <= 1 or method == "DELETE"
