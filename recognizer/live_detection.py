"""Asynchronous detection for live cameras: the loop tracks every frame, detection runs beside it.

Per frame, :meth:`AsyncDetection.step`:

1. follows every track from the previous frame with optical flow (``recognizer.motion``);
2. collects the detection round the worker finished, if any; its faces were found on an
   older frame, so they are moved to this frame by optical flow as well (for association),
   while the faces themselves (landmarks on the frame they were found on) are what is aligned
   and embedded;
3. hands this frame to the worker when it is free of this camera's previous round and at
   least ``detect_every`` frames came since the last one handed over (a fast worker need
   not look at every frame of a few slow faces: the CPU goes to the loop instead): a
   whole-frame scan when ``full_scan_seconds`` of frame time have passed since the last one
   landed (or nobody is followed), else only the regions around the followed faces (one
   batched call). A frame not yet started is replaced by the next one: frames are dropped,
   never queued.

Decisions keep using frame timestamps (those of the frame a round detected), so they do not
depend on how fast detection runs; what does depend on it is how often a face is seen.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.config import Config
from common.sources import Frame
from preprocess.detect import Face
from preprocess.regions import (
    REGION_PX,
    DetectionRequest,
    detection_scale,
    region_around,
    run_request,
)
from recognizer.detect_worker import DetectionWorker
from recognizer.motion import Grey, face_points, follow, grey

log = logging.getLogger(__name__)
_clients = itertools.count(1)


@dataclass(frozen=True)
class Job:
    """One frame handed to the worker."""

    frame: Frame
    grey: Grey
    request: DetectionRequest
    min_face_px: float
    epoch: int = 0  # AsyncDetection.reset() discards rounds of earlier epochs

    def run(self, detector: Any) -> list[Face]:
        return run_request(detector, self.request, self.min_face_px)


def warm_up(detector: Any, embedder: Any = None) -> None:
    """Trace the networks before the first frame (TensorFlow compiles a graph on its first
    calls: a second or more on this CPU), so a camera's first faces are not lost to it."""
    rng = np.random.default_rng(0)
    for height, width in ((120, 160), (150, 200), (180, 240)):  # a few shapes: then any
        detector.detect(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    batch = getattr(detector, "detect_batch", None)
    if batch is not None:
        size = REGION_PX
        batch([rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(2)])
    if embedder is not None:
        embedder.embed(np.zeros((1, *([getattr(embedder, "input_size", 160)] * 2), 3), np.uint8))


def detection_worker(detector: Any) -> DetectionWorker:
    """A worker detecting :class:`Job` s with ``detector`` (one can serve several cameras)."""
    return DetectionWorker(lambda job: job.run(detector))


@dataclass(frozen=True)
class Landed:
    """A detection round back from the worker."""

    frame: Frame  # the frame it detected
    faces: list[Face]  # in that frame's coordinates
    boxes: list[tuple[float, float, float, float]]  # the same faces in the current frame
    points: list[np.ndarray]  # their followed points in the current frame
    full: bool  # the whole frame was scanned


def _moved(box: Sequence[float], dx: float, dy: float) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in box)
    return (x + dx, y + dy, w, h)


class AsyncDetection:
    """Detection for one camera on a (possibly shared) :class:`DetectionWorker`."""

    def __init__(self, cfg: Config, detector: Any, worker: DetectionWorker | None = None) -> None:
        self.cfg = cfg
        self.scale = detection_scale(cfg.detect_min_face_px)
        self._own = worker is None
        self.worker = worker if worker is not None else detection_worker(detector)
        self.client: Hashable = next(_clients)
        self._grey: Grey | None = None
        self._last_full: float | None = None  # timestamp of the last whole-frame scan landed
        self._epoch = 0
        self._since_submit = 1 << 30  # frames since a frame was handed over (none yet)
        self.landed = 0  # rounds collected
        self.full_scans = 0  # of which whole-frame scans

    def step(self, frame: Frame, tracks: Sequence[Any]) -> Landed | None:
        """Move ``tracks`` to ``frame``; return the round that landed (if any). Call
        :meth:`submit` once the tracks have taken that round in."""
        now = grey(frame.image)
        followed = [t for t in tracks if getattr(t, "points", None) is not None]
        if self._grey is not None and followed:
            for track, shift in zip(
                followed, follow(self._grey, now, [t.points for t in followed]), strict=True
            ):
                if shift is not None:
                    track.box = _moved(track.box, shift.dx, shift.dy)
                    track.points = track.points + np.float32([shift.dx, shift.dy])
        self._grey = now
        self._since_submit += 1
        return self._collect(frame, now)

    def submit(self, frame: Frame, tracks: Sequence[Any]) -> None:
        """Hand ``frame`` (the one just stepped) to the worker if it is due: this camera's
        previous round collected, ``detect_every`` frames since the last one handed over.
        ``tracks``: the tracks after the latest round, whose regions are re-detected."""
        if self._grey is None or self._since_submit < self.cfg.detect_every:
            return
        if self.worker.busy(self.client):
            return
        if self.worker.submit(self.client, self._job(frame, self._grey, tracks)):
            self._since_submit = 0

    def _collect(self, frame: Frame, now: Grey) -> Landed | None:
        done = self.worker.collect(self.client)
        if done is None:
            return None
        job: Job = done.job
        if job.epoch != self._epoch:
            return None  # submitted before a reset: its faces belong to forgotten tracks
        faces: list[Face] = list(done.faces)
        points = [face_points(f.landmarks, f.box) for f in faces]
        boxes = [tuple(float(v) for v in f.box) for f in faces]
        if faces and job.frame is not frame:
            for k, shift in enumerate(follow(job.grey, now, points)):
                if shift is not None:
                    boxes[k] = _moved(boxes[k], shift.dx, shift.dy)
                    points[k] = points[k] + np.float32([shift.dx, shift.dy])
        self.landed += 1
        if job.request.full:
            self.full_scans += 1
            self._last_full = job.frame.timestamp
        return Landed(job.frame, faces, boxes, points, job.request.full)  # type: ignore[arg-type]

    def _job(self, frame: Frame, now: Grey, tracks: Sequence[Any]) -> Job:
        last = self._last_full
        full = (
            not tracks
            or last is None
            or frame.timestamp < last  # the clock went back (a reopened stream)
            or frame.timestamp - last >= self.cfg.full_scan_seconds
        )
        regions = None if full else tuple(region_around(t.box) for t in tracks)
        request = DetectionRequest(frame.image, self.scale, regions)
        return Job(frame, now, request, float(self.cfg.detect_min_face_px), self._epoch)

    def reset(self) -> None:
        """Forget the scene (recognition resumes after a pause): a round in flight is dropped
        when it lands, and the next round scans the whole frame."""
        self._epoch += 1
        self._grey = None
        self._last_full = None

    def close(self) -> None:
        """Stop the worker if this camera owns it."""
        if self._own:
            self.worker.close()
