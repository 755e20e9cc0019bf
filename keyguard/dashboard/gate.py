"""Who is signed in: the check every page request passes, and issuing and ending sessions.

:func:`resume` turns a request's session cookie into the signed-in
:class:`~keyguard.dashboard.operator.Operator`, or into the answer sending the browser to sign
in (its cookie cleared, the reason in ``?m=``). In order: the signature and the session's own
lifetime and idle time, then the key's record read from the store — the binding must match its
current secret (or the previous one while a rotation's grace lasts), no sign-out may have come
after the session was issued, the key must still be allowed to manage keys (the management
API's own check of its callers: active, ``admin`` or the management scope) and be used from a
network it allows. :func:`issue` makes the cookie of a new session; :func:`end_all` ends every
session of a key, in every worker (a sign-out time kept in the store's settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from keyguard.core.keys import is_key_id
from keyguard.core.restrictions import record_denial
from keyguard.dashboard.http import PageRequest, cookie_header, redirect
from keyguard.dashboard.operator import ActionError, Operator
from keyguard.dashboard.sessions import SessionToken, signed_out_setting
from keyguard.management.api.http import ApiResponse

if TYPE_CHECKING:
    from keyguard.dashboard.app import Dashboard

__all__ = ["Resumed", "clear", "end_all", "issue", "resume"]

#: How often (at most) a session's "last seen" time is renewed in its cookie.
SEEN_EVERY: Final = 60.0

Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Resumed:
    """A request's live session: who, its token, and a renewed cookie if one is due."""

    operator: Operator
    token: SessionToken
    refresh: Header | None


def _signed_out_at(dash: Dashboard, key_id: str) -> float | None:
    value = dash.manager.store.get_setting(signed_out_setting(key_id))
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return float("inf")  # an unreadable sign-out time ends every session: fail closed


def cookie(dash: Dashboard, request: PageRequest, token: SessionToken) -> Header:
    """The session cookie carrying ``token``."""
    return cookie_header(
        dash.cookie_name(request),
        dash.signer.encode(token),
        path=request.base or "/",
        secure=dash.secure(request),
        max_age=max(1, int(token.expires_at - dash.now())),
    )


def clear(dash: Dashboard, request: PageRequest) -> Header:
    """The header deleting the session cookie."""
    return cookie_header(
        dash.cookie_name(request),
        "",
        path=request.base or "/",
        secure=dash.secure(request),
        max_age=0,
    )


def _ended(dash: Dashboard, request: PageRequest, reason: str) -> ApiResponse:
    return redirect(f"{request.base}/sign-in?m={reason}", [clear(dash, request)])


def resume(dash: Dashboard, request: PageRequest) -> Resumed | ApiResponse:
    """The request's live session, or the answer sending the browser to sign in."""
    value = request.cookie(dash.cookie_name(request))
    if value is None:
        return redirect(f"{request.base}/sign-in")
    token = dash.signer.decode(value)
    if token is None:
        return _ended(dash, request, "ended")
    now = dash.now()
    if now >= token.expires_at or now - token.seen_at > dash.idle_timeout:
        return _ended(dash, request, "expired")
    record = dash.manager.store.get(token.key_id) if is_key_id(token.key_id) else None
    if record is None or not dash.signer.bound(token, record, now):
        return _ended(dash, request, "ended")
    signed_out = _signed_out_at(dash, record.key_id)
    if signed_out is not None and token.issued_at <= signed_out:
        return _ended(dash, request, "signed-out")
    try:
        caller = dash.ops.caller(record)
    except ActionError:
        return _ended(dash, request, "ended")
    client = dash.client(request)
    if record_denial(caller.record, client, now) is not None:
        return _ended(dash, request, "ended")
    refresh = None
    if now - token.seen_at >= SEEN_EVERY:
        refresh = cookie(dash, request, dash.signer.seen(token, now))
    return Resumed(Operator(caller, dash.signer.csrf(token), client), token, refresh)


def issue(dash: Dashboard, request: PageRequest, operator: Operator) -> Header:
    """The cookie of a new session for ``operator`` (issued after any sign-out)."""
    now = dash.now()
    signed_out = _signed_out_at(dash, operator.key_id)
    if signed_out is not None:
        now = max(now, signed_out + 1e-3)
    return cookie(dash, request, dash.signer.issue(operator.record, now, dash.session_ttl))


def end_all(dash: Dashboard, key_id: str) -> None:
    """End every dashboard session of ``key_id`` (in every worker process)."""
    dash.manager.store.set_setting(signed_out_setting(key_id), repr(dash.now()))
