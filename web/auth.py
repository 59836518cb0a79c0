"""Who is asking: session cookies (browsers) and bearer tokens (scripts), roles, CSRF, sign-in.

Every route but ``/healthz``, ``/login`` and static files depends on :func:`viewer` or
:func:`admin`. A browser request that changes something must carry the session's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``); a bearer-token request needs none,
since browsers never send it on their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from web import security
from web.context import AppContext, context
from web.uploads import limited_form

log = logging.getLogger(__name__)

SESSION_COOKIE = "attendance_session"
LOGIN_CSRF_COOKIE = "attendance_login_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """A signed-in user or an API token."""

    name: str
    role: str
    via: str  # "session" or "token"
    csrf: str | None = None  # the session's CSRF token (None for tokens)
    session_sha256: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthRequired(Exception):
    """Not signed in: pages redirect to the sign-in page, the API answers 401."""


class Forbidden(Exception):
    """Signed in, but the role may not do this, or the CSRF token is missing or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _lookup(ctx: AppContext, request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = ctx.stores.site().token(security.sha256_hex(header[7:].strip()))
        return Principal(token.name, token.role, "token") if token else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or len(cookie) > 256:
        return None
    digest = security.sha256_hex(cookie)
    site = ctx.stores.site()
    session = site.session(digest, security.iso(security.utc_now()))
    if session is None:
        return None
    user = site.user(session.user)  # the role as it is now, not as it was at sign-in
    if user is None:
        return None
    return Principal(user.name, user.role, "session", session.csrf, digest)


async def principal(request: Request) -> Principal:
    """The caller (a session or an API token), or :class:`AuthRequired`."""
    found = await run_in_threadpool(_lookup, context(request), request)
    if found is None:
        raise AuthRequired()
    request.state.principal = found
    return found


async def _check_csrf(request: Request, who: Principal) -> None:
    """An unsafe request on a browser session must carry the session's CSRF token (header, or
    form field). Called after the role check, so nobody's upload is parsed before it."""
    if who.via != "session" or request.method in SAFE_METHODS:
        return
    given: object = request.headers.get("x-csrf-token")
    kind = request.headers.get("content-type", "")
    if given is None and kind.startswith("application/x-www-form-urlencoded"):
        given = (await request.form(max_fields=50)).get("csrf_token")
    elif given is None and kind.startswith("multipart/form-data"):
        given = (await limited_form(request, context(request).cfg)).get("csrf_token")
    if not security.same_secret(given if isinstance(given, str) else None, who.csrf or ""):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


async def viewer(request: Request, who: Principal = Depends(principal)) -> Principal:
    """Any signed-in user or token (admin or viewer)."""
    await _check_csrf(request, who)
    return who


async def admin(request: Request, who: Principal = Depends(principal)) -> Principal:
    """An admin only."""
    if not who.is_admin:
        raise Forbidden(f"{who.name} is a {who.role}: only an admin may do this")
    await _check_csrf(request, who)
    return who


def still_signed_in(request: Request, who: Principal) -> bool:
    """Whether ``who``'s session or token is still valid (for long-lived streams)."""
    again = _lookup(context(request), request)
    return again is not None and again.role == who.role


def is_https(request: Request) -> bool:
    """Served over HTTPS (directly, or behind a proxy uvicorn trusts for X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site: ``//x``, ``/\\x``, URLs)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ch in target for ch in "\r\n\\")
        or len(target) > 512
    ):
        return "/"
    return target


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(safe_next(target))}", status_code=303)


router = APIRouter()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    return _login_form(request, safe_next(next), error=None, status=200)


def _login_form(request: Request, target: str, error: str | None, status: int) -> Response:
    ctx = context(request)
    token = security.new_csrf()
    response = ctx.templates.TemplateResponse(
        request,
        "login.html",
        {"next": target, "error": error, "csrf_token": token, "principal": None},
        status_code=status,
    )
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    username: str = Form(..., max_length=200),
    password: str = Form(..., max_length=security.MAX_PASSWORD_LENGTH + 1),
    csrf_token: str = Form("", max_length=200),
    next: str = Form("/", max_length=1000),  # noqa: A002
) -> Response:
    ctx = context(request)
    target = safe_next(next)
    if not security.same_secret(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return _login_form(request, target, "The form expired: please sign in again.", 403)
    keys = ctx.limiter.keys(username, client_address(request))
    wait = ctx.limiter.attempt(keys)
    if wait > 0:
        log.warning("sign-in refused from %s: too many failures", client_address(request))
        response = _login_form(
            request, target, f"Too many failed sign-ins: try again in {int(wait) + 1} s.", 429
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    # Argon2 takes ~64 MiB and ~0.3 s per check: a few at a time, the rest wait their turn
    async with ctx.hash_slots:
        user = await run_in_threadpool(lambda: ctx.stores.site().user(username.strip()))
        ok = await run_in_threadpool(security.verify_password, user, password)
    if not ok or user is None:
        log.info("failed sign-in from %s", client_address(request))
        log.debug("failed sign-in for %r", username[:64])  # may be a mistyped password
        return _login_form(request, target, "Wrong user name or password.", 401)
    ctx.limiter.succeeded(keys)
    if security.needs_rehash(user):
        fresh = security.rehashed(user, password)
        await run_in_threadpool(lambda: ctx.stores.site().add_user(fresh, replace=True))
    token, session = security.new_session(user.name, ctx.cfg.session_hours)
    await run_in_threadpool(lambda: ctx.stores.site().add_session(session))
    log.info("%s signed in from %s", user.name, client_address(request))
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token, int(ctx.cfg.session_hours * 3600))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, who: Principal = Depends(viewer)) -> Response:
    if who.session_sha256:
        stores = context(request).stores
        await run_in_threadpool(lambda: stores.site().remove_session(who.session_sha256))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
