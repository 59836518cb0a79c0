"""Detection off the frame loop: a background thread that detects on the newest frame.

Each client (one per camera) has at most one request in the worker at any time: a request
not started yet is *replaced* by a newer one (the older frame is dropped, never queued), one
being detected must be collected before the client asks again. Requests of several cameras
are served in turn. Memory is therefore bounded by two frames per camera (the one being
detected and the newest waiting), however slow detection is.

An exception in the thread is kept and raised in the loop at the next :meth:`collect`.
:meth:`close` asks the thread to stop and waits for the detection in progress to end.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 30.0  # longer than any one detection (a 4K frame takes ~2 s)


class WorkerStopped(RuntimeError):
    """A request was submitted to a worker that is closed."""


@dataclass(frozen=True)
class Done:
    """A finished request and what detecting it gave."""

    job: Any
    faces: Any


class DetectionWorker:
    """Runs ``detect(job)`` on a background thread, newest job per client first come."""

    def __init__(self, detect: Callable[[Any], Any], name: str = "detector") -> None:
        self._detect = detect
        self._cond = threading.Condition()
        self._waiting: OrderedDict[Hashable, Any] = OrderedDict()  # not started, per client
        self._running: Hashable | None = None
        self._done: dict[Hashable, Done] = {}
        self._error: BaseException | None = None
        self._closed = False
        self.rounds = 0  # jobs detected
        self.replaced = 0  # jobs dropped for a newer frame before they started
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the loop's side ---------------------------------------------------------------------
    def busy(self, client: Hashable) -> bool:
        """Is ``client``'s request being detected, or detected and not yet collected?"""
        with self._cond:
            return self._running == client or client in self._done

    def submit(self, client: Hashable, job: Any) -> bool:
        """Hand ``job`` (``client``'s newest frame) to the worker; it replaces the client's
        request that has not started. False when the client's request is busy (see
        :meth:`busy`): collect it first."""
        with self._cond:
            if self._closed:
                raise WorkerStopped("the detection worker is closed")
            if self._running == client or client in self._done:
                return False
            if client in self._waiting:
                self.replaced += 1
            self._waiting[client] = job  # a replaced job keeps its turn
            self._cond.notify_all()
            return True

    def collect(self, client: Hashable) -> Done | None:
        """``client``'s finished request, once; ``None`` while there is none. Raises what the
        worker thread raised."""
        with self._cond:
            if self._error is not None:
                raise self._error
            return self._done.pop(client, None)

    def waiting(self) -> int:
        """Requests waiting to start (at most one per client)."""
        with self._cond:
            return len(self._waiting)

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Stop the thread after the detection in progress; drop waiting requests."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the detection thread did not stop within %.0f s", timeout)

    @property
    def alive(self) -> bool:
        """Is the thread running?"""
        return self._thread.is_alive()

    def __enter__(self) -> DetectionWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread's side -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                client, job = self._waiting.popitem(last=False)
                self._running = client
            try:
                faces = self._detect(job)
            except BaseException as exc:  # handed to the loop, which stops
                log.debug("detection failed: %s", exc)
                with self._cond:
                    self._error = exc
                    self._running = None
                    self._closed = True
                    self._waiting.clear()
                return
            with self._cond:
                self._running = None
                self.rounds += 1
                if not self._closed:
                    self._done[client] = Done(job, faces)
