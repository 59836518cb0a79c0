"""``attendance serve``: the web dashboard and REST API on uvicorn.

Binds 127.0.0.1:8000 by default (``--host``/``--port``, or the ``web_host``/``web_port``
keys). To serve other machines, put it behind a reverse proxy that terminates HTTPS and
start it with ``--proxy`` so it trusts the proxy's ``X-Forwarded-Proto`` (cookies are then
``Secure``). Sign in with a user made by ``attendance user add NAME --role admin``.
"""

from __future__ import annotations

import argparse
import logging

from common.config import Config
from common.errors import UserError
from common.runner import config_from_args

HELP = "start the web dashboard and REST API (http://127.0.0.1:8000 by default)"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: web_host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: web_port, 8000)")
    parser.add_argument(
        "--proxy",
        metavar="ADDRESS",
        help="the reverse proxy's address whose X-Forwarded-Proto/For headers are trusted "
        "(e.g. 127.0.0.1)",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    import uvicorn

    from store.factory import open_site_store
    from web.app import create_app

    cfg = cfg.replace(
        **{k: v for k, v in (("web_host", args.host), ("web_port", args.port)) if v is not None}
    )
    with open_site_store(cfg) as site:
        if not site.users():
            log.warning(
                "nobody can sign in yet: add a user with `attendance user add NAME --role admin`"
            )
    app = create_app(cfg, reload_config=lambda: config_from_args(args))
    log.info("dashboard on http://%s:%d/ (Ctrl-C stops it)", cfg.web_host, cfg.web_port)
    if cfg.web_host not in ("127.0.0.1", "localhost", "::1") and not args.proxy:
        log.warning(
            "serving %s without --proxy: use HTTPS through a reverse proxy, or passwords and "
            "session cookies cross the network in clear text",
            cfg.web_host,
        )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.ctx.hub.end_streams()  # open Today tabs would hold the shutdown
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = Server(
        uvicorn.Config(
            app,
            host=cfg.web_host,
            port=cfg.web_port,
            log_level="warning",
            proxy_headers=bool(args.proxy),
            forwarded_allow_ips=args.proxy or None,
            timeout_graceful_shutdown=3,
        )
    )
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
        pass
    except (OSError, SystemExit):  # uvicorn logs a failed bind and exits
        raise UserError(
            f"cannot listen on {cfg.web_host}:{cfg.web_port}; pick another --port or stop "
            "what uses it"
        ) from None
    return 0
