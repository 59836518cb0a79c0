"""Detection at the scale the wanted faces need, on whole frames or on regions around faces.

MTCNN finds faces down to about :data:`DETECT_FACE_PX` pixels reliably (its proposal network
looks at 12-pixel windows of an image shrunk by 0.6 first). A frame is therefore shrunk, for
detection only, by ``DETECT_FACE_PX / min_face_px``: the smallest face wanted ends up just
findable, and nothing is computed for faces smaller than that. A kiosk wanting 80-pixel faces
detects on a 0.35 copy; an entrance camera wanting 40-pixel faces on a 0.7 copy.

Between whole-frame scans the recogniser re-detects only the regions around the faces it
follows: squares of :data:`REGION_SPAN` face sides, each resized to :data:`REGION_PX` pixels
so that the face is about :data:`DETECT_FACE_PX` large there too, all in one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from preprocess.detect import Detector, Face, detect_scaled, sort_faces

#: The face side (pixels) MTCNN still finds reliably. On the 1080p walking clip a 47-pixel
#: face shrunk to 28 px was found and shrunk to 23.5 px was not (bench/bench_entrance.py).
DETECT_FACE_PX = 28
#: A region around a followed face spans this many face sides (room for it to move).
REGION_SPAN = 2.2
#: Side of a region once resized: the face is REGION_PX / REGION_SPAN ≈ 29 px there.
REGION_PX = 64
#: Two detections of one face (overlapping regions) overlap at least this much (IoU).
DUPLICATE_IOU = 0.5

Region = tuple[int, int, int, int]  # x, y, side, side in frame pixels (may cross the border)


#: Longest side a whole frame is detected at, whatever ``min_face_px`` asks: a 12 MP photo in
#: a folder, or a 4K camera, is not detected at 2800 px (seconds a frame, hundreds of MB).
#: 1080p at 0.7 (1344 px) and 1440p (1792 px) fit; a 4K camera finds faces from 53 px.
MAX_DETECT_SIDE = 2048


def detection_scale(min_face_px: float) -> float:
    """How much a frame is shrunk for detection so faces of ``min_face_px`` are still found
    (at most 1: a frame is never enlarged)."""
    if min_face_px <= 0:
        raise ValueError(f"min_face_px={min_face_px} must be positive")
    return min(1.0, DETECT_FACE_PX / float(min_face_px))


def frame_scale(scale: float, shape: Sequence[int]) -> float:
    """``scale``, lowered so the shrunk frame's longest side stays within
    :data:`MAX_DETECT_SIDE`."""
    return min(scale, MAX_DETECT_SIDE / float(max(shape[0], shape[1])))


def region_around(box: Sequence[float]) -> Region:
    """The square region of :data:`REGION_SPAN` face sides centred on ``box`` (x, y, w, h)."""
    x, y, w, h = (float(v) for v in box)
    side = max(8, round(REGION_SPAN * max(w, h)))
    cx, cy = x + w / 2.0, y + h / 2.0
    return round(cx - side / 2.0), round(cy - side / 2.0), side, side


def _cut(image: np.ndarray, region: Region) -> np.ndarray:
    """``region`` of ``image``; parts outside the frame are black (the face keeps its place)."""
    x, y, side, _ = region
    height, width = image.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + side), min(height, y + side)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes (0 for empty boxes)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def suppress_duplicates(faces: Sequence[Face], overlap: float = DUPLICATE_IOU) -> list[Face]:
    """One face per place: of detections overlapping more than ``overlap`` the most
    confident is kept; largest first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(iou(face.box, other.box) <= overlap for other in kept):
            kept.append(face)
    return sort_faces(kept)


def detect_regions(
    detector: Detector, bgr: np.ndarray, regions: Sequence[Region], *, size: int = REGION_PX
) -> list[Face]:
    """Faces in ``regions`` of BGR frame ``bgr``, in frame coordinates, duplicates removed.

    Each region is resized to ``size`` pixels; a detector with ``detect_batch`` sees them all
    in one call, any other detector one by one.
    """
    if not regions:
        return []
    import cv2

    crops = [
        cv2.cvtColor(
            cv2.resize(_cut(bgr, r), (size, size), interpolation=cv2.INTER_AREA),
            cv2.COLOR_BGR2RGB,
        )
        for r in regions
    ]
    batch = getattr(detector, "detect_batch", None)
    found: list[list[Face]] = (
        batch(crops) if batch is not None else [detector.detect(crop) for crop in crops]
    )
    faces = [
        face.mapped(r[2] / float(size), r[0], r[1])
        for r, per_region in zip(regions, found, strict=True)
        for face in per_region
    ]
    return suppress_duplicates(faces)


@dataclass(frozen=True)
class DetectionRequest:
    """One detection round: a whole frame at ``scale``, or only ``regions`` of it."""

    image: np.ndarray  # BGR frame
    scale: float  # whole-frame detection scale (see detection_scale)
    regions: tuple[Region, ...] | None = None  # None: the whole frame

    @property
    def full(self) -> bool:
        """Is the whole frame scanned?"""
        return self.regions is None


#: Faces are kept down to this share of ``min_face_px``: the detector's box of a face right
#: at the limit is often a few pixels smaller than a full-size detection's.
SIZE_TOLERANCE = 0.85
#: A face followed in a region is kept down to this share, so that one shrinking across the
#: limit (walking away) is not lost and found again at every round.
FOLLOW_TOLERANCE = 0.7


def large_enough(faces: Sequence[Face], min_face_px: float, share: float = SIZE_TOLERANCE):
    """``faces`` whose box side is at least ``share`` of ``min_face_px``, largest first."""
    return sort_faces([f for f in faces if f.side >= share * float(min_face_px)])


def run_request(detector: Detector, request: DetectionRequest, min_face_px: float) -> list[Any]:
    """The faces of ``request`` about ``min_face_px`` large or larger (frame pixels), largest
    first (see :data:`SIZE_TOLERANCE` and :data:`FOLLOW_TOLERANCE`)."""
    if request.full:
        scale = frame_scale(request.scale, request.image.shape)
        faces = detect_scaled(detector, request.image, scale, bgr=True)
        return large_enough(faces, min_face_px)
    faces = detect_regions(detector, request.image, request.regions or ())
    return large_enough(faces, min_face_px, FOLLOW_TOLERANCE)
