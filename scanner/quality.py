"""Is this frame good enough to keep as an enrolment shot? Pure checks and the one hint to show.

A shot is good when there is exactly one face, it is large enough (``cfg.min_scan_face_px``),
mostly inside the picture, sharp (variance of the Laplacian of the face, measured at a fixed
size so near and far faces compare fairly) and neither under- nor over-exposed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from preprocess.detect import Face

#: The face is resized to this square before measuring sharpness (the model's crop size).
SHARPNESS_SIZE = 160
#: Pixel values at or below / at or above these count as crushed shadows / blown highlights.
DARK_LEVEL = 16
BRIGHT_LEVEL = 240


class Issue(enum.Enum):
    """Why a frame is not a good shot; the value is the hint shown to the person."""

    TOO_DARK = "too dark"
    TOO_BRIGHT = "too bright"
    NO_FACE = "look at the camera"
    SEVERAL_FACES = "only one person please"
    TOO_SMALL = "move closer"
    CUT_OFF = "centre your face in the picture"
    BLURRY = "hold still"
    SAME_POSE = "turn your head slightly"

    @property
    def hint(self) -> str:
        """The text shown to the person."""
        return self.value


#: Order in which issues are reported: the first one present is the hint. Exposure comes
#: first: in a dark room "too dark" explains why no face is found.
PRIORITY: tuple[Issue, ...] = tuple(Issue)


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds of :func:`assess`. The first two come from the configuration
    (:meth:`from_config`); the others are constants of the quality check."""

    min_face_px: float
    min_sharpness: float
    min_brightness: float = 50.0  # mean grey level of the face
    max_brightness: float = 210.0
    max_clipped: float = 0.25  # fraction of face pixels crushed to black or blown to white
    max_outside: float = 0.10  # fraction of the face box lying outside the picture

    @classmethod
    def from_config(cls, cfg: Any) -> QualityLimits:
        """Limits from a :class:`common.config.Config`."""
        return cls(min_face_px=float(cfg.min_scan_face_px), min_sharpness=float(cfg.min_sharpness))


@dataclass(frozen=True)
class FaceMetrics:
    """Measurements of one face in a frame."""

    side: float  # shorter side of the face box, pixels
    sharpness: float  # variance of the Laplacian at SHARPNESS_SIZE
    brightness: float  # mean grey level inside the box
    dark_fraction: float
    bright_fraction: float
    outside_fraction: float  # of the box area


@dataclass(frozen=True)
class Quality:
    """The verdict on one frame: ``ok`` when there is no issue."""

    issues: tuple[Issue, ...]
    faces: int
    face: Face | None = None
    metrics: FaceMetrics | None = None

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def hint(self) -> str:
        """The most important issue's hint, or ``""`` when the frame is good."""
        return choose_hint(self.issues)

    def with_issue(self, issue: Issue) -> Quality:
        """This verdict with ``issue`` added (kept in priority order)."""
        return Quality(_ordered((*self.issues, issue)), self.faces, self.face, self.metrics)


def choose_hint(issues: Sequence[Issue]) -> str:
    """One hint at a time: the highest-priority issue's text, ``""`` for none."""
    ordered = _ordered(issues)
    return ordered[0].hint if ordered else ""


def _ordered(issues: Sequence[Issue]) -> tuple[Issue, ...]:
    present = set(issues)
    return tuple(issue for issue in PRIORITY if issue in present)


def to_gray(image: np.ndarray) -> np.ndarray:
    """A grey uint8 view of a BGR (or already grey) image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"expected a BGR or grey image, got shape {image.shape}")


def laplacian_variance(gray: np.ndarray, size: int | None = SHARPNESS_SIZE) -> float:
    """Variance of the Laplacian of ``gray`` (resized to ``size``×``size`` first when given)."""
    if gray.size == 0:
        return 0.0
    if size is not None and gray.shape[:2] != (size, size):
        shrinking = gray.shape[0] * gray.shape[1] > size * size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def face_region(gray: np.ndarray, face: Face) -> tuple[np.ndarray, float]:
    """The part of ``gray`` inside the face box, and the fraction of the box outside the image."""
    height, width = gray.shape[:2]
    x, y, w, h = face.box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    box_area = max(w, 0.0) * max(h, 0.0)
    inside = max(0, x1 - x0) * max(0, y1 - y0)
    outside = 1.0 - inside / box_area if box_area > 0 else 1.0
    return gray[y0:y1, x0:x1], float(min(max(outside, 0.0), 1.0))


def measure_face(gray: np.ndarray, face: Face) -> FaceMetrics:
    """Size, sharpness, exposure and framing of ``face`` in grey image ``gray``."""
    region, outside = face_region(gray, face)
    if region.size == 0:
        return FaceMetrics(face.side, 0.0, 0.0, 0.0, 0.0, outside)
    return FaceMetrics(
        side=face.side,
        sharpness=laplacian_variance(region),
        brightness=float(region.mean()),
        dark_fraction=float(np.count_nonzero(region <= DARK_LEVEL) / region.size),
        bright_fraction=float(np.count_nonzero(region >= BRIGHT_LEVEL) / region.size),
        outside_fraction=outside,
    )


def assess(image: np.ndarray, faces: Sequence[Face], limits: QualityLimits) -> Quality:
    """The quality verdict for a frame (BGR or grey) with detected ``faces`` (frame coordinates).

    With no face, the exposure of the whole frame is judged instead of the face's.
    """
    gray = to_gray(image)
    if not faces:
        issues = [Issue.NO_FACE]
        mean = float(gray.mean()) if gray.size else 0.0
        if mean < limits.min_brightness:
            issues.append(Issue.TOO_DARK)
        elif mean > limits.max_brightness:
            issues.append(Issue.TOO_BRIGHT)
        return Quality(_ordered(issues), 0)
    face = max(faces, key=lambda f: f.area)
    metrics = measure_face(gray, face)
    issues = []
    if len(faces) > 1:
        issues.append(Issue.SEVERAL_FACES)
    if metrics.side < limits.min_face_px:
        issues.append(Issue.TOO_SMALL)
    if metrics.outside_fraction > limits.max_outside:
        issues.append(Issue.CUT_OFF)
    if metrics.brightness < limits.min_brightness or metrics.dark_fraction > limits.max_clipped:
        issues.append(Issue.TOO_DARK)
    elif metrics.brightness > limits.max_brightness or metrics.bright_fraction > limits.max_clipped:
        issues.append(Issue.TOO_BRIGHT)
    if metrics.sharpness < limits.min_sharpness:
        issues.append(Issue.BLURRY)
    return Quality(_ordered(issues), len(faces), face, metrics)
