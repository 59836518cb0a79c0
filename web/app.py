"""The web application: :func:`create_app` wires the configuration, stores, security and routes.

Layout (FastAPI's "bigger applications"): ``web.auth`` (sign-in, roles, CSRF), ``web.pages``
(server-rendered pages), ``web.api`` (``/api/v1``, JSON), ``web.live`` (one watcher thread,
server-sent events), ``web.enrolment`` and ``web.exports`` (no web framework).
Errors are JSON (API) or a page (browser) with a one-line message, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.config import Config, read_toml
from common.errors import UserError
from store.records import DatabaseError, DatabaseUnavailable, StoreError
from web import api, auth, pages
from web.context import STATIC, TEMPLATES, AppContext
from web.live import LiveHub
from web.queries import NotFound
from web.security import LoginLimiter
from web.stores import ThreadStores

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes (413) before they are parsed: by the
    Content-Length header, and by counting what arrives (a chunked body declares none)."""

    def __init__(self, app: ASGIApp, limit: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await _too_large(scope, send, limit)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(scope, send, limit)


class _BodyTooLarge(Exception):
    pass


class SecurityHeaders:
    """Headers on every response (plain ASGI, so a body-size error is not wrapped in an
    exception group on its way out): CSP without inline scripts, no framing, no sniffing,
    and no caching of anything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in (
                    ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "same-origin"),
                    ("Content-Security-Policy", CSP),
                ):
                    headers.setdefault(key, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
                if scope.get("scheme") == "https":
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, with_headers)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    size = f"{limit / 1e6:.0f} MB" if limit >= 1_000_000 else f"{limit // 1000} kB"
    response = JSONResponse(
        {"error": f"the request is larger than {size}: send fewer or smaller photos"},
        status_code=413,
    )
    await response(scope, lambda: _empty(), send)  # type: ignore[arg-type]


async def _empty() -> Message:
    return {"type": "http.disconnect"}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX) or "text/html" not in request.headers.get(
        "accept", ""
    )


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    ctx: AppContext = request.app.state.ctx
    return ctx.templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "message": message,
            "principal": getattr(request.state, "principal", None),
        },
        status_code=status,
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(auth.AuthRequired)
    async def _auth(request: Request, exc: auth.AuthRequired) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"error": "sign in first, or send an API token (Authorization: Bearer ...)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return auth.login_redirect(request)

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return _error(request, 403, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        response = _error(request, exc.status_code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return _error(request, 422, "; ".join(problems) or "invalid request")

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> Response:
        # the detail names files and servers: the log has it, the client gets the gist
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, DatabaseUnavailable | DatabaseError):
            return _error(request, 503, "the attendance store is unavailable; try again, or "
                          "see the server log")  # fmt: skip
        return _error(request, 500, "the attendance store refused this; see the server log")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> Response:
        return _error(request, 400, str(exc).splitlines()[0] if str(exc) else "invalid value")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "internal error; the server log has the details")


WORKER_THREADS = 8  # request worker threads (each keeps at most 3 store connections)


def _recover(recover: Callable[[], int]) -> None:
    try:
        undone = recover()
    except (UserError, OSError, ValueError) as exc:
        log.error("rolling back an unfinished upload failed (%s); the next enrolment retries", exc)
    else:
        if undone:
            log.warning("rolled back %d upload(s) a stopped server left unfinished", undone)


def create_app(
    cfg: Config,
    *,
    enrol: Any = None,
    live: bool = True,
    reload_config: Callable[[], Config] | None = None,
) -> FastAPI:
    """The dashboard and API for ``cfg``. ``enrol``: an enrolment service (default: the real
    one, loading MTCNN and FaceNet on first use); ``live=False`` starts no watcher thread
    (pages then build the Today snapshot per request)."""
    if enrol is None:
        from web.enrolment import EnrolService

        enrol = EnrolService(cfg)
    stores = ThreadStores(cfg)
    hub = LiveHub(cfg)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.autoescape = True
    ctx = AppContext(
        cfg=cfg,
        stores=stores,
        hub=hub,
        limiter=LoginLimiter(cfg.login_attempts, cfg.login_window_seconds),
        templates=templates,
        enrol=enrol,
        reload_config=reload_config or (lambda: cfg.replace(**read_toml(cfg.root))),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # a few worker threads: each holds its own store connections (see web.stores)
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        if live:
            hub.start()
        recover = getattr(enrol, "recover", None)
        if recover is not None:  # an upload a killed server left half done is rolled back
            threading.Thread(target=_recover, args=(recover,), daemon=True).start()
        try:
            yield
        finally:
            hub.stop()
            stores.close()
            closer = getattr(enrol, "close", None)
            if closer is not None:
                closer()

    app = FastAPI(
        title="facenet-attendance",
        version="1",
        description="Attendance, people, events, reports and health. Authenticate with a "
        "session cookie (the dashboard) or `Authorization: Bearer <token>` "
        "(`attendance token add NAME`).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the sign-in
        redirect_slashes=False,  # no redirects built from the client's Host header
    )
    app.state.ctx = ctx

    def body_limit(scope: Scope) -> int:
        """Photos only where photos are sent; 64 kB for every other request."""
        c, path = ctx.cfg, scope["path"]
        if scope["method"] == "POST" and path in (f"{API_PREFIX}/people", "/people/enrol"):
            return c.upload_max_files * (c.upload_max_bytes + 4_096) + 64_000
        if scope["method"] == "POST" and path == f"{API_PREFIX}/people/check-photo":
            return c.upload_max_bytes + 64_000
        return 64_000

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=body_limit)  # outermost: before anything reads
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(api.router, prefix=API_PREFIX)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness for load balancers: no sign-in, no detail."""
        return {"status": "ok"}

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    _install_docs(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at ``/api/v1/docs`` from the ``swagger-ui-bundle`` package (no CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    assets = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}

    @app.get(API_PREFIX + "/docs-assets/{asset}", include_in_schema=False)
    async def docs_asset(asset: str, who: auth.Principal = Depends(auth.viewer)) -> Response:
        if asset not in assets:
            raise StarletteHTTPException(404, "no such file")
        data = (Path(swagger_ui_path) / asset).read_bytes()
        return Response(data, media_type=assets[asset], headers={"Cache-Control": "private"})

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    async def openapi(who: auth.Principal = Depends(auth.viewer)) -> JSONResponse:
        return JSONResponse(_with_bearer(app.openapi()))

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    async def docs(request: Request, who: auth.Principal = Depends(auth.viewer)) -> Response:
        page = get_swagger_ui_html(
            openapi_url=f"{API_PREFIX}/openapi.json",
            title="facenet-attendance API",
            swagger_js_url=f"{API_PREFIX}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{API_PREFIX}/docs-assets/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )
        response = HTMLResponse(page.body)
        # the page starts Swagger UI with an inline script: allowed on this page only
        response.headers["Content-Security-Policy"] = CSP.replace(
            "script-src 'self'", "script-src 'self' 'unsafe-inline'"
        ).replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        return response


def _with_bearer(spec: dict[str, Any]) -> dict[str, Any]:
    """Declare the API token (``Authorization: Bearer``) so the docs page's "Authorize" takes
    one; requests from the docs then need no session or CSRF token."""
    spec.setdefault("components", {}).setdefault("securitySchemes", {})["token"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from `attendance token add NAME --role viewer|admin`",
    }
    spec["security"] = [{"token": []}]
    return spec
