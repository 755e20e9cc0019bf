"""The forms that change keys: create, rotate, suspend, resume and revoke.

Each turns its form into the JSON body of the management API operation and runs it through
:meth:`~keyguard.dashboard.operator.Operations.call` (same validation, lifetime policy and
authority rule as the HTTP API; refusals audited). A new secret — from create or rotate — is
rendered once, in the answer to the form's ``POST`` (``no-store``), and kept nowhere: the form
carries an idempotency key, so resubmitting it (a reload) is answered "already done" instead
of minting a second key whose secret nobody saw.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.errors import ErrorCode
from keyguard.core.scopes import ADMIN
from keyguard.dashboard.http import Form
from keyguard.dashboard.operator import ActionError
from keyguard.dashboard.pages import _request_id, visible_key
from keyguard.management.api import views
from keyguard.management.lifecycle import DEFAULT_GRACE, MAX_GRACE

if TYPE_CHECKING:
    from keyguard.dashboard.app import Context
    from keyguard.management.api.http import ApiResponse

__all__ = ["create_key", "new_key", "resume_key", "revoke_key", "rotate_key", "suspend_key"]

EXPIRY_CHOICES: Final = (
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("60d", "60 days"),
    ("90d", "90 days"),
)
_IDEMPOTENCY: Final = "Idempotency-Key"


def _catalog(ctx: Context) -> list[tuple[str, str, bool]]:
    """Every catalog scope with its description and whether the operator may grant it."""
    manager = ctx.dashboard.manager
    held = ctx.operator.record.scopes
    return [
        (scope, description, manager.catalog.covers(held, {scope}))
        for scope, description in manager.catalog.items()
    ]


def _form_page(
    ctx: Context, form: Form | None, *, status: int = 200, error: ActionError | None = None
) -> ApiResponse:
    values = {
        name: (form.get(name) if form is not None else "")
        for name in (
            "name",
            "description",
            "expires_in",
            "expires_at",
            "rate_limit",
            "allowed_networks",
            "metadata",
            "extra_scopes",
        )
    }
    if not values["expires_in"]:
        values["expires_in"] = "90d"
    chosen = set(form.all("scopes")) if form is not None else set()
    policy = ctx.dashboard.api.lifetime.max_lifetime
    return ctx.render(
        "new.html",
        status=status,
        values=values,
        chosen=chosen,
        catalog=_catalog(ctx),
        expiry_choices=EXPIRY_CHOICES,
        max_days=None if policy is None else int(policy // 86400),
        error=error,
        request_id=form.get("request_id") if form is not None else _request_id(),
        owner=ctx.operator.record.owner,
        admin_scope=ADMIN,
    )


def new_key(ctx: Context) -> ApiResponse:
    return _form_page(ctx, None)


def _lines(text: str) -> list[str]:
    return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]


def _metadata(text: str) -> dict[str, Any]:
    """``key=value`` lines, or one JSON object."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise ActionError(
                422, "invalid_field", "metadata: not a valid JSON object", "metadata"
            ) from None
        if not isinstance(value, dict):
            raise ActionError(422, "invalid_field", "metadata: not a JSON object", "metadata")
        return value
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip():
            raise ActionError(
                422, "invalid_field", f"metadata: line {number} is not name=value", "metadata"
            )
        out[name.strip()] = value.strip()
    return out


def _create_body(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {"name": form.get("name").strip()}
    if form.get("description").strip():
        body["description"] = form.get("description").strip()
    body["scopes"] = sorted({*form.all("scopes"), *_lines(form.get("extra_scopes"))})
    if form.get("expires_at").strip():
        body["expires_at"] = form.get("expires_at").strip()
    elif form.get("expires_in").strip():
        body["expires_in"] = form.get("expires_in").strip()
    if form.get("rate_limit").strip():
        body["rate_limit"] = form.get("rate_limit").strip()
    networks = _lines(form.get("allowed_networks"))
    if networks:
        body["allowed_networks"] = networks
    metadata = _metadata(form.get("metadata"))
    if metadata:
        body["metadata"] = metadata
    return body


def _idempotency(form: Form) -> list[tuple[str, str]]:
    token = form.get("request_id").strip()
    return [(_IDEMPOTENCY, token)] if token else []


def _already(ctx: Context, exc: ActionError, what: str) -> ApiResponse:
    return ctx.render("already.html", status=409, what=what, detail=exc.detail)


def create_key(ctx: Context, form: Form) -> ApiResponse:
    try:
        body = _create_body(form)
        answer = ctx.dashboard.ops.call(
            ctx.operator, views.create, "create", body=body, headers=_idempotency(form)
        )
    except ActionError as exc:
        if exc.code == ErrorCode.ALREADY_PROCESSED.value:
            return _already(ctx, exc, "create")
        return _form_page(ctx, form, status=exc.status, error=exc)
    return ctx.render(
        "secret.html",
        plaintext=answer["key"],
        record=answer["record"],
        warnings=answer.get("warnings", []),
        rotated=False,
        old_valid_until=None,
    )


def rotate_key(ctx: Context, form: Form, key_id: str) -> ApiResponse:
    record = visible_key(ctx, key_id)
    try:
        grace = float(form.get("grace_period", str(DEFAULT_GRACE)))
    except ValueError:
        grace = -1.0
    if not 0 <= grace <= MAX_GRACE:
        return ctx.render("error.html", status=422, message="Choose a grace period from the list.")
    try:
        answer = ctx.dashboard.ops.call(
            ctx.operator,
            views.rotate,
            "rotate",
            record.key_id,
            body={"grace_period": int(grace)},
            headers=_idempotency(form),
        )
    except ActionError as exc:
        if exc.code == ErrorCode.ALREADY_PROCESSED.value:
            return _already(ctx, exc, "rotate")
        return ctx.render("error.html", status=exc.status, message=exc.detail)
    return ctx.render(
        "secret.html",
        plaintext=answer["key"],
        record=answer["record"],
        warnings=[],
        rotated=True,
        old_valid_until=answer.get("old_secret_valid_until"),
    )


def _change(
    ctx: Context, key_id: str, view: Any, action: str, body: dict[str, Any], done: str
) -> ApiResponse:
    record = visible_key(ctx, key_id)
    try:
        ctx.dashboard.ops.call(ctx.operator, view, action, record.key_id, body=body)
    except ActionError as exc:
        return ctx.render("error.html", status=exc.status, message=exc.detail)
    return ctx.redirect(f"/keys/{record.key_id}?done={done}")


def suspend_key(ctx: Context, form: Form, key_id: str) -> ApiResponse:
    reason = form.get("reason").strip() or "suspended in the dashboard"
    body = {"enabled": False, "reason": reason}
    return _change(ctx, key_id, views.update, "update", body, "suspended")


def resume_key(ctx: Context, form: Form, key_id: str) -> ApiResponse:
    return _change(ctx, key_id, views.update, "update", {"enabled": True}, "resumed")


def revoke_key(ctx: Context, form: Form, key_id: str) -> ApiResponse:
    if form.get("confirm") != "yes":
        return ctx.render(
            "error.html",
            status=422,
            message="Tick the confirmation box to revoke: revocation cannot be undone.",
        )
    reason = form.get("reason").strip() or "revoked in the dashboard"
    body = {"reason": reason, "cascade": form.get("cascade") == "yes"}
    return _change(ctx, key_id, views.revoke, "revoke", body, "revoked")
