"""Face detection with MTCNN (the ``mtcnn`` package), behind a small typed interface.

TensorFlow is imported only when the first image is actually detected, so building a
:class:`FaceDetector` is free and a run with nothing to do never pays TF's start-up cost.

:func:`detect_scaled` / :func:`detect_at_width` run any detector on a downscaled copy and map
the faces back to full-size coordinates: the one "downscale, detect, map back" used by
:class:`FaceDetector` (``max_side``), the recogniser (``detect_width``) and the scanner.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

#: Longest side MTCNN is run at on a photo; larger ones are downscaled for detection only.
MAX_SIDE = 1024

#: MTCNN keypoint names in the order of :attr:`Face.landmarks` rows.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image coordinates.

    ``landmarks`` is float32 (5, 2): left_eye, right_eye, nose, mouth_left, mouth_right, where
    "left" means image-left (smaller x). (``eq=False``: faces compare by identity, as an
    array field makes field-wise ``==`` ambiguous.)
    """

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2], 0.0) * max(self.box[3], 0.0))

    @property
    def side(self) -> float:
        """The box's shorter side in pixels (what ``min_face_px`` is compared with)."""
        return float(min(self.box[2], self.box[3]))

    def mapped(self, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> Face:
        """This face with coordinates mapped by ``p -> p * scale + (dx, dy)``."""
        x, y, w, h = self.box
        offset = np.array([dx, dy], dtype=np.float32)
        return Face(
            box=(x * scale + dx, y * scale + dy, w * scale, h * scale),
            score=self.score,
            landmarks=(self.landmarks * np.float32(scale) + offset).astype(np.float32),
        )


class Detector(Protocol):
    """Anything that finds faces: the real MTCNN wrapper or a test double."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, largest first."""
        ...


def detect_scaled(
    detector: Detector | Callable[[np.ndarray], list[Face]],
    image: np.ndarray,
    scale: float,
    *,
    bgr: bool = False,
) -> list[Face]:
    """Faces found by ``detector`` in ``image`` resized by ``scale``, in ``image``'s coordinates.

    ``detector``: a :class:`Detector` or a plain ``detect(rgb) -> faces`` function.
    ``scale < 1`` shrinks the copy (``INTER_AREA``) and maps the faces back with
    :meth:`Face.mapped`; ``scale >= 1`` detects on ``image`` itself. ``bgr``: ``image`` is BGR
    (an OpenCV frame) and is converted to RGB after downscaling, where it is cheaper.
    """
    detect = detector.detect if hasattr(detector, "detect") else detector
    small = image
    if scale < 1.0 or bgr:
        import cv2

        if scale < 1.0:
            height, width = image.shape[:2]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if bgr:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    faces = detect(small)
    if scale < 1.0:
        faces = [f.mapped(1.0 / scale) for f in faces]
    return faces


def detect_at_width(
    detector: Detector | Callable[[np.ndarray], list[Face]],
    image: np.ndarray,
    width: int,
    *,
    bgr: bool = False,
) -> list[Face]:
    """:func:`detect_scaled` on a copy no wider than ``width`` pixels (narrower images as is)."""
    return detect_scaled(detector, image, min(1.0, width / float(image.shape[1])), bgr=bgr)


def sort_faces(faces: list[Face]) -> list[Face]:
    """Faces ordered by area, largest first (ties: higher score first)."""
    return sorted(faces, key=lambda f: (-f.area, -f.score))


def face_from_mtcnn(result: dict[str, Any]) -> Face:
    """Convert one ``MTCNN.detect_faces`` result dict into a :class:`Face`."""
    x, y, w, h = (float(v) for v in result["box"])
    points = result["keypoints"]
    landmarks = np.array([points[name] for name in LANDMARK_NAMES], dtype=np.float32)
    # The contract is image-left first; MTCNN agrees for frontal faces, enforce it anyway.
    for left, right in ((0, 1), (3, 4)):
        if landmarks[left, 0] > landmarks[right, 0]:
            landmarks[[left, right]] = landmarks[[right, left]]
    return Face(box=(x, y, w, h), score=float(result["confidence"]), landmarks=landmarks)


class FaceDetector:
    """MTCNN face detector.

    ``min_face_px``: faces whose shorter box side is smaller (in input pixels) are dropped.
    ``min_score``: faces with a lower MTCNN confidence are dropped.
    ``max_side``: larger images are downscaled to this longest side for detection only
    (coordinates are mapped back), which keeps multi-megapixel photos fast; 0: never (the
    recogniser chooses its own scale, ``preprocess.regions``).
    """

    def __init__(self, min_face_px: int, min_score: float, max_side: int = MAX_SIDE):
        self.min_face_px = int(min_face_px)
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self._mtcnn: Any = None

    def _model(self) -> Any:
        if self._mtcnn is None:
            log.debug("loading MTCNN (TensorFlow start-up)")
            from common.quiet import import_tensorflow

            import_tensorflow()  # quietly, before mtcnn imports it
            from mtcnn import MTCNN

            # Do not pass min_face_size: in mtcnn 1.0 it shrinks the scale pyramid wrongly.
            mtcnn = MTCNN()
            compile_stages(mtcnn)
            self._mtcnn = mtcnn
        return self._mtcnn

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in RGB uint8 image ``rgb`` passing the size and score thresholds, largest first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
        scale = 1.0 if self.max_side <= 0 else min(1.0, self.max_side / float(max(rgb.shape[:2])))
        faces = detect_scaled(self._detect_all, rgb, scale)
        kept = [
            f
            for f in faces
            if f.score >= self.min_score and f.side >= self.min_face_px and math.isfinite(f.area)
        ]
        if len(kept) < len(faces):
            log.debug("dropped %d weak or small detections", len(faces) - len(kept))
        return sort_faces(kept)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of several RGB uint8 images of one shape, in one MTCNN pass (score threshold
        only: no size filter, no ``max_side``); one list per image, largest first.

        The recogniser re-detects the regions around its tracks this way, each region resized
        to the same small square: one call instead of one per face.
        """
        if not images:
            return []
        shapes = {image.shape for image in images}
        if len(shapes) != 1 or any(im.ndim != 3 or im.dtype != np.uint8 for im in images):
            raise ValueError(f"expected RGB uint8 images of one shape, got {sorted(shapes)}")
        if len(images) == 1:
            found = [self._detect_all(images[0])]
        else:
            batch = [np.ascontiguousarray(image) for image in images]
            results = self._model().detect_faces(batch, fit_to_image=False)
            found = [[face_from_mtcnn(r) for r in per_image] for per_image in results]
        return [
            sort_faces([f for f in faces if f.score >= self.min_score and math.isfinite(f.area)])
            for faces in found
        ]

    def _detect_all(self, rgb: np.ndarray) -> list[Face]:
        """Every MTCNN face in ``rgb``, unfiltered."""
        # fit_to_image=False: keep the true box of a face cut by the frame (alignment pads).
        results = self._model().detect_faces(np.ascontiguousarray(rgb), fit_to_image=False)
        return [face_from_mtcnn(r) for r in results]


def compile_stages(mtcnn: Any) -> None:
    """Run the three MTCNN networks as TensorFlow graphs instead of layer-by-layer eager calls.

    The networks are tiny, so eager dispatch (every layer a Python call) dominated: on this
    2-core CPU a 96×96 image took 72 ms eagerly and 15 ms compiled, a 320×180 frame 165 ms and
    44 ms (bench/bench_entrance.py). The arithmetic is the same; shapes are generalised after
    the first traces (``reduce_retracing``), so pyramid levels of any size reuse one graph.
    """
    import tensorflow as tf

    for stage in mtcnn.stages:
        if stage._model is not None and not isinstance(stage._model, _Compiled):
            stage._model = _Compiled(tf.function(stage._model, reduce_retracing=True))


class _Compiled:
    """A compiled MTCNN network that refuses an empty batch the way the eager one does
    (``InvalidArgumentError``, which ``mtcnn`` reads as "no face"), without running the graph:
    a graph failing that way logs a C++ warning on every frame without a face."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def __call__(self, batch: Any) -> Any:
        if batch.shape[0] == 0:
            import tensorflow as tf

            raise tf.errors.InvalidArgumentError(None, None, "no face proposals")
        return self.graph(batch)
