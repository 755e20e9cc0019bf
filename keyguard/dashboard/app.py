"""The dashboard: one framework-free handler from :class:`PageRequest` to a response.

Order of work for every request:

1. **route** — static files (``/static/...``) and the sign-in page need no session;
2. **session** — the signed cookie is checked (:mod:`~keyguard.dashboard.gate`), then the
   key it names is re-read from the store and must still be the same secret (or the previous
   one within a rotation's grace), not signed out, active, allowed to manage keys and used from
   an allowed network; otherwise the cookie is cleared and the browser sent to sign in;
3. **CSRF** — every ``POST`` carries the session's synchronizer token (the sign-in form its own
   token bound to a nonce cookie); without it the request is refused ``403`` unread;
4. **page** — reads through the management API's listing rules and changes through its
   operations (:mod:`~keyguard.dashboard.operator`); the pages live in
   :mod:`~keyguard.dashboard.pages` and :mod:`~keyguard.dashboard.views`.

Every response carries the security headers of :mod:`~keyguard.dashboard.http`; pages are
``no-store``. The handler is synchronous (store I/O blocks); the ASGI skin runs it in a worker
thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from keyguard.core.addresses import client_address
from keyguard.core.errors import ConfigurationError, KeyguardError, StoreUnavailable
from keyguard.core.keys import is_key_id
from keyguard.core.records import AuditEvent
from keyguard.core.store import KeyStore
from keyguard.dashboard import gate
from keyguard.dashboard.http import (
    SECURITY_HEADERS,
    Form,
    FormError,
    PageRequest,
    html_response,
    redirect,
)
from keyguard.dashboard.operator import Operations, Operator
from keyguard.dashboard.render import Renderer, ago
from keyguard.dashboard.sessions import (
    COOKIE,
    SessionSigner,
    load_secret,
)
from keyguard.dashboard.usage import UsageSource
from keyguard.management.api import ManagementAPI
from keyguard.management.api.handler import normalize_prefix
from keyguard.management.api.http import ApiResponse
from keyguard.management.manager import KeyManager

__all__ = ["DEFAULT_PREFIX", "Context", "Dashboard"]

logger = logging.getLogger("keyguard.dashboard")

DEFAULT_PREFIX: Final = "/keyguard"


class PageError(Exception):
    """A page that cannot be shown (answered with the error page and ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Context:
    """One signed-in request: what every page needs."""

    dashboard: Dashboard
    request: PageRequest
    operator: Operator
    now: float
    headers: list[tuple[str, str]] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.request.base + path

    def render(self, template: str, *, status: int = 200, **values: Any) -> ApiResponse:
        body = self.dashboard.render(
            template, self.request, operator=self.operator, now=self.now, status=status, **values
        )
        return html_response(status, body, self.headers)

    def redirect(self, path: str) -> ApiResponse:
        return redirect(self.url(path), self.headers)


Page = Callable[..., ApiResponse]


def _store_usage(manager: KeyManager) -> UsageSource | None:
    """The store's usage counters, when this keyguard's manager can read them."""
    if not callable(getattr(manager, "usage", None)):
        return None
    from keyguard.dashboard.store_usage import ManagerUsage

    return ManagerUsage(manager)


class Dashboard:
    """The key-management dashboard (see the module docstring), mounted at ``prefix``.

    ``api`` is the :class:`~keyguard.management.api.ManagementAPI` whose operations the
    dashboard performs (a manager, store or store URL builds a default one; share the
    application's API and verifier so the brute-force guard and rate limits are shared).
    Keyword arguments:

    * ``secret`` — signs sessions (default ``KEYGUARD_DASHBOARD_SECRET`` or ``…_FILE``; without
      one, a random per-process secret: one worker only). Every worker needs the same one.
    * ``session_ttl`` / ``idle_timeout`` — a session ends this long after sign-in (default 8 h)
      or after this long without a request (default 1 h), whichever comes first.
    * ``secure_cookies`` — ``None`` (default): cookies are ``Secure`` when the request came over
      HTTPS; ``True`` always (behind a TLS-terminating proxy); ``False`` never.
    * ``usage`` — a :class:`~keyguard.dashboard.usage.UsageSource` for the charts; by default
      (``"auto"``) the usage counters kept in the store, read through the key manager
      (:class:`~keyguard.dashboard.store_usage.ManagerUsage`); ``None``: no charts (the pages
      say there is no usage data). ``usage_days`` — how many days they show.
    * ``max_listed`` — the most keys one listing loads to search and sort (default 1000).
    """

    def __init__(
        self,
        api: ManagementAPI | KeyManager | KeyStore | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        secret: str | bytes | None = None,
        session_ttl: float = 8 * 3600.0,
        idle_timeout: float = 3600.0,
        secure_cookies: bool | None = None,
        usage: UsageSource | Literal["auto"] | None = "auto",
        usage_days: int = 30,
        max_listed: int = 1000,
        title: str = "keyguard",
    ) -> None:
        if not isinstance(api, ManagementAPI):
            api = ManagementAPI(api)
        self.api = api
        self.manager = api.manager
        self.prefix = normalize_prefix(prefix)
        secret_bytes, self.secret_configured = load_secret(secret)
        self.signer = SessionSigner(secret_bytes)
        for name, value in (("session_ttl", session_ttl), ("idle_timeout", idle_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        self.session_ttl = float(session_ttl)
        self.idle_timeout = float(idle_timeout)
        if secure_cookies not in (None, True, False):
            raise ConfigurationError("secure_cookies must be None, True or False")
        self.secure_cookies = secure_cookies
        if not isinstance(usage_days, int) or not 1 <= usage_days <= 366:
            raise ConfigurationError("usage_days must be an integer from 1 to 366")
        if usage == "auto":
            usage = _store_usage(self.manager)
        if usage is not None and not isinstance(usage, UsageSource):
            raise ConfigurationError("usage must have daily_usage() and top_routes()")
        self.usage = usage
        self.usage_days = usage_days
        if not isinstance(max_listed, int) or max_listed < 1:
            raise ConfigurationError("max_listed must be a positive integer")
        self.max_listed = max_listed
        self.title = str(title)
        self.ops = Operations(api)
        self.renderer = Renderer()
        self.max_body = 64 * 1024
        from keyguard.dashboard import actions, pages, views

        self._routes: dict[tuple[str, str], Page] = {
            ("GET", "keys"): pages.list_keys,
            ("GET", "keys/new"): actions.new_key,
            ("POST", "keys/new"): actions.create_key,
            ("GET", "usage"): views.usage,
            ("GET", "activity"): views.activity,
        }
        self._key_routes: dict[tuple[str, str], Page] = {
            ("GET", ""): pages.show_key,
            ("POST", "rotate"): actions.rotate_key,
            ("POST", "suspend"): actions.suspend_key,
            ("POST", "resume"): actions.resume_key,
            ("POST", "revoke"): actions.revoke_key,
        }

    def __repr__(self) -> str:
        return f"Dashboard(prefix={self.prefix!r}, manager={self.manager!r})"

    # -- helpers ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self.manager.clock()

    def secure(self, request: PageRequest) -> bool:
        return request.secure if self.secure_cookies is None else self.secure_cookies

    def cookie_name(self, request: PageRequest, name: str = COOKIE) -> str:
        # The __Secure- prefix makes browsers refuse the cookie unless it is set over HTTPS.
        return f"__Secure-{name}" if self.secure(request) else name

    def client(self, request: PageRequest) -> str | None:
        return client_address(
            request.client,
            request.forwarded_for(),
            trusted_proxies=self.api.verifier.trusted_proxies,
        )

    def render(self, template: str, request: PageRequest, **values: Any) -> str:
        static = {
            name: f"{request.base}/static/{name}?v={f.etag.strip(chr(34))}"
            for name, f in self.renderer.static.items()
        }
        now = values.pop("now", None) or self.now()
        return self.renderer.page(
            template,
            base=request.base,
            static=static,
            title=self.title,
            now=now,
            ago=lambda ts: ago(ts, now),
            operator=values.pop("operator", None),
            path=request.path,
            **values,
        )

    def audit(self, action: str, key_id: str, actor: str, **details: Any) -> None:
        try:
            self.manager.store.add_audit(
                AuditEvent(
                    at=self.now(), action=action, key_id=key_id, actor=actor, details=details
                )
            )
        except KeyguardError as exc:
            logger.warning("could not audit %s: %s", action, exc)

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, request: PageRequest) -> ApiResponse:
        """Answer one request. Never raises for anything a client can send."""
        try:
            response = self._dispatch(request)
        except PageError as exc:
            response = self._error(request, exc.status, exc.message)
        except FormError as exc:
            response = self._error(request, exc.status, exc.message)
        except StoreUnavailable:
            response = self._error(
                request, 503, "The key store is unavailable right now; try again shortly."
            )
            response.headers.append(("retry-after", "1"))
        response.headers.extend(SECURITY_HEADERS)
        return response

    def outside(self, request: PageRequest) -> ApiResponse:
        """The ``404`` for a request a skin received outside the dashboard's prefix."""
        response = self._error(request, 404, "There is no such page.")
        response.headers.extend(SECURITY_HEADERS)
        return response

    def _error(self, request: PageRequest, status: int, message: str) -> ApiResponse:
        body = self.render("error.html", request, status=status, message=message)
        return html_response(status, body)

    def _dispatch(self, request: PageRequest) -> ApiResponse:
        method = request.method.upper()
        if method == "HEAD":
            method = "GET"
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["static"] and len(parts) == 2:
            self._allow(method, ("GET",))
            return self._static(request, parts[1])
        if parts == ["sign-in"]:
            self._allow(method, ("GET", "POST"))
            from keyguard.dashboard import signin

            if method == "GET":
                return signin.form(self, request)
            return signin.submit(self, request)
        page, args = self._route(method, parts)
        resumed = gate.resume(self, request)
        if not isinstance(resumed, gate.Resumed):
            return resumed
        ctx = Context(self, request, resumed.operator, self.now())
        if resumed.refresh is not None:
            ctx.headers.append(resumed.refresh)
        if method == "POST":
            fields = request.form()
            sent = [v for k, v in fields if k == "csrf_token"]
            if len(sent) != 1 or not self.signer.csrf_ok(resumed.token, sent[0]):
                raise PageError(
                    403,
                    "This form did not come from this dashboard session (CSRF token "
                    "missing or wrong). Reload the page and try again.",
                )
            if parts == ["sign-out"]:
                from keyguard.dashboard import signin

                return signin.sign_out(ctx)
            return page(ctx, Form(fields), *args)
        return page(ctx, *args)

    def _route(self, method: str, parts: list[str]) -> tuple[Page, tuple[str, ...]]:
        if not parts:
            self._allow(method, ("GET",))
            return _home, ()
        if parts == ["sign-out"]:
            self._allow(method, ("POST",))
            return _home, ()
        joined = "/".join(parts)
        allowed = [m for (m, p) in self._routes if p == joined]
        if allowed:
            self._allow(method, tuple(allowed))
            return self._routes[(method, joined)], ()
        if parts[0] == "keys" and len(parts) in (2, 3) and is_key_id(parts[1]):
            action = parts[2] if len(parts) == 3 else ""
            allowed = [m for (m, a) in self._key_routes if a == action]
            if allowed:
                self._allow(method, tuple(allowed))
                return self._key_routes[(method, action)], (parts[1],)
        raise PageError(404, "There is no such page.")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise PageError(405, f"{method} is not allowed here.")

    def _static(self, request: PageRequest, name: str) -> ApiResponse:
        found = self.renderer.static.get(name)
        if found is None:
            raise PageError(404, "There is no such file.")
        headers = [
            ("content-type", found.content_type),
            ("etag", found.etag),
            ("cache-control", "public, max-age=86400"),
        ]
        if request.header("if-none-match") == found.etag:
            return ApiResponse(304, headers, b"")
        headers.append(("content-length", str(len(found.body))))
        return ApiResponse(200, headers, found.body)

    # -- skins ----------------------------------------------------------------------------------
    def asgi_app(self, *, strip_prefix: bool = True) -> Any:
        """This dashboard as an ASGI application (see :mod:`keyguard.dashboard.skins`)."""
        from keyguard.dashboard.skins import DashboardASGI

        return DashboardASGI(self, strip_prefix=strip_prefix)

    def wsgi_app(self, *, strip_prefix: bool = True) -> Any:
        """This dashboard as a WSGI application (see :mod:`keyguard.dashboard.skins`)."""
        from keyguard.dashboard.skins import DashboardWSGI

        return DashboardWSGI(self, strip_prefix=strip_prefix)

    def public_paths(self) -> tuple[str, ...]:
        """Route-policy templates covering the dashboard, to list as public in an application
        whose keyguard middleware protects every route (the dashboard signs its users in
        itself, with a session rather than an ``Authorization`` header)."""
        base = self.prefix or ""
        return (base or "/", f"{base}/{{rest:path}}")


def _home(ctx: Context) -> ApiResponse:
    return ctx.redirect("/keys")
