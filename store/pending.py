"""Never drop a sighting: queue what the attendance store could not save, and retry."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from common.names import validate_name
from store.interfaces import AttendanceStore
from store.records import DatabaseError, MarkResult, check_mark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingMark:
    """A sighting (or, with ``action``, an audit event) waiting to be written."""

    name: str
    when: dt.datetime
    distance: float | None
    source: str
    action: str | None = None  # None: mark_present; else log_event with this action


class PendingWriter:
    """Wraps an :class:`AttendanceStore` so sightings survive a locked or unwritable database.

    A ``mark_present`` that fails with a retryable :class:`DatabaseError` is queued (in order)
    with a warning; the queue is retried on the next call (at most every ``retry_interval``
    seconds, since each attempt may wait the database timeout) and by :meth:`flush`. A
    non-retryable error (corrupt file) keeps the sighting queued and is raised. :meth:`close`
    makes a last attempt and raises if anything is still unsaved, after logging each item.
    """

    def __init__(
        self,
        store: AttendanceStore,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.retry_interval = float(retry_interval)
        self._clock = clock
        self._queue: deque[PendingMark] = deque()
        self._last_failure: float | None = None
        self.last_error: DatabaseError | None = None

    @property
    def backlog(self) -> int:
        """Number of sightings (and audit events) not yet saved."""
        return len(self._queue)

    def pending(self) -> list[PendingMark]:
        """The unsaved sightings, oldest first."""
        return list(self._queue)

    def mark_present(
        self, name: str, when: dt.datetime, distance: float | None, source: str
    ) -> MarkResult | None:
        """Save this sighting (after any backlog); ``None`` when it had to be queued."""
        mark = PendingMark(validate_name(name), when, check_mark(distance, source), source)
        waiting = bool(self._queue)
        self._queue.append(mark)
        if waiting and not self._retry_due():
            log.warning(
                "attendance database unavailable; %d sighting(s) queued (%s)",
                len(self._queue),
                self.last_error,
            )
            return None
        written = self._drain()
        return written[-1] if written and not self._queue else None

    def log_event(
        self, name: str, when: dt.datetime, distance: float | None, source: str, action: str
    ) -> bool:
        """Save this audit event (after any backlog, in order); False when it was queued."""
        event = PendingMark(validate_name(name), when, check_mark(distance, source), source, action)
        waiting = bool(self._queue)
        self._queue.append(event)
        if waiting and not self._retry_due():
            log.warning(
                "attendance database unavailable; %d sighting(s) or event(s) queued (%s)",
                len(self._queue),
                self.last_error,
            )
            return False
        self._drain()
        return not self._queue

    def flush(self) -> list[MarkResult]:
        """Try to save the whole backlog now; returns what was written."""
        return self._drain()

    def _retry_due(self) -> bool:
        return (
            self._last_failure is None or self._clock() - self._last_failure >= self.retry_interval
        )

    def _drain(self) -> list[MarkResult]:
        written: list[MarkResult] = []
        recovering = self._last_failure is not None
        while self._queue:
            mark = self._queue[0]
            try:
                if mark.action is None:
                    result = self.store.mark_present(
                        mark.name, mark.when, mark.distance, mark.source
                    )
                else:
                    self.store.log_event(
                        mark.name, mark.when, mark.distance, mark.source, mark.action
                    )
                    result = None
            except DatabaseError as exc:
                self._last_failure = self._clock()
                self.last_error = exc
                log.warning(
                    "attendance not saved yet, %d sighting(s) queued: %s", len(self._queue), exc
                )
                if exc.retryable:
                    return written
                raise
            self._queue.popleft()
            if result is not None:
                written.append(result)
        if recovering:
            log.info(
                "attendance database available again; saved %d queued sighting(s)", len(written)
            )
        self._last_failure = None
        self.last_error = None
        return written

    def close(self) -> None:
        """Last attempt to save the backlog, then close the database.

        Raises :class:`DatabaseError` listing the count if sightings remain unsaved; each one is
        logged first, so nothing disappears silently.
        """
        try:
            if self._queue:
                # _drain has logged the failure; the remaining backlog is reported below
                with contextlib.suppress(DatabaseError):
                    self._drain()
        finally:
            self.store.close()
        if self._queue:
            for mark in self._queue:
                log.error(
                    "unsaved %s: %s at %s (distance %s, source %s)",
                    "sighting" if mark.action is None else f"{mark.action} event",
                    mark.name,
                    mark.when.isoformat(timespec="seconds"),
                    mark.distance,
                    mark.source,
                )
            raise DatabaseError(
                f"{len(self._queue)} sighting(s) could not be saved to {self.store.describe()} "
                f"({self.last_error}); they are listed in the log above",
            )

    def __enter__(self) -> PendingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except DatabaseError as error:  # do not mask the exception already in flight
            log.error("%s", error)
