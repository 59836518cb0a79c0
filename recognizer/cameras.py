"""Several cameras in one process: one model, one embedding batch per turn, one event log.

:func:`run_cameras` takes turns over the cameras: each gives its newest frame (live sources
drop stale ones), each camera's pipeline detects/tracks/aligns it
(:meth:`recognizer.pipeline.RecognitionPipeline.prepare`), the new faces of *all* cameras
are embedded in one batch, and each pipeline then matches and records its own
(``complete``). Every event carries its camera's name (``Frame.source``). A camera whose file
ends drops out, and so does a live camera lost for good (the others go on; the run then ends
with that error once all are done); a live camera is never waited for: a turn takes the
cameras that have a new frame. The run ends when every camera has ended, on ``max_frames``
per camera, or on a stop. Several cameras always run in continuous mode: an entrance marks
everyone it sees.

:func:`mosaic` lays the annotated frames out for the window and the recorded video.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import UserError

log = logging.getLogger(__name__)

TILE_WIDTH = 640  # each camera's picture in the mosaic
IDLE_SECONDS = 0.003  # a turn in which no camera had a new frame waits this long


@dataclass
class Camera:
    """One camera of the run: its source, its pipeline and its counters."""

    source: Any
    pipeline: Any
    heartbeat: Any = None
    label: str | None = None  # the name its events carry (default: the source's description)
    frames: int = 0
    ended: bool = False
    lost: UserError | None = None  # why a live camera ended (its signal lost for good)
    last_image: np.ndarray | None = None
    _iterator: Iterator[Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.label or str(self.source.describe())

    def next_frame(self) -> Any:
        """The camera's next frame (named after the camera); ``None`` when a live camera has
        no new frame yet (it is not waited for). ``StopIteration`` at its end, and
        ``SourceError`` when its signal is lost for good."""
        poll = getattr(self.source, "poll", None)
        if poll is not None:
            frame = poll()
        else:
            if self._iterator is None:
                self._iterator = iter(self.source)
            frame = next(self._iterator)
        if frame is not None and frame.source != self.name:
            frame = dataclasses.replace(frame, source=self.name)
        return frame


def unique_names(descriptions: Sequence[str]) -> list[str]:
    """``descriptions`` with repeats numbered (``video a.mp4``, ``video a.mp4 #2``): every
    camera's events must say which camera saw them."""
    seen: dict[str, int] = {}
    names = []
    for text in descriptions:
        seen[text] = seen.get(text, 0) + 1
        names.append(text if seen[text] == 1 else f"{text} #{seen[text]}")
    return names


def mosaic(images: Sequence[np.ndarray | None], width: int = TILE_WIDTH) -> np.ndarray:
    """The cameras' pictures in a grid (as square as possible), each ``width`` pixels wide
    and as tall as the tallest; a camera without a picture yet is black."""
    import cv2

    present = [im for im in images if im is not None]
    if not present:
        return np.zeros((width * 3 // 4, width, 3), np.uint8)
    height = max(round(im.shape[0] * width / im.shape[1]) for im in present)
    tiles = []
    for image in images:
        tile = np.zeros((height, width, 3), np.uint8)
        if image is not None:
            h = round(image.shape[0] * width / image.shape[1])
            tile[:h] = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
        tiles.append(tile)
    columns = math.ceil(math.sqrt(len(tiles)))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


@dataclass
class CamerasSummary:
    """Frames per camera and wall time, for the summary line."""

    frames: dict[str, int]
    seconds: float

    def rates(self) -> str:
        """``camera 0 24.8 fps, camera 1 25.0 fps``."""
        s = max(self.seconds, 1e-9)
        return ", ".join(f"{name} {count / s:.1f} fps" for name, count in self.frames.items())


def run_cameras(
    cameras: Sequence[Camera],
    embedder: Any,
    *,
    summary: Any,
    window: Any = None,
    video: Any = None,
    max_frames: int | None = None,
    on_event: Callable[[Any], None] = lambda event: None,
    stop: Any = None,
    gallery: Any = None,
    annotate: Callable[[Any], np.ndarray] | None = None,
) -> CamerasSummary:
    """Turns over ``cameras`` until all ended, ``max_frames`` each, esc, or ``stop``.

    ``summary`` (``recognizer.cli.RunSummary``) gets the frame count and how the run stopped;
    ``gallery`` (``store.gallery.GalleryWatcher``) is polled once per turn and a reloaded
    gallery goes to every pipeline; ``annotate(result) -> image`` draws one camera's frame
    for the ``window`` / ``video`` mosaic.
    """
    started = time.monotonic()
    recorder = cameras[0].pipeline.recorder
    try:
        while stop is None or not stop.is_set():
            live = [c for c in cameras if not c.ended]
            if max_frames is not None:
                live = [c for c in live if c.frames < max_frames]
                if not live:
                    summary.stopped_by = f"--max-frames {max_frames}"
                    break
            if not live:
                lost = [c.lost for c in cameras if c.lost is not None]
                if lost:  # every camera ended, and one of them was lost: say so
                    summary.stopped_by, summary.error = "error", lost[0]
                break
            if gallery is not None:
                reloaded = gallery.poll()
                if reloaded is not None:
                    for camera in cameras:
                        camera.pipeline.update_gallery(*reloaded)
            retry = getattr(recorder, "retry", None)
            if retry is not None:
                retry()
            results = _turn(live, embedder)
            for camera, result in results:
                summary.frames += 1
                if camera.heartbeat is not None:
                    camera.heartbeat.frame(paused=False)
                    for event in result.events:
                        camera.heartbeat.event(event)
                for event in result.events:
                    on_event(event)
                if annotate is not None and (window is not None or video is not None):
                    camera.last_image = annotate(result)
            if annotate is not None and (window is not None or video is not None) and results:
                picture = mosaic([c.last_image for c in cameras])
                if video is not None:
                    video.write(picture)
                if window is not None:
                    window.show(picture)
                    if window.key(1) in ("esc", "q"):
                        summary.stopped_by = "esc"
                        break
        else:
            summary.stopped_by = "stop signal"
    except KeyboardInterrupt:
        summary.stopped_by = "Ctrl-C"
    except UserError as exc:
        summary.stopped_by = "error"
        summary.error = exc
    return CamerasSummary({c.name: c.frames for c in cameras}, time.monotonic() - started)


def _turn(cameras: Sequence[Camera], embedder: Any) -> list[tuple[Camera, Any]]:
    """The new frame of every camera that has one: prepared each, embedded together,
    completed each. A camera that ends or is lost drops out; the others go on."""
    steps = []
    for camera in cameras:
        try:
            frame = camera.next_frame()
        except StopIteration:
            camera.ended = True
            log.info("%s: ended", camera.name)
            continue
        except UserError as exc:  # lost for good: the other cameras go on
            camera.ended, camera.lost = True, exc
            log.error("%s: %s; the other cameras go on", camera.name, exc)
            continue
        if frame is None:
            continue  # a live camera with no new frame yet
        camera.frames += 1
        steps.append((camera, camera.pipeline.prepare(frame)))
    if not steps:
        time.sleep(IDLE_SECONDS)  # no camera had a new frame: wait a little
        return []
    crops = [crop for _, step in steps for crop in step.crops]
    vectors = None
    if crops:
        start = time.perf_counter()
        vectors = np.asarray(embedder.embed(np.stack(crops).astype(np.uint8)), np.float32)
        spent = time.perf_counter() - start
    results = []
    offset = 0
    for camera, step in steps:
        n = len(step.crops)
        mine = None
        if n:
            mine = vectors[offset : offset + n]  # type: ignore[index]
            step.result.timings["embed"] += spent * n / len(crops)
        offset += n
        results.append((camera, camera.pipeline.complete(step, mine)))
    return results
