"""Scope grammar, per-key grants, route requirements and the scope catalog.

A scope is ``resource:action`` (``agents:read``) or a bare word (``admin``); each part is
``[a-z][a-z0-9_-]{0,63}``. What a key *holds* is a grant and may use wildcards (``agents:*``,
``*:read``, ``*:*``); what a route *needs* is a requirement and never does. ``admin``
satisfies every requirement, a bare word satisfies only itself, and ``*:*`` satisfies every
``resource:action`` scope but no bare word. :class:`Grants` is built once per key (implications
expanded, lookups precomputed) so that the per-request check is a few set lookups;
:class:`Requirement` trees (:func:`require`, :func:`all_of`, :func:`any_of`) are evaluated
against it; :class:`ScopeCatalog` declares which scopes exist, validates new keys against
them, and decides whether one key may hand its scopes to another without escalating.

**Privileged scopes are never reached by a wildcard.** The key-management scope
(``keys:manage``, or whatever :meth:`ScopeCatalog.platform` is given as ``manage_scope``) is
satisfied only by itself or ``admin``: ``*:*``, ``*:manage`` and ``keys:*`` do not grant it,
so an operator who hands out ``*:manage`` to run workflows and runners does not hand out key
management by accident. The same holds everywhere scopes are compared: in
:meth:`Grants.satisfies` (routes that require ``keys:manage``), in :func:`grant_satisfies`,
in :meth:`ScopeCatalog.covers` (a ``*:*`` key cannot mint a ``keys:manage`` key) and in the
implications, which fire on a privileged source only for an exact grant. ``*:*`` itself stays
a valid grant: it reaches neither ``admin`` nor a privileged scope, so it is "every ordinary
``resource:action`` scope", not a back door to either.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar, Final, NoReturn

from keyguard.core.errors import ConfigurationError, ScopeError

__all__ = [
    "ADMIN",
    "AUTHENTICATED",
    "DEFAULT_PRIVILEGED",
    "DENY",
    "MANAGE_SCOPE",
    "PLATFORM_SCOPES",
    "AllOf",
    "AnyOf",
    "Grants",
    "Requirement",
    "Scope",
    "ScopeCatalog",
    "all_of",
    "any_of",
    "as_requirement",
    "grant_satisfies",
    "parse_grant",
    "parse_required",
    "require",
]

ADMIN: Final = "admin"
MANAGE_SCOPE: Final = "keys:manage"
WILDCARD: Final = "*"
#: Scopes only an exact grant (or ``admin``) satisfies, never a wildcard: see the module docs.
DEFAULT_PRIVILEGED: Final = frozenset({MANAGE_SCOPE})

#: The platform's 14 scopes, in the order its documentation lists them.
PLATFORM_SCOPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "agents:read": "Read agent configurations and status",
        "agents:write": "Create, update, and delete agents",
        "tasks:read": "View task history and status",
        "tasks:execute": "Execute tasks and workflows",
        "workflows:read": "View workflow definitions",
        "workflows:manage": "Create, update, and manage workflows",
        "knowledge:read": "Access knowledge base entries",
        "knowledge:write": "Add and update knowledge entries",
        "runners:read": "View runner status and configurations",
        "runners:manage": "Deploy and manage runners",
        "integrations:read": "View integration configurations",
        "integrations:write": "Configure integrations and connections",
        "webhooks:manage": "Create and manage webhooks",
        ADMIN: "Full administrative access",
    }
)

_MANAGE_DESCRIPTION: Final = "Create, list, rotate and revoke API keys"

_WORD: Final = r"[a-z][a-z0-9_-]{0,63}"
# fullmatch, never match + "$": "$" would accept a trailing newline.
_REQUIRED_RE: Final = re.compile(rf"{_WORD}(?::{_WORD})?")
_GRANT_RE: Final = re.compile(rf"(?:{_WORD}|\*):(?:{_WORD}|\*)|{_WORD}")
_SHAPE: Final = (
    "expected 'resource:action' or a bare word; each part starts with a lower-case letter, "
    "then up to 63 of a-z, 0-9, '_' or '-'"
)


def _show(value: str) -> str:
    # Scopes are not secrets, but a caller may hand us arbitrary (huge) text: keep
    # messages short enough for logs and problem responses.
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


def _bad_scope(value: object, kind: str) -> NoReturn:
    if not isinstance(value, str):
        raise ScopeError(f"a {kind} scope must be a string, not {type(value).__name__}")
    if WILDCARD in value and kind == "required" and _GRANT_RE.fullmatch(value):
        raise ScopeError(
            f"required scope {_show(value)} contains a wildcard; wildcards are only "
            "allowed in grants (what a key holds), never in what a route requires"
        )
    raise ScopeError(f"invalid {kind} scope {_show(value)}: {_SHAPE}")


def parse_required(s: str) -> str:
    """Validate a scope a route may require (no wildcards) and return it unchanged.

    Nothing is stripped or case-folded: ``" agents:read"`` and ``"Agents:read"`` are errors,
    because silently normalising would let two spellings of one scope drift apart.
    """
    if isinstance(s, str) and _REQUIRED_RE.fullmatch(s):
        return s
    _bad_scope(s, "required")


def parse_grant(s: str) -> str:
    """Validate a scope a key may hold (wildcards allowed) and return it unchanged."""
    if isinstance(s, str) and _GRANT_RE.fullmatch(s):
        return s
    _bad_scope(s, "granted")


def grant_satisfies(
    grant: str, required: str, privileged: frozenset[str] = DEFAULT_PRIVILEGED
) -> bool:
    """Whether one (valid) grant satisfies one (valid) required scope.

    The reference semantics that :meth:`Grants.satisfies` precomputes. Given a wildcard
    grant as ``required`` it answers "is ``grant`` at least as broad?" (a ``*`` is matched
    only by a ``*``), which is what :meth:`ScopeCatalog.covers` relies on. A ``privileged``
    scope is satisfied only by itself or ``admin``, never by a wildcard.
    """
    if grant in (ADMIN, required):
        return True
    if required in privileged:
        return False
    g_res, g_sep, g_act = grant.partition(":")
    r_res, r_sep, r_act = required.partition(":")
    if not (g_sep and r_sep):
        # A bare word only ever matches itself (handled above), or is admin.
        return False
    return g_res in (WILDCARD, r_res) and g_act in (WILDCARD, r_act)


def _scope_list(scopes: Iterable[str], what: str) -> list[str]:
    # A str is an Iterable[str] too: Grants("admin") would otherwise silently become the
    # grants {"a", "d", "m", "i", "n"}.
    if isinstance(scopes, str):
        raise ConfigurationError(f"{what} must be a collection of scopes, not a single string")
    return list(scopes)


def _normalize_implications(
    implications: Mapping[str, Iterable[str]] | None,
) -> dict[str, frozenset[str]]:
    if not implications:
        return {}
    if not isinstance(implications, Mapping):
        raise ConfigurationError("implications must be a mapping of scope -> implied scopes")
    normalized: dict[str, frozenset[str]] = {}
    for source, targets in implications.items():
        implied = frozenset(
            parse_grant(t) for t in _scope_list(targets, f"implications[{source!r}]")
        )
        normalized[parse_required(source)] = implied
    return normalized


def _privileged(scopes: Iterable[str]) -> frozenset[str]:
    return frozenset(parse_required(s) for s in _scope_list(scopes, "privileged scopes"))


def _expand(
    scopes: set[str],
    implications: Mapping[str, frozenset[str]],
    privileged: frozenset[str] = DEFAULT_PRIVILEGED,
) -> set[str]:
    """Close ``scopes`` under ``implications`` (in place, and returned).

    An implication fires when the grants *satisfy* its source, not only when they contain
    it: a key holding ``agents:*`` holds ``agents:write`` and so whatever that implies.
    Otherwise a parent with ``agents:*`` could mint a child with ``agents:write`` whose
    implied scopes the parent itself lacks. Iterating to a fixpoint over a growing set
    terminates and is immune to cycles (``a ⇒ b ⇒ a``).
    """
    pending = dict(implications)
    changed = True
    while changed and pending:
        changed = False
        for source, implied in list(pending.items()):
            if any(grant_satisfies(g, source, privileged) for g in scopes):
                del pending[source]
                if not implied <= scopes:
                    scopes |= implied
                    changed = True
    return scopes


class Grants:
    """The scopes one key holds, preprocessed for the per-request check.

    Build it once per key (on cache fill), then call :meth:`satisfies` on every request:
    the admin flag, one exact lookup and, only for keys holding wildcards, three more.
    ``in``/iteration/``len`` work on the exact (expanded) grant strings; use
    :meth:`satisfies` to ask whether a requirement is met. ``privileged`` names the scopes no
    wildcard satisfies (default: ``keys:manage``); :meth:`ScopeCatalog.grants` passes the
    catalog's own.
    """

    __slots__ = (
        "_actions",
        "_admin",
        "_any_pair",
        "_hash",
        "_privileged",
        "_resources",
        "_wild",
        "scopes",
    )

    scopes: frozenset[str]
    _admin: bool
    _wild: bool
    _any_pair: bool
    _resources: frozenset[str]
    _actions: frozenset[str]
    _privileged: frozenset[str]
    _hash: int

    def __init__(
        self,
        scopes: Iterable[str],
        implications: Mapping[str, Iterable[str]] | None = None,
        *,
        privileged: Iterable[str] = DEFAULT_PRIVILEGED,
    ) -> None:
        held = {parse_grant(s) for s in _scope_list(scopes, "Grants scopes")}
        impl = _normalize_implications(implications)
        exact_only = privileged if privileged is DEFAULT_PRIVILEGED else _privileged(privileged)
        # admin already satisfies every source and target: expanding would only bloat .scopes.
        if impl and ADMIN not in held:
            _expand(held, impl, exact_only)
        resources = frozenset(s[:-2] for s in held if s.endswith(":*") and not s.startswith("*:"))
        actions = frozenset(s[2:] for s in held if s.startswith("*:") and s != "*:*")
        init = object.__setattr__
        init(self, "scopes", frozenset(held))
        init(self, "_admin", ADMIN in held)
        init(self, "_any_pair", "*:*" in held)
        init(self, "_resources", resources)
        init(self, "_actions", actions)
        init(self, "_wild", bool(resources or actions) or "*:*" in held)
        init(self, "_privileged", frozenset(exact_only))
        init(self, "_hash", hash((self.scopes, self._privileged)))

    @property
    def privileged(self) -> frozenset[str]:
        """The scopes these grants satisfy only exactly (or through ``admin``)."""
        return self._privileged

    def satisfies(self, required: str) -> bool:
        """Whether these grants satisfy one required scope (hot path: no validation)."""
        if self._admin or required in self.scopes:
            return True
        if not self._wild or required in self._privileged:
            return False
        resource, sep, action = required.partition(":")
        if not sep:
            return False
        return self._any_pair or resource in self._resources or action in self._actions

    def __contains__(self, scope: object) -> bool:
        return scope in self.scopes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.scopes))

    def __len__(self) -> int:
        return len(self.scopes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Grants):
            return self.scopes == other.scopes and self._privileged == other._privileged
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Grants({sorted(self.scopes)!r})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(
        self,
    ) -> tuple[Callable[[tuple[str, ...], tuple[str, ...]], Grants], tuple[tuple[str, ...], ...]]:
        # Slots without __dict__ and a blocking __setattr__ defeat default pickling;
        # the expanded scopes rebuild an equal object without the implications.
        return (_rebuild_grants, (tuple(sorted(self.scopes)), tuple(sorted(self._privileged))))


def _rebuild_grants(scopes: tuple[str, ...], privileged: tuple[str, ...]) -> Grants:
    return Grants(scopes, privileged=privileged)


class Requirement(abc.ABC):
    """What a route needs from a key: a tree of scopes combined with all/any.

    ``scopes`` names every scope involved (for the 403 body); :meth:`describe` renders the
    tree (``all_of(agents:read, tasks:read)``). Requirements are immutable and hashable.
    """

    __slots__ = ("scopes",)

    scopes: tuple[str, ...]

    @abc.abstractmethod
    def is_satisfied_by(self, grants: Grants) -> bool:
        """Whether a key with ``grants`` meets this requirement."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A compact human form, used in error details."""

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")


class Scope(Requirement):
    """A single required scope."""

    __slots__ = ("name",)

    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", parse_required(name))
        object.__setattr__(self, "scopes", (name,))

    def is_satisfied_by(self, grants: Grants) -> bool:
        return grants.satisfies(self.name)

    def describe(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Scope):
            return self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Scope, self.name))

    def __repr__(self) -> str:
        return f"Scope({self.name!r})"

    def __reduce__(self) -> tuple[type[Scope], tuple[str]]:
        return (Scope, (self.name,))


def _coerce(item: str | Requirement) -> Requirement:
    if isinstance(item, Requirement):
        return item
    if isinstance(item, str):
        return Scope(item)
    raise ConfigurationError(
        f"a requirement must be a scope string or a Requirement, not {type(item).__name__}"
    )


class _Combination(Requirement):
    __slots__ = ("_names", "requirements")

    _word: ClassVar[str]
    requirements: tuple[Requirement, ...]
    # Set when every member is a plain Scope, so evaluation skips a method call per member.
    _names: tuple[str, ...] | None

    def __init__(self, *requirements: str | Requirement) -> None:
        if not requirements:
            raise ConfigurationError(
                f"{self._word}() needs at least one requirement; use AUTHENTICATED for "
                "'any valid key' or DENY for 'nobody'"
            )
        reqs = tuple(_coerce(r) for r in requirements)
        names = dict.fromkeys(n for r in reqs for n in r.scopes)
        plain = all(type(r) is Scope for r in reqs)
        object.__setattr__(self, "requirements", reqs)
        object.__setattr__(self, "scopes", tuple(names))
        object.__setattr__(self, "_names", tuple(r.scopes[0] for r in reqs) if plain else None)

    def describe(self) -> str:
        return f"{self._word}({', '.join(r.describe() for r in self.requirements)})"

    def __eq__(self, other: object) -> bool:
        # all/any are commutative: member order is presentation, not meaning.
        if type(other) is type(self):
            assert isinstance(other, _Combination)
            return frozenset(self.requirements) == frozenset(other.requirements)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self), frozenset(self.requirements)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.requirements))})"

    def __reduce__(self) -> tuple[type[Requirement], tuple[Requirement, ...]]:
        return (type(self), self.requirements)


class AllOf(_Combination):
    """Satisfied when every member is."""

    __slots__ = ()
    _word = "all_of"

    def is_satisfied_by(self, grants: Grants) -> bool:
        names = self._names
        if names is not None:
            return all(map(grants.satisfies, names))
        return all(r.is_satisfied_by(grants) for r in self.requirements)


class AnyOf(_Combination):
    """Satisfied when at least one member is."""

    __slots__ = ()
    _word = "any_of"

    def is_satisfied_by(self, grants: Grants) -> bool:
        names = self._names
        if names is not None:
            return any(map(grants.satisfies, names))
        return any(r.is_satisfied_by(grants) for r in self.requirements)


class _Authenticated(Requirement):
    __slots__ = ()

    def __init__(self) -> None:
        object.__setattr__(self, "scopes", ())

    def is_satisfied_by(self, grants: Grants) -> bool:
        return True

    def describe(self) -> str:
        return "authenticated"

    def __repr__(self) -> str:
        return "AUTHENTICATED"

    def __reduce__(self) -> str:
        return "AUTHENTICATED"


class _Deny(Requirement):
    __slots__ = ()

    def __init__(self) -> None:
        object.__setattr__(self, "scopes", ())

    def is_satisfied_by(self, grants: Grants) -> bool:
        # Not even admin: DENY is what unlisted routes get under deny-by-default, and an
        # admin key must not turn a forgotten route into an open one.
        return False

    def describe(self) -> str:
        return "deny"

    def __repr__(self) -> str:
        return "DENY"

    def __reduce__(self) -> str:
        return "DENY"


#: Satisfied by every valid key, whatever its scopes.
AUTHENTICATED: Final[Requirement] = _Authenticated()
#: Satisfied by no key at all, admin included.
DENY: Final[Requirement] = _Deny()


def require(scope: str | Requirement) -> Requirement:
    """One required scope (validated), or a Requirement passed through."""
    return _coerce(scope)


def _combine(kind: type[_Combination], items: tuple[str | Requirement, ...]) -> Requirement:
    flat: dict[Requirement, None] = {}
    for item in items:
        req = _coerce(item)
        # all_of(all_of(a, b), c) is all_of(a, b, c); same for any_of.
        members = req.requirements if type(req) is kind else (req,)
        flat.update(dict.fromkeys(members))
    if not flat:
        raise ConfigurationError(f"{kind._word}() needs at least one requirement")
    if len(flat) == 1:
        return next(iter(flat))
    return kind(*flat)


def all_of(*requirements: str | Requirement) -> Requirement:
    """Every listed scope/requirement is needed. Nested all_of are flattened, repeats dropped."""
    if not requirements:
        raise ConfigurationError(
            "all_of() needs at least one requirement; use AUTHENTICATED for 'any valid key'"
        )
    return _combine(AllOf, requirements)


def any_of(*requirements: str | Requirement) -> Requirement:
    """One of the listed scopes/requirements suffices. Nested any_of are flattened."""
    if not requirements:
        raise ConfigurationError("any_of() needs at least one requirement; use DENY for 'nobody'")
    return _combine(AnyOf, requirements)


def as_requirement(x: str | Requirement | Iterable[str | Requirement]) -> Requirement:
    """Coerce the usual spellings: a scope string, a Requirement, or a collection (all_of)."""
    if isinstance(x, (str, Requirement)):
        return _coerce(x)
    if isinstance(x, (bytes, bytearray, Mapping)) or not isinstance(x, Iterable):
        raise ConfigurationError(
            f"cannot make a requirement from {type(x).__name__}; pass a scope string, "
            "a Requirement or a list of scopes"
        )
    items = tuple(x)
    if not items:
        raise ConfigurationError(
            "an empty scope list is not a requirement; use AUTHENTICATED for 'any valid key'"
        )
    return all_of(*items)


class ScopeCatalog:
    """The scopes a deployment defines, with descriptions and optional implications.

    Keys may only be created with scopes from the catalog (wildcards allowed when they
    match at least one catalog scope). Implications are opt-in: ``{"agents:write":
    ["agents:read"]}`` makes every key holding ``agents:write`` hold ``agents:read`` too.
    ``privileged`` scopes (default: ``keys:manage``) are satisfied only by themselves or
    ``admin``, never by a wildcard grant (see the module docstring).
    """

    __slots__ = (
        "_actions",
        "_any_pair",
        "_implications",
        "_privileged",
        "_resources",
        "_scopes",
    )

    def __init__(
        self,
        scopes: Mapping[str, str] | Iterable[str],
        *,
        implications: Mapping[str, Iterable[str]] | None = None,
        privileged: Iterable[str] = DEFAULT_PRIVILEGED,
    ) -> None:
        self._privileged = _privileged(privileged)
        if isinstance(scopes, Mapping):
            pairs = [(parse_required(k), str(v)) for k, v in scopes.items()]
        else:
            pairs = [(parse_required(s), "") for s in _scope_list(scopes, "catalog scopes")]
        self._scopes: Mapping[str, str] = MappingProxyType(dict(sorted(pairs)))
        split = [s.partition(":") for s in self._scopes]
        self._resources = frozenset(r for r, sep, _ in split if sep)
        self._actions = frozenset(a for _, sep, a in split if sep)
        self._any_pair = bool(self._resources)
        impl = _normalize_implications(implications)
        for source, implied in impl.items():
            if source not in self._scopes:
                raise ScopeError(f"implication source {_show(source)} is not in the catalog")
            self.validate(implied)
        self._implications: Mapping[str, frozenset[str]] = MappingProxyType(impl)

    @classmethod
    def platform(
        cls,
        *,
        manage_scope: str = MANAGE_SCOPE,
        extra: Mapping[str, str] | None = None,
        implications: Mapping[str, Iterable[str]] | None = None,
    ) -> ScopeCatalog:
        """The platform's 14 scopes plus the key-management scope (and any ``extra``).

        The management scope is privileged: no wildcard grant satisfies it.
        """
        scopes = dict(PLATFORM_SCOPES)
        scopes.setdefault(parse_required(manage_scope), _MANAGE_DESCRIPTION)
        if extra:
            scopes.update(extra)
        return cls(scopes, implications=implications, privileged=(manage_scope,))

    def _known(self, grant: str) -> bool:
        if grant in self._scopes:
            return True
        resource, sep, action = grant.partition(":")
        if not sep or WILDCARD not in grant:
            return False
        if resource == WILDCARD:
            return self._any_pair if action == WILDCARD else action in self._actions
        return resource in self._resources  # "resource:*"

    def validate(self, scopes: Iterable[str]) -> frozenset[str]:
        """Check scopes for a new key; return them as a frozenset.

        Raises :class:`ScopeError` naming every malformed or unknown scope at once, so an
        operator fixes a request in one round.
        """
        items = _scope_list(scopes, "scopes")
        malformed = sorted(
            {
                _show(s) if isinstance(s, str) else repr(s)
                for s in items
                if not (isinstance(s, str) and _GRANT_RE.fullmatch(s))
            }
        )
        unknown = sorted(
            {
                s
                for s in items
                if isinstance(s, str) and _GRANT_RE.fullmatch(s) and not self._known(s)
            }
        )
        if malformed or unknown:
            problems = []
            if malformed:
                problems.append(f"malformed scope(s): {', '.join(malformed)} ({_SHAPE})")
            if unknown:
                problems.append(
                    f"unknown scope(s): {', '.join(unknown)} (wildcards must match at least "
                    "one catalog scope)"
                )
            raise ScopeError("; ".join(problems))
        return frozenset(items)

    def grants(self, scopes: Iterable[str]) -> Grants:
        """Grants for a stored key, with this catalog's implications applied.

        Only syntax is checked here: membership is enforced when a key is created
        (:meth:`validate`), and a key minted before a scope left the catalog keeps
        working rather than failing every request with an exception.
        """
        return Grants(scopes, self._implications, privileged=self._privileged)

    @property
    def privileged(self) -> frozenset[str]:
        """The scopes only an exact grant or ``admin`` satisfies (never a wildcard)."""
        return self._privileged

    def matching(self, grant: str) -> tuple[str, ...]:
        """The catalog scopes a grant satisfies, sorted (expands wildcards and admin)."""
        parse_grant(grant)
        return tuple(s for s in self._scopes if grant_satisfies(grant, s, self._privileged))

    def covers(
        self, parent_scopes: Iterable[str] | Grants, child_scopes: Iterable[str] | Grants
    ) -> bool:
        """Whether a key holding ``parent_scopes`` may hand out ``child_scopes``.

        True iff every scope the child would hold (after implications) is matched by a
        parent grant at least as broad: ``agents:*`` covers ``agents:read`` and
        ``agents:*``, but ``agents:read`` + ``agents:write`` do not cover ``agents:*``
        (the wildcard also reaches scopes added later). ``admin`` covers everything and is
        covered only by ``admin``. Consequently every requirement the child satisfies, the
        parent satisfies: no privilege escalation.
        """
        parent = self._closure(parent_scopes)
        if ADMIN in parent:
            return True
        child = self._closure(child_scopes)
        privileged = self._privileged
        return all(
            c in parent or any(grant_satisfies(p, c, privileged) for p in parent) for c in child
        )

    def _closure(self, scopes: Iterable[str] | Grants) -> frozenset[str]:
        raw = scopes.scopes if isinstance(scopes, Grants) else scopes
        return Grants(raw, self._implications, privileged=self._privileged).scopes

    @property
    def implications(self) -> Mapping[str, frozenset[str]]:
        return self._implications

    def describe(self, scope: str) -> str:
        """The description of a catalog scope (wildcards summarise what they match)."""
        try:
            return self._scopes[scope]
        except (KeyError, TypeError):
            pass
        if isinstance(scope, str) and _GRANT_RE.fullmatch(scope) and self._known(scope):
            return "Every scope matching " + scope + ": " + ", ".join(self.matching(scope))
        shown = _show(scope) if isinstance(scope, str) else repr(scope)
        raise ScopeError(f"unknown scope {shown}")

    def items(self) -> ItemsView[str, str]:
        return self._scopes.items()

    def __contains__(self, scope: object) -> bool:
        return scope in self._scopes

    def __iter__(self) -> Iterator[str]:
        return iter(self._scopes)

    def __len__(self) -> int:
        return len(self._scopes)

    def __repr__(self) -> str:
        extra = f", {len(self._implications)} implications" if self._implications else ""
        return f"<ScopeCatalog {len(self._scopes)} scopes{extra}>"
