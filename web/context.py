"""What every request handler shares: the configuration, stores, templates, live hub."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from common.config import Config
from web.live import LiveHub
from web.security import LoginLimiter
from web.stores import ThreadStores

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


@dataclass
class AppContext:
    """The app's state (``app.state.ctx``)."""

    cfg: Config
    stores: ThreadStores
    hub: LiveHub
    limiter: LoginLimiter
    templates: Jinja2Templates
    enrol: Any  # web.enrolment.EnrolService (loads its models on first use)
    reload_config: Callable[[], Config]
    lock: threading.Lock = field(default_factory=threading.Lock)  # settings changes
    # password checks running at once (each Argon2 check takes ~64 MiB)
    hash_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    def reconfigure(self) -> Config:
        """Re-read the configuration after a settings change (stores keep their connections:
        the store location is not a setting the dashboard changes)."""
        with self.lock:
            self.cfg = self.reload_config()
            self.stores.cfg = self.cfg
            self.hub.cfg = self.cfg
            reconfigure = getattr(self.enrol, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(self.cfg)
        return self.cfg


def context(request: Request) -> AppContext:
    return request.app.state.ctx
