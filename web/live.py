"""Live updates: one watcher thread per server, however many browsers are watching.

:class:`LiveHub` polls the stores' *change tokens* every ``interval`` seconds (a SQLite
``data_version`` read, or notifications already received from PostgreSQL: no query) and the
kiosk heartbeats every ``kiosk_interval`` seconds. When something changed it builds the Today
snapshot once (``web.today``) and wakes every subscriber; each server-sent-events client then
sends that same JSON. Pages render from the latest snapshot, so a page view costs no query.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from common.config import Config
from common.errors import UserError
from store.factory import (
    attendance_store_exists,
    embedding_store_exists,
    open_site_store,
    watch_attendance_store,
    watch_embedding_store,
)
from web.stores import CLOSE_ERRORS
from web.today import kiosk_views, same_content, today_snapshot

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies from closing the stream
ERROR_PAUSE_SECONDS = 2.0  # after a store error, before the watcher tries again
RECHECK_SECONDS = 10.0  # a stream checks this often that its session is still valid
# what viewers see when the store fails (the log has the detail: paths, servers)
STORE_DOWN = "the attendance store is unavailable; the figures may be out of date"


class _Watch:
    """The stores the watcher thread reads (opened lazily, reopened after an error)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.attendance: Any = None
        self.embeddings: Any = None
        self.site: Any = None

    def open(self) -> None:
        if self.attendance is None and attendance_store_exists(self.cfg):
            self.attendance = watch_attendance_store(self.cfg)
        if self.embeddings is None and embedding_store_exists(self.cfg):
            self.embeddings = watch_embedding_store(self.cfg)
        if self.site is None:
            self.site = open_site_store(self.cfg)

    def token(self) -> tuple[Any, Any]:
        self.open()
        return (
            self.attendance.change_token() if self.attendance is not None else None,
            self.embeddings.change_token() if self.embeddings is not None else None,
        )

    def close(self) -> None:
        for store in (self.attendance, self.embeddings, self.site):
            if store is not None:
                try:
                    store.close()
                except CLOSE_ERRORS as exc:  # a broken connection
                    log.debug("closing a store failed: %s", exc)
        self.attendance = self.embeddings = self.site = None


class LiveHub:
    """The latest Today snapshot, rebuilt when a store changes; async subscribers."""

    def __init__(
        self,
        cfg: Config,
        *,
        interval: float = 0.5,
        kiosk_interval: float | None = None,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.cfg = cfg
        self.interval = interval
        self.kiosk_interval = kiosk_interval or min(5.0, cfg.heartbeat_seconds)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._json = "{}"
        self.version = 0
        self.rebuilds = 0  # how many snapshots were built (the bench reads it)
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # -- the watcher thread -----------------------------------------------------------------
    def start(self) -> None:
        self.refresh()  # the first page is right even before the thread's first round
        self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._wake_all()

    def end_streams(self) -> None:
        """End every live stream now (the server is stopping: browsers reconnect later)."""
        self._stop.set()
        self._wake_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        watch = _Watch(self.cfg)
        last_token: Any = object()
        last_kiosks = 0.0
        day = self._clock().date()
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    token = watch.token()
                    now = time.monotonic()
                    due = now - last_kiosks >= self.kiosk_interval
                    new_day = self._clock().date() != day
                    if token != last_token or due or new_day:
                        last_token, last_kiosks, day = token, now, self._clock().date()
                        self._publish(self._build(watch))
                    if failing:
                        log.info("live updates: the store is reachable again")
                        failing = False
                except UserError as exc:
                    if not failing:
                        log.warning("live updates paused: %s", exc)
                        failing = True
                    self._publish_error(STORE_DOWN)
                    watch.close()
                    last_token = object()
                    self._stop.wait(ERROR_PAUSE_SECONDS)  # not a new connection every poll
                except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                    log.exception("live updates: unexpected error; retrying")
                    watch.close()
                    last_token = object()
                    self._stop.wait(2.0)
                self._stop.wait(self.interval)
        finally:
            watch.close()

    def refresh(self) -> dict[str, Any]:
        """Build and publish a snapshot now (in the calling thread, with its own stores)."""
        watch = _Watch(self.cfg)
        try:
            watch.open()
            snapshot = self._build(watch)
        except UserError as exc:
            log.warning("the Today snapshot could not be built: %s", exc)
            self._publish_error(STORE_DOWN)
            return self.snapshot()
        finally:
            watch.close()
        self._publish(snapshot)
        return snapshot

    def _build(self, watch: _Watch) -> dict[str, Any]:
        now_local = self._clock()
        today = now_local.date()
        rows = watch.attendance.rows(date=today) if watch.attendance is not None else []
        enrolled = watch.embeddings.identities() if watch.embeddings is not None else {}
        beats = watch.site.kiosks()
        kiosks = kiosk_views(
            beats, dt.datetime.now(dt.timezone.utc), self.cfg.heartbeat_seconds, today.isoformat()
        )
        self.rebuilds += 1
        return today_snapshot(today, rows, enrolled, kiosks, now_local)

    def _publish(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            if same_content(self._snapshot, snapshot):
                self._snapshot = snapshot  # fresher ages, same content: nobody is woken
                return
            self._snapshot = snapshot
            self._json = json.dumps(snapshot, separators=(",", ":"))
            self.version += 1
        self._wake_all()

    def _publish_error(self, message: str) -> None:
        with self._lock:
            base = dict(self._snapshot) if self._snapshot else None
        if base is None:
            now = self._clock()
            base = today_snapshot(now.date(), [], [], [], now)
        if base.get("error") == message:
            return
        base["error"] = message
        self._publish(base)

    def snapshot(self) -> dict[str, Any]:
        """The latest snapshot (built now if there is none yet)."""
        with self._lock:
            snapshot = self._snapshot
        return snapshot if snapshot is not None else self.refresh()

    # -- subscribers (server-sent events) ---------------------------------------------------
    def _wake_all(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that event loop is closed
                loop.call_soon_threadsafe(event.set)

    async def events(
        self,
        disconnected: Callable[[], Any],
        allowed: Callable[[], Any] | None = None,
    ) -> AsyncIterator[str]:
        """SSE messages: the current snapshot, then each new one; a comment every
        :data:`KEEPALIVE_SECONDS`. Ends when the client goes, the server stops, or
        ``allowed()`` (awaited every :data:`RECHECK_SECONDS`) says the viewer signed out."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        with self._lock:
            self._waiters.add(waiter)
        sent = -1
        checked = time.monotonic()
        try:
            while not self._stop.is_set():
                if allowed is not None and time.monotonic() - checked >= RECHECK_SECONDS:
                    if not await allowed():
                        return
                    checked = time.monotonic()
                wake.clear()  # before reading: a publish after this read sets it again
                with self._lock:
                    version, text = self.version, self._json
                if version != sent:
                    sent = version
                    yield f"event: today\nid: {version}\ndata: {text}\n\n"
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), timeout=KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    if await disconnected():
                        return
                    yield ": keep-alive\n\n"
        finally:
            with self._lock:
                self._waiters.discard(waiter)
