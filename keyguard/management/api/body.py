"""Reading what a client sent to the management API: JSON bodies, fields, query parameters.

Every check here ends in an :class:`~keyguard.management.api.problems.ApiError` naming what is
wrong, before anything is written: a body over the size limit is ``413 body_too_large``
(refused before it is parsed), a body that is not ``application/json`` is ``415``, one that is
not a JSON object (bad UTF-8, bad JSON, ``NaN``, duplicate members, nesting too deep) is
``400 malformed_body``, and a well-formed body with an unknown field, a value of the wrong type
or out of range is ``422 invalid_field`` with ``field`` naming it. Durations are integer
seconds or a number with a unit (``90m``, ``12h``, ``30d``; also ``s`` and ``w``); times are
ISO-8601 with an offset (``2030-01-31T12:00:00Z``) or a date (midnight UTC).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from keyguard.core.errors import ErrorCode
from keyguard.management.api.http import ApiRequest
from keyguard.management.api.problems import ApiError
from keyguard.management.validation import MAX_TIMESTAMP

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_DURATION",
    "Field",
    "boolean",
    "duration",
    "fields",
    "integer",
    "json_body",
    "nullable",
    "obj",
    "query",
    "query_int",
    "string",
    "string_list",
    "timestamp",
]

#: Bodies above this many bytes are refused unread (metadata is capped at 16 KiB anyway).
DEFAULT_MAX_BODY: Final = 64 * 1024
#: Longer durations are absurd for any key-management purpose (and overflow time arithmetic).
MAX_DURATION: Final = 100 * 366 * 86400
_MAX_DEPTH: Final = 32

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE: Final = re.compile(r"([0-9]{1,10})([smhdw])")
_JSON_TYPES: Final = ("application/json",)

Field = Callable[[Any, str], Any]


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_FIELD, f"{field}: {message}", field=field)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- the body ------------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ApiError(
                ErrorCode.MALFORMED_BODY, f"the body repeats the member {key!r}", field=key
            )
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ApiError(ErrorCode.MALFORMED_BODY, f"the body contains {name}, which is not JSON")


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def json_body(
    request: ApiRequest, *, max_bytes: int = DEFAULT_MAX_BODY, required: bool = True
) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` when optional and absent)."""
    body = request.body
    if len(body) > max_bytes:
        raise ApiError(
            ErrorCode.BODY_TOO_LARGE, f"the request body is larger than {max_bytes} bytes"
        )
    if not body.strip():
        if required:
            raise ApiError(ErrorCode.MALFORMED_BODY, "this request needs a JSON object body")
        return {}
    content_type = request.header("content-type") or ""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_-]+)", params)
    if media not in _JSON_TYPES and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with 'Content-Type: application/json'",
            headers=(("Accept", "application/json"),),
        )
    if charset is not None and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "JSON bodies must be UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(ErrorCode.MALFORMED_BODY, "the body is not valid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ApiError:
        raise
    except json.JSONDecodeError as exc:
        raise ApiError(
            ErrorCode.MALFORMED_BODY,
            f"the body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
        ) from None
    except (ValueError, RecursionError):
        raise ApiError(ErrorCode.MALFORMED_BODY, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(
            ErrorCode.MALFORMED_BODY, f"the body must be a JSON object, not {_kind(value)}"
        )
    if _depth(value) > _MAX_DEPTH:
        raise ApiError(ErrorCode.MALFORMED_BODY, f"the body nests deeper than {_MAX_DEPTH} levels")
    return value


def fields(
    body: Mapping[str, Any], spec: Mapping[str, Field], *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The body's members validated by ``spec`` (name → check); unknown or missing members
    are refused, the first (alphabetically) named."""
    unknown = sorted(k for k in body if k not in spec)
    if unknown:
        known = ", ".join(sorted(spec))
        raise _invalid(unknown[0], f"unknown field (this request takes: {known})")
    missing = [k for k in required if k not in body]
    if missing:
        raise _invalid(missing[0], "this field is required")
    return {name: spec[name](value, name) for name, value in body.items()}


# -- field checks ---------------------------------------------------------------------------------
def string(max_length: int = 1000) -> Field:
    def check(value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise _invalid(field, f"expected a string, not {_kind(value)}")
        if len(value) > max_length:
            raise _invalid(field, f"longer than {max_length} characters")
        return value

    return check


def nullable(inner: Field) -> Field:
    def check(value: Any, field: str) -> Any:
        return None if value is None else inner(value, field)

    return check


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(field, f"expected true or false, not {_kind(value)}")
    return value


def obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(field, f"expected an object, not {_kind(value)}")
    return value


def string_list(max_items: int = 100, max_length: int = 200) -> Field:
    def check(value: Any, field: str) -> list[str]:
        if not isinstance(value, list):
            raise _invalid(field, f"expected an array of strings, not {_kind(value)}")
        if len(value) > max_items:
            raise _invalid(field, f"more than {max_items} items")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _invalid(field, f"item {i} is {_kind(item)}, not a string")
            if len(item) > max_length:
                raise _invalid(field, f"item {i} is longer than {max_length} characters")
        return list(value)

    return check


def integer(low: int, high: int) -> Field:
    def check(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(field, f"expected an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise _invalid(field, f"must be between {low} and {high}")
        return value

    return check


def duration(*, allow_zero: bool = False, maximum: float = MAX_DURATION) -> Field:
    """Integer seconds, or ``<n><unit>`` with unit ``s``, ``m``, ``h``, ``d`` or ``w``."""

    def check(value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _invalid(
                field,
                f"expected a duration such as 30d, 12h, 90m or integer seconds, not {_kind(value)}",
            )
        if isinstance(value, int):
            seconds = value
        else:
            text = value.strip()
            if text.startswith("-"):
                raise _invalid(field, "a duration cannot be negative")
            if text.isdigit() and len(text) <= 12:
                seconds = int(text)
            else:
                match = _DURATION_RE.fullmatch(text)
                if match is None:
                    raise _invalid(
                        field, f"{value[:40]!r} is not a duration (use e.g. 30d, 12h, 90m or 3600)"
                    )
                seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if seconds < 0:
            raise _invalid(field, "a duration cannot be negative")
        if seconds == 0 and not allow_zero:
            raise _invalid(field, "must be longer than zero")
        if seconds > maximum:
            raise _invalid(field, f"longer than the maximum of {int(maximum)} seconds")
        return float(seconds)

    return check


def timestamp(value: Any, field: str) -> float:
    """ISO-8601 with an offset (``Z`` or ``+02:00``), or a date (midnight UTC); epoch seconds."""
    if not isinstance(value, str) or len(value) > 64:
        raise _invalid(
            field, f"expected an ISO-8601 time such as 2030-01-31T12:00:00Z, not {_kind(value)}"
        )
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(
            field, f"{text[:40]!r} is not an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        if "T" in text or " " in text:
            raise _invalid(field, "give the time zone (a trailing Z for UTC, or an offset)")
        when = when.replace(tzinfo=UTC)
    try:
        ts = when.timestamp()
    except (OverflowError, ValueError, OSError):
        raise _invalid(field, "out of range") from None
    if not 0 <= ts <= MAX_TIMESTAMP:
        raise _invalid(field, "out of range")
    return ts


# -- query parameters -----------------------------------------------------------------------------
def query_int(low: int, high: int) -> Field:
    def check(value: Any, field: str) -> int:
        text = str(value).strip()
        if not text.isdigit() or len(text) > 12:
            raise _invalid(field, f"expected an integer between {low} and {high}")
        return integer(low, high)(int(text), field)  # type: ignore[no-any-return]

    return check


def query(request: ApiRequest, spec: Mapping[str, Field]) -> dict[str, Any]:
    """The query parameters validated by ``spec``; unknown or repeated ones are refused."""
    seen: dict[str, Any] = {}
    for name, raw in request.query_params():
        if name not in spec:
            known = ", ".join(sorted(spec))
            raise _invalid(name, f"unknown query parameter (known: {known})")
        if name in seen:
            raise _invalid(name, "given more than once")
        seen[name] = spec[name](raw, name)
    return seen
