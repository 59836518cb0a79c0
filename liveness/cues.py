"""Liveness cues: pure functions of one face's landmarks and the frames around it.

Each cue answers one physical question about a tracked face, cheaply and without a trained
model:

- :func:`enclosure` — **a device or paper border**. Long straight edges beside, above and
  below the face, parallel to its axes: the frame of a phone, tablet, laptop or sheet.
- :func:`pose` — head yaw and pitch proxies from the landmarks, for the challenge actions.

Coordinates are full-frame pixels (``box`` is x, y, w, h; ``landmarks`` is the (5, 2) MTCNN
order: left eye, right eye, nose, mouth left, mouth right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def roll_degrees(landmarks: np.ndarray) -> float:
    """The in-plane angle of the eye line (degrees, positive clockwise in image coordinates)."""
    left, right = landmarks[0].astype(np.float64), landmarks[1].astype(np.float64)
    dx, dy = right - left
    return math.degrees(math.atan2(dy, dx))


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) proxies: where the nose sits between the eyes (yaw: -0.5 … 0.5, positive
    when the nose is towards image-right) and between eyes and mouth (pitch: about 0.5 when
    level, smaller looking up, larger looking down), after removing roll; NaN for landmarks
    whose eyes (nearly) coincide."""
    lm = np.asarray(landmarks, np.float64)
    angle = -math.radians(roll_degrees(lm))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    p = (lm - lm[:2].mean(axis=0)) @ rot.T
    eye_span = p[1, 0] - p[0, 0]
    face = max(float(np.ptp(lm[:, 0])), float(np.ptp(lm[:, 1])), 1e-6)
    if eye_span < 0.2 * face:  # eyes (nearly) on top of each other: no pose to read
        return math.nan, math.nan
    eyes_y = (p[0, 1] + p[1, 1]) / 2.0
    mouth_y = (p[3, 1] + p[4, 1]) / 2.0
    yaw = (p[2, 0] - (p[0, 0] + p[1, 0]) / 2.0) / eye_span
    pitch = (p[2, 1] - eyes_y) / max(mouth_y - eyes_y, 1e-6)
    return float(yaw), float(pitch)


# -- borders -------------------------------------------------------------------------------

SIDES = ("left", "right", "top", "bottom")


@dataclass(frozen=True)
class Enclosure:
    """Straight edges found around a face, one flag per side, and the work it took."""

    sides: tuple[bool, bool, bool, bool]  # left, right, top, bottom
    lines: int  # straight segments found in the search region
    offsets: tuple[float, float, float, float]  # each side's distance / face size (nan: none)

    @property
    def count(self) -> int:
        return sum(self.sides)

    @property
    def frames_face(self) -> bool:
        """Edges that frame the face like a device or a sheet: on opposite sides (left and
        right, or above and below), on three or more sides, or on two sides within
        ``TIGHT`` face sizes. Two edges meeting at a corner farther out are usually the room
        (a window, a façade) behind a live head."""
        left, right, top, bottom = self.sides
        tight = sum(s and o <= TIGHT for s, o in zip(self.sides, self.offsets, strict=True))
        return (left and right) or (top and bottom) or self.count >= 3 or tight >= 2


FACE_PX = 40.0  # the face is scaled to this size for the border search
MIN_FACE_PX = 20.0  # smaller faces are not searched: too few pixels to tell an edge
REACH = 2.5  # the search region extends this many face sizes from the face centre
TIGHT = 1.5  # edges this close to the face centre (face sizes) frame it on any two sides


def _work_region(shape: tuple[int, ...], box: tuple[float, float, float, float], reach: float):
    """The search region (x0, y0, x1, y1) in frame pixels and the face size."""
    x, y, w, h = box
    size = max(w, h, 1.0)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, x1 = max(0, int(cx - reach * size)), min(shape[1], int(cx + reach * size) + 1)
    y0, y1 = max(0, int(cy - reach * size)), min(shape[0], int(cy + reach * size) + 1)
    return (x0, y0, x1, y1), size, (cx, cy)


def enclosure(
    grey: np.ndarray,
    box: tuple[float, float, float, float],
    roll: float = 0.0,
    *,
    reach: float = REACH,
) -> Enclosure:
    """Long straight edges on each side of the face, parallel to its axes (within 15°).

    A side counts when a segment at least 0.9 face sizes long lies beyond the face (0.55 to
    ``reach`` face sizes from its centre, measured along the face's axes; the box's half-size
    is 0.5) and runs beside it: a left or right edge overlaps at least half the face's height,
    a top or bottom edge half its width. Faces under ``MIN_FACE_PX`` find nothing.
    ``grey``: the whole frame (uint8); ``roll``: the face's roll in degrees.
    """
    import cv2

    (x0, y0, x1, y1), size, (cx, cy) = _work_region(grey.shape, box, reach)
    region = grey[y0:y1, x0:x1]
    none = Enclosure((False,) * 4, 0, (math.nan,) * 4)
    if region.size == 0 or min(box[2], box[3]) < MIN_FACE_PX:
        return none
    scale = min(1.0, FACE_PX / size)
    small = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    edges = cv2.Canny(small, 40, 120)
    face = size * scale
    segments = cv2.HoughLinesP(edges, 1, math.pi / 180, threshold=max(1, int(0.6 * face)),
                               minLineLength=int(0.9 * face), maxLineGap=3)  # fmt: skip
    if segments is None:
        return none
    a = math.radians(roll)
    cos_a, sin_a = math.cos(a), math.sin(a)
    centre = np.array([(cx - x0) * scale, (cy - y0) * scale])
    found = [False] * 4
    offsets = [math.inf] * 4
    for sx, sy, ex, ey in segments.reshape(-1, 4).astype(np.float64):
        # both ends in face axes (u along the eye line, v down the face), in face sizes
        ends = []
        for px, py in ((sx, sy), (ex, ey)):
            dx, dy = px - centre[0], py - centre[1]
            ends.append(((dx * cos_a + dy * sin_a) / face, (-dx * sin_a + dy * cos_a) / face))
        (u1, v1), (u2, v2) = ends
        du, dv = u2 - u1, v2 - v1
        length = math.hypot(du, dv)
        if length < 0.9:
            continue
        angle = abs(math.degrees(math.atan2(dv, du))) % 180.0
        if abs(angle - 90.0) <= 15.0:  # vertical: left (0) or right (1) of the face
            across, along, sides = (u1 + u2) / 2.0, (v1, v2), (0, 1)
        elif angle <= 15.0 or angle >= 165.0:  # horizontal: above (2) or below (3)
            across, along, sides = (v1 + v2) / 2.0, (u1, u2), (2, 3)
        else:
            continue
        overlap = min(max(along), 0.5) - max(min(along), -0.5)  # beside the face's extent
        dist = abs(across)
        if overlap < 0.5 or not 0.55 <= dist <= reach:
            continue
        side = sides[0] if across < 0 else sides[1]
        found[side] = True
        offsets[side] = min(offsets[side], dist)
    return Enclosure(
        tuple(found),  # type: ignore[arg-type]
        int(len(segments)),
        tuple(o if math.isfinite(o) else math.nan for o in offsets),  # type: ignore[arg-type]
    )
