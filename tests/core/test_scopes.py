"""Scope grammar, Grants, requirements and the catalog (examples + Hypothesis properties)."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError, ScopeError
from keyguard.core.scopes import (
    ADMIN,
    AUTHENTICATED,
    DENY,
    MANAGE_SCOPE,
    PLATFORM_SCOPES,
    AllOf,
    AnyOf,
    Grants,
    Requirement,
    Scope,
    ScopeCatalog,
    all_of,
    any_of,
    as_requirement,
    grant_satisfies,
    parse_grant,
    parse_required,
    require,
)

# No example database: property tests must not leave a .hypothesis/ folder in the repo.
PROPS = settings(database=None, deadline=None, max_examples=300)

# A small alphabet of words makes collisions (and so interesting matches) likely.
WORDS = ["agents", "tasks", "read", "write", "admin", "x", "a-b", "n_1"]
word = st.one_of(st.sampled_from(WORDS), st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True))
pair = st.builds(lambda r, a: f"{r}:{a}", word, word)
required_scope = st.one_of(word, pair)
part_or_star = st.one_of(word, st.just("*"))
grant = st.one_of(required_scope, st.builds(lambda r, a: f"{r}:{a}", part_or_star, part_or_star))
grant_sets = st.frozensets(grant, max_size=6)


def _roundtrip(value: object) -> object:
    return pickle.loads(pickle.dumps(value))  # noqa: S301 - our own objects, just pickled


# -- grammar -----------------------------------------------------------------------------------

VALID_REQUIRED = [
    pytest.param("agents:read", id="pair"),
    pytest.param("admin", id="bare-admin"),
    pytest.param("billing", id="bare-word"),
    pytest.param("a", id="one-letter"),
    pytest.param("a0_-:b9-_", id="digits-underscore-dash"),
    pytest.param("a" * 64 + ":" + "b" * 64, id="max-length-parts"),
]

INVALID_ANY = [
    pytest.param("", id="empty"),
    pytest.param(" agents:read", id="leading-space"),
    pytest.param("agents:read ", id="trailing-space"),
    pytest.param("agents:read\n", id="trailing-newline"),
    pytest.param("Agents:read", id="upper-case"),
    pytest.param("agents:", id="empty-action"),
    pytest.param(":read", id="empty-resource"),
    pytest.param("agents:read:x", id="three-parts"),
    pytest.param("1agents:read", id="leading-digit"),
    pytest.param("_x", id="leading-underscore"),
    pytest.param("a" * 65, id="part-too-long"),
    pytest.param("*", id="bare-star"),
    pytest.param("**:read", id="double-star"),
    pytest.param("agents:re*", id="partial-wildcard"),
    pytest.param("agënts:read", id="non-ascii"),
    pytest.param("agents read", id="inner-space"),
]

WILDCARD_GRANTS = [
    pytest.param("agents:*", id="resource-wildcard"),
    pytest.param("*:read", id="action-wildcard"),
    pytest.param("*:*", id="double-wildcard"),
]


@pytest.mark.parametrize("scope", VALID_REQUIRED)
def test_parse_accepts_valid_scopes_unchanged(scope: str) -> None:
    assert parse_required(scope) is scope
    assert parse_grant(scope) is scope


@pytest.mark.parametrize("scope", INVALID_ANY)
def test_parse_rejects_malformed_scopes(scope: str) -> None:
    with pytest.raises(ScopeError):
        parse_required(scope)
    with pytest.raises(ScopeError):
        parse_grant(scope)


@pytest.mark.parametrize("scope", WILDCARD_GRANTS)
def test_wildcards_are_grants_not_requirements(scope: str) -> None:
    assert parse_grant(scope) == scope
    with pytest.raises(ScopeError, match="wildcard"):
        parse_required(scope)


@pytest.mark.parametrize("value", [None, 3, b"agents:read", ["agents:read"]])
def test_parse_rejects_non_strings_with_scope_error(value: object) -> None:
    with pytest.raises(ScopeError, match="must be a string"):
        parse_required(value)  # type: ignore[arg-type]
    with pytest.raises(ScopeError, match="must be a string"):
        parse_grant(value)  # type: ignore[arg-type]


def test_error_message_names_the_scope_and_stays_short() -> None:
    with pytest.raises(ScopeError, match=r"'Agents:read'"):
        parse_required("Agents:read")
    with pytest.raises(ScopeError) as info:
        parse_grant("X" * 10_000)
    assert len(str(info.value)) < 300


@PROPS
@given(st.one_of(st.text(), st.from_regex(r"[a-z*:_ -]{0,12}", fullmatch=True)))
def test_parse_only_ever_raises_scope_error(text: str) -> None:
    for parse in (parse_grant, parse_required):
        with contextlib.suppress(ScopeError):
            assert parse(text) == text


@PROPS
@given(required_scope)
def test_generated_required_scopes_parse(scope: str) -> None:
    assert parse_required(scope) == scope
    assert parse_grant(scope) == scope


# -- matching ----------------------------------------------------------------------------------

MATCHES = [
    pytest.param("agents:read", "agents:read", True, id="exact"),
    pytest.param("agents:read", "agents:write", False, id="other-action"),
    pytest.param("agents:read", "tasks:read", False, id="other-resource"),
    pytest.param("agents:*", "agents:write", True, id="resource-wildcard"),
    pytest.param("agents:*", "tasks:write", False, id="resource-wildcard-other-resource"),
    pytest.param("*:read", "tasks:read", True, id="action-wildcard"),
    pytest.param("*:read", "tasks:write", False, id="action-wildcard-other-action"),
    pytest.param("*:*", "webhooks:manage", True, id="double-wildcard"),
    pytest.param("*:*", "admin", False, id="double-wildcard-not-bare-admin"),
    pytest.param("*:*", "billing", False, id="double-wildcard-not-bare-word"),
    pytest.param("admin", "agents:read", True, id="admin-pair"),
    pytest.param("admin", "billing", True, id="admin-bare"),
    pytest.param("admin", "admin", True, id="admin-admin"),
    pytest.param("billing", "billing", True, id="bare-self"),
    pytest.param("billing", "admin", False, id="bare-not-admin"),
    pytest.param("billing", "billing:read", False, id="bare-not-resource"),
    pytest.param("agents:*", "agents", False, id="resource-wildcard-not-bare"),
    pytest.param("agents:read", "admin", False, id="pair-not-admin"),
]


@pytest.mark.parametrize(("held", "required", "expected"), MATCHES)
def test_grant_satisfies_table(held: str, required: str, expected: bool) -> None:
    assert grant_satisfies(held, required) is expected
    assert Grants([held]).satisfies(required) is expected
    assert Scope(required).is_satisfied_by(Grants([held])) is expected


@PROPS
@given(required_scope)
def test_matching_is_reflexive(scope: str) -> None:
    assert grant_satisfies(scope, scope)
    assert Grants([scope]).satisfies(scope)


@PROPS
@given(word, word, word)
def test_wildcards_contain_their_scopes(resource: str, action: str, other: str) -> None:
    required = f"{resource}:{action}"
    assert Grants([f"{resource}:*"]).satisfies(required)
    assert Grants([f"*:{action}"]).satisfies(required)
    assert Grants(["*:*"]).satisfies(required)
    assert Grants([f"{resource}:*"]).satisfies(f"{other}:{action}") is (other == resource)
    assert Grants([f"*:{action}"]).satisfies(f"{resource}:{other}") is (other == action)


@PROPS
@given(required_scope, grant_sets)
def test_admin_satisfies_everything(scope: str, others: frozenset[str]) -> None:
    assert Grants([ADMIN, *others]).satisfies(scope)
    assert grant_satisfies(ADMIN, scope)


@PROPS
@given(grant_sets)
def test_deny_satisfies_nothing_and_authenticated_everything(held: frozenset[str]) -> None:
    grants = Grants(held | {ADMIN})
    assert not DENY.is_satisfied_by(grants)
    assert not DENY.is_satisfied_by(Grants(held))
    assert AUTHENTICATED.is_satisfied_by(Grants(held))


@PROPS
@given(grant_sets, required_scope)
def test_grants_agree_with_pure_predicate(held: frozenset[str], scope: str) -> None:
    assert Grants(held).satisfies(scope) is any(grant_satisfies(g, scope) for g in held)


# -- Grants ------------------------------------------------------------------------------------


def test_grants_container_protocol_and_repr() -> None:
    grants = Grants(["tasks:read", "agents:*", "tasks:read"])
    assert len(grants) == 2
    assert list(grants) == ["agents:*", "tasks:read"]
    assert "agents:*" in grants
    # `in` is exact membership; satisfaction is satisfies().
    assert "agents:read" not in grants
    assert grants.satisfies("agents:read")
    assert grants.scopes == frozenset({"agents:*", "tasks:read"})
    assert repr(grants) == "Grants(['agents:*', 'tasks:read'])"
    assert grants == Grants(["agents:*", "tasks:read"])
    assert hash(grants) == hash(Grants(["tasks:read", "agents:*"]))
    assert _roundtrip(grants) == grants


def test_grants_are_immutable() -> None:
    grants = Grants(["agents:read"])
    with pytest.raises(AttributeError):
        grants.scopes = frozenset({ADMIN})  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del grants.scopes  # type: ignore[misc]
    with pytest.raises(AttributeError):
        grants.extra = 1  # type: ignore[attr-defined]


def test_empty_grants_satisfy_nothing() -> None:
    grants = Grants([])
    assert not grants.satisfies("agents:read")
    assert not grants.satisfies(ADMIN)
    assert len(grants) == 0


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param("admin", id="single-string"),
        pytest.param(["agents:read", "Bad"], id="malformed-member"),
        pytest.param([" admin"], id="whitespace"),
    ],
)
def test_grants_reject_bad_input(scopes: Iterable[str]) -> None:
    with pytest.raises((ScopeError, ConfigurationError)):
        Grants(scopes)


def test_a_string_is_not_a_scope_list() -> None:
    # Grants("admin") must not quietly become {"a", "d", "m", "i", "n"}.
    with pytest.raises(ConfigurationError, match="single string"):
        Grants("admin")


IMPLICATIONS = [
    pytest.param(
        {"agents:write": ["agents:read"]},
        ["agents:write"],
        {"agents:write", "agents:read"},
        id="direct",
    ),
    pytest.param(
        {"a:c": ["a:b"], "a:b": ["a:a"]},
        ["a:c"],
        {"a:c", "a:b", "a:a"},
        id="transitive",
    ),
    pytest.param(
        {"a:a": ["a:b"], "a:b": ["a:a"]},
        ["a:a"],
        {"a:a", "a:b"},
        id="cycle",
    ),
    pytest.param(
        {"a:a": ["a:a"]},
        ["a:a"],
        {"a:a"},
        id="self-cycle",
    ),
    pytest.param(
        {"agents:write": ["tasks:read"]},
        ["agents:*"],
        {"agents:*", "tasks:read"},
        id="wildcard-satisfies-source",
    ),
    pytest.param(
        {"agents:write": ["tasks:read"]},
        ["agents:read"],
        {"agents:read"},
        id="not-triggered",
    ),
    pytest.param(
        {"agents:write": "agents:read"},
        ["x"],
        None,
        id="string-target-rejected",
    ),
    pytest.param({"agents:*": ["x"]}, ["x"], None, id="wildcard-source-rejected"),
]


@pytest.mark.parametrize(("implications", "held", "expected"), IMPLICATIONS)
def test_implications(
    implications: dict[str, list[str]], held: list[str], expected: set[str] | None
) -> None:
    if expected is None:
        with pytest.raises((ScopeError, ConfigurationError)):
            Grants(held, implications)
        return
    assert Grants(held, implications).scopes == expected


def test_implications_are_opt_in() -> None:
    assert not Grants(["agents:write"]).satisfies("agents:read")


def test_admin_grants_are_not_bloated_by_implications() -> None:
    grants = Grants(["admin"], {"agents:write": ["agents:read"]})
    assert grants.scopes == {"admin"}
    assert grants.satisfies("agents:read")


@PROPS
@given(grant_sets, st.dictionaries(required_scope, grant_sets, max_size=5))
def test_implication_closure_is_idempotent(
    held: frozenset[str], implications: dict[str, frozenset[str]]
) -> None:
    expanded = Grants(held, implications)
    assert held <= expanded.scopes
    assert Grants(expanded.scopes, implications).scopes == expanded.scopes


# -- requirements ------------------------------------------------------------------------------

REQUIREMENTS = [
    pytest.param(require("agents:read"), ("agents:read",), "agents:read", id="scope"),
    pytest.param(
        all_of("agents:read", "tasks:read"),
        ("agents:read", "tasks:read"),
        "all_of(agents:read, tasks:read)",
        id="all-of",
    ),
    pytest.param(
        any_of("agents:read", all_of("tasks:read", "admin")),
        ("agents:read", "tasks:read", "admin"),
        "any_of(agents:read, all_of(tasks:read, admin))",
        id="nested",
    ),
    pytest.param(
        all_of(all_of("a:b", "c:d"), "e:f", "a:b"),
        ("a:b", "c:d", "e:f"),
        "all_of(a:b, c:d, e:f)",
        id="flattened-deduplicated",
    ),
    pytest.param(all_of("x:y"), ("x:y",), "x:y", id="single-member-collapses"),
    pytest.param(AUTHENTICATED, (), "authenticated", id="authenticated"),
    pytest.param(DENY, (), "deny", id="deny"),
]


@pytest.mark.parametrize(("req", "scopes", "description"), REQUIREMENTS)
def test_requirement_scopes_and_description(
    req: Requirement, scopes: tuple[str, ...], description: str
) -> None:
    assert req.scopes == scopes
    assert req.describe() == description
    assert _roundtrip(req) == req


EVALUATIONS = [
    pytest.param(all_of("a:r", "b:r"), ["a:r", "b:r"], True, id="all-of-met"),
    pytest.param(all_of("a:r", "b:r"), ["a:r"], False, id="all-of-missing-one"),
    pytest.param(any_of("a:r", "b:r"), ["b:r"], True, id="any-of-met"),
    pytest.param(any_of("a:r", "b:r"), ["c:r"], False, id="any-of-none"),
    pytest.param(all_of("a:r", "b:w"), ["*:r"], False, id="all-of-wildcard-half"),
    pytest.param(all_of("a:r", "b:w"), ["admin"], True, id="all-of-admin"),
    pytest.param(any_of(DENY, "a:r"), ["admin"], True, id="any-of-deny-or-scope"),
    pytest.param(all_of(DENY, "a:r"), ["admin"], False, id="all-of-deny-even-admin"),
    pytest.param(all_of(AUTHENTICATED, "a:r"), ["a:r"], True, id="all-of-authenticated"),
    pytest.param(any_of(all_of("a:r", "b:r"), "c:r"), ["a:r", "b:r"], True, id="nested-met"),
    pytest.param(any_of(all_of("a:r", "b:r"), "c:r"), ["a:r"], False, id="nested-unmet"),
]


@pytest.mark.parametrize(("req", "held", "expected"), EVALUATIONS)
def test_requirement_evaluation(req: Requirement, held: list[str], expected: bool) -> None:
    assert req.is_satisfied_by(Grants(held)) is expected


@PROPS
@given(grant_sets, st.lists(required_scope, min_size=1, max_size=4))
def test_all_of_and_any_of_semantics(held: frozenset[str], needed: list[str]) -> None:
    grants = Grants(held)
    met = [grants.satisfies(s) for s in needed]
    assert all_of(*needed).is_satisfied_by(grants) is all(met)
    assert any_of(*needed).is_satisfied_by(grants) is any(met)
    assert AllOf(*needed).is_satisfied_by(grants) is all(met)
    assert AnyOf(*map(Scope, needed)).is_satisfied_by(grants) is any(met)


def test_requirement_equality_is_structural_and_order_free() -> None:
    assert require("a:b") == Scope("a:b")
    assert hash(require("a:b")) == hash(Scope("a:b"))
    assert all_of("a:b", "c:d") == all_of("c:d", "a:b")
    assert all_of("a:b", "c:d") != any_of("a:b", "c:d")
    assert Scope("a:b") != "a:b"
    assert len({all_of("a:b", "c:d"), all_of("c:d", "a:b"), require("a:b")}) == 2


def test_requirement_reprs() -> None:
    assert repr(Scope("a:b")) == "Scope('a:b')"
    assert (
        repr(all_of("a:b", any_of("c:d", "e")))
        == "AllOf(Scope('a:b'), AnyOf(Scope('c:d'), Scope('e')))"
    )
    assert repr(AUTHENTICATED) == "AUTHENTICATED"
    assert repr(DENY) == "DENY"


def test_requirements_are_immutable() -> None:
    req = Scope("a:b")
    with pytest.raises(AttributeError):
        req.name = "admin"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        DENY.scopes = ("admin",)  # type: ignore[misc]


def test_singletons_survive_pickling() -> None:
    assert _roundtrip(DENY) is DENY
    assert _roundtrip(AUTHENTICATED) is AUTHENTICATED


@pytest.mark.parametrize(
    ("factory", "args"),
    [
        pytest.param(all_of, (), id="all-of-empty"),
        pytest.param(any_of, (), id="any-of-empty"),
        pytest.param(AllOf, (), id="AllOf-empty"),
        pytest.param(AnyOf, (), id="AnyOf-empty"),
        pytest.param(all_of, (3,), id="not-a-requirement"),
    ],
)
def test_bad_combinations_are_configuration_errors(
    factory: object, args: tuple[object, ...]
) -> None:
    with pytest.raises(ConfigurationError):
        factory(*args)  # type: ignore[operator]


@pytest.mark.parametrize("bad", ["agents:*", "Agents", ""])
def test_requirement_strings_are_validated(bad: str) -> None:
    with pytest.raises(ScopeError):
        require(bad)
    with pytest.raises(ScopeError):
        all_of("a:b", bad)


AS_REQUIREMENT = [
    pytest.param("agents:read", Scope("agents:read"), id="string"),
    pytest.param(DENY, DENY, id="requirement"),
    pytest.param(["a:b", "c:d"], all_of("a:b", "c:d"), id="list-is-all-of"),
    pytest.param(("a:b",), Scope("a:b"), id="one-element-tuple"),
    pytest.param(frozenset({"a:b"}), Scope("a:b"), id="frozenset"),
    pytest.param(["a:b", any_of("c:d", "e:f")], all_of("a:b", any_of("c:d", "e:f")), id="mixed"),
]


@pytest.mark.parametrize(("value", "expected"), AS_REQUIREMENT)
def test_as_requirement(value: object, expected: Requirement) -> None:
    assert as_requirement(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([], id="empty-list"),
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
        pytest.param(b"a:b", id="bytes"),
        pytest.param({"a:b": "x"}, id="mapping"),
    ],
)
def test_as_requirement_rejects(value: object) -> None:
    with pytest.raises(ConfigurationError):
        as_requirement(value)  # type: ignore[arg-type]


# -- catalog -----------------------------------------------------------------------------------


def test_platform_scopes_are_the_documented_fourteen() -> None:
    assert len(PLATFORM_SCOPES) == 14
    assert PLATFORM_SCOPES["agents:read"] == "Read agent configurations and status"
    assert PLATFORM_SCOPES["tasks:execute"] == "Execute tasks and workflows"
    assert PLATFORM_SCOPES["integrations:write"] == "Configure integrations and connections"
    assert PLATFORM_SCOPES["webhooks:manage"] == "Create and manage webhooks"
    assert PLATFORM_SCOPES[ADMIN] == "Full administrative access"
    for scope in PLATFORM_SCOPES:
        assert parse_required(scope) == scope
    with pytest.raises(TypeError):
        PLATFORM_SCOPES["x"] = "y"  # type: ignore[index]


def test_platform_catalog_adds_the_management_scope() -> None:
    catalog = ScopeCatalog.platform()
    assert len(catalog) == 15
    assert MANAGE_SCOPE in catalog
    assert catalog.describe(MANAGE_SCOPE) == "Create, list, rotate and revoke API keys"
    assert list(catalog) == sorted(catalog)
    assert dict(catalog.items())["agents:write"] == "Create, update, and delete agents"
    assert catalog.implications == {}
    assert "agents:*" not in catalog
    assert repr(catalog) == "<ScopeCatalog 15 scopes>"


def test_platform_catalog_options() -> None:
    catalog = ScopeCatalog.platform(
        manage_scope="apikeys:admin",
        extra={"billing:read": "See invoices"},
        implications={"agents:write": ["agents:read"]},
    )
    assert "apikeys:admin" in catalog
    assert MANAGE_SCOPE not in catalog
    assert catalog.describe("billing:read") == "See invoices"
    assert catalog.grants(["agents:write"]).satisfies("agents:read")
    with pytest.raises(ScopeError):
        ScopeCatalog.platform(manage_scope="keys:*")


def test_catalog_from_plain_list() -> None:
    catalog = ScopeCatalog(["b:read", "a:read", "ops"])
    assert list(catalog) == ["a:read", "b:read", "ops"]
    assert catalog.describe("ops") == ""
    with pytest.raises(ScopeError):
        ScopeCatalog(["a:*"])
    with pytest.raises(ConfigurationError):
        ScopeCatalog("a:read")


def test_catalog_describes_wildcards() -> None:
    catalog = ScopeCatalog.platform()
    assert "agents:read, agents:write" in catalog.describe("agents:*")
    # keys:manage is privileged: no wildcard reaches it (see keyguard.core.scopes).
    assert catalog.matching("*:manage") == (
        "runners:manage",
        "webhooks:manage",
        "workflows:manage",
    )
    assert catalog.matching(ADMIN) == tuple(catalog)
    with pytest.raises(ScopeError):
        catalog.describe("nope:read")


VALIDATE_OK = [
    pytest.param([], frozenset(), id="empty"),
    pytest.param(["agents:read", "agents:read"], frozenset({"agents:read"}), id="duplicates"),
    pytest.param(["admin"], frozenset({"admin"}), id="admin"),
    pytest.param(["agents:*"], frozenset({"agents:*"}), id="resource-wildcard"),
    pytest.param(["*:read"], frozenset({"*:read"}), id="action-wildcard"),
    pytest.param(["*:*"], frozenset({"*:*"}), id="double-wildcard"),
    pytest.param(("keys:manage",), frozenset({"keys:manage"}), id="manage-scope"),
]


@pytest.mark.parametrize(("scopes", "expected"), VALIDATE_OK)
def test_catalog_validate_accepts(scopes: list[str], expected: frozenset[str]) -> None:
    assert ScopeCatalog.platform().validate(scopes) == expected


VALIDATE_BAD = [
    pytest.param(["agents:delete"], r"unknown scope\(s\): agents:delete", id="unknown"),
    pytest.param(
        ["zeta:read", "agents:read", "alpha:read"],
        r"unknown scope\(s\): alpha:read, zeta:read \(",
        id="all-unknown-listed-sorted",
    ),
    pytest.param(["billing:*"], r"billing:\*", id="resource-wildcard-matches-nothing"),
    pytest.param(["*:delete"], r"\*:delete", id="action-wildcard-matches-nothing"),
    pytest.param(["admin:*"], r"admin:\*", id="bare-word-is-no-resource"),
    pytest.param(["Agents:read"], r"malformed scope\(s\): 'Agents:read'", id="malformed"),
    pytest.param(
        ["agents:read ", "nope"], r"malformed.*'agents:read '.*unknown.*nope", id="both-kinds"
    ),
]


@pytest.mark.parametrize(("scopes", "message"), VALIDATE_BAD)
def test_catalog_validate_rejects(scopes: list[str], message: str) -> None:
    with pytest.raises(ScopeError, match=message):
        ScopeCatalog.platform().validate(scopes)


def test_catalog_validate_rejects_a_single_string() -> None:
    with pytest.raises(ConfigurationError):
        ScopeCatalog.platform().validate("agents:read")


@pytest.mark.parametrize(
    "implications",
    [
        pytest.param({"nope:read": ["agents:read"]}, id="unknown-source"),
        pytest.param({"agents:write": ["nope:read"]}, id="unknown-target"),
        pytest.param({"agents:*": ["agents:read"]}, id="wildcard-source"),
    ],
)
def test_catalog_rejects_bad_implications(implications: dict[str, list[str]]) -> None:
    with pytest.raises(ScopeError):
        ScopeCatalog.platform(implications=implications)


def test_catalog_implications_view() -> None:
    catalog = ScopeCatalog.platform(implications={"agents:write": ["agents:read", "tasks:*"]})
    assert catalog.implications == {"agents:write": frozenset({"agents:read", "tasks:*"})}
    assert "1 implications" in repr(catalog)


# -- covers: no privilege escalation -----------------------------------------------------------

COVERS = [
    pytest.param(["admin"], ["admin"], True, id="admin-admin"),
    pytest.param(["admin"], ["*:*", "agents:read"], True, id="admin-covers-all"),
    pytest.param(["*:*"], ["admin"], False, id="admin-needs-admin"),
    pytest.param(["agents:read"], ["admin"], False, id="admin-not-from-scope"),
    pytest.param(["agents:read"], [], True, id="empty-child"),
    pytest.param([], [], True, id="empty-both"),
    pytest.param([], ["agents:read"], False, id="empty-parent"),
    pytest.param(["agents:read"], ["agents:read"], True, id="same"),
    pytest.param(["agents:read", "tasks:read"], ["tasks:read"], True, id="subset"),
    pytest.param(["agents:read"], ["agents:write"], False, id="other-action"),
    pytest.param(["agents:*"], ["agents:write"], True, id="resource-wildcard-covers-scope"),
    pytest.param(["agents:*"], ["agents:*"], True, id="wildcard-covers-itself"),
    pytest.param(
        ["agents:read", "agents:write"], ["agents:*"], False, id="scopes-do-not-make-wildcard"
    ),
    pytest.param(["*:read"], ["agents:*"], False, id="action-wildcard-not-resource-wildcard"),
    pytest.param(["agents:*"], ["*:read"], False, id="resource-wildcard-not-action-wildcard"),
    pytest.param(["*:*"], ["agents:*", "*:read"], True, id="double-wildcard-covers-wildcards"),
    pytest.param(["*:read"], ["*:*"], False, id="double-wildcard-needs-double"),
    pytest.param(["*:read"], ["tasks:read", "*:read"], True, id="action-wildcard"),
    pytest.param(["*:*"], ["keys:manage"], False, id="double-wildcard-does-not-cover-manage"),
    pytest.param(["keys:manage"], ["keys:manage", "agents:read"], False, id="manage-not-more"),
]


@pytest.mark.parametrize(("parent", "child", "expected"), COVERS)
def test_covers_table(parent: list[str], child: list[str], expected: bool) -> None:
    catalog = ScopeCatalog.platform()
    assert catalog.covers(parent, child) is expected
    assert catalog.covers(Grants(parent), Grants(child)) is expected


COVERS_WITH_IMPLICATIONS = [
    pytest.param(["agents:write"], ["agents:read"], True, id="implied-scope-can-be-delegated"),
    pytest.param(["agents:read"], ["agents:write"], False, id="implying-scope-is-not"),
    pytest.param(["tasks:execute"], ["workflows:manage"], False, id="child-implication-checked"),
    pytest.param(
        ["workflows:*"], ["workflows:manage"], True, id="wildcard-parent-gets-implications"
    ),
    pytest.param(
        ["workflows:manage", "tasks:execute", "tasks:read"],
        ["workflows:manage"],
        True,
        id="chain-covered",
    ),
    pytest.param(["workflows:manage"], ["tasks:*"], False, id="implied-scope-not-wildcard"),
]


@pytest.mark.parametrize(("parent", "child", "expected"), COVERS_WITH_IMPLICATIONS)
def test_covers_with_implications(parent: list[str], child: list[str], expected: bool) -> None:
    catalog = ScopeCatalog.platform(
        implications={
            "agents:write": ["agents:read"],
            "workflows:manage": ["tasks:execute"],
            "tasks:execute": ["tasks:read"],
        }
    )
    assert catalog.covers(parent, child) is expected


def test_covers_rejects_a_single_string() -> None:
    with pytest.raises(ConfigurationError):
        ScopeCatalog.platform().covers("admin", ["agents:read"])


# Grants drawn from (and a little beyond) a small catalog, so overlaps are frequent.
SMALL_CATALOG = ["a:r", "a:w", "b:r", "b:w", "c:x", "admin", "ops"]
catalog_grant = st.sampled_from([*SMALL_CATALOG, "a:*", "b:*", "*:r", "*:w", "*:x", "*:*"])
catalog_grants = st.frozensets(catalog_grant, max_size=5)
implication_maps = st.dictionaries(
    st.sampled_from(SMALL_CATALOG), st.frozensets(catalog_grant, max_size=3), max_size=4
)
# Requirements to probe with: catalog scopes, plus scopes outside the catalog that
# wildcards (but nothing else) reach.
PROBES = [*SMALL_CATALOG, "a:zz", "zz:r", "zz:zz", "zz"]


@PROPS
@given(catalog_grants, catalog_grants, implication_maps)
def test_covers_implies_no_escalation(
    parent: frozenset[str], child: frozenset[str], implications: dict[str, frozenset[str]]
) -> None:
    catalog = ScopeCatalog(SMALL_CATALOG, implications=implications)
    if not catalog.covers(parent, child):
        return
    p, c = catalog.grants(parent), catalog.grants(child)
    for probe in PROBES:
        if c.satisfies(probe):
            assert p.satisfies(probe), (probe, p, c)


@PROPS
@given(catalog_grants, catalog_grants, implication_maps)
def test_covers_accepts_subsets_and_is_reflexive(
    parent: frozenset[str], extra: frozenset[str], implications: dict[str, frozenset[str]]
) -> None:
    catalog = ScopeCatalog(SMALL_CATALOG, implications=implications)
    assert catalog.covers(parent, parent)
    assert catalog.covers(parent | extra, parent)
    assert catalog.covers([ADMIN], parent | extra)


@PROPS
@given(catalog_grants, catalog_grants, catalog_grants)
def test_covers_is_transitive(a: frozenset[str], b: frozenset[str], c: frozenset[str]) -> None:
    catalog = ScopeCatalog(SMALL_CATALOG)
    if catalog.covers(a, b) and catalog.covers(b, c):
        assert catalog.covers(a, c)


# -- nested requirement trees against a reference ----------------------------------------------
#
# Trees of mixed kinds (all_of inside any_of inside all_of, with AUTHENTICATED and DENY as
# leaves), built both through the flattening factories and the raw constructors, evaluated by
# the library and by a recursive reference written from the documented semantics alone.

TREE_SCOPES = ["a:r", "a:w", "b:r", "b:w", "admin", "ops"]
TREE_GRANTS = [*TREE_SCOPES, "a:*", "*:r", "*:*", "b:w"]

Tree = tuple[object, ...]

tree_leaf: st.SearchStrategy[Tree] = st.one_of(
    st.tuples(st.just("scope"), st.sampled_from(TREE_SCOPES), st.booleans()),
    st.just(("authenticated",)),
    st.just(("deny",)),
)


def _tree_node(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    return st.tuples(
        st.sampled_from(["all", "any"]),
        st.booleans(),  # factory (flattens, dedupes) or constructor (keeps the shape)
        st.lists(children, min_size=1, max_size=4).map(tuple),
    )


trees = st.recursive(tree_leaf, _tree_node, max_leaves=10)


def build_tree(tree: Tree) -> Requirement | str:
    kind = tree[0]
    if kind == "scope":
        return str(tree[1]) if tree[2] else Scope(str(tree[1]))
    if kind == "authenticated":
        return AUTHENTICATED
    if kind == "deny":
        return DENY
    members = [build_tree(t) for t in tree[2]]  # type: ignore[union-attr]
    if tree[1]:
        return (all_of if kind == "all" else any_of)(*members)
    return (AllOf if kind == "all" else AnyOf)(*members)


def reference(tree: Tree, held: frozenset[str]) -> bool:
    kind = tree[0]
    if kind == "scope":
        return any(grant_satisfies(g, str(tree[1])) for g in held)
    if kind == "authenticated":
        return True
    if kind == "deny":
        return False
    results = [reference(t, held) for t in tree[2]]  # type: ignore[union-attr]
    return all(results) if kind == "all" else any(results)


def tree_scopes(tree: Tree) -> set[str]:
    if tree[0] == "scope":
        return {str(tree[1])}
    if tree[0] in ("all", "any"):
        return set().union(*(tree_scopes(t) for t in tree[2]))  # type: ignore[union-attr]
    return set()


@PROPS
@given(trees, st.frozensets(st.sampled_from(TREE_GRANTS), max_size=4))
def test_nested_trees_agree_with_a_recursive_reference(tree: Tree, held: frozenset[str]) -> None:
    req = as_requirement(build_tree(tree))
    grants = Grants(held)
    assert req.is_satisfied_by(grants) is reference(tree, held), req.describe()
    assert set(req.scopes) == tree_scopes(tree)
    assert len(req.scopes) == len(set(req.scopes))
    assert _roundtrip(req) == req
    assert _roundtrip(req).is_satisfied_by(grants) is reference(tree, held)


MIXED_TREES = [
    pytest.param(
        any_of(all_of("a:r", "b:r"), all_of("a:w", "b:w")), ["a:r", "a:w"], False, id="any-of-alls"
    ),
    pytest.param(
        any_of(all_of("a:r", "b:r"), all_of("a:w", "b:w")), ["a:w", "b:w"], True, id="second-all"
    ),
    pytest.param(
        all_of(any_of("a:r", "b:r"), any_of("a:w", "b:w")), ["a:r", "b:r"], False, id="all-of-anys"
    ),
    pytest.param(
        all_of(any_of("a:r", "b:r"), any_of("a:w", "b:w")), ["b:r", "a:w"], True, id="both-anys"
    ),
    pytest.param(AnyOf(AllOf("a:r", "b:r")), ["a:r"], False, id="single-member-constructor"),
    pytest.param(AllOf(AnyOf("a:r", "b:r"), "ops"), ["b:r"], False, id="constructor-mixed"),
    pytest.param(AllOf(AnyOf("a:r", "b:r"), "ops"), ["b:r", "ops"], True, id="constructor-met"),
    pytest.param(AnyOf(DENY, AUTHENTICATED), [], True, id="authenticated-member"),
    pytest.param(AllOf(AUTHENTICATED, DENY), ["admin"], False, id="deny-member"),
]


@pytest.mark.parametrize(("req", "held", "expected"), MIXED_TREES)
def test_mixed_trees(req: Requirement, held: list[str], expected: bool) -> None:
    assert req.is_satisfied_by(Grants(held)) is expected


# -- exact error messages ----------------------------------------------------------------------

_SHAPE_TEXT = (
    "expected 'resource:action' or a bare word; each part starts with a lower-case letter, "
    "then up to 63 of a-z, 0-9, '_' or '-'"
)

SCOPE_ERRORS = [
    pytest.param(
        lambda: parse_required(3),
        ScopeError,
        "a required scope must be a string, not int",
        id="required-not-a-string",
    ),
    pytest.param(
        lambda: parse_grant(None),
        ScopeError,
        "a granted scope must be a string, not NoneType",
        id="grant-not-a-string",
    ),
    pytest.param(
        lambda: parse_required("agents:*"),
        ScopeError,
        "required scope 'agents:*' contains a wildcard; wildcards are only allowed in grants "
        "(what a key holds), never in what a route requires",
        id="wildcard-required",
    ),
    pytest.param(
        lambda: parse_required("agents:re*"),
        ScopeError,
        f"invalid required scope 'agents:re*': {_SHAPE_TEXT}",
        id="partial-wildcard-required",
    ),
    pytest.param(
        lambda: parse_grant("**:read"),
        ScopeError,
        f"invalid granted scope '**:read': {_SHAPE_TEXT}",
        id="double-star-grant",
    ),
    pytest.param(
        lambda: parse_required("a" * 80),
        ScopeError,
        f"invalid required scope '{'a' * 80}': {_SHAPE_TEXT}",
        id="eighty-characters-shown-whole",
    ),
    pytest.param(
        lambda: parse_required("a" * 81),
        ScopeError,
        f"invalid required scope '{'a' * 77}...': {_SHAPE_TEXT}",
        id="eighty-one-characters-truncated",
    ),
    pytest.param(
        lambda: Grants("admin"),
        ConfigurationError,
        "Grants scopes must be a collection of scopes, not a single string",
        id="grants-string",
    ),
    pytest.param(
        lambda: Grants(["a"], ["a"]),  # type: ignore[arg-type]
        ConfigurationError,
        "implications must be a mapping of scope -> implied scopes",
        id="implications-not-a-mapping",
    ),
    pytest.param(
        lambda: Grants(["a"], {"a:b": "c:d"}),
        ConfigurationError,
        "implications['a:b'] must be a collection of scopes, not a single string",
        id="implication-target-string",
    ),
    pytest.param(
        lambda: all_of("a:b", 3),  # type: ignore[arg-type]
        ConfigurationError,
        "a requirement must be a scope string or a Requirement, not int",
        id="coerce",
    ),
    pytest.param(
        AllOf,
        ConfigurationError,
        "all_of() needs at least one requirement; use AUTHENTICATED for 'any valid key' or "
        "DENY for 'nobody'",
        id="AllOf-empty",
    ),
    pytest.param(
        AnyOf,
        ConfigurationError,
        "any_of() needs at least one requirement; use AUTHENTICATED for 'any valid key' or "
        "DENY for 'nobody'",
        id="AnyOf-empty",
    ),
    pytest.param(
        all_of,
        ConfigurationError,
        "all_of() needs at least one requirement; use AUTHENTICATED for 'any valid key'",
        id="all-of-empty",
    ),
    pytest.param(
        any_of,
        ConfigurationError,
        "any_of() needs at least one requirement; use DENY for 'nobody'",
        id="any-of-empty",
    ),
    pytest.param(
        lambda: as_requirement(3),  # type: ignore[arg-type]
        ConfigurationError,
        "cannot make a requirement from int; pass a scope string, a Requirement or a list of "
        "scopes",
        id="as-requirement-int",
    ),
    pytest.param(
        lambda: as_requirement([]),
        ConfigurationError,
        "an empty scope list is not a requirement; use AUTHENTICATED for 'any valid key'",
        id="as-requirement-empty",
    ),
    pytest.param(
        lambda: ScopeCatalog("a:read"),
        ConfigurationError,
        "catalog scopes must be a collection of scopes, not a single string",
        id="catalog-string",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"], implications={"b:read": ["a:read"]}),
        ScopeError,
        "implication source 'b:read' is not in the catalog",
        id="implication-source-unknown",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"]).validate("a:read"),
        ConfigurationError,
        "scopes must be a collection of scopes, not a single string",
        id="validate-string",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"]).validate(["Bad", 3, "x" * 100, "b:read", "a:zz"]),
        ScopeError,
        f"malformed scope(s): 'Bad', '{'x' * 77}...', 3 ({_SHAPE_TEXT}); "
        "unknown scope(s): a:zz, b:read (wildcards must match at least one catalog scope)",
        id="validate-both-kinds",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"]).describe("b:read"),
        ScopeError,
        "unknown scope 'b:read'",
        id="describe-unknown",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"]).describe(3),  # type: ignore[arg-type]
        ScopeError,
        "unknown scope 3",
        id="describe-not-a-string",
    ),
    pytest.param(
        lambda: ScopeCatalog(["a:read"]).describe("y" * 90),
        ScopeError,
        f"unknown scope '{'y' * 77}...'",
        id="describe-long",
    ),
]


@pytest.mark.parametrize(("make", "kind", "message"), SCOPE_ERRORS)
def test_errors_have_the_right_type_and_message(
    make: object, kind: type[Exception], message: str
) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the exact type is asserted below
        make()  # type: ignore[operator]
    assert type(info.value) is kind
    assert str(info.value) == message


def test_immutability_errors_name_the_class() -> None:
    cases: list[tuple[object, str]] = [
        (Grants(["a"]), "Grants"),
        (Scope("a"), "Scope"),
        (all_of("a", "b"), "AllOf"),
    ]
    for obj, name in cases:
        for attempt in (lambda o=obj: setattr(o, "scopes", ()), lambda o=obj: delattr(o, "scopes")):
            with pytest.raises(AttributeError) as info:
                attempt()
            assert str(info.value) == f"{name} is immutable"


def test_catalog_describes_a_wildcard_exactly() -> None:
    catalog = ScopeCatalog(["a:read", "a:write", "b:read"])
    assert catalog.describe("a:*") == "Every scope matching a:*: a:read, a:write"
    assert catalog.describe("*:read") == "Every scope matching *:read: a:read, b:read"


# -- hashing, singletons, implication order ----------------------------------------------------


def test_distinct_requirements_and_grants_hash_apart() -> None:
    # Equal objects hash equal (checked elsewhere); distinct ones should not all collide, or
    # every set and dict of requirements degrades into a list.
    reqs = [
        Scope("a"),
        Scope("b"),
        all_of("a", "b"),
        any_of("a", "b"),
        all_of("a", "c"),
        any_of("a", "c"),
        all_of("a", any_of("b", "c")),
        any_of("a", all_of("b", "c")),
    ]
    assert len({hash(r) for r in reqs}) == len(reqs)
    grants = [Grants([]), Grants(["a"]), Grants(["b"]), Grants(["a", "b"]), Grants(["a:*"])]
    assert len({hash(g) for g in grants}) == len(grants)


def test_singleton_classes_build_scopeless_requirements() -> None:
    # AUTHENTICATED and DENY are built once at import time; building their classes again
    # checks the constructors themselves.
    for singleton, satisfied in ((AUTHENTICATED, True), (DENY, False)):
        fresh = type(singleton)()
        assert fresh.scopes == ()
        assert fresh.is_satisfied_by(Grants(["admin"])) is satisfied
        assert all_of("a", fresh).scopes == ("a",)


def test_implications_apply_whatever_their_declaration_order() -> None:
    chain = {"a:a": ["a:b"], "a:b": ["a:c"], "a:c": ["a:d"]}
    backwards = dict(reversed(list(chain.items())))
    for implications in (chain, backwards):
        assert Grants(["a:a"], implications).scopes == {"a:a", "a:b", "a:c", "a:d"}
        assert Grants(["a:c"], implications).scopes == {"a:c", "a:d"}


def reference_closure(held: frozenset[str], implications: dict[str, frozenset[str]]) -> set[str]:
    closed = set(held)
    while True:
        before = len(closed)
        for source, implied in implications.items():
            if any(grant_satisfies(g, source) for g in closed):
                closed |= implied
        if len(closed) == before:
            return closed


@PROPS
@given(
    st.frozensets(st.sampled_from(TREE_GRANTS), max_size=3),
    st.dictionaries(
        st.sampled_from(TREE_SCOPES), st.frozensets(st.sampled_from(TREE_GRANTS), max_size=2)
    ),
)
def test_implication_closure_agrees_with_a_reference(
    held: frozenset[str], implications: dict[str, frozenset[str]]
) -> None:
    grants = Grants(held, implications)
    if ADMIN in held:
        assert grants.scopes == held
    else:
        assert grants.scopes == reference_closure(held, implications)


def test_factories_flatten_nested_combinations_of_their_own_kind() -> None:
    # Built inside the test (not in a parameter table) so that the factories run under test.
    flat = all_of(all_of("a:b", "c:d"), "e:f", all_of("a:b", "g:h"))
    assert type(flat) is AllOf
    assert flat.requirements == (Scope("a:b"), Scope("c:d"), Scope("e:f"), Scope("g:h"))
    assert flat.describe() == "all_of(a:b, c:d, e:f, g:h)"
    either = any_of(any_of("a:b", "c:d"), "e:f")
    assert type(either) is AnyOf
    assert either.requirements == (Scope("a:b"), Scope("c:d"), Scope("e:f"))
    # Another kind is kept as one member, not flattened.
    mixed = all_of(any_of("a:b", "c:d"), "e:f")
    assert mixed.requirements == (any_of("a:b", "c:d"), Scope("e:f"))
    assert any_of(all_of("a:b", "c:d")).describe() == "all_of(a:b, c:d)"
