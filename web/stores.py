"""One store connection per worker thread (SQLite connections belong to their thread).

The web server answers requests on a pool of threads; each thread opens the stores it needs
once, through ``store.factory``, and keeps them until the server stops.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from common.config import Config
from common.errors import UserError
from store.factory import (
    embedding_store_exists,
    open_attendance_store,
    open_embedding_store,
    open_site_store,
)
from store.interfaces import AttendanceStore, EmbeddingStore, SiteStore

log = logging.getLogger(__name__)

# what closing a store may raise: SQLite refuses a close from another thread
CLOSE_ERRORS = (sqlite3.Error, UserError, OSError)


class ThreadStores:
    """Lazily opened stores of ``cfg``, one set per thread; :meth:`close` closes them all.

    A worker thread that ended (the pool retires idle ones) leaves its stores behind: they
    are closed the next time a store is opened, so connections never pile up.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._local = threading.local()
        self._opened: dict[int, tuple[threading.Thread, list[Any]]] = {}
        self._lock = threading.Lock()

    def _get(self, key: str, opener: Callable[[], Any]) -> Any:
        store = getattr(self._local, key, None)
        if store is None:
            self._sweep()
            store = opener()
            setattr(self._local, key, store)
            me = threading.current_thread()
            with self._lock:
                self._opened.setdefault(me.ident or 0, (me, []))[1].append(store)
        return store

    def _sweep(self) -> None:
        with self._lock:
            gone = [k for k, (thread, _) in self._opened.items() if not thread.is_alive()]
            stale = [store for k in gone for store in self._opened.pop(k)[1]]
        _close(stale)

    def attendance(self) -> AttendanceStore:
        return self._get("attendance", lambda: open_attendance_store(self.cfg))

    def embeddings(self) -> EmbeddingStore:
        return self._get("embeddings", lambda: open_embedding_store(self.cfg))

    def site(self) -> SiteStore:
        return self._get("site", lambda: open_site_store(self.cfg))

    def enrolled(self) -> dict[str, int]:
        """Everyone with a stored crop embedding (any model), with their number of crops."""
        if not embedding_store_exists(self.cfg):
            return {}
        return self.embeddings().identities()

    def open_count(self) -> int:
        """How many stores are open (for tests and the bench)."""
        with self._lock:
            return sum(len(stores) for _, stores in self._opened.values())

    def close(self) -> None:
        with self._lock:
            opened = [store for _, stores in self._opened.values() for store in stores]
            self._opened = {}
        _close(opened)
        self._local = threading.local()


def _close(stores: list[Any]) -> None:
    for store in stores:
        try:
            store.close()
        except CLOSE_ERRORS as exc:  # SQLite refuses another thread's close: the GC does it
            log.debug("store left to the garbage collector: %s", exc)
