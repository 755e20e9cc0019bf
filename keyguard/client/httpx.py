"""httpx authentication for keyguard-protected APIs, for ``httpx.Client`` and ``httpx.AsyncClient``.

::

    from keyguard.client.httpx import UserKeyAuth

    with httpx.Client(base_url="https://api.example.com", auth=UserKeyAuth()) as client:
        agents = client.get("/agents").json()   # key from KEYGUARD_API_KEY (or _FILE)

:class:`UserKeyAuth` sends ``Authorization: UserKey <key>`` with a key checked offline when the
auth is built (a typo fails there, before any connection), retries 429 and 503 as its
:class:`~keyguard.client.retry.RetryPolicy` says (``Retry-After`` honoured, attempts and total
time bounded, idempotent methods only unless asked), and turns a final keyguard denial into
the :class:`~keyguard.client.errors.APIError` subclass naming its code and what to do
(``raise_errors=False`` returns the response instead). Responses from the application itself
(its own 404s and 500s) pass through untouched.

One protocol, two drivers, as httpx's own auth classes do: :meth:`UserKeyAuth.sync_auth_flow`
and :meth:`UserKeyAuth.async_auth_flow` differ only in how they read a body and wait.
Transport errors (a refused connection) are not retried here: that is the transport's job
(``httpx.HTTPTransport(retries=...)``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Collection, Generator

from keyguard.client._extras import require_extra
from keyguard.client._problem import MAX_PROBLEM_BYTES, may_be_problem, problem_error
from keyguard.client.credentials import DEFAULT_KEY_ENV, APIKey, load_api_key
from keyguard.client.retry import IDEMPOTENCY_HEADER, NO_RETRY, RetryPolicy, RetryState

require_extra("keyguard.client.httpx", "httpx")

# After the check above, so that a missing httpx is one line naming the extra.
import httpx  # noqa: E402

__all__ = ["UserKeyAuth"]


class UserKeyAuth(httpx.Auth):
    """``Authorization: UserKey <key>`` with keyguard-aware retries, for sync and async httpx.

    ``key`` is the key (or an :class:`~keyguard.client.credentials.APIKey`); without it the key
    comes from ``$<env>`` or the file ``$<env>_FILE`` (or ``file``), see
    :func:`~keyguard.client.credentials.load_api_key`. ``retry=None`` disables retrying.
    """

    def __init__(
        self,
        key: str | APIKey | None = None,
        *,
        env: str = DEFAULT_KEY_ENV,
        file: str | os.PathLike[str] | None = None,
        prefixes: Collection[str] | None = None,
        retry: RetryPolicy | None = None,
        raise_errors: bool = True,
    ) -> None:
        self.key = load_api_key(key, env=env, file=file, prefixes=prefixes)
        self.retry = RetryPolicy() if retry is None else retry
        self.raise_errors = raise_errors

    @classmethod
    def without_retries(cls, key: str | APIKey | None = None, **options: object) -> UserKeyAuth:
        """The same auth, answering every response as it comes."""
        return cls(key, retry=NO_RETRY, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"UserKeyAuth(key={self.key!r}, retry={self.retry!r})"

    # -- the protocol ---------------------------------------------------------------------------
    def _start(self, request: httpx.Request) -> RetryState:
        request.headers["Authorization"] = self.key.header_value()
        return self.retry.start(
            request.method,
            has_idempotency_key=IDEMPOTENCY_HEADER in request.headers,
            # A streamed body cannot be sent twice.
            replayable=isinstance(request.stream, httpx.ByteStream),
        )

    def _wants_body(self, response: httpx.Response) -> bool:
        if not self.raise_errors or not may_be_problem(
            response.status_code, response.headers.get("content-type")
        ):
            return False
        length = response.headers.get("content-length")
        return length is None or not length.isdigit() or int(length) <= MAX_PROBLEM_BYTES

    def _raise_for(self, response: httpx.Response, state: RetryState) -> None:
        error = problem_error(
            response.status_code, response.content, response.headers.get, self.key, state
        )
        if error is not None:
            raise error

    # -- the drivers ----------------------------------------------------------------------------
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        state = self._start(request)
        while True:
            response = yield request
            delay = state.next_delay(response.status_code, response.headers.get("retry-after"))
            if delay is None:
                if self._wants_body(response):
                    response.read()
                    self._raise_for(response, state)
                return
            response.read()
            response.close()  # free the connection while waiting
            self.retry.sleep(delay)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        state = self._start(request)
        while True:
            response = yield request
            delay = state.next_delay(response.status_code, response.headers.get("retry-after"))
            if delay is None:
                if self._wants_body(response):
                    await response.aread()
                    self._raise_for(response, state)
                return
            await response.aread()
            await response.aclose()
            await self.retry.async_sleep(delay)
