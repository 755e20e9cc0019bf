"""The value every request check returns: a :class:`Decision`, allowed or denied.

Denials are values, not exceptions, so adapters render them uniformly and the hot path never
pays for raising. Stateless denials are module-level singletons; allowed decisions for a key
are built once per cache entry and reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from keyguard.core.errors import STATUS, ErrorCode
from keyguard.core.ratelimit import WindowPlan, admitted_headers, admitted_headers_asgi

if TYPE_CHECKING:
    from keyguard.core.records import KeyRecord
    from keyguard.core.scopes import Grants


_PRINCIPAL_STATE: Final = ("key_id", "name", "owner", "grants", "record")


@dataclass(frozen=True, slots=True, eq=False)
class Principal:
    """The authenticated caller: a key, who owns it and what it may do.

    Compatible with Starlette's user protocol (``is_authenticated``, ``display_name``,
    ``identity``) so ``request.user`` works unchanged.
    """

    key_id: str
    name: str
    owner: str | None
    grants: Grants
    record: KeyRecord
    #: What an adapter hands its framework for this principal, made on first use and kept
    #: with it (the ASGI adapters' ``scope["auth"]``,
    #: :func:`keyguard.adapters.asgi.credentials`): one per cached principal, not one per
    #: request. Set through :func:`object.__setattr__` only; never compared, never shown.
    _view: Any = field(default=None, init=False, repr=False, compare=False)

    # A copy or a pickle carries the principal's value, not an adapter's cache of it (whose
    # view would point at the original).
    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _PRINCIPAL_STATE)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(_PRINCIPAL_STATE, state, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_view", None)

    @property
    def scopes(self) -> frozenset[str]:
        return self.grants.scopes

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.key_id

    def has_scope(self, scope: str) -> bool:
        """Whether the key's grants satisfy ``scope`` (wildcards and ``admin`` included)."""
        return self.grants.satisfies(scope)

    def __repr__(self) -> str:
        return f"Principal(key_id={self.key_id!r}, owner={self.owner!r}, name={self.name!r})"


class Decision(NamedTuple):
    """Outcome of checking one request. Immutable.

    :attr:`headers` are the extra response headers adapters add — to the application's
    response when allowed, to the problem response when denied: ``extra_headers`` plus, for an
    admitted rate-limited request, the rate-limit headers, rendered only when asked for
    (:attr:`headers` as text pairs, :meth:`asgi_headers` as ASGI byte pairs).

    A named tuple rather than a frozen dataclass: one is built on every rate-limited request,
    and a frozen dataclass costs three times as much to construct. Compare by field
    (``decision.allowed``), not by truthiness: a Decision is a non-empty tuple, always truthy.
    """

    allowed: bool
    principal: Principal | None = None
    code: ErrorCode | None = None
    detail: str = ""
    required: tuple[str, ...] = ()
    retry_after: int | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    #: ``(plan, counts, ietf, legacy)`` of an admitted rate-limit check, rendered lazily.
    rate: tuple[WindowPlan, tuple[int, ...], bool, bool] | None = None

    @property
    def status(self) -> int:
        return 200 if self.code is None else STATUS[self.code]

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every extra response header, as ``(name, value)`` text pairs."""
        rate = self.rate
        if rate is None:
            return self.extra_headers
        return self.extra_headers + admitted_headers(*rate)

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        """:attr:`headers` as ASGI wants them: lower-case latin-1 byte pairs (a new list)."""
        rate = self.rate
        if rate is None:
            out: list[tuple[bytes, bytes]] = []
        else:
            plan, counts, ietf, legacy = rate
            render = plan.asgi_render
            out = (
                render(counts, ietf, legacy)
                if render is not None
                else admitted_headers_asgi(plan, counts, ietf, legacy)
            )
        for name, value in self.extra_headers:
            out.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        return out

    def __repr__(self) -> str:
        if self.allowed:
            return f"Decision(allowed, principal={self.principal!r})"
        return f"Decision(denied, code={self.code!s}, detail={self.detail!r})"


def deny(
    code: ErrorCode,
    detail: str,
    *,
    required: tuple[str, ...] = (),
    retry_after: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Decision:
    return Decision(False, None, code, detail, required, retry_after, headers)


ALLOW_PUBLIC: Final = Decision(True)
MISSING: Final = deny(
    ErrorCode.MISSING_API_KEY,
    "This endpoint requires an API key: send 'Authorization: UserKey <key>'.",
)
DUPLICATE_HEADER: Final = deny(
    ErrorCode.INVALID_REQUEST, "The request has more than one Authorization header."
)
HEADER_TOO_LONG: Final = deny(ErrorCode.INVALID_REQUEST, "The Authorization header is too long.")
CONTROL_CHARACTERS: Final = deny(
    ErrorCode.INVALID_REQUEST, "The Authorization header contains control characters."
)
BAD_FORMAT: Final = deny(
    ErrorCode.INVALID_API_KEY_FORMAT,
    "The API key is malformed: expected '<prefix>_<key id>_<secret>' as issued.",
)
INVALID: Final = deny(ErrorCode.INVALID_API_KEY, "The API key is not valid.")
EXPIRED: Final = deny(ErrorCode.EXPIRED_API_KEY, "The API key has expired.")
REVOKED: Final = deny(ErrorCode.REVOKED_API_KEY, "The API key has been revoked.")
UNAVAILABLE: Final = deny(
    ErrorCode.AUTH_UNAVAILABLE,
    "Authentication is temporarily unavailable; retry later.",
    retry_after=1,
)
NO_ROUTE: Final = deny(
    ErrorCode.INSUFFICIENT_SCOPE,
    "No access rule covers this route, and unlisted routes are denied by default.",
)


def insufficient_scope(required: tuple[str, ...], description: str) -> Decision:
    """A 403 naming the required scope(s) — never the key's own scopes."""
    return deny(
        ErrorCode.INSUFFICIENT_SCOPE,
        f"This API key lacks the required scope: {description}.",
        required=required,
    )
