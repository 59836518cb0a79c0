"""Kiosk heartbeats: a running recogniser reports what it is doing, so a dashboard can show a
dead camera.

:class:`HeartbeatReporter` writes one :class:`~store.records.Heartbeat` (kiosk name, host,
source and its state, frames per second, model version, people marked and unknown faces of
the day) every ``cfg.heartbeat_seconds`` through its own site store
(:func:`store.factory.open_site_store`), opened lazily by its daemon thread. The frame loop
only updates counters in memory under a lock (:meth:`~HeartbeatReporter.frame`,
:meth:`~HeartbeatReporter.event`), so it never waits on the database. A store that cannot be
reached is logged once (a warning; then debug until it recovers, then "heartbeat saved again")
and retried at the next interval: a heartbeat failure never stops recognition.

Closing writes a final beat with the end state ("ended", "stopped" or "error: ..."), waiting
at most ``max(cfg.db_timeout_seconds, 1)`` seconds, so a dead database cannot hang shutdown.

Counts (``marked``, ``unknown``) are per local day and reset at local midnight; a restart
continues the day's counts stored for the same kiosk name. ``marked`` counts the distinct
people this kiosk made present that day: sightings the store reported as the first of the day
(``present``, ``absent_to_present``: :attr:`store.records.MarkResult.new_present`), and a
sighting the store could not save yet (``queued``: its outcome is unknown) when this kiosk has
not recorded that person today in this run. A queued sighting of someone already present
(marked by another kiosk or before a restart) is therefore counted too.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from common.config import Config
from common.errors import UserError
from common.urls import redact_url
from recognizer.pipeline import ACTION_QUEUED, ACTION_UNKNOWN
from store.records import ACTION_ABSENT_TO_PRESENT, ACTION_PRESENT, Heartbeat

log = logging.getLogger(__name__)

RUNNING = "running"
RECONNECTING = "reconnecting"
ENDED = "ended"  # the source ran out (end of a file or folder, a stream that ended)
STOPPED = "stopped"  # esc, Ctrl-C, a stop signal, --max-frames, a one-shot check-in done
ERROR = "error"  # "error: <one line>"
NEW_PRESENT_ACTIONS = (ACTION_PRESENT, ACTION_ABSENT_TO_PRESENT)  # as MarkResult.new_present
MAX_KIOSK = 100  # characters of a kiosk name (as config kiosk_name and the site store)
MAX_TEXT = 1000  # characters of the source a site store takes
MAX_ERROR = 200  # characters of an error state


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_utc(when: dt.datetime) -> str:
    """``when`` as the ISO-8601 UTC string the site store compares."""
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def error_state(error: BaseException | str) -> str:
    """``"error: <the first line of error>"``, without a password, at most ``MAX_ERROR``."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line and isinstance(error, BaseException):
        line = type(error).__name__
    return printable(f"{ERROR}: {redact_url(line)}")[:MAX_ERROR]


def final_state(stopped_by: str, error: BaseException | None = None) -> str:
    """The end state of a run from ``RunSummary.stopped_by`` and ``RunSummary.error``."""
    if error is not None:
        return error_state(error)
    if stopped_by == "end of source":
        return ENDED
    return STOPPED


def printable(text: str) -> str:
    """``text`` with every character that is not printable (a tab, a newline) as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def kiosk_name(cfg: Config, source_description: str, host: str) -> str:
    """``cfg.kiosk_name``, or ``"<host> <source>"`` cut to 100 characters; printable and
    without outer spaces, as the site store requires of a name."""
    name = cfg.kiosk_name or f"{host} {source_description}"
    return printable(name)[:MAX_KIOSK].strip() or "kiosk"


class HeartbeatReporter:
    """Reports the state of one recogniser every ``interval`` seconds (see the module doc).

    Use it as a context manager (``__enter__`` starts the thread, ``__exit__`` closes; an
    exception leaving the block makes the final state ``error: ...``, or ``stopped`` for
    Ctrl-C), or call :meth:`start` and :meth:`close`. :meth:`finish` sets the final state.

    ``open_store``, ``clock`` (monotonic seconds, for the frame rate), ``now`` (aware UTC
    datetimes) and ``today`` (the local date) are replaceable for tests; ``interval``
    defaults to ``cfg.heartbeat_seconds`` and ``close_timeout`` to
    ``max(cfg.db_timeout_seconds, 1.0)``.
    """

    def __init__(
        self,
        cfg: Config,
        source: Any,
        *,
        open_store: Callable[[], Any] | None = None,
        interval: float | None = None,
        close_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = utc_now,
        today: Callable[[], dt.date] = dt.date.today,
        host: str | None = None,
    ) -> None:
        if open_store is None:
            from store.factory import open_site_store

            def open_store() -> Any:
                return open_site_store(cfg)

        self._open_store = open_store
        self._source = source
        self.interval = float(cfg.heartbeat_seconds if interval is None else interval)
        self.close_timeout = float(
            max(cfg.db_timeout_seconds, 1.0) if close_timeout is None else close_timeout
        )
        self._clock = clock
        self._now = now
        self._today = today
        self.host = host if host is not None else socket.gethostname()
        self.source = printable(redact_url(source.describe()))[:MAX_TEXT]
        self.kiosk = kiosk_name(cfg, self.source, self.host)
        self.model_version = cfg.model_version
        self.started = iso_utc(now())
        # what the frame loop updates (under _lock, nothing else: it never waits on the store)
        self._lock = threading.Lock()
        self._frames = 0  # processed (not paused) frames since _window_start
        self._window_start = clock()
        self._paused = False
        self._day = today()
        self._marked = 0
        self._unknown = 0
        self._counted: set[str] = set()  # people counted in ``marked`` today
        self._recorded: set[str] = set()  # people with a recorded sighting today (any action)
        self._final: str | None = None
        # the reporter's own
        self._store: Any = None
        self._restored = False  # the day's counts stored before this run were added
        self._failing = False
        self.saved = 0  # heartbeats written
        self.failures = 0  # attempts that failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- called by the frame loop (cheap: a lock and a few integers) -------------------------
    def frame(self, paused: bool = False) -> None:
        """One frame went through the pipeline; ``paused``: recognition was paused (a pause
        counts no frames, and the rate restarts after it, like ``cli.FrameRate``)."""
        with self._lock:
            if paused:
                self._paused = True
                self._frames = 0
            elif self._paused:  # resumed: measured afresh from this frame on
                self._paused = False
                self._frames = 0
                self._window_start = self._clock()
            else:
                self._frames += 1

    def event(self, event: Any) -> None:
        """Count one pipeline event (``recognizer.pipeline.RecognitionEvent``)."""
        action, name = event.action, event.name
        today = self._today()
        with self._lock:
            self._roll_day(today)
            if action == ACTION_UNKNOWN:
                self._unknown += 1
                return
            if not event.recorded:  # refused by a gate, removed from the store
                return
            new = action in NEW_PRESENT_ACTIONS or (
                action == ACTION_QUEUED and name not in self._recorded
            )
            self._recorded.add(name)
            if new and name not in self._counted:
                self._counted.add(name)
                self._marked += 1

    def finish(self, state: str) -> None:
        """Set the state the final beat reports (``ended``, ``stopped``, ``error: ...``)."""
        with self._lock:
            self._final = state

    @property
    def counts(self) -> tuple[str, int, int]:
        """``(day, marked, unknown)`` as the next beat would report them."""
        with self._lock:
            return self._day.isoformat(), self._marked, self._unknown

    # -- the heartbeat -------------------------------------------------------------------------
    def _roll_day(self, today: dt.date) -> None:
        """Local midnight passed: the counts start again (call with ``_lock`` held). Only
        forwards: a date read a moment before another thread rolled the day is ignored."""
        if today > self._day:
            self._day = today
            self._marked = self._unknown = 0
            self._counted.clear()
            self._recorded.clear()

    def _reconnecting(self) -> bool:
        """Whether a live source is reopening its device or stream (``LiveSource``)."""
        return bool(getattr(self._source, "reconnecting", False))

    def snapshot(self, final: bool = False) -> Heartbeat:
        """The heartbeat due now; starts the next frame-rate interval."""
        today, now, stamp = self._today(), self._clock(), iso_utc(self._now())
        live = RECONNECTING if self._reconnecting() else RUNNING
        with self._lock:
            self._roll_day(today)
            elapsed = now - self._window_start
            fps = 0.0
            if not final and not self._paused and elapsed > 0:
                fps = self._frames / elapsed
            self._frames = 0
            self._window_start = now
            state = self._final or live
            day, marked, unknown = self._day.isoformat(), self._marked, self._unknown
        return Heartbeat(
            kiosk=self.kiosk, host=self.host, source=self.source, source_state=state,
            fps=round(fps, 2), model_version=self.model_version, started=self.started,
            last_seen=stamp, day=day, marked=marked, unknown=unknown,
        )  # fmt: skip

    def beat(self, final: bool = False) -> bool:
        """Write one heartbeat now (in the calling thread; the reporter's thread calls it);
        False when the store could not take it (logged once, retried at the next call)."""
        try:
            if self._store is None:
                self._store = self._open_store()
            if not self._restored:
                self._restore(self._store.kiosks())
            self._store.beat(self.snapshot(final))
        # a store that is down, locked or refuses the row: logged once, retried next time
        except (UserError, OSError, ValueError) as exc:
            self._failed(exc)
            return False
        self.saved += 1
        if self._failing:
            self._failing = False
            log.info("kiosk %s: heartbeat saved again", self.kiosk)
        return True

    def _restore(self, stored: list[Heartbeat]) -> None:
        """Continue the day's counts this kiosk stored before a restart."""
        previous = next((h for h in stored if h.kiosk == self.kiosk), None)
        today = self._today()
        with self._lock:
            self._roll_day(today)
            if previous is not None and previous.day == self._day.isoformat():
                self._marked += max(0, int(previous.marked))
                self._unknown += max(0, int(previous.unknown))
                log.debug(
                    "kiosk %s: continuing today's counts (%d marked, %d unknown)",
                    self.kiosk, previous.marked, previous.unknown,
                )  # fmt: skip
            self._restored = True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        text = str(exc).strip().splitlines()
        why = redact_url(text[0] if text else type(exc).__name__)
        if self._failing:
            log.debug("kiosk %s: heartbeat not saved: %s", self.kiosk, why)
        else:
            self._failing = True
            log.warning(
                "kiosk %s: heartbeat not saved (%s); retrying every %.3g s",
                self.kiosk, why, self.interval,
            )  # fmt: skip
        self._close_store()  # reopened at the next attempt

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except (UserError, OSError) as exc:
                log.debug("kiosk %s: closing the site store: %s", self.kiosk, exc)

    def _run(self) -> None:
        try:
            self.beat()  # at once: the dashboard sees the kiosk from its start
            while not self._stop.wait(self.interval):
                self.beat()
            self.beat(final=True)
        finally:
            self._close_store()

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> HeartbeatReporter:
        """Start the background thread (idempotent)."""
        if self._thread is None and not self._closed:
            log.info("kiosk %s: heartbeat every %.3g s", self.kiosk, self.interval)
            self._thread = threading.Thread(
                target=self._run, name=f"heartbeat {self.kiosk}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, state: str | None = None) -> None:
        """Write the final beat (``state``, else the one :meth:`finish` set, else
        ``stopped``) and stop; waits at most ``close_timeout`` seconds (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._final = state or self._final or STOPPED
        thread = self._thread
        if thread is None:  # never started: the final beat from here
            try:
                self.beat(final=True)
            finally:
                self._close_store()
            return
        self._stop.set()
        thread.join(self.close_timeout)
        if thread.is_alive():
            log.warning(
                "kiosk %s: the site store did not answer within %.3g s; the final state "
                "(%s) may not be saved",
                self.kiosk, self.close_timeout, self._final,
            )  # fmt: skip

    def __enter__(self) -> HeartbeatReporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        elif not isinstance(exc, Exception):  # Ctrl-C, SystemExit
            self.close(STOPPED)
        else:  # what ended the run (a failure while closing the loop's resources included)
            self.close(error_state(exc))
