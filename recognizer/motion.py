"""Follow faces between detections with sparse optical flow (pyramidal Lucas-Kanade).

A face's five landmarks (eyes, nose, mouth corners: textured points) are followed from one
grey frame to the next; the face moves by the median displacement of the points that were
followed well. That keeps boxes on walking people between detection rounds, and moves a
round's detections, found on an older frame, to the frame being shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Lucas-Kanade window and pyramid: a 21-pixel window over 3 levels follows motions of
#: several tens of pixels (a walker between detection rounds at 1080p).
WINDOW = (21, 21)
LEVELS = 3
#: A point whose forward-backward error exceeds this (pixels of the flow image) is not
#: trusted.
MAX_ERROR = 2.0
MIN_POINTS = 2  # a face needs this many trusted points to move


#: Flow runs on a grey copy no wider than this (a 1080p frame at half size: 4x fewer pixels
#: for the pyramids; a 40-pixel face is still 20 px there, inside the window).
FLOW_WIDTH = 960


@dataclass(frozen=True)
class Grey:
    """A frame prepared for optical flow: grey, shrunk by ``scale``."""

    image: np.ndarray
    scale: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


def grey(bgr: np.ndarray, width: int = FLOW_WIDTH) -> Grey:
    """The grey copy optical flow works on (no wider than ``width``)."""
    import cv2

    scale = min(1.0, width / float(bgr.shape[1]))
    if scale < 1.0:
        size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return Grey(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), scale)


@dataclass(frozen=True)
class Shift:
    """How one face moved: ``(dx, dy)`` pixels, or ``None`` when it could not be followed."""

    dx: float
    dy: float


def follow(before: Grey, after: Grey, points: Sequence[np.ndarray]) -> list[Shift | None]:
    """The motion from ``before`` to ``after`` (same size) of each group of frame points (one
    group per face, float (n, 2) arrays, frame pixels): the median displacement of the points
    followed both ways within :data:`MAX_ERROR` px, ``None`` when fewer than
    :data:`MIN_POINTS` were."""
    if not points:
        return []
    if before.shape != after.shape or before.scale != after.scale:
        return [None] * len(points)  # a resized stream: nothing to compare
    import cv2

    sizes = [len(p) for p in points]
    scale = np.float32(after.scale)
    start = np.concatenate([np.asarray(p, np.float32).reshape(-1, 2) for p in points]) * scale
    start = start.reshape(-1, 1, 2)
    params = {"winSize": WINDOW, "maxLevel": LEVELS}
    end, ok, _ = cv2.calcOpticalFlowPyrLK(before.image, after.image, start, None, **params)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(after.image, before.image, end, None, **params)
    error = np.linalg.norm((back - start).reshape(-1, 2), axis=1)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (error <= MAX_ERROR)
    moved = (end - start).reshape(-1, 2) / scale
    shifts: list[Shift | None] = []
    offset = 0
    for size in sizes:
        mask = good[offset : offset + size]
        if int(mask.sum()) >= min(MIN_POINTS, size) and mask.any():
            dx, dy = np.median(moved[offset : offset + size][mask], axis=0)
            shifts.append(Shift(float(dx), float(dy)))
        else:
            shifts.append(None)
        offset += size
    return shifts


def face_points(landmarks: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The points followed for one face: its five landmarks and the box centre."""
    x, y, w, h = box
    centre = np.array([[x + w / 2.0, y + h / 2.0]], np.float32)
    return np.concatenate([np.asarray(landmarks, np.float32).reshape(-1, 2), centre])
