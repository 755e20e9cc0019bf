"""The route policy table: which requirement each (method, path) needs, compiled once.

A :class:`RoutePolicy` maps ``(method, path template)`` rules and explicit public paths to a
:class:`RouteMatch`, and denies every unlisted route unless told otherwise. All parsing,
validation and regex compilation happen in ``__init__``; :meth:`RoutePolicy.match` is a dict
lookup for literal paths and one precompiled ``fullmatch`` per method for templates, returning
shared, prebuilt :class:`RouteMatch` values. Templates use ``{name}`` for one non-empty path
segment and ``{name:path}`` for the rest of the path (slashes included, possibly empty).
Parameters never match the dot segments ``.`` and ``..``, so a public ``/static/{f:path}``
cannot be stretched over ``/static/../admin`` by a server or framework that normalises paths
after the guard has run. Paths are compared exactly as given, so match against the same
string the application routes on (the ASGI ``path`` / WSGI ``PATH_INFO``): trailing slashes
are significant (``/agents`` is not ``/agents/``) and nothing is percent-decoded again.

Precedence, first hit wins:

1. a literal template for the request method (``HEAD`` falls back to ``GET``),
2. a literal template for ``*`` or a literal public path,
3. templates for the request method (``HEAD``, then ``GET``) in declaration order,
4. ``*`` templates in declaration order, then public templates,
5. the default (``DENY`` unless configured).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from keyguard.core.errors import ConfigurationError, ScopeError
from keyguard.core.scopes import AUTHENTICATED, DENY, Requirement, as_requirement

__all__ = ["PUBLIC", "RouteMatch", "RoutePolicy", "Rule"]


class _Public(enum.Enum):
    PUBLIC = "public"

    def __repr__(self) -> str:
        return "PUBLIC"


#: Marks a route that needs no key at all (as a rule's requirement or as ``default``).
PUBLIC: Final = _Public.PUBLIC

PublicType = Literal[_Public.PUBLIC]

# Words that name a policy outcome rather than a scope, in rule values and ``default``.
_KEYWORDS: Final[Mapping[str, Requirement | PublicType]] = {
    "deny": DENY,
    "authenticated": AUTHENTICATED,
    "public": PUBLIC,
}

_METHOD_RE: Final = re.compile(r"[A-Z][A-Z0-9_-]*|\*")
_PARAM_RE: Final = re.compile(r"\{([^{}]*)\}")
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Whitespace, controls, and '?'/'#' cannot be part of a request path: such a template is a typo.
_BAD_LITERAL_RE: Final = re.compile(r"[\s\x00-\x1f\x7f?#]")
# "\Z", not "$": "$" also matches before a trailing newline.
_NOT_DOT_SEGMENT: Final = r"(?!\.\.?(?:/|\Z))"
_SEGMENT: Final = _NOT_DOT_SEGMENT + r"[^/]+"
_REST: Final = rf"{_NOT_DOT_SEGMENT}[^/]*(?:/{_NOT_DOT_SEGMENT}[^/]*)*"


def _requirement(value: object, where: str) -> Requirement | PublicType:
    if value is PUBLIC:
        return PUBLIC
    if isinstance(value, str) and value in _KEYWORDS:
        return _KEYWORDS[value]
    if value is None:
        raise ConfigurationError(f"{where}: requirement is None; use PUBLIC for a keyless route")
    try:
        return as_requirement(value)  # type: ignore[arg-type]  # validated inside
    except ScopeError as exc:
        raise ScopeError(f"{where}: {exc}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _method(method: object) -> str:
    if not isinstance(method, str) or not _METHOD_RE.fullmatch(method.upper()):
        raise ConfigurationError(f"invalid HTTP method {method!r} (use e.g. 'GET', or '*')")
    return method.upper()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What :meth:`RoutePolicy.match` found. ``requirement is None`` means public (no key).

    ``template`` is the matched template, ``None`` when the default applied. ``cost`` is how
    many rate-limit units the request consumes, ``rate_limited`` whether it is limited at all
    (always ``False`` for public routes: there is no key to charge).
    """

    requirement: Requirement | None
    template: str | None
    cost: int = 1
    rate_limited: bool = True

    @property
    def is_public(self) -> bool:
        return self.requirement is None


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy entry. ``requirement`` may be given as a scope string or list (coerced),
    a :class:`~keyguard.core.scopes.Requirement`, ``PUBLIC``, or the words ``"deny"``,
    ``"authenticated"``, ``"public"``.
    """

    method: str
    path: str
    requirement: Requirement | PublicType
    cost: int = 1
    rate_limited: bool = True

    def __post_init__(self) -> None:
        where = f"rule {self.method!r} {self.path!r}"
        object.__setattr__(self, "method", _method(self.method))
        _Template.parse(self.path)  # fail at declaration, not at policy compile
        object.__setattr__(self, "requirement", _requirement(self.requirement, where))
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ConfigurationError(
                f"{where}: cost must be an integer >= 1 (use rate_limited=False for free routes)"
            )
        if not isinstance(self.rate_limited, bool):
            raise ConfigurationError(f"{where}: rate_limited must be a bool")


@dataclass(frozen=True, slots=True)
class _Template:
    path: str
    static: bool
    regex: str
    # Parameter names erased, so "/a/{x}" and "/a/{y}" are recognised as the same route.
    shape: str

    @classmethod
    def parse(cls, path: object) -> _Template:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"path template {path!r} must be a string starting with '/'")
        regex: list[str] = []
        shape: list[str] = []
        names: set[str] = set()
        pos = 0
        for m in _PARAM_RE.finditer(path):
            cls._literal(path, path[pos : m.start()], regex, shape)
            name, colon, converter = m.group(1).partition(":")
            if not _NAME_RE.fullmatch(name):
                raise ConfigurationError(
                    f"path template {path!r}: bad parameter name {name!r} "
                    "(letters, digits and '_', not starting with a digit)"
                )
            if name in names:
                raise ConfigurationError(f"path template {path!r}: parameter {name!r} repeats")
            names.add(name)
            if not colon:
                regex.append(_SEGMENT)
                shape.append("{}")
            elif converter == "path":
                regex.append(_REST)
                shape.append("{:path}")
            else:
                raise ConfigurationError(
                    f"path template {path!r}: unknown converter {converter!r} "
                    "(only '{name}' and '{name:path}' are supported)"
                )
            pos = m.end()
        cls._literal(path, path[pos:], regex, shape)
        if any(seg in (".", "..") for seg in path.split("/")):
            raise ConfigurationError(f"path template {path!r} contains a '.' or '..' segment")
        return cls(path, not names, "".join(regex), "".join(shape))

    @staticmethod
    def _literal(path: str, text: str, regex: list[str], shape: list[str]) -> None:
        if "{" in text or "}" in text:
            raise ConfigurationError(f"path template {path!r} has unbalanced braces")
        if _BAD_LITERAL_RE.search(text):
            raise ConfigurationError(
                f"path template {path!r} contains whitespace, a control character, '?' or '#'"
            )
        regex.append(re.escape(text))
        shape.append(text)


# A compiled alternation and the match for each of its groups (index 0 is padding:
# ``lastindex`` counts from 1).
_Dynamic: TypeAlias = tuple[re.Pattern[str], tuple[RouteMatch, ...]]


class RoutePolicy:
    """Which requirement each route needs; unlisted routes get ``default`` (deny).

    ``rules`` is a mapping ``{"GET /agents": "agents:read", "/health": PUBLIC}`` (a key
    without a method means ``*``), or an iterable of :class:`Rule` or ``(method, path,
    requirement)`` tuples. ``public`` lists method-agnostic templates that need no key.
    ``default`` is ``"deny"`` (:data:`DENY`, even for admin keys), ``"authenticated"`` (any
    valid key), a scope/requirement, or ``PUBLIC`` (unlisted routes open: use with care).
    Declaring the same (method, template) twice, or a rule for a public template, raises
    :class:`ConfigurationError`: an ambiguous table is a bug, not a preference.
    """

    __slots__ = ("_default", "_dynamic", "_dynamic_any", "_public", "_rules", "_static")

    def __init__(
        self,
        rules: Iterable[Rule | tuple[str, str, object]] | Mapping[str, object] = (),
        *,
        public: Iterable[str] = (),
        default: Requirement | str | PublicType = "deny",
    ) -> None:
        self._rules = tuple(self._read_rules(rules))
        if isinstance(public, str) or not isinstance(public, Iterable):
            raise ConfigurationError(
                f"public must be a collection of path templates, not {type(public).__name__}"
            )
        public_templates = [_Template.parse(p) for p in public]
        self._public = tuple(t.path for t in public_templates)
        self._default = self._make_match(_requirement(default, "default"), None, 1, True)

        seen: dict[tuple[str, str], str] = {}
        public_shapes: dict[str, str] = {}
        for t in public_templates:
            if t.shape in public_shapes:
                raise ConfigurationError(
                    f"public path {t.path!r} duplicates {public_shapes[t.shape]!r}"
                )
            public_shapes[t.shape] = t.path

        # Literal paths: path -> {method: match}. Templates: per method, an ordered list.
        static: dict[str, dict[str, RouteMatch]] = {}
        dynamic: dict[str, list[tuple[_Template, RouteMatch]]] = {}
        for rule in self._rules:
            t = _Template.parse(rule.path)
            if (rule.method, t.shape) in seen:
                raise ConfigurationError(
                    f"duplicate rule {rule.method} {rule.path!r} "
                    f"(already declared as {seen[rule.method, t.shape]!r})"
                )
            seen[rule.method, t.shape] = rule.path
            if t.shape in public_shapes:
                raise ConfigurationError(
                    f"rule {rule.method} {rule.path!r} is for a public path "
                    f"({public_shapes[t.shape]!r}); public paths take no rules"
                )
            match = self._make_match(rule.requirement, t.path, rule.cost, rule.rate_limited)
            if t.static:
                static.setdefault(t.path, {})[rule.method] = match
            else:
                dynamic.setdefault(rule.method, []).append((t, match))
        public_dynamic: list[tuple[_Template, RouteMatch]] = []
        for t in public_templates:
            match = RouteMatch(None, t.path, 1, False)
            if t.static:
                static.setdefault(t.path, {})["*"] = match
            else:
                public_dynamic.append((t, match))

        # HEAD is answered like GET by every framework, so it is guarded like GET unless
        # a HEAD rule says otherwise; precomputing this keeps match() free of the fallback.
        for by_method in static.values():
            if "GET" in by_method and "HEAD" not in by_method:
                by_method["HEAD"] = by_method["GET"]
        anywhere = dynamic.pop("*", []) + public_dynamic
        if "GET" in dynamic:
            dynamic["HEAD"] = dynamic.get("HEAD", []) + dynamic["GET"]
        self._static = static
        self._dynamic = {m: self._compile(entries + anywhere) for m, entries in dynamic.items()}
        self._dynamic_any = self._compile(anywhere) if anywhere else None

    @staticmethod
    def _read_rules(
        rules: Iterable[Rule | tuple[str, str, object]] | Mapping[str, object],
    ) -> Iterable[Rule]:
        if isinstance(rules, str) or not isinstance(rules, Iterable):
            raise ConfigurationError(
                f"rules must be a mapping or a collection of rules, not {type(rules).__name__}"
            )
        if isinstance(rules, Mapping):
            for key, value in rules.items():
                parts = key.split() if isinstance(key, str) else []
                if len(parts) == 1 and parts[0].startswith("/"):
                    parts.insert(0, "*")
                if len(parts) != 2:
                    raise ConfigurationError(
                        f"policy key {key!r} must be 'METHOD /path' or '/path' (any method)"
                    )
                yield Rule(parts[0], parts[1], value)  # type: ignore[arg-type]  # coerced
            return
        for item in rules:
            if isinstance(item, Rule):
                yield item
            elif isinstance(item, tuple) and len(item) == 3:
                yield Rule(item[0], item[1], item[2])  # type: ignore[arg-type]  # coerced
            else:
                raise ConfigurationError(
                    f"policy entry {item!r} must be a Rule or a (method, path, requirement) tuple"
                )

    @staticmethod
    def _make_match(
        requirement: Requirement | PublicType, template: str | None, cost: int, limited: bool
    ) -> RouteMatch:
        if requirement is PUBLIC:
            return RouteMatch(None, template, cost, False)
        return RouteMatch(requirement, template, cost, limited)

    @staticmethod
    def _compile(entries: list[tuple[_Template, RouteMatch]]) -> _Dynamic | None:
        if not entries:
            return None
        # One alternation per method, tried left to right (declaration order). Each branch
        # ends in an empty marker group (parameters capture nothing), so ``lastindex`` names
        # the winner. Markers go last, not around the branch: branches that start with
        # literal text let the regex compiler factor out common prefixes and skip branches
        # on their first character, 3-10x faster on tables of dozens of templates.
        pattern = "|".join(f"{t.regex}()" for t, _ in entries)
        return re.compile(pattern), (entries[0][1], *(m for _, m in entries))

    def match(self, method: str, path: str) -> RouteMatch:
        """The rule for this request, or the default. ``method`` is compared upper-case."""
        by_method = self._static.get(path)
        if by_method is not None:
            # Servers send upper-case methods: try the method as given before upper-casing it.
            hit = by_method.get(method)
            if hit is None:
                hit = by_method.get(method.upper())
                if hit is None:
                    hit = by_method.get("*")
            if hit is not None:
                return hit
        method = method.upper()
        dynamic = self._dynamic.get(method, self._dynamic_any)
        if dynamic is not None:
            m = dynamic[0].fullmatch(path)
            if m is not None:
                return dynamic[1][m.lastindex or 0]
        return self._default

    @classmethod
    def allow_all(cls, requirement: Requirement | str = AUTHENTICATED) -> RoutePolicy:
        """A policy where every route needs only ``requirement`` (by default: any valid key)."""
        return cls((), default=requirement)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    @property
    def public_paths(self) -> tuple[str, ...]:
        return self._public

    @property
    def default(self) -> RouteMatch:
        return self._default

    @property
    def required_scopes(self) -> frozenset[str]:
        """Every scope named by a rule or the default: check them against the catalog."""
        reqs = [r.requirement for r in self._rules] + [self._default.requirement]
        return frozenset(s for r in reqs if isinstance(r, Requirement) for s in r.scopes)

    def __repr__(self) -> str:
        default = self._default.requirement
        shown = "PUBLIC" if default is None else repr(default)
        return (
            f"<RoutePolicy {len(self._rules)} rules, {len(self._public)} public paths, "
            f"default={shown}>"
        )
