"""Never drop a sighting: journal it on disk, save it, and retry what the store could not save.

:class:`PendingWriter` wraps an :class:`~store.interfaces.AttendanceStore`. With a journal
folder (``store.factory.open_pending_writer`` gives ``<db_path>-pending/``), every sighting and
audit event is first appended to this writer's journal, one JSON line, fsynced, and only then
written to the store. A sighting the store cannot take (locked, unwritable) stays queued in
memory *and* in the journal, and is retried. Once everything is saved the journal is truncated
(one ``ftruncate``), and removed when the writer closes. A process killed meanwhile (even with
``kill -9``) leaves its journal behind; the next writer opened on the same database adopts it
and replays it, in order, before anything else.

The journal itself (format, locking, adoption of a stopped writer's file) is
:mod:`store.journal`.

Exactly once. A replayed entry may already be
in the store: the process can be killed after the store committed it and before the journal
said so. So before writing a replayed entry, the store's audit trail is searched for the event
that entry would have written (same person, millisecond timestamp, source, distance and kind);
if it is there, the entry is skipped. A sighting is therefore never recorded twice, and no
extra event is added. Adopted journals are deleted only once their entries are saved or
copied into the new writer's own journal, so a kill during replay loses nothing either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from common.names import validate_name
from store.interfaces import AttendanceStore
from store.journal import PendingMark, SightingJournal
from store.records import (
    ATTENDANCE_ACTIONS,
    DatabaseError,
    MarkResult,
    check_mark,
    local_time,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the writer
class PendingWriter:
    """Wraps an :class:`AttendanceStore` so sightings survive a locked or unwritable database,
    and, with a ``journal`` folder, a killed process.

    A ``mark_present`` that fails with a retryable :class:`DatabaseError` is queued (in order)
    with a warning; the queue is retried on the next call (at most every ``retry_interval``
    seconds, since each attempt may wait the database timeout) and by :meth:`flush`. A
    non-retryable error (corrupt file) keeps the sighting queued and is raised. :meth:`close`
    makes a last attempt and raises if anything is still unsaved, after logging each item.

    ``journal``: the folder of sighting journals (see the module docstring). Opening the
    writer adopts the journals of writers that stopped and saves their entries first.
    """

    def __init__(
        self,
        store: AttendanceStore,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        journal: str | Path | None = None,
    ) -> None:
        self.store = store
        self.retry_interval = float(retry_interval)
        self._clock = clock
        self._queue: deque[PendingMark] = deque()
        self._last_failure: float | None = None
        self.last_error: DatabaseError | None = None
        self.journal = SightingJournal(journal) if journal is not None else None
        self.replayed = 0  # entries of stopped writers' journals saved at start-up
        self.duplicates = 0  # replayed entries found already saved (not written again)
        if self.journal is not None:
            self._replay()

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
        self._enqueue(mark)
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
        self._enqueue(event)
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

    def retry(self) -> None:
        """Retry the backlog if a retry is due (cheap otherwise): a recogniser calls this
        between frames, so sightings queued during an outage are saved once the store is
        back, without waiting for the next sighting."""
        if self._queue and self._retry_due():
            self._drain()

    def _enqueue(self, mark: PendingMark) -> None:
        """Journal ``mark`` (fsynced) before anything is tried, then queue it."""
        if self.journal is not None:
            self.journal.append([mark])
        self._queue.append(mark)

    def _retry_due(self) -> bool:
        return (
            self._last_failure is None or self._clock() - self._last_failure >= self.retry_interval
        )

    def _replay(self) -> None:
        """Adopt the journals of writers that stopped, save their entries, keep the rest."""
        assert self.journal is not None
        adopted = self.journal.adopt()
        if adopted:
            log.warning(
                "%d sighting(s) not saved by an earlier run found in %s; saving them now",
                len(adopted),
                ", ".join(str(path) for path in self.journal.adopted),
            )
            self._queue.extend(adopted)
            with contextlib.suppress(DatabaseError):  # logged by _drain; kept queued
                self._drain()
            saved = len(adopted) - len(self._queue)
            self.replayed = saved - self.duplicates
            if self._queue:  # still unsaved: into this writer's own journal first
                self.journal.append(list(self._queue))
            log.info(
                "replayed %d journalled sighting(s): %d saved, %d already saved before, "
                "%d still queued",
                len(adopted),
                self.replayed,
                self.duplicates,
                len(self._queue),
            )
        # the adopted files go only once their entries are saved or journalled again
        self.journal.release_adopted(delete=not (self._queue and self.journal.broken))

    def _already_saved(self, mark: PendingMark) -> bool:
        """Does the store hold the event this replayed entry would write? (It was saved just
        before its process was killed, before the journal could say so.)"""
        stamp = local_time(mark.when)
        wanted = stamp.isoformat(timespec="milliseconds")
        for event in self.store.events(date=stamp.date(), name=mark.name):
            if event.timestamp != wanted or event.source != mark.source:
                continue
            if (event.distance is None) != (mark.distance is None):
                continue
            if mark.distance is not None and not math.isclose(
                float(event.distance), mark.distance, rel_tol=1e-9, abs_tol=1e-12
            ):
                continue
            if mark.action is None and event.action in ATTENDANCE_ACTIONS:
                return True
            if mark.action is not None and event.action == mark.action:
                return True
        return False

    def _drain(self) -> list[MarkResult]:
        written: list[MarkResult] = []
        saved: list[str] = []
        recovering = self._last_failure is not None
        try:
            while self._queue:
                mark = self._queue[0]
                try:
                    result = self._save(mark)
                except DatabaseError as exc:
                    self._last_failure = self._clock()
                    self.last_error = exc
                    self._queue[0] = dataclasses.replace(mark, uncertain=True)
                    log.warning(
                        "attendance not saved yet, %d sighting(s) queued: %s",
                        len(self._queue),
                        exc,
                    )
                    if exc.retryable:
                        return written
                    raise
                self._queue.popleft()
                saved.append(mark.id)
                if result is not None:
                    written.append(result)
        finally:
            if self.journal is not None:
                self.journal.settle(saved, len(self._queue))
        if recovering:
            log.info(
                "attendance database available again; saved %d queued sighting(s)", len(written)
            )
        self._last_failure = None
        self.last_error = None
        return written

    def _save(self, mark: PendingMark) -> MarkResult | None:
        """Write one entry to the store (a replayed one only if it is not there yet)."""
        if (mark.replayed or mark.uncertain) and self._already_saved(mark):
            self.duplicates += 1
            log.info(
                "journalled %s of %s at %s was already saved; not written twice",
                "sighting" if mark.action is None else f"{mark.action} event",
                mark.name,
                mark.when.isoformat(timespec="seconds"),
            )
            return None
        if mark.action is None:
            return self.store.mark_present(mark.name, mark.when, mark.distance, mark.source)
        self.store.log_event(mark.name, mark.when, mark.distance, mark.source, mark.action)
        return None

    def close(self) -> None:
        """Last attempt to save the backlog, then close the database (and the journal).

        Raises :class:`DatabaseError` listing the count if sightings remain unsaved; each one is
        logged first, so nothing disappears silently, and they stay in the journal, to be
        written by the next writer opened on this database.
        """
        try:
            if self._queue:
                # _drain has logged the failure; the remaining backlog is reported below
                with contextlib.suppress(DatabaseError):
                    self._drain()
        finally:
            self.store.close()
            if self.journal is not None:
                self.journal.close(keep=bool(self._queue))
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
                f"({self.last_error}); {self._where_kept()}",
            )

    def _where_kept(self) -> str:
        journal = self.journal
        if journal is not None and journal.path is not None and not journal.broken:
            return (
                f"they are journalled in {journal.path} and will be written at the next start "
                "of a recogniser on this workspace"
            )
        why = f" ({journal.broken})" if journal is not None and journal.broken else ""
        return f"they are listed in the log above and were not journalled{why}"

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


def pending_names(marks: Iterable[PendingMark]) -> list[str]:
    """The people with an unsaved sighting among ``marks``, in order, without repeats."""
    return list(dict.fromkeys(mark.name for mark in marks if mark.action is None))
