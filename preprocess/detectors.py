"""Face detectors by name: the ``detector`` configuration key picks one from :data:`REGISTRY`.

Every module that needs a detector calls :func:`make_detector`; none names a detector class.
To add a detector: write a class with ``detect(rgb) -> list[Face]`` (largest first, in the
image's coordinates, see :class:`preprocess.detect.Detector`), add its name to
``common.config.DETECTORS`` and a :class:`DetectorSpec` here. Its :attr:`DetectorSpec.settings`
become part of the crop settings, so switching detectors redoes the crops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.config import DETECTORS, Config, ConfigError
from preprocess.detect import MAX_SIDE, Detector, FaceDetector


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one named detector from the configuration, and what shapes its output."""

    build: Callable[[Config, bool], Detector]  # (configuration, whole_frames)
    settings: Callable[[Config], dict[str, Any]]


def _mtcnn_settings(cfg: Config) -> dict[str, Any]:
    return {"min_face_px": cfg.min_face_px, "min_detection_score": cfg.min_detection_score}


REGISTRY: dict[str, DetectorSpec] = {
    "mtcnn": DetectorSpec(
        build=lambda cfg, whole_frames: FaceDetector(
            min_face_px=WHOLE_FRAME_MIN_PX if whole_frames else cfg.min_face_px,
            min_score=cfg.min_detection_score,
            max_side=0 if whole_frames else MAX_SIDE,
        ),
        settings=_mtcnn_settings,
    ),
}
assert set(REGISTRY) == set(DETECTORS), "common.config.DETECTORS and REGISTRY must agree"


def _spec(cfg: Config) -> DetectorSpec:
    try:
        return REGISTRY[cfg.detector]
    except KeyError:  # Config validates the name; this guards hand-made configs
        raise ConfigError(
            f"detector={cfg.detector!r} is not one of {', '.join(REGISTRY)}"
        ) from None


#: Smallest face a whole-frame detector keeps (pixels of the image it is given): anything
#: MTCNN finds. The recogniser shrinks frames itself and filters faces in frame pixels.
WHOLE_FRAME_MIN_PX = 8


def make_detector(cfg: Config, *, whole_frames: bool = False) -> Detector:
    """The detector named by ``cfg.detector``, with that configuration's thresholds.

    Photos (preprocessing, enrolment): large images are shrunk to ``MAX_SIDE`` for detection
    and faces smaller than ``min_face_px`` are dropped. ``whole_frames`` (the recogniser):
    images are detected as given, every face found is kept; the caller picks the scale and
    the size of face it wants (``preprocess.regions``, ``detect_min_face_px``).
    """
    return _spec(cfg).build(cfg, whole_frames)


def detector_settings(cfg: Config) -> dict[str, Any]:
    """The detector's name and every setting that changes what it finds (for crop settings)."""
    return {"detector": cfg.detector, **_spec(cfg).settings(cfg)}
