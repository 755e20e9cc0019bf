"""requests authentication for keyguard-protected APIs.

::

    from keyguard.client.requests import UserKeyAuth

    session = requests.Session()
    session.auth = UserKeyAuth()            # key from KEYGUARD_API_KEY (or _FILE)
    agents = session.get("https://api.example.com/agents", timeout=10).json()

The same contract as :class:`keyguard.client.httpx.UserKeyAuth`: the key is checked offline
when the auth is built, ``Authorization: UserKey <key>`` is added to each request, 429 and 503
are retried as the :class:`~keyguard.client.retry.RetryPolicy` says, and a final keyguard
denial raises the :class:`~keyguard.client.errors.APIError` subclass naming its code.

requests has no auth flow, so the retries run in a response hook, as its own digest auth
does: the hook sends a copy of the prepared request through the same connection adapter, with
the same timeout, TLS and proxy settings. Connection errors are not retried here (mount an
``HTTPAdapter(max_retries=urllib3.Retry(...))`` for that).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from keyguard.client._extras import require_extra
from keyguard.client._problem import MAX_PROBLEM_BYTES, may_be_problem, problem_error
from keyguard.client.credentials import DEFAULT_KEY_ENV, APIKey, load_api_key
from keyguard.client.retry import IDEMPOTENCY_HEADER, NO_RETRY, RetryPolicy, RetryState

require_extra("keyguard.client.requests", "requests")

# After the check above, so that a missing requests is one line naming the extra.
import requests  # noqa: E402
import requests.auth  # noqa: E402

__all__ = ["UserKeyAuth"]


class UserKeyAuth(requests.auth.AuthBase):
    """``Authorization: UserKey <key>`` with keyguard-aware retries, for requests.

    Arguments as for :class:`keyguard.client.httpx.UserKeyAuth`.
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
    def without_retries(cls, key: str | APIKey | None = None, **options: Any) -> UserKeyAuth:
        """The same auth, answering every response as it comes."""
        return cls(key, retry=NO_RETRY, **options)

    def __repr__(self) -> str:
        return f"UserKeyAuth(key={self.key!r}, retry={self.retry!r})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.key.header_value()
        body = r.body
        state = self.retry.start(
            r.method or "GET",
            has_idempotency_key=IDEMPOTENCY_HEADER in r.headers,
            # A file or generator body cannot be sent twice.
            replayable=body is None or isinstance(body, bytes | str),
        )

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._handle(response, state, kwargs)

        r.register_hook("response", on_response)  # type: ignore[no-untyped-call]
        return r

    def _handle(
        self, response: requests.Response, state: RetryState, send_options: dict[str, Any]
    ) -> requests.Response:
        while True:
            delay = state.next_delay(response.status_code, response.headers.get("Retry-After"))
            if delay is None:
                break
            _ = response.content  # read, so the connection can go back to the pool
            response.close()
            self.retry.sleep(delay)
            again = response.request.copy()
            # The adapter's send, not the session's: no hooks run again, so this loop is the
            # only retry loop; the session still applies its cookies and hooks to the result.
            new = response.connection.send(again, **send_options)
            new.history.append(response)
            new.request = again
            response = new
        if self.raise_errors and self._wants_body(response):
            error = problem_error(
                response.status_code, response.content, response.headers.get, self.key, state
            )
            if error is not None:
                response.close()
                raise error
        return response

    def _wants_body(self, response: requests.Response) -> bool:
        if not may_be_problem(response.status_code, response.headers.get("Content-Type")):
            return False
        length = response.headers.get("Content-Length")
        return length is None or not length.isdigit() or int(length) <= MAX_PROBLEM_BYTES
