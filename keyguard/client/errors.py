"""What a caller of a keyguard-protected API gets when something is wrong, and what to do.

Every exception derives from :class:`keyguard.core.errors.KeyguardError`::

    KeyguardError
    └── ClientError                     something went wrong on the caller's side of keyguard
        ├── APIKeyMissing               no key was configured (argument, variable or file)
        ├── APIKeyFormatError           the configured key is malformed: caught before any
        │                               request, naming the part (also a KeyFormatError)
        └── APIError                    the service refused the request (after any retries),
            │                           with its keyguard ``code`` and :attr:`APIError.advice`
            ├── BadRequestError         400 invalid_request
            ├── APIKeyError             401: missing, malformed, unknown, expired, revoked or
            │                           suspended key
            ├── ForbiddenError          403: insufficient_scope, network_not_allowed
            ├── RateLimitError          429 rate_limited (``retry_after`` seconds)
            └── ServiceUnavailableError 503 auth_unavailable

:data:`ADVICE` maps every keyguard error code (each member of
:class:`~keyguard.core.errors.ErrorCode`, and the codes the contract reserves) to its exception
class and what the caller should do; ``docs/troubleshooting.md`` mirrors it, and a test keeps
them in step. No message here ever contains a key: text that came from a server is passed
through :func:`keyguard.client.keycheck.redact` first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from keyguard.core.errors import ConfigurationError, KeyFormatError, KeyguardError

__all__ = [
    "ADVICE",
    "APIError",
    "APIKeyError",
    "APIKeyFormatError",
    "APIKeyMissing",
    "Advice",
    "BadRequestError",
    "ClientError",
    "ForbiddenError",
    "RateLimitError",
    "ServiceUnavailableError",
    "advice_for",
]


class ClientError(KeyguardError):
    """Root of the errors :mod:`keyguard.client` raises."""


class APIKeyMissing(ClientError, ConfigurationError):
    """No API key was given: no argument, and neither the variable nor its ``_FILE`` is set."""


class APIKeyFormatError(ClientError, KeyFormatError):
    """The configured key is not a well-formed key; no request was sent.

    ``part`` is what is wrong (see :data:`keyguard.client.keycheck.PARTS`: ``length``,
    ``prefix``, ``key_id``, ``checksum``…); ``source`` says where the key came from.
    """

    def __init__(self, message: str, *, part: str, source: str) -> None:
        super().__init__(message)
        self.part = part
        self.source = source


class APIError(ClientError):
    """The service refused the request with a keyguard error (the final answer, after any
    retries). ``code`` is the keyguard error code and ``advice`` what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        detail: str = "",
        request_id: str | None = None,
        retry_after: int | None = None,
        required_scopes: Sequence[str] = (),
        attempts: int = 1,
        gave_up: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after
        self.required_scopes = tuple(required_scopes)
        self.attempts = attempts
        #: Why retrying stopped, when the request was retried (see RetryState.gave_up).
        self.gave_up = gave_up

    @property
    def advice(self) -> str:
        """What to do about it (from :data:`ADVICE`)."""
        return advice_for(self.code, self.status).action

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r})"


class BadRequestError(APIError):
    """400 ``invalid_request``: the Authorization header itself was malformed."""


class APIKeyError(APIError):
    """401: the key is missing, malformed, unknown, expired, revoked or suspended."""


class ForbiddenError(APIError):
    """403: the key is valid but may not do this (a missing scope, a network restriction)."""


class RateLimitError(APIError):
    """429 ``rate_limited``: ``retry_after`` says when the key may call again."""


class ServiceUnavailableError(APIError):
    """503 ``auth_unavailable``: the service cannot check keys right now."""


@dataclass(frozen=True, slots=True)
class Advice:
    """One error code: its status, exception class, what it means and what to do."""

    status: int
    error: type[APIError]
    meaning: str
    action: str
    retry: bool = False


#: Every keyguard error code → what it means for a caller and what to do. Keyed by the code's
#: value so that codes the contract reserves are covered before the server sends them.
ADVICE: Final[Mapping[str, Advice]] = {
    "missing_api_key": Advice(
        401,
        APIKeyError,
        "No API key reached the service (no Authorization header, or another scheme).",
        "Send 'Authorization: UserKey <key>': set KEYGUARD_API_KEY (or KEYGUARD_API_KEY_FILE), "
        "and check that no proxy or redirect dropped the Authorization header.",
    ),
    "invalid_request": Advice(
        400,
        BadRequestError,
        "The Authorization header was malformed: sent twice, too long, or with control characters.",
        "Send exactly one 'Authorization: UserKey <key>' header, with the key on one line "
        "(strip the newline when reading it from a file).",
    ),
    "invalid_api_key_format": Advice(
        401,
        APIKeyError,
        "The key is not a well-formed key for this service: a wrong prefix, length or checksum.",
        "Copy the key again exactly as it was issued; a key of another deployment or "
        "environment has another prefix. 'keyguard doctor' names the part that is wrong.",
    ),
    "invalid_api_key": Advice(
        401,
        APIKeyError,
        "The service does not know this key, or its secret is wrong.",
        "Check that the key belongs to this service and environment (the base URL), and that "
        "it was not rotated: after a rotation the old secret stops at the end of the grace "
        "period. Ask the key's owner for the current key.",
    ),
    "expired_api_key": Advice(
        401,
        APIKeyError,
        "The key has expired.",
        "Retrying will not help: ask the key's owner for a new key, and rotate keys before "
        "they expire ('keyguard keys expiring' lists them).",
    ),
    "revoked_api_key": Advice(
        401,
        APIKeyError,
        "The key was revoked; it never works again.",
        "Stop using it and get a new key. If it leaked, check the audit log "
        "('keyguard audit --key KEY_ID') for what it was used for.",
    ),
    "suspended_api_key": Advice(
        401,
        APIKeyError,
        "The key is suspended (disabled, reversibly).",
        "Ask an administrator why it was suspended and to resume it; retrying will not help "
        "until then.",
    ),
    "insufficient_scope": Advice(
        403,
        ForbiddenError,
        "The key is valid but lacks the scope this route needs (required_scopes names it), or "
        "no rule allows the route at all.",
        "Use a key that holds the required scope, or ask for one (keys get the fewest scopes "
        "they need); check the method and path if no scope is named.",
    ),
    "network_not_allowed": Advice(
        403,
        ForbiddenError,
        "The key is restricted to networks that do not include the caller's address.",
        "Call from one of the key's allowed networks, or ask for its allowed_networks to "
        "include yours (behind a proxy, the service must trust it to see your address).",
    ),
    "rate_limited": Advice(
        429,
        RateLimitError,
        "The key (or its owner) sent more requests than its rate limit allows.",
        "Wait as Retry-After says, then retry; spread or batch requests, or ask for a higher "
        "limit. The default limits are 20 requests per 10 s, 100 per minute and 5,000 per day.",
        retry=True,
    ),
    "auth_unavailable": Advice(
        503,
        ServiceUnavailableError,
        "The service cannot check keys right now (its key store is unreachable); it fails closed.",
        "Retry later with backoff, as Retry-After says; if it lasts, tell the service's "
        "operators (their key store or Redis is down).",
        retry=True,
    ),
    # The key-management API's own refusals (keyguard.management.api).
    "malformed_body": Advice(
        400,
        BadRequestError,
        "The request body is not a JSON object.",
        "Send a JSON object with Content-Type: application/json.",
    ),
    "invalid_field": Advice(
        422,
        BadRequestError,
        "A field of the request is invalid; the body's field member names it.",
        "Fix that field (the detail says what is expected) and send the request again.",
    ),
    "unsupported_media_type": Advice(
        415,
        BadRequestError,
        "The request body is not JSON.",
        "Send application/json, UTF-8.",
    ),
    "body_too_large": Advice(
        413,
        BadRequestError,
        "The request body exceeds the service's limit.",
        "Send a smaller body (metadata is capped at 16 KiB).",
    ),
    "not_found": Advice(
        404,
        APIError,
        "No such key, or no such management route.",
        "Check the key id and the base URL.",
    ),
    "method_not_allowed": Advice(
        405,
        APIError,
        "The route does not accept this method; the Allow header lists the ones it does.",
        "Use one of the methods the Allow header lists.",
    ),
    "permission_denied": Advice(
        403,
        ForbiddenError,
        "The acting key may not do this: the target is outside its authority, or the change "
        "would exceed its own scopes, expiry, limits or networks.",
        "Act only on keys your key created, within its own scopes, expiry, rate limits and "
        "networks; use an admin key for anything else.",
    ),
    "invalid_state": Advice(
        409,
        APIError,
        "The key's state forbids the operation (for example rotating a revoked key).",
        "Check the key's status ('keyguard keys show KEY_ID') before retrying.",
    ),
    "already_processed": Advice(
        409,
        APIError,
        "A request with this Idempotency-Key already ran; the body's key_id names the key.",
        "Do not retry: the plaintext was shown once, in the first response. If it was lost, "
        "rotate the key.",
    ),
    "idempotency_key_reused": Advice(
        422,
        BadRequestError,
        "The same Idempotency-Key was sent with a different request.",
        "Use a new Idempotency-Key for every distinct request.",
    ),
}

_BY_STATUS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: APIKeyError,
    403: ForbiddenError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def advice_for(code: str, status: int) -> Advice:
    """The advice for ``code``; a code this client does not know yet (a newer server) gets
    advice from its status alone."""
    found = ADVICE.get(code)
    if found is not None:
        return found
    return Advice(
        status,
        _BY_STATUS.get(status, APIError),
        f"The service refused the request with the code {code!r}.",
        "See the service's documentation for this code; 'keyguard doctor --url' explains "
        "what the service answers.",
    )


def error_from(
    status: int, body: Mapping[str, Any], *, attempts: int = 1, gave_up: str | None = None
) -> APIError:
    """The exception for a keyguard problem+json ``body`` answered with ``status``.

    ``body`` must already be free of key material (see :func:`keyguard.client.keycheck.redact`).
    """
    code = str(body.get("code"))
    advice = advice_for(code, status)
    detail = body.get("detail")
    detail = detail if isinstance(detail, str) else ""
    request_id = body.get("request_id")
    retry_after = body.get("retry_after")
    scopes = body.get("required_scopes")
    required = [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []
    parts = [f"{status} {code}"]
    if attempts > 1 or gave_up:
        parts.append(f" after {attempts} attempt{'s' if attempts != 1 else ''}")
        if gave_up:
            parts.append(f" ({gave_up})")
    parts.append(f": {detail or advice.meaning}")
    if required:
        parts.append(f" Required scope: {', '.join(required)}.")
    parts.append(f" What to do: {advice.action}")
    if isinstance(request_id, str):
        parts.append(f" (request id {request_id})")
    cls = advice.error if advice.status == status else _BY_STATUS.get(status, APIError)
    return cls(
        "".join(parts),
        status=status,
        code=code,
        detail=detail,
        request_id=request_id if isinstance(request_id, str) else None,
        retry_after=retry_after if isinstance(retry_after, int) else None,
        required_scopes=required,
        attempts=attempts,
        gave_up=gave_up,
    )
