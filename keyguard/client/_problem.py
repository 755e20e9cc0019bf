"""Turn a keyguard problem+json response into the :class:`~keyguard.client.errors.APIError`
that names its code and what to do: shared by the httpx and requests skins."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from keyguard.client.credentials import APIKey
from keyguard.client.errors import APIError, error_from
from keyguard.client.keycheck import redact
from keyguard.client.retry import RetryState

#: Only bodies up to this size are read for an error (a keyguard problem is a few hundred bytes).
MAX_PROBLEM_BYTES: Final = 64 * 1024


def may_be_problem(status: int, content_type: str | None) -> bool:
    """Whether a response could be a keyguard denial (worth reading its body)."""
    return status >= 400 and (content_type or "").lower().startswith("application/problem+json")


def problem_error(
    status: int,
    body: bytes,
    header: Callable[[str], str | None],
    key: APIKey,
    state: RetryState | None,
) -> APIError | None:
    """The error for a keyguard denial, or ``None`` when the body is not one (an application's
    own error response passes through untouched)."""
    if len(body) > MAX_PROBLEM_BYTES:
        return None
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    if not isinstance(problem, dict) or not isinstance(problem.get("code"), str):
        return None
    secret = key.get_secret_value().rsplit("_", 1)[1]  # the key id before it is public
    # The server is not trusted with the caller's key: nothing it echoes may reach a message.
    clean: dict[str, Any] = {
        k: redact(v, secret) if isinstance(v, str) else v for k, v in problem.items()
    }
    if not isinstance(clean.get("request_id"), str):
        rid = header("x-request-id")
        if rid:
            clean["request_id"] = redact(rid, secret)
    if not isinstance(clean.get("retry_after"), int):
        ra = header("retry-after")
        if ra and ra.strip().isdigit():
            clean["retry_after"] = int(ra.strip())
    attempts = state.attempts if state is not None else 1
    gave_up = state.gave_up if state is not None else None
    return error_from(status, clean, attempts=max(1, attempts), gave_up=gave_up)
