"""The problem+json renderer: the fast default body equals json.dumps of the problem dict."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core import decision as d
from keyguard.core.decision import Decision
from keyguard.core.errors import ErrorCode
from keyguard.core.render import ProblemRenderer, request_id_from

DENIALS = [
    d.MISSING,
    d.DUPLICATE_HEADER,
    d.BAD_FORMAT,
    d.INVALID,
    d.EXPIRED,
    d.REVOKED,
    d.UNAVAILABLE,
    d.NO_ROUTE,
    d.insufficient_scope(("agents:write",), "agents:write"),
    d.deny(ErrorCode.RATE_LIMITED, "Rate limit exceeded; retry in 7 s.", retry_after=7),
]


@pytest.mark.parametrize("decision", DENIALS, ids=lambda x: str(x.code))
def test_default_body_is_the_canonical_json(decision: Decision) -> None:
    r = ProblemRenderer()
    problem = r.render(decision, "abc123")
    expected = json.dumps(r.problem_dict(decision, "abc123"), separators=(",", ":")).encode()
    assert problem.body == expected
    assert json.loads(problem.body)["code"] == decision.code


@given(detail=st.text(), request_id=st.text(min_size=1), retry=st.none() | st.integers(1, 10**6))
def test_default_body_matches_json_dumps_for_any_text(
    detail: str, request_id: str, retry: int | None
) -> None:
    r = ProblemRenderer(type_base="https://example.test/problems/é/")
    decision = d.deny(ErrorCode.RATE_LIMITED, detail, retry_after=retry)
    expected = json.dumps(r.problem_dict(decision, request_id), separators=(",", ":")).encode()
    assert r.render(decision, request_id).body == expected


def test_body_hook_reshapes_the_body_but_not_the_contract() -> None:
    r = ProblemRenderer(body_hook=lambda body, decision: {"error": body["code"]})
    problem = r.render(d.INVALID, "rid")
    assert json.loads(problem.body) == {"error": "invalid_api_key"}
    headers = dict(problem.headers)
    assert problem.status == 401
    assert headers["www-authenticate"].startswith('UserKey realm="keyguard"')
    assert headers["cache-control"] == "no-store"


def test_insufficient_scope_challenge_names_only_the_required_scopes() -> None:
    problem = ProblemRenderer().render(d.insufficient_scope(("a:b",), "a:b"), "r")
    assert dict(problem.headers)["www-authenticate"] == (
        'UserKey realm="keyguard", error="insufficient_scope", scope="a:b"'
    )
    no_route = ProblemRenderer().render(d.NO_ROUTE, "r")
    assert "scope=" not in dict(no_route.headers)["www-authenticate"]


@pytest.mark.parametrize(
    ("given_id", "kept"),
    [
        ("abc-123_X.y:z", True),
        ("", False),
        ("a" * 129, False),
        ("bad\r\nheader", False),
        ("space id", False),
        (b"bytes-id", True),
    ],
)
def test_request_ids_are_reused_only_when_plain(given_id: str | bytes, kept: bool) -> None:
    rid = request_id_from(given_id)
    expected = given_id.decode() if isinstance(given_id, bytes) else given_id
    assert (rid == expected) is kept
    assert rid.isascii()
