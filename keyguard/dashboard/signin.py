"""Signing in with a key, and signing out.

The sign-in form posts the pasted key once; it is authenticated exactly as a management API
request (:meth:`~keyguard.dashboard.operator.Operations.sign_in`): failures count for the
brute-force guard, a key without ``admin`` or the management scope is refused, and nothing
of the key is kept — the session names its id and a binding to its stored digest
(:mod:`~keyguard.dashboard.sessions`). The form carries a token bound to a short-lived nonce
cookie, so another site cannot sign a browser in to a session of its choosing. Sign-in and
sign-out are audited against the key (``dashboard.sign_in``, ``dashboard.sign_out``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from keyguard.core.errors import ErrorCode
from keyguard.dashboard import gate
from keyguard.dashboard.http import Form, PageRequest, cookie_header, html_response, redirect
from keyguard.dashboard.operator import ActionError, Operator
from keyguard.dashboard.sessions import LOGIN_COOKIE
from keyguard.management.api.http import ApiResponse

if TYPE_CHECKING:
    from keyguard.dashboard.app import Context, Dashboard

__all__ = ["form", "sign_out", "submit"]

logger = logging.getLogger("keyguard.dashboard")

#: How long the sign-in form's nonce cookie lives (an hour to paste a key).
_LOGIN_TTL: Final = 3600
_MAX_KEY: Final = 512
#: Why the browser was sent back to sign in (``?m=``): fixed texts, nothing from the request.
MESSAGES: Final = {
    "signed-out": "You are signed out.",
    "expired": "Your session expired. Sign in again.",
    "ended": "Your session ended: the key was revoked, suspended, rotated or changed, "
    "or can no longer manage keys.",
}


def _login_cookie(
    dash: Dashboard, request: PageRequest, nonce: str, max_age: int
) -> tuple[str, str]:
    return cookie_header(
        dash.cookie_name(request, LOGIN_COOKIE),
        nonce,
        path=request.base or "/",
        secure=dash.secure(request),
        max_age=max_age,
    )


def _page(
    dash: Dashboard,
    request: PageRequest,
    *,
    status: int = 200,
    error: str | None = None,
    nonce: str | None = None,
) -> ApiResponse:
    headers = []
    current = request.cookie(dash.cookie_name(request, LOGIN_COOKIE))
    if nonce is None and current is not None and len(current) <= 64:
        nonce = current
    if nonce is None or nonce != current:
        nonce = nonce or dash.signer.login_nonce()
        headers.append(_login_cookie(dash, request, nonce, _LOGIN_TTL))
    message = MESSAGES.get(request.params().get("m", ""))
    body = dash.render(
        "signin.html",
        request,
        csrf=dash.signer.login_csrf(nonce),
        error=error,
        message=message,
        secure_ok=request.secure or dash.secure_cookies is True,
    )
    return html_response(status, body, headers)


def form(dash: Dashboard, request: PageRequest) -> ApiResponse:
    return _page(dash, request)


def submit(dash: Dashboard, request: PageRequest) -> ApiResponse:
    fields = Form(request.form())
    nonce = request.cookie(dash.cookie_name(request, LOGIN_COOKIE))
    sent = fields.all("csrf_token")
    if len(sent) != 1 or not dash.signer.login_ok(nonce, sent[0]):
        return _page(
            dash,
            request,
            status=403,
            error="The sign-in form expired or did not come from this dashboard. Try again.",
            nonce=dash.signer.login_nonce(),
        )
    key = fields.get("key").strip()
    if not key or len(key) > _MAX_KEY:
        return _page(dash, request, status=422, error="Paste a key to sign in.")
    client = dash.client(request)
    try:
        caller = dash.ops.sign_in(key, request.client, request.forwarded_for())
    except ActionError as exc:
        return _page(dash, request, status=exc.status, error=_refusal(exc))
    operator = Operator(caller, "", client)
    cookie = gate.issue(dash, request, operator)
    dash.audit("dashboard.sign_in", caller.key_id, caller.actor, client=client or "unknown")
    logger.info("dashboard: key %s signed in from %s", caller.key_id, client or "unknown")
    clear_login = _login_cookie(dash, request, "", 0)
    return redirect(f"{request.base}/keys", [cookie, clear_login])


def _refusal(exc: ActionError) -> str:
    if exc.code == ErrorCode.INSUFFICIENT_SCOPE.value:
        return (
            "This key cannot manage keys: signing in needs a key holding 'admin' or the "
            "management scope."
        )
    if exc.code == ErrorCode.RATE_LIMITED.value:
        return "Too many attempts. Wait a moment and try again."
    if exc.code == ErrorCode.AUTH_UNAVAILABLE.value:
        return "The key store is unavailable right now; try again shortly."
    if exc.code in (
        ErrorCode.PERMISSION_DENIED.value,
        ErrorCode.SUSPENDED_API_KEY.value,
        ErrorCode.NETWORK_NOT_ALLOWED.value,
        ErrorCode.EXPIRED_API_KEY.value,
        ErrorCode.REVOKED_API_KEY.value,
    ):
        return f"This key cannot sign in ({exc.code})."
    return "That is not a valid key."


def sign_out(ctx: Context) -> ApiResponse:
    dash = ctx.dashboard
    operator = ctx.operator
    gate.end_all(dash, operator.key_id)
    dash.audit(
        "dashboard.sign_out",
        operator.key_id,
        operator.caller.actor,
        client=operator.client or "unknown",
    )
    return redirect(f"{ctx.request.base}/sign-in?m=signed-out", [gate.clear(dash, ctx.request)])
