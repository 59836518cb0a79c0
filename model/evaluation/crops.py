"""Aligned face crops of a dataset's photos, detected once per photo for every alignment.

Faces are found and aligned exactly as preprocessing does
(:func:`preprocess.pipeline.crop_largest_face`). Photos without a usable face are listed, not
fatal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.config import Config
from model.evaluation.dataset import ImageItem

log = logging.getLogger(__name__)


class _MemoDetector:
    """Runs the real detector once per distinct image array (several alignments, one detection)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._seen: dict[tuple[tuple[int, ...], str], list[Any]] = {}

    def detect(self, rgb: np.ndarray) -> list[Any]:
        key = (rgb.shape, hashlib.sha1(np.ascontiguousarray(rgb).data).hexdigest())
        if key not in self._seen:
            self._seen[key] = list(self.inner.detect(rgb))
        return list(self._seen[key])

    def clear(self) -> None:
        self._seen.clear()


@dataclass
class CropSet:
    """Aligned crops of the images that have a face, per alignment method."""

    items: list[ImageItem]
    crops: dict[str, np.ndarray]  # alignment -> uint8 (N, 160, 160, 3)
    boxes: np.ndarray  # float32 (N, 4): x, y, w, h in image pixels
    scores: np.ndarray  # float32 (N,): detection confidence
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)

    def subset(self, relpaths: Sequence[str]) -> np.ndarray:
        """Row indices of ``relpaths`` that have a crop (in the given order)."""
        index = {item.relpath: k for k, item in enumerate(self.items)}
        return np.array([index[r] for r in relpaths if r in index], dtype=np.int64)


def crop_images(
    items: Sequence[ImageItem],
    detector: Any,
    cfg: Config,
    alignments: Sequence[str] | None = None,
    progress: bool | None = None,
) -> CropSet:
    """Detect the largest face of every image once and align it with each method.

    ``alignments`` defaults to ``[cfg.alignment]``. An image that fails with any method
    (unreadable, no face, tiny, unalignable) is left out of every method, so all variants are
    evaluated on the same images.
    """
    from tqdm import tqdm

    from common.image_io import ImageReadError, read_image
    from preprocess.align import AlignmentError
    from preprocess.pipeline import ImageRejected, crop_largest_face

    alignments = list(alignments or [cfg.alignment])
    configs = {a: cfg if a == cfg.alignment else cfg.replace(alignment=a) for a in alignments}
    memo = _MemoDetector(detector)
    ok: list[ImageItem] = []
    crops: dict[str, list[np.ndarray]] = {a: [] for a in alignments}
    boxes, scores, failed = [], [], []
    bar = tqdm(items, desc="detecting faces", unit="img", disable=_disable(progress))
    for item in bar:
        memo.clear()
        try:
            rgb = read_image(item.path)
            made = {a: crop_largest_face(rgb, memo, c, item.relpath) for a, c in configs.items()}
        except (ImageReadError, ImageRejected, AlignmentError) as exc:
            failed.append((item.relpath, str(exc)))
            continue
        face = made[alignments[0]][1]
        ok.append(item)
        for a in alignments:
            crops[a].append(made[a][0])
        boxes.append(face.box)
        scores.append(face.score)
    for relpath, reason in failed:
        log.warning("no usable face: %s", reason if relpath in reason else f"{relpath}: {reason}")
    return CropSet(
        items=ok,
        crops={a: _stack(c) for a, c in crops.items()},
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float32),
        failed=failed,
    )


def _stack(crops: list[np.ndarray]) -> np.ndarray:
    return np.stack(crops) if crops else np.zeros((0, 160, 160, 3), np.uint8)


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
