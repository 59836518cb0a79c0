"""Frame sources: a camera, a video file, a network stream or a folder of images.

``open_source(spec)`` picks the kind from ``spec`` and returns a :class:`FrameSource`,
a context manager and iterator of :class:`Frame` (BGR uint8 images)::

    with open_source("0") as source:          # camera 0
        for frame in source:
            ...

- camera index (``0`` or ``"0"``) and stream URLs (``rtsp://``, ``http(s)://``, ...) are
  *live*: a background thread keeps only the newest frame, so a slow consumer drops stale
  frames instead of lagging; if the device or stream drops mid-run it is reopened with
  exponential back-off (each loss and retry is logged) up to ``max_retries`` times in a row.
- a video file is read frame by frame; its end ends the iteration cleanly.
- a folder yields its images in natural sort order; unreadable files are skipped with a warning.

Timestamps are seconds: media time for files and folders (``index / fps``), time since the
source was opened for live sources. A source that cannot be opened raises
:class:`SourceError` with a one-line message.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from common.errors import UserError
from common.image_io import IMAGE_SUFFIXES
from common.urls import redact_url

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
FOLDER_FPS = 10.0  # nominal frame rate of a folder of images (timestamps and recordings)
STREAM_TIMEOUT_MS = 5000  # open and read time-outs of network streams
# how long close() waits for the reader thread: longer than one blocking open or read
CLOSE_TIMEOUT_SECONDS = STREAM_TIMEOUT_MS / 1000 + 2.0
BACKOFF_BASE_SECONDS = 0.5  # first reconnection delay; doubles on every failed attempt
BACKOFF_MAX_SECONDS = 8.0
SOURCE_HINT = "pass --source FILE|URL|DIR or a working camera index"


class SourceError(UserError):
    """A frame source cannot be opened, or a live source was lost for good."""


@dataclass(frozen=True)
class Frame:
    """One picture from a source."""

    image: np.ndarray  # BGR uint8 HxWx3
    index: int  # position in the source (live sources: gaps mean dropped stale frames)
    timestamp: float  # seconds: media time (files, folders) or since opening (live)
    source: str  # the source's description, e.g. "camera 0"


class FrameSource(abc.ABC):
    """Base class: a context manager and iterator of :class:`Frame`."""

    fps: float | None = None

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``video clip.mp4``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device or file (idempotent)."""

    def __iter__(self) -> Iterator[Frame]:
        return self

    @abc.abstractmethod
    def __next__(self) -> Frame:
        """The next frame; ``StopIteration`` at the end."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


# --------------------------------------------------------------------------- helpers
def _cv2() -> Any:
    """Import OpenCV with FFmpeg's own console chatter off (we report failures ourselves)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's log while probing devices: a failed probe prints several warnings."""
    cv2 = _cv2()
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _backoff_delay(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * (2 ** (attempt - 1)))


# --------------------------------------------------------------------------- files
class VideoFileSource(FrameSource):
    """Frames of a video file, in order; the end of the file ends the iteration."""

    def __init__(self, path: str | Path) -> None:
        cv2 = _cv2()
        self.path = Path(path)
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"{self.path}: cannot read it as a video (unknown format or damaged file); "
                f"{SOURCE_HINT}"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._index = 0
        self._closed = False

    def describe(self) -> str:
        return f"video {self.path.name}"

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        ok, image = self._cap.read()
        if not ok or image is None:
            log.debug("%s: end after %d frames", self.describe(), self._index)
            self.close()
            raise StopIteration
        index = self._index
        self._index += 1
        timestamp = index / self.fps if self.fps else self._cap.get(_cv2().CAP_PROP_POS_MSEC) / 1e3
        return Frame(_as_bgr(image), index, float(timestamp), self.describe())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


class FolderSource(FrameSource):
    """The images of a folder in natural sort order, at a nominal :data:`FOLDER_FPS`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.paths = sorted(
            (
                p
                for p in self.folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ),
            key=_natural_key,
        )
        if not self.paths:
            raise SourceError(
                f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder; "
                f"{SOURCE_HINT}"
            )
        self.fps = FOLDER_FPS
        self.skipped: list[Path] = []
        self._pos = 0
        self._index = 0

    def describe(self) -> str:
        return f"folder {self.folder.name or self.folder}"

    def __next__(self) -> Frame:
        from common.image_io import ImageReadError, read_image

        while self._pos < len(self.paths):
            path = self.paths[self._pos]
            self._pos += 1
            try:
                rgb = read_image(path)
            except ImageReadError as exc:
                log.warning("skipping %s", exc)
                self.skipped.append(path)
                continue
            index = self._index
            self._index += 1
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            return Frame(bgr, index, index / FOLDER_FPS, self.describe())
        raise StopIteration

    def close(self) -> None:
        self._pos = len(self.paths)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Frames from OpenCV as BGR uint8 HxWx3 (grey and BGRA inputs converted)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- live
Capture = Any  # cv2.VideoCapture or anything with isOpened/read/release


class LiveSource(FrameSource):
    """A camera or stream read by a background thread that keeps only the newest frame.

    ``opener()`` returns an opened capture (``isOpened``, ``read``, ``release``). A failed
    read counts as a drop: with ``reconnect`` the capture is reopened after 0.5, 1, 2, 4...
    seconds (capped) up to ``max_retries`` consecutive failures; then iteration raises
    :class:`SourceError`. Without ``reconnect`` a drop ends the iteration.

    The reader thread owns its capture and releases it when its loop ends (OpenCV does not
    allow releasing a capture during a ``read``); :meth:`close` stops the thread and waits
    up to ``close_timeout`` seconds for it.
    """

    def __init__(
        self,
        opener: Callable[[], Capture],
        description: str,
        *,
        reconnect: bool = True,
        max_retries: int = 5,
        backoff: tuple[float, float] | None = None,
        unavailable: str = "",
        close_timeout: float = CLOSE_TIMEOUT_SECONDS,
    ) -> None:
        self._opener = opener
        self.close_timeout = close_timeout
        self._description = description
        self.reconnect = reconnect
        self.max_retries = max_retries
        self._backoff = backoff or (BACKOFF_BASE_SECONDS, BACKOFF_MAX_SECONDS)
        cap = opener()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(unavailable or f"{description} is not available; {SOURCE_HINT}")
        self._cap = cap
        self.fps = self._read_fps(cap)
        self._start = time.monotonic()
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._captured = 0  # frames read from the device
        self._delivered = 0
        self._last_index = -1
        self._ended = False
        self._error: str | None = None
        self._stop = threading.Event()
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"reader {description}", daemon=True)
        self._thread.start()

    @staticmethod
    def _read_fps(cap: Capture) -> float | None:
        try:
            fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        except (AttributeError, TypeError, ValueError):
            return None
        return fps if 0 < fps < 1000 else None

    def describe(self) -> str:
        return self._description

    @property
    def dropped(self) -> int:
        """Frames read from the device but never delivered (stale when the consumer was slow)."""
        with self._cond:
            return max(0, self._captured - self._delivered - (1 if self._latest else 0))

    @property
    def reconnecting(self) -> bool:
        """True while the signal is lost and the reader is reopening the device or stream."""
        with self._cond:
            return self._cap is None and not self._ended

    # -- reader thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._read_loop()
        finally:  # whatever happens in this thread, the consumer must not wait forever
            with self._cond:
                cap, self._cap = self._cap, None
                if not self._ended:
                    self._ended = True
                    self._error = self._error or f"{self._description}: the reader stopped"
                self._cond.notify_all()
            if cap is not None:  # no read in progress: this thread was the only reader
                cap.release()

    @staticmethod
    def _read(cap: Capture) -> tuple[bool, np.ndarray | None]:
        cv2 = _cv2()
        try:
            return cap.read()
        except cv2.error as exc:  # a decoder error counts as a dropped signal
            log.warning("read failed: %s", str(exc).strip().splitlines()[-1])
            return False, None

    def _read_loop(self) -> None:
        cap = self._cap
        while not self._stop.is_set():
            ok, image = self._read(cap) if cap is not None else (False, None)
            if ok and image is not None:
                with self._cond:
                    self._latest = (_as_bgr(image), self._captured, time.monotonic() - self._start)
                    self._captured += 1
                    self._cond.notify_all()
                continue
            if self._stop.is_set():
                break
            if cap is not None:
                with self._cond:
                    self._cap = None
                cap.release()
            if not self.reconnect:
                log.info("%s ended after %d frames", self._description, self._captured)
                self._finish(None)
                return
            log.warning("%s: lost the signal after %d frames", self._description, self._captured)
            cap = self._reopen()
            with self._cond:
                self._cap = cap
            if cap is None:
                if not self._stop.is_set():
                    self._finish(
                        f"{self._description} was lost and did not come back after "
                        f"{self.max_retries} reconnection attempts; check the camera or network"
                    )
                return
        self._finish(None)

    def _reopen(self) -> Capture | None:
        base, cap_delay = self._backoff
        for attempt in range(1, self.max_retries + 1):
            delay = _backoff_delay(attempt, base, cap_delay)
            log.warning(
                "%s: reconnecting in %.2g s (attempt %d of %d)",
                self._description, delay, attempt, self.max_retries,
            )  # fmt: skip
            if self._stop.wait(delay):
                return None
            cap = self._opener()
            if self._stop.is_set():  # closed while opening: nobody would release it later
                if cap is not None:
                    cap.release()
                return None
            if cap is not None and cap.isOpened():
                self.reconnects += 1
                log.warning("%s: reconnected", self._description)
                return cap
            if cap is not None:
                cap.release()
        return None

    def _finish(self, error: str | None) -> None:
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    # -- consumer ----------------------------------------------------------------------
    def __next__(self) -> Frame:
        frame = self._take(wait=True)
        assert frame is not None
        return frame

    def poll(self) -> Frame | None:
        """The newest frame if one came since the last one taken, else ``None`` at once (a
        loop serving several cameras must not wait for one of them); at the end, like
        ``next``: ``StopIteration``, or :class:`SourceError` for a lost signal."""
        return self._take(wait=False)

    def _take(self, wait: bool) -> Frame | None:
        with self._cond:
            while wait and self._latest is None and not self._ended:
                self._cond.wait(0.5)
            if self._latest is None and not self._ended:
                return None
            if self._latest is None:
                if self._error and not self._stop.is_set():
                    error, self._error = self._error, None
                    raise SourceError(error)
                raise StopIteration
            image, index, timestamp = self._latest
            self._latest = None
            self._delivered += 1
        if index > self._last_index + 1:
            log.debug(
                "%s: dropped %d stale frames", self._description, index - self._last_index - 1
            )
        self._last_index = index
        return Frame(image, index, timestamp, self._description)

    def close(self) -> None:
        """Stop the reader and let it release the capture; safe to call again."""
        self._stop.set()
        reader = self._thread
        in_reader = threading.current_thread() is reader
        if reader.is_alive() and not in_reader:
            reader.join(timeout=self.close_timeout)
        with self._cond:
            self._latest = None
            self._ended = True
            alive = reader.is_alive()
            cap = None
            if not alive:  # normally released by the reader already; this is a fallback
                cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        elif alive and not in_reader:
            log.warning(
                "%s: the reader is still busy after %.3g s; it releases the capture when its "
                "current read or open returns",
                self._description, self.close_timeout,
            )  # fmt: skip


def _open_capture(target: int | str) -> Capture:
    cv2 = _cv2()
    with _quiet_opencv():
        if isinstance(target, int):
            cap = cv2.VideoCapture(target)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames queued in the driver
        else:
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
            ]  # fmt: skip
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
    return cap


def camera_source(index: int, *, reconnect: bool = True, max_retries: int = 5) -> LiveSource:
    """Camera ``index`` (0 = the default webcam)."""
    return LiveSource(
        lambda: _open_capture(index),
        f"camera {index}",
        reconnect=reconnect,
        max_retries=max_retries,
        unavailable=f"camera {index} is not available; pass --source FILE|URL|DIR "
        "or another camera index",
    )


def stream_source(url: str, *, reconnect: bool = True, max_retries: int = 5) -> LiveSource:
    """A network stream (RTSP, RTMP, HTTP MJPEG...)."""
    shown = redact_url(url)
    return LiveSource(
        lambda: _open_capture(url),
        f"stream {shown}",
        reconnect=reconnect,
        max_retries=max_retries,
        unavailable=f"stream {shown} cannot be opened; check the URL and that the "
        "camera is reachable",
    )


class _PacedCapture:
    """A video file read no faster than its frame rate (``fps`` frames per second), from the
    moment ``go`` is set."""

    def __init__(self, path: str | Path, fps: float | None, go: threading.Event) -> None:
        cv2 = _cv2()
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(str(path))
        rate = fps or float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = rate if 0 < rate < 1000 else 25.0
        self.go = go
        self._start: float | None = None
        self._read = 0

    def isOpened(self) -> bool:  # noqa: N802 - the cv2.VideoCapture interface
        return bool(self._cap.isOpened())

    def get(self, prop: int) -> float:
        return self.fps if prop == _cv2().CAP_PROP_FPS else float(self._cap.get(prop))

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.go.wait()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._read / self.fps
        if due > now:
            time.sleep(due - now)
        self._read += 1
        return self._cap.read()

    def release(self) -> None:
        self._cap.release()


class ReplaySource(LiveSource):
    """A video file played in real time as if it were a camera (see :func:`replay_source`)."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self._go = threading.Event()
        super().__init__(
            lambda: _PacedCapture(path, fps, self._go),
            f"replay {path.name}",
            reconnect=False,
            unavailable=f"{path}: cannot be read as a video; {SOURCE_HINT}",
        )

    def _take(self, wait: bool) -> Frame | None:
        self._go.set()  # playback starts with the first frame asked for
        return super()._take(wait)

    def close(self) -> None:
        self._go.set()  # a reader waiting to start must see the stop
        super().close()


def replay_source(path: str | Path, fps: float | None = None) -> ReplaySource:
    """A video file played in real time (at ``fps``, default its own) as if it were a
    camera, from the first frame asked for: frames the consumer is too slow for are
    dropped, timestamps are wall time; the file's end ends the iteration. For the live path
    on recorded video (``detect_async = "on"``), benchmarks and tests."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file; {SOURCE_HINT}")
    return ReplaySource(path, fps)


# --------------------------------------------------------------------------- factory
def open_source(spec: str | int, *, reconnect: bool = True, max_retries: int = 5) -> FrameSource:
    """Open ``spec``: a camera index, a video file, a folder of images or a stream URL."""
    if isinstance(spec, bool):
        raise SourceError(f"--source {spec!r} is not a camera index, file, folder or URL")
    if max_retries < 0:
        raise SourceError(f"max_retries={max_retries} must be 0 or more")
    if isinstance(spec, int):
        if spec < 0:
            raise SourceError(f"camera index {spec} is negative; use 0 for the default camera")
        return camera_source(spec, reconnect=reconnect, max_retries=max_retries)
    text = str(spec).strip()
    if not text:
        raise SourceError(f"--source is empty; {SOURCE_HINT}")
    if text.isdigit():
        return camera_source(int(text), reconnect=reconnect, max_retries=max_retries)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return stream_source(text, reconnect=reconnect, max_retries=max_retries)
    if scheme:
        raise SourceError(
            f"--source {redact_url(text)}: unsupported scheme {scheme!r} "
            f"(use {', '.join(s + '://' for s in STREAM_SCHEMES)})"
        )
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return VideoFileSource(path)
    if path.exists():
        raise SourceError(f"{path}: is neither a regular file nor a folder; {SOURCE_HINT}")
    raise SourceError(f"{path}: no such file or folder; {SOURCE_HINT}")
