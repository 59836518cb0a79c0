"""Face alignment: one detected face -> a square RGB crop for FaceNet (160x160 by default).

Two methods, selected by ``cfg.alignment``:

``"landmarks"`` (default)
    A least-squares similarity transform (rotation, uniform scale, translation; Umeyama) maps
    the 5 MTCNN landmarks onto the fixed template of ``template.json``: eyes level, same
    scale and position for every photo.
``"margin"``
    How FaceNet's training crops were made: the MTCNN box plus a margin, resized to the square
    output (each axis on its own, as the original pipeline did). ``margin`` is in output
    pixels: the box spans ``size - margin`` pixels, ``margin / 2`` on each side.

Both warp with replicated borders, so faces at the image edge still give full crops.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from common.config import ALIGNMENTS
from common.errors import UserError
from preprocess.detect import Face

TEMPLATE_PATH = Path(__file__).with_name("template.json")
METHODS = ALIGNMENTS
#: Side of an aligned crop in pixels: what FaceNet takes and what preprocessing writes.
CROP_SIZE = 160


class AlignmentError(UserError, ValueError):
    """A face cannot be aligned (degenerate landmarks or box, impossible margin)."""


@functools.lru_cache(maxsize=8)
def _template(size: int) -> np.ndarray:
    data = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))
    points = np.asarray(data["landmarks"], dtype=np.float64) * (size / float(data["size"]))
    points.setflags(write=False)
    return points


def landmark_template(size: int = CROP_SIZE) -> np.ndarray:
    """The 5-point template (float64, shape (5, 2)) for a ``size`` x ``size`` crop."""
    return _template(int(size)).copy()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix that maps points ``src`` onto ``dst`` in least squares.

    Umeyama's closed form (no reflection). Raises :class:`AlignmentError` when ``src`` is
    degenerate (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"point sets must both be (N, 2), got {src.shape} and {dst.shape}")
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src0, dst0 = src - mean_src, dst - mean_dst
    var_src = float((src0**2).sum()) / len(src)
    if not np.isfinite(var_src) or var_src < 1e-9:
        raise AlignmentError("the face landmarks are degenerate (all at one point)")
    cov = dst0.T @ src0 / len(src)
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sing * d).sum()) / var_src
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def margin_transform(box: tuple[float, float, float, float], size: int, margin: int) -> np.ndarray:
    """The 2x3 matrix mapping ``box`` (x, y, w, h) onto ``[margin/2, size - margin/2]`` per axis."""
    x, y, w, h = (float(v) for v in box)
    inner = float(size - margin)
    if margin < 0 or inner <= 0:
        raise AlignmentError(f"margin={margin} must be in [0, {size - 1}] for {size} px crops")
    if not (w > 0 and h > 0):
        raise AlignmentError(f"the face box {w:g}x{h:g} is empty")
    sx, sy = inner / w, inner / h
    half = margin / 2.0
    return np.array([[sx, 0.0, half - x * sx], [0.0, sy, half - y * sy]])


def transform_for(face: Face, method: str, size: int, margin: int) -> np.ndarray:
    """The 2x3 image -> crop matrix for ``face`` under alignment ``method``."""
    if method == "landmarks":
        return similarity_transform(face.landmarks, _template(int(size)))
    if method == "margin":
        return margin_transform(face.box, size, margin)
    raise ValueError(f"alignment method {method!r} is not one of {', '.join(METHODS)}")


def warp(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``rgb`` by 2x3 ``matrix`` into a ``size`` x ``size`` crop (bilinear, replicated border).

    Strong reductions are done in two steps (area resize, then the warp at about unit scale)
    so large photos do not alias.
    """
    import cv2

    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(max(np.linalg.norm(matrix[:, 0]), np.linalg.norm(matrix[:, 1])))
    if scale < 0.5:
        height, width = rgb.shape[:2]
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        fx, fy = new_w / width, new_h / height
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        # cv2.resize samples dst pixel u at src (u + 0.5) / fx - 0.5: compose that map in.
        to_src = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        matrix = matrix @ to_src
    return cv2.warpAffine(
        np.ascontiguousarray(rgb),
        matrix,
        (int(size), int(size)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def align_face(rgb: np.ndarray, face: Face, *, method: str, size: int, margin: int) -> np.ndarray:
    """The uint8 (size, size, 3) RGB crop of ``face`` in ``rgb`` by alignment ``method``."""
    matrix = transform_for(face, method, size, margin)
    if not np.all(np.isfinite(matrix)):
        raise AlignmentError("the face geometry gives a non-finite transform")
    return warp(rgb, matrix, size)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by a 2x3 affine ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
