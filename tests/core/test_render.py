"""The problem+json renderer: the fast default body equals json.dumps of the problem dict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core import decision as d
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, ErrorCode
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


# -- the platform-compatible preset -----------------------------------------------------------
#: What the platform's documentation answers (its 401 example is
#: ``{"error": "Unauthorized", "message": "Invalid API key"}``): the reason phrase of the
#: status as ``error``, a short sentence as ``message``. Written out here, not imported.
PLATFORM_BODIES = {
    "missing_api_key": ("Unauthorized", "Missing API key"),
    "invalid_request": ("Bad Request", "Invalid request"),
    "invalid_api_key_format": ("Unauthorized", "Invalid API key format"),
    "invalid_api_key": ("Unauthorized", "Invalid API key"),
    "expired_api_key": ("Unauthorized", "API key has expired"),
    "revoked_api_key": ("Unauthorized", "API key has been revoked"),
    "insufficient_scope": ("Forbidden", "Insufficient permissions"),
    "rate_limited": ("Too Many Requests", "Rate limit exceeded"),
    "auth_unavailable": ("Service Unavailable", "Authentication temporarily unavailable"),
    "suspended_api_key": ("Unauthorized", "API key is suspended"),
    "network_not_allowed": ("Forbidden", "API key is not allowed from this network"),
    "malformed_body": ("Bad Request", "Malformed request body"),
    "invalid_field": ("Unprocessable Content", "Invalid field"),
    "unsupported_media_type": ("Unsupported Media Type", "Unsupported media type"),
    "body_too_large": ("Content Too Large", "Request body too large"),
    "not_found": ("Not Found", "Not found"),
    "method_not_allowed": ("Method Not Allowed", "Method not allowed"),
    "permission_denied": ("Forbidden", "Permission denied"),
    "invalid_state": ("Conflict", "Invalid key state"),
    "already_processed": ("Conflict", "Request already processed"),
    "idempotency_key_reused": ("Unprocessable Content", "Idempotency key reused"),
}


@pytest.mark.parametrize("decision", DENIALS, ids=lambda x: str(x.code))
def test_platform_preset_adds_error_and_message_to_the_same_body(decision: Decision) -> None:
    plain = json.loads(ProblemRenderer().render(decision, "rid").body)
    r = ProblemRenderer.platform_compatible()
    problem = r.render(decision, "rid")
    body = json.loads(problem.body)
    assert decision.code is not None
    assert (body["error"], body["message"]) == PLATFORM_BODIES[decision.code.value]
    # Everything RFC 9457 had is still there, unchanged: only the two fields are added.
    assert {k: v for k, v in body.items() if k not in ("error", "message")} == plain
    expected = json.dumps(r.problem_dict(decision, "rid"), separators=(",", ":")).encode()
    assert problem.body == expected
    assert dict(problem.headers)["content-type"] == "application/problem+json"
    assert dict(problem.headers)["content-length"] == str(len(problem.body))


def test_every_error_code_has_a_platform_message() -> None:
    r = ProblemRenderer(compat="platform")
    for code in ErrorCode:
        body = r.problem_dict(d.deny(code, "x"), "rid")
        assert body["message"], code
        assert body["error"], code
        assert (body["error"], body["message"]) == PLATFORM_BODIES[code.value], (
            f"add {code.value} to PLATFORM_BODIES (and to docs/troubleshooting.md)"
        )


def test_platform_preset_reaches_the_body_hook() -> None:
    seen: list[dict[str, object]] = []

    def hook(body: dict[str, object], decision: Decision) -> dict[str, object]:
        seen.append(body)
        return body

    ProblemRenderer(compat="platform", body_hook=hook).render(d.INVALID, "rid")
    assert seen[0]["error"] == "Unauthorized"
    assert seen[0]["message"] == "Invalid API key"


@pytest.mark.parametrize(
    ("value", "compat"),
    [
        (None, None),
        ("", None),
        ("problem", None),
        ("platform", "platform"),
        (" Platform\n", "platform"),
    ],
)
def test_error_format_from_the_environment(value: str | None, compat: str | None) -> None:
    env = {} if value is None else {"KEYGUARD_ERROR_FORMAT": value}
    r = ProblemRenderer.from_env(env, realm="api")
    assert r.compat == compat
    assert r.realm == "api"
    assert ("error" in json.loads(r.render(d.MISSING, "rid").body)) is (compat == "platform")


def test_an_unknown_error_format_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"KEYGUARD_ERROR_FORMAT='kubiya'.*platform"):
        ProblemRenderer.from_env({"KEYGUARD_ERROR_FORMAT": "kubiya"})
    with pytest.raises(ConfigurationError, match="compat must be one of"):
        ProblemRenderer(compat="nope")


def _default_renderer_in_a_process(value: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, keyguard; from keyguard.core import decision as d;"
        "from keyguard.core.render import DEFAULT_RENDERER as R;"
        "print(json.dumps(json.loads(R.render(d.INVALID, 'rid').body)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env["KEYGUARD_ERROR_FORMAT"] = value
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_default_renderer_follows_keyguard_error_format() -> None:
    result = _default_renderer_in_a_process("platform")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["error"] == "Unauthorized"
    assert body["message"] == "Invalid API key"
    assert body["code"] == "invalid_api_key"


def test_a_bad_keyguard_error_format_does_not_break_import_but_says_so() -> None:
    result = _default_renderer_in_a_process("bogus")
    assert result.returncode == 0, result.stderr
    assert "error" not in json.loads(result.stdout)
    assert "KEYGUARD_ERROR_FORMAT='bogus'" in result.stderr
