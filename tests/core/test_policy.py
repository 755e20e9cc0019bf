"""Route policy: template compilation, precedence, public paths and the default."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError, ScopeError
from keyguard.core.policy import PUBLIC, RouteMatch, RoutePolicy, Rule
from keyguard.core.scopes import AUTHENTICATED, DENY, Requirement, Scope, all_of, any_of, require

PROPS = settings(database=None, deadline=None, max_examples=200)


def _req(policy: RoutePolicy, method: str, path: str) -> Requirement | None:
    return policy.match(method, path).requirement


# -- the main table --------------------------------------------------------------------------

POLICY = RoutePolicy(
    {
        "GET /agents": "agents:read",
        "POST /agents": "agents:write",
        "GET /agents/{agent_id}": "agents:read",
        "DELETE /agents/{agent_id}": all_of("agents:write", "admin"),
        "GET /agents/special": "admin",
        "* /agents/{agent_id}/logs": "agents:read",
        "GET /tasks/{task_id}": any_of("tasks:read", "admin"),
        "GET /files/{rest:path}": "knowledge:read",
        "GET /files/{rest:path}/meta": "knowledge:write",
        "* /runners": "runners:read",
        "POST /runners": "runners:manage",
        "/webhooks/{hook}": "webhooks:manage",
    },
    public=["/health", "/docs/{page:path}"],
)

MATCHES = [
    pytest.param("GET", "/agents", Scope("agents:read"), "/agents", id="static"),
    pytest.param("POST", "/agents", Scope("agents:write"), "/agents", id="static-other-method"),
    pytest.param("get", "/agents", Scope("agents:read"), "/agents", id="method-lower-case"),
    pytest.param("GET", "/agents/a1", Scope("agents:read"), "/agents/{agent_id}", id="template"),
    pytest.param("GET", "/agents/special", Scope("admin"), "/agents/special", id="static-wins"),
    pytest.param(
        "DELETE",
        "/agents/a1",
        all_of("agents:write", "admin"),
        "/agents/{agent_id}",
        id="template-other-method",
    ),
    pytest.param(
        "PATCH",
        "/agents/a1/logs",
        Scope("agents:read"),
        "/agents/{agent_id}/logs",
        id="star-method-template",
    ),
    pytest.param("GET", "/runners", Scope("runners:read"), "/runners", id="star-static"),
    pytest.param("POST", "/runners", Scope("runners:manage"), "/runners", id="method-beats-star"),
    pytest.param(
        "PUT",
        "/webhooks/w1",
        Scope("webhooks:manage"),
        "/webhooks/{hook}",
        id="no-method-key-is-star",
    ),
    pytest.param("HEAD", "/agents", Scope("agents:read"), "/agents", id="head-falls-back-static"),
    pytest.param(
        "HEAD",
        "/agents/a1",
        Scope("agents:read"),
        "/agents/{agent_id}",
        id="head-falls-back-template",
    ),
    pytest.param(
        "GET", "/files/a/b/c.txt", Scope("knowledge:read"), "/files/{rest:path}", id="path-param"
    ),
    pytest.param(
        "GET", "/files/", Scope("knowledge:read"), "/files/{rest:path}", id="path-param-empty"
    ),
    pytest.param(
        "GET",
        "/files/a/b/meta",
        Scope("knowledge:read"),
        "/files/{rest:path}",
        id="path-param-declaration-order",
    ),
    pytest.param(
        "GET",
        "/tasks/%2Fetc%2Fpasswd",
        any_of("tasks:read", "admin"),
        "/tasks/{task_id}",
        id="percent-encoded-segment",
    ),
    pytest.param(
        "GET",
        "/tasks/täsk-😀",
        any_of("tasks:read", "admin"),
        "/tasks/{task_id}",
        id="unicode-segment",
    ),
    pytest.param("GET", "/health", None, "/health", id="public-static"),
    pytest.param("POST", "/health", None, "/health", id="public-any-method"),
    pytest.param("GET", "/docs/api/keys", None, "/docs/{page:path}", id="public-template"),
]


@pytest.mark.parametrize(("method", "path", "requirement", "template"), MATCHES)
def test_match(method: str, path: str, requirement: Requirement | None, template: str) -> None:
    found = POLICY.match(method, path)
    assert found.requirement == requirement
    assert found.template == template


UNMATCHED = [
    pytest.param("GET", "/agents/", id="trailing-slash-is-significant"),
    pytest.param("GET", "/Agents", id="case-sensitive-path"),
    pytest.param("GET", "/agents/a/b", id="segment-param-stops-at-slash"),
    pytest.param("GET", "/agents//logs", id="segment-param-not-empty"),
    pytest.param("PUT", "/agents/a1", id="method-without-rule"),
    pytest.param("GET", "/nowhere", id="unknown-path"),
    pytest.param("GET", "", id="empty-path"),
    pytest.param("GET", "/health/", id="public-trailing-slash"),
    pytest.param("GET", "/files", id="path-param-needs-its-slash"),
    pytest.param("GET", "/agents\n", id="trailing-newline"),
    pytest.param("GET", "/docs/../agents", id="dot-dot-not-public"),
    pytest.param("GET", "/docs/a/../../agents", id="nested-dot-dot-not-public"),
    pytest.param("GET", "/docs/./x", id="dot-not-public"),
    pytest.param("GET", "/agents/../logs", id="dot-dot-not-a-segment"),
]


@pytest.mark.parametrize(("method", "path"), UNMATCHED)
def test_unmatched_routes_are_denied(method: str, path: str) -> None:
    found = POLICY.match(method, path)
    assert found.requirement is DENY
    assert found.template is None


def test_dot_like_names_are_ordinary_segments() -> None:
    assert POLICY.match("GET", "/tasks/...").template == "/tasks/{task_id}"
    assert POLICY.match("GET", "/tasks/.env").template == "/tasks/{task_id}"
    assert POLICY.match("GET", "/docs/a..b/c").requirement is None


# -- precedence ---------------------------------------------------------------------------


def test_static_beats_template_even_for_star_method() -> None:
    policy = RoutePolicy([("GET", "/items/{id}", "items:read"), ("*", "/items/new", "items:write")])
    assert _req(policy, "GET", "/items/new") == Scope("items:write")
    assert _req(policy, "GET", "/items/7") == Scope("items:read")


def test_method_template_beats_star_template_regardless_of_order() -> None:
    policy = RoutePolicy(
        [("*", "/items/{id}", "items:any"), ("GET", "/items/{other}", "items:read")]
    )
    assert _req(policy, "GET", "/items/7") == Scope("items:read")
    assert _req(policy, "POST", "/items/7") == Scope("items:any")
    assert _req(policy, "HEAD", "/items/7") == Scope("items:read")


def test_templates_match_in_declaration_order() -> None:
    first = RoutePolicy([("GET", "/{a}/x", "one:r"), ("GET", "/y/{b}", "two:r")])
    second = RoutePolicy([("GET", "/y/{b}", "two:r"), ("GET", "/{a}/x", "one:r")])
    assert _req(first, "GET", "/y/x") == Scope("one:r")
    assert _req(second, "GET", "/y/x") == Scope("two:r")


def test_head_rule_wins_over_get() -> None:
    policy = RoutePolicy(
        {
            "GET /a": "a:read",
            "HEAD /a": AUTHENTICATED,
            "GET /t/{x}": "t:read",
            "HEAD /t/{x}": AUTHENTICATED,
        }
    )
    assert _req(policy, "HEAD", "/a") is AUTHENTICATED
    assert _req(policy, "HEAD", "/t/1") is AUTHENTICATED
    assert _req(policy, "GET", "/t/1") == Scope("t:read")


def test_head_does_not_borrow_other_methods() -> None:
    policy = RoutePolicy({"POST /a": "a:write", "POST /t/{x}": "t:write"})
    assert _req(policy, "HEAD", "/a") is DENY
    assert _req(policy, "HEAD", "/t/1") is DENY


def test_public_path_beats_template_rule_when_static() -> None:
    policy = RoutePolicy({"GET /{page}": "pages:read"}, public=["/status"])
    assert _req(policy, "GET", "/status") is None
    assert _req(policy, "GET", "/about") == Scope("pages:read")


def test_rules_beat_public_templates_at_the_same_tier() -> None:
    policy = RoutePolicy({"* /docs/private": "docs:read"}, public=["/docs/{p:path}"])
    assert _req(policy, "GET", "/docs/private") == Scope("docs:read")
    assert _req(policy, "GET", "/docs/intro") is None


def test_public_rule_for_one_method() -> None:
    policy = RoutePolicy({"GET /catalog": PUBLIC, "POST /catalog": "catalog:write"})
    assert POLICY.match("GET", "/health").is_public
    found = policy.match("GET", "/catalog")
    assert found.is_public
    assert found.rate_limited is False
    assert _req(policy, "HEAD", "/catalog") is None
    assert _req(policy, "POST", "/catalog") == Scope("catalog:write")


# -- rule forms, cost, rate limiting -------------------------------------------------------


def test_rule_objects_carry_cost_and_rate_limit_flag() -> None:
    policy = RoutePolicy(
        [
            Rule("POST", "/tasks/{id}/run", require("tasks:execute"), cost=5),
            Rule("GET", "/metrics", AUTHENTICATED, rate_limited=False),
        ]
    )
    run = policy.match("POST", "/tasks/t1/run")
    assert (run.cost, run.rate_limited) == (5, True)
    metrics = policy.match("GET", "/metrics")
    assert (metrics.cost, metrics.rate_limited) == (1, False)
    assert policy.match("GET", "/metrics") is metrics  # prebuilt, not allocated per request


def test_rule_coerces_and_normalises() -> None:
    rule = Rule("get", "/a", "a:read")  # type: ignore[arg-type]
    assert rule.method == "GET"
    assert rule.requirement == Scope("a:read")
    assert Rule("GET", "/a", ["a:read", "b:read"]).requirement == all_of("a:read", "b:read")  # type: ignore[arg-type]
    assert Rule("GET", "/a", "authenticated").requirement is AUTHENTICATED  # type: ignore[arg-type]
    assert Rule("GET", "/a", "deny").requirement is DENY  # type: ignore[arg-type]
    assert Rule("GET", "/a", "public").requirement is PUBLIC  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.path = "/b"  # type: ignore[misc]


BAD_RULES = [
    pytest.param(lambda: Rule("GET", "/a", None), id="none-requirement"),  # type: ignore[arg-type]
    pytest.param(lambda: Rule("GET", "/a", "Bad Scope"), id="bad-scope"),  # type: ignore[arg-type]
    pytest.param(lambda: Rule("GET", "/a", "a:*"), id="wildcard-requirement"),  # type: ignore[arg-type]
    pytest.param(lambda: Rule("GET", "/a", []), id="empty-scope-list"),  # type: ignore[arg-type]
    pytest.param(lambda: Rule("G ET", "/a", DENY), id="bad-method"),
    pytest.param(lambda: Rule("", "/a", DENY), id="empty-method"),
    pytest.param(lambda: Rule("GET", "/a", DENY, cost=0), id="zero-cost"),
    pytest.param(lambda: Rule("GET", "/a", DENY, cost=True), id="bool-cost"),
    pytest.param(lambda: Rule("GET", "/a", DENY, rate_limited=1), id="int-flag"),  # type: ignore[arg-type]
    pytest.param(lambda: Rule("GET", "a", DENY), id="relative-path"),
]


@pytest.mark.parametrize("make", BAD_RULES)
def test_bad_rules(make: object) -> None:
    with pytest.raises((ConfigurationError, ScopeError)):
        make()  # type: ignore[operator]


def test_tuple_and_rule_forms_are_equivalent_to_mapping() -> None:
    from_map = RoutePolicy({"GET /a/{x}": "a:read", "/b": "b:read"})
    from_tuples = RoutePolicy([("GET", "/a/{x}", "a:read"), ("*", "/b", "b:read")])
    assert from_map.rules == from_tuples.rules
    assert from_map.rules[1] == Rule("*", "/b", Scope("b:read"))


# -- invalid configurations ----------------------------------------------------------------

INVALID_TEMPLATES = [
    pytest.param("agents", id="no-leading-slash"),
    pytest.param("", id="empty"),
    pytest.param("/agents/{id", id="unclosed-brace"),
    pytest.param("/agents/id}", id="stray-closing-brace"),
    pytest.param("/agents/{{id}}", id="double-braces"),
    pytest.param("/agents/{}", id="empty-name"),
    pytest.param("/agents/{1id}", id="name-starts-with-digit"),
    pytest.param("/agents/{a-b}", id="dash-in-name"),
    pytest.param("/agents/{id:int}", id="unknown-converter"),
    pytest.param("/a/{x}/{x}", id="repeated-name"),
    pytest.param("/agents /x", id="whitespace"),
    pytest.param("/agents?x=1", id="query-string"),
    pytest.param("/agents#frag", id="fragment"),
    pytest.param("/a/../b", id="dot-dot-segment"),
    pytest.param("/a/./b", id="dot-segment"),
]


@pytest.mark.parametrize("template", INVALID_TEMPLATES)
def test_invalid_templates(template: str) -> None:
    with pytest.raises(ConfigurationError):
        RoutePolicy([("GET", template, "a:read")])
    with pytest.raises(ConfigurationError):
        RoutePolicy(public=[template])


INVALID_POLICIES = [
    pytest.param(lambda: RoutePolicy([("GET", "/a", "a:r"), ("get", "/a", "b:r")]), id="duplicate"),
    pytest.param(
        lambda: RoutePolicy([("GET", "/a/{x}", "a:r"), ("GET", "/a/{y}", "b:r")]),
        id="duplicate-modulo-param-names",
    ),
    pytest.param(lambda: RoutePolicy({"/a": "a:r"}, public=["/a"]), id="rule-for-public-path"),
    pytest.param(
        lambda: RoutePolicy({"POST /a/{x}": "a:r"}, public=["/a/{y}"]),
        id="method-rule-for-public-template",
    ),
    pytest.param(lambda: RoutePolicy(public=["/a", "/a"]), id="duplicate-public"),
    pytest.param(lambda: RoutePolicy({"GET": "a:r"}), id="key-without-path"),
    pytest.param(lambda: RoutePolicy({"GET /a b": "a:r"}), id="key-with-three-words"),
    pytest.param(lambda: RoutePolicy({"a": "a:r"}), id="key-without-slash"),
    pytest.param(lambda: RoutePolicy([("GET", "/a")]), id="short-tuple"),  # type: ignore[list-item]
    pytest.param(lambda: RoutePolicy(["GET /a"]), id="string-entry"),  # type: ignore[list-item]
    pytest.param(lambda: RoutePolicy("GET /a"), id="string-rules"),  # type: ignore[arg-type]
    pytest.param(lambda: RoutePolicy(public="/health"), id="string-public"),
    pytest.param(lambda: RoutePolicy(default="Not A Scope"), id="bad-default"),
    pytest.param(lambda: RoutePolicy(default=None), id="none-default"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("make", INVALID_POLICIES)
def test_invalid_policies(make: object) -> None:
    with pytest.raises((ConfigurationError, ScopeError)):
        make()  # type: ignore[operator]


def test_configuration_errors_are_specific() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("duplicate rule GET '/a/{y}'")):
        RoutePolicy([("GET", "/a/{x}", "a:r"), ("GET", "/a/{y}", "b:r")])
    with pytest.raises(ConfigurationError, match="public path"):
        RoutePolicy({"/a": "a:r"}, public=["/a"])
    with pytest.raises(ConfigurationError, match="unbalanced"):
        RoutePolicy(public=["/a/{x"])


def test_scope_errors_name_the_rule() -> None:
    with pytest.raises(ScopeError, match=r"rule 'GET' '/a'.*'Bad'"):
        RoutePolicy({"GET /a": "Bad"})


def test_same_template_different_methods_is_fine() -> None:
    policy = RoutePolicy(
        [("GET", "/a/{x}", "a:r"), ("PUT", "/a/{y}", "a:w"), ("*", "/a/{z}", "a:x")]
    )
    assert _req(policy, "PUT", "/a/1") == Scope("a:w")
    assert _req(policy, "OPTIONS", "/a/1") == Scope("a:x")


# -- default -------------------------------------------------------------------------------

DEFAULTS = [
    pytest.param("deny", DENY, id="deny"),
    pytest.param("authenticated", AUTHENTICATED, id="authenticated"),
    pytest.param("agents:read", Scope("agents:read"), id="scope-string"),
    pytest.param(any_of("a:b", "c:d"), any_of("a:b", "c:d"), id="requirement"),
    pytest.param(AUTHENTICATED, AUTHENTICATED, id="authenticated-object"),
    pytest.param(PUBLIC, None, id="public"),
]


@pytest.mark.parametrize(("default", "expected"), DEFAULTS)
def test_default(default: Requirement | str, expected: Requirement | None) -> None:
    policy = RoutePolicy({"GET /a": "a:read"}, default=default)
    found = policy.match("GET", "/elsewhere")
    assert found.requirement == expected
    assert found.template is None
    assert policy.default is found
    assert _req(policy, "GET", "/a") == Scope("a:read")


def test_empty_policy_denies_everything() -> None:
    policy = RoutePolicy()
    assert policy.match("GET", "/") == RouteMatch(DENY, None)
    assert policy.rules == ()
    assert policy.public_paths == ()


def test_allow_all() -> None:
    assert RoutePolicy.allow_all().match("DELETE", "/any/thing").requirement is AUTHENTICATED
    strict = RoutePolicy.allow_all("agents:read")
    assert strict.match("GET", "/x").requirement == Scope("agents:read")


# -- views and repr ------------------------------------------------------------------------


def test_views_and_repr() -> None:
    assert len(POLICY.rules) == 12
    assert all(isinstance(r, Rule) for r in POLICY.rules)
    assert POLICY.public_paths == ("/health", "/docs/{page:path}")
    assert repr(POLICY) == "<RoutePolicy 12 rules, 2 public paths, default=DENY>"
    assert "default=PUBLIC" in repr(RoutePolicy(default=PUBLIC))
    assert POLICY.required_scopes == frozenset(
        {
            "agents:read",
            "agents:write",
            "admin",
            "tasks:read",
            "knowledge:read",
            "knowledge:write",
            "runners:read",
            "runners:manage",
            "webhooks:manage",
        }
    )
    with pytest.raises(AttributeError):
        POLICY.rules = ()  # type: ignore[misc]


def test_route_match_is_frozen() -> None:
    found = POLICY.match("GET", "/agents")
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.cost = 0  # type: ignore[misc]


# -- properties ----------------------------------------------------------------------------

segment = st.text(
    st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))


@PROPS
@given(segment, segment)
def test_segment_params_match_any_single_segment(a: str, b: str) -> None:
    policy = RoutePolicy({"GET /x/{a}/y/{b}": "x:read"})
    assert policy.match("GET", f"/x/{a}/y/{b}").template == "/x/{a}/y/{b}"
    assert policy.match("GET", f"/x/{a}/{b}/y/{b}").requirement is DENY


@PROPS
@given(st.lists(segment, min_size=1, max_size=5))
def test_path_params_match_any_rest(parts: list[str]) -> None:
    policy = RoutePolicy({"GET /files/{rest:path}": "files:read"})
    assert policy.match("GET", "/files/" + "/".join(parts)).template == "/files/{rest:path}"


@PROPS
@given(st.text(max_size=30))
def test_literal_text_is_not_a_regex(text: str) -> None:
    # Whatever the literal, a static rule matches exactly its own path and nothing else.
    literal = "/" + "".join(c for c in text if c not in "{}?# \t\n\r\x0b\x0c" and c.isprintable())
    if any(seg in (".", "..") for seg in literal.split("/")):
        return
    policy = RoutePolicy([("GET", literal, "a:read")])
    assert policy.match("GET", literal).template == literal
    assert policy.match("GET", literal + "x").requirement is DENY


@PROPS
@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]),
    st.text(max_size=20),
)
def test_match_never_raises(method: str, path: str) -> None:
    found = POLICY.match(method, path)
    assert isinstance(found, RouteMatch)


# -- what a match carries ------------------------------------------------------------------


def test_public_matches_are_free_and_keyless() -> None:
    policy = RoutePolicy(
        [
            ("GET", "/catalog", PUBLIC),
            Rule("GET", "/priced/{item}", PUBLIC, cost=5),
            Rule("GET", "/paid", "a:read", cost=3),  # type: ignore[arg-type]
        ],
        public=["/health", "/docs/{page:path}"],
    )
    assert policy.match("GET", "/health") == RouteMatch(None, "/health", 1, False)
    assert policy.match("DELETE", "/health") == RouteMatch(None, "/health", 1, False)
    assert policy.match("GET", "/docs/a/b") == RouteMatch(None, "/docs/{page:path}", 1, False)
    assert policy.match("PUT", "/docs/") == RouteMatch(None, "/docs/{page:path}", 1, False)
    assert policy.match("GET", "/catalog") == RouteMatch(None, "/catalog", 1, False)
    assert policy.match("HEAD", "/catalog") == RouteMatch(None, "/catalog", 1, False)
    # A public rule keeps its declared cost (nothing is charged: rate_limited is False).
    assert policy.match("GET", "/priced/x") == RouteMatch(None, "/priced/{item}", 5, False)
    assert policy.match("GET", "/paid") == RouteMatch(Scope("a:read"), "/paid", 3, True)
    assert RoutePolicy(default=PUBLIC).match("GET", "/x") == RouteMatch(None, None, 1, False)
    assert RoutePolicy().match("GET", "/x") == RouteMatch(DENY, None, 1, True)
    assert RoutePolicy(default="a:read").default == RouteMatch(Scope("a:read"), None, 1, True)


@pytest.mark.parametrize(("method", "path", "requirement", "template"), MATCHES)
def test_match_cost_and_rate_limit_flag(
    method: str, path: str, requirement: Requirement | None, template: str
) -> None:
    found = POLICY.match(method, path)
    assert found.cost == 1
    assert found.rate_limited is (requirement is not None)
    assert found.is_public is (requirement is None)


def test_public_repr() -> None:
    assert repr(PUBLIC) == "PUBLIC"
    assert repr(Rule("GET", "/a", PUBLIC)).endswith(
        "requirement=PUBLIC, cost=1, rate_limited=True)"
    )


# -- every configuration error: exact type and message -------------------------------------
#
# Errors are the interface of a misconfigured deployment: each must be the documented type
# (ConfigurationError, or ScopeError for a malformed scope) and name what is wrong.

EXACT_ERRORS = [
    pytest.param(
        lambda: RoutePolicy({"GET": "a:r"}),
        ConfigurationError,
        "policy key 'GET' must be 'METHOD /path' or '/path' (any method)",
        id="key-without-path",
    ),
    pytest.param(
        lambda: RoutePolicy({"": "a:r"}),
        ConfigurationError,
        "policy key '' must be 'METHOD /path' or '/path' (any method)",
        id="empty-key",
    ),
    pytest.param(
        lambda: RoutePolicy({None: "a:r"}),
        ConfigurationError,
        "policy key None must be 'METHOD /path' or '/path' (any method)",
        id="none-key",
    ),
    pytest.param(
        lambda: RoutePolicy({("GET", "/a"): "a:r"}),
        ConfigurationError,
        "policy key ('GET', '/a') must be 'METHOD /path' or '/path' (any method)",
        id="tuple-key",
    ),
    pytest.param(
        lambda: RoutePolicy({"GET /a b": "a:r"}),
        ConfigurationError,
        "policy key 'GET /a b' must be 'METHOD /path' or '/path' (any method)",
        id="three-words",
    ),
    pytest.param(
        lambda: RoutePolicy({"/a /b": "a:r"}),
        ConfigurationError,
        "invalid HTTP method '/a' (use e.g. 'GET', or '*')",
        id="two-paths",
    ),
    pytest.param(
        lambda: RoutePolicy({"G@T /a": "a:r"}),
        ConfigurationError,
        "invalid HTTP method 'G@T' (use e.g. 'GET', or '*')",
        id="bad-method",
    ),
    pytest.param(
        lambda: RoutePolicy({"GET a": "a:r"}),
        ConfigurationError,
        "path template 'a' must be a string starting with '/'",
        id="relative-path",
    ),
    pytest.param(
        lambda: RoutePolicy({"GET /a": None}),
        ConfigurationError,
        "rule 'GET' '/a': requirement is None; use PUBLIC for a keyless route",
        id="none-requirement",
    ),
    pytest.param(
        lambda: RoutePolicy({"GET /a": 3}),
        ConfigurationError,
        "rule 'GET' '/a': cannot make a requirement from int; pass a scope string, "
        "a Requirement or a list of scopes",
        id="int-requirement",
    ),
    pytest.param(
        lambda: RoutePolicy({"GET /a": "a:*"}),
        ScopeError,
        "rule 'GET' '/a': required scope 'a:*' contains a wildcard; wildcards are only allowed "
        "in grants (what a key holds), never in what a route requires",
        id="wildcard-requirement",
    ),
    pytest.param(
        lambda: RoutePolicy(default=3),  # type: ignore[arg-type]
        ConfigurationError,
        "default: cannot make a requirement from int; pass a scope string, "
        "a Requirement or a list of scopes",
        id="bad-default",
    ),
    pytest.param(
        lambda: RoutePolicy(default="Bad"),
        ScopeError,
        "default: invalid required scope 'Bad': expected 'resource:action' or a bare word; "
        "each part starts with a lower-case letter, then up to 63 of a-z, 0-9, '_' or '-'",
        id="malformed-default",
    ),
    pytest.param(
        lambda: Rule("GET", "/a", DENY, cost=0),
        ConfigurationError,
        "rule 'GET' '/a': cost must be an integer >= 1 (use rate_limited=False for free routes)",
        id="zero-cost",
    ),
    pytest.param(
        lambda: Rule("GET", "/a", DENY, rate_limited=1),  # type: ignore[arg-type]
        ConfigurationError,
        "rule 'GET' '/a': rate_limited must be a bool",
        id="int-flag",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a/{1x}"]),
        ConfigurationError,
        "path template '/a/{1x}': bad parameter name '1x' "
        "(letters, digits and '_', not starting with a digit)",
        id="bad-parameter-name",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a/{x}/{x}"]),
        ConfigurationError,
        "path template '/a/{x}/{x}': parameter 'x' repeats",
        id="repeated-parameter",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a/{x:int}"]),
        ConfigurationError,
        "path template '/a/{x:int}': unknown converter 'int' "
        "(only '{name}' and '{name:path}' are supported)",
        id="unknown-converter",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a}/{x}"]),
        ConfigurationError,
        "path template '/a}/{x}' has unbalanced braces",
        id="brace-before-parameter",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/{x}/b}"]),
        ConfigurationError,
        "path template '/{x}/b}' has unbalanced braces",
        id="brace-after-parameter",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/{x}/a b"]),
        ConfigurationError,
        "path template '/{x}/a b' contains whitespace, a control character, '?' or '#'",
        id="whitespace-after-parameter",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a/../{x}"]),
        ConfigurationError,
        "path template '/a/../{x}' contains a '.' or '..' segment",
        id="dot-dot",
    ),
    pytest.param(
        lambda: RoutePolicy(public=["/a/{x}", "/a/{y}"]),
        ConfigurationError,
        "public path '/a/{y}' duplicates '/a/{x}'",
        id="duplicate-public",
    ),
    pytest.param(
        lambda: RoutePolicy({"POST /a/{x}": "a:r"}, public=["/a/{y}"]),
        ConfigurationError,
        "rule POST '/a/{x}' is for a public path ('/a/{y}'); public paths take no rules",
        id="rule-for-public-path",
    ),
    pytest.param(
        lambda: RoutePolicy([("GET", "/a/{x}", "a:r"), ("get", "/a/{y}", "b:r")]),
        ConfigurationError,
        "duplicate rule GET '/a/{y}' (already declared as '/a/{x}')",
        id="duplicate-rule",
    ),
    pytest.param(
        lambda: RoutePolicy(["GET /a"]),  # type: ignore[list-item]
        ConfigurationError,
        "policy entry 'GET /a' must be a Rule or a (method, path, requirement) tuple",
        id="string-entry",
    ),
    pytest.param(
        lambda: RoutePolicy("GET /a"),  # type: ignore[arg-type]
        ConfigurationError,
        "rules must be a mapping or a collection of rules, not str",
        id="string-rules",
    ),
    pytest.param(
        lambda: RoutePolicy(None),  # type: ignore[arg-type]
        ConfigurationError,
        "rules must be a mapping or a collection of rules, not NoneType",
        id="none-rules",
    ),
    pytest.param(
        lambda: RoutePolicy(3),  # type: ignore[arg-type]
        ConfigurationError,
        "rules must be a mapping or a collection of rules, not int",
        id="int-rules",
    ),
    pytest.param(
        lambda: RoutePolicy(public="/health"),
        ConfigurationError,
        "public must be a collection of path templates, not str",
        id="string-public",
    ),
    pytest.param(
        lambda: RoutePolicy(public=None),  # type: ignore[arg-type]
        ConfigurationError,
        "public must be a collection of path templates, not NoneType",
        id="none-public",
    ),
]


@pytest.mark.parametrize(("make", "kind", "message"), EXACT_ERRORS)
def test_configuration_errors_have_the_right_type_and_message(
    make: object, kind: type[Exception], message: str
) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the exact type is asserted below
        make()  # type: ignore[operator]
    assert type(info.value) is kind
    assert str(info.value) == message
