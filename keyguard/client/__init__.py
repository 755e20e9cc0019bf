"""The caller's side of keyguard: send ``Authorization: UserKey <key>`` and retry correctly.

* :func:`load_api_key` / :class:`APIKey` — the key from an argument, ``KEYGUARD_API_KEY`` or the
  file ``KEYGUARD_API_KEY_FILE`` names, checked offline (checksum included) so a typo fails
  before any request, with a message naming the part that is wrong; never shown in a repr.
* :class:`RetryPolicy` — exponential backoff with full jitter, ``Retry-After`` honoured on 429
  and 503, bounded attempts and total time, idempotent methods only unless asked.
* :mod:`keyguard.client.httpx` and :mod:`keyguard.client.requests` — ``UserKeyAuth`` for each
  HTTP library (``pip install 'keyguard[client]'``); import them by full path.
* :mod:`keyguard.client.errors` — :class:`APIError` and its subclasses, raised for a final
  keyguard denial, naming the code and what to do (:data:`ADVICE` covers every code).

Importing this package imports neither httpx nor requests.
"""

from __future__ import annotations

from keyguard.client.credentials import DEFAULT_KEY_ENV, APIKey, load_api_key
from keyguard.client.errors import (
    ADVICE,
    Advice,
    APIError,
    APIKeyError,
    APIKeyFormatError,
    APIKeyMissing,
    BadRequestError,
    ClientError,
    ForbiddenError,
    RateLimitError,
    ServiceUnavailableError,
    advice_for,
)
from keyguard.client.keycheck import KeyProblem, check_key
from keyguard.client.retry import IDEMPOTENT_METHODS, NO_RETRY, RetryPolicy, parse_retry_after

__all__ = [
    "ADVICE",
    "DEFAULT_KEY_ENV",
    "IDEMPOTENT_METHODS",
    "NO_RETRY",
    "APIError",
    "APIKey",
    "APIKeyError",
    "APIKeyFormatError",
    "APIKeyMissing",
    "Advice",
    "BadRequestError",
    "ClientError",
    "ForbiddenError",
    "KeyProblem",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "advice_for",
    "check_key",
    "load_api_key",
    "parse_retry_after",
]
