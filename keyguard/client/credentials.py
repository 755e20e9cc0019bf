"""Where a caller's API key comes from, checked before it is ever sent.

:func:`load_api_key` takes the key from an argument, else the environment variable ``env``
(default ``KEYGUARD_API_KEY``), else the file named by ``<env>_FILE`` (how Docker and
Kubernetes mount secrets). Surrounding whitespace — the newline a file or ``echo`` leaves — is
stripped; anything else wrong is an :class:`~keyguard.client.errors.APIKeyFormatError` naming
the part (length, prefix, key id, checksum…) and where the key came from, raised before any
request: a typo costs no round trip, and a malformed key never travels. Setting both the
variable and its ``_FILE`` is refused, since one of them would be silently ignored.

The key then lives in an :class:`APIKey`, whose ``repr`` and ``str`` show its public key id and
source, never the secret.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Final

from keyguard.client.errors import APIKeyFormatError, APIKeyMissing
from keyguard.client.keycheck import check_key, parse_any_prefix

__all__ = ["DEFAULT_KEY_ENV", "MAX_KEY_FILE_BYTES", "APIKey", "load_api_key"]

#: The environment variable a client reads its key from by default (and ``<name>_FILE``).
DEFAULT_KEY_ENV: Final = "KEYGUARD_API_KEY"
#: A key file larger than this is not a key file (a key is under 100 bytes).
MAX_KEY_FILE_BYTES: Final = 4096


class APIKey:
    """A checked API key. ``repr``/``str`` show ``key_id`` and ``source``, never the secret."""

    __slots__ = ("__value", "key_id", "prefix", "source")

    def __init__(self, value: str, *, source: str = "argument") -> None:
        parsed = parse_any_prefix(value)
        if parsed is None:  # pragma: no cover - load_api_key checks first
            raise APIKeyFormatError(
                f"the API key from {source} is not a key", part="checksum", source=source
            )
        self.__value = value
        self.key_id = parsed.key_id
        self.prefix = parsed.prefix
        self.source = source

    def get_secret_value(self) -> str:
        """The key itself: only for putting it in a header."""
        return self.__value

    def header_value(self) -> str:
        """``UserKey <key>``, the value of the ``Authorization`` header."""
        return "UserKey " + self.__value

    def __repr__(self) -> str:
        return f"APIKey(key_id={self.key_id!r}, source={self.source!r}, secret=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # A key must not ride along silently in a pickle (a cache, a task queue message).
        raise TypeError("an APIKey cannot be pickled; load it where it is used")


def _read_file(path: str, source: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise APIKeyMissing(f"{source} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise APIKeyFormatError(
            f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes: it does not hold just a key",
            part="length",
            source=source,
        )
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise APIKeyFormatError(
            f"the API key in {source} is malformed (characters): it holds bytes that are not "
            "ASCII; a key is ASCII letters, digits and two '_'. No request was sent.",
            part="characters",
            source=source,
        ) from None


def load_api_key(
    key: str | APIKey | None = None,
    *,
    env: str = DEFAULT_KEY_ENV,
    file: str | os.PathLike[str] | None = None,
    prefixes: Collection[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> APIKey:
    """The caller's key, checked offline.

    From ``key`` if given, else the file ``file`` if given, else ``$<env>``, else the file
    named by ``$<env>_FILE``. ``prefixes`` restricts the accepted prefixes (any valid prefix
    by default). Raises :class:`~keyguard.client.errors.APIKeyMissing` when there is no key
    and :class:`~keyguard.client.errors.APIKeyFormatError` when it is malformed.
    """
    if isinstance(key, APIKey):
        return key
    environment = os.environ if environ is None else environ
    file_env = env + "_FILE"
    if key is not None:
        if not isinstance(key, str):
            raise APIKeyMissing(f"the API key must be a str, not {type(key).__name__}")
        value, source = key, "the key argument"
    elif file is not None:
        path = os.fspath(file)
        source = f"the file {path}"
        value = _read_file(path, source)
    else:
        from_env = environment.get(env)
        from_file = environment.get(file_env)
        if from_env and from_file:
            raise APIKeyMissing(
                f"both {env} and {file_env} are set; set only one (the variable, or the path "
                "of a file holding the key)"
            )
        if from_env:
            value, source = from_env, f"the environment variable {env}"
        elif from_file:
            source = f"the file {from_file} ({file_env})"
            value = _read_file(from_file, source)
        else:
            raise APIKeyMissing(
                f"no API key: pass one, or set {env} (or {file_env} to a file holding it, as "
                "Docker and Kubernetes secrets are mounted)"
            )
    value = value.strip()
    problem = check_key(value, prefixes=prefixes)
    if problem is not None:
        raise APIKeyFormatError(
            f"the API key from {source} is malformed ({problem.part}): {problem.message}. "
            "No request was sent.",
            part=problem.part,
            source=source,
        )
    return APIKey(value, source=source)
