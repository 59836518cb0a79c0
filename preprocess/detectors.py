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

    build: Callable[[Config, int], Detector]  # (configuration, max_side)
    settings: Callable[[Config], dict[str, Any]]


def _mtcnn_settings(cfg: Config) -> dict[str, Any]:
    return {"min_face_px": cfg.min_face_px, "min_detection_score": cfg.min_detection_score}


REGISTRY: dict[str, DetectorSpec] = {
    "mtcnn": DetectorSpec(
        build=lambda cfg, max_side: FaceDetector(
            min_face_px=cfg.min_face_px, min_score=cfg.min_detection_score, max_side=max_side
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


def make_detector(cfg: Config, *, max_side: int = MAX_SIDE) -> Detector:
    """The detector named by ``cfg.detector``, with that configuration's thresholds.

    ``max_side``: larger images are shrunk to this longest side for detection; 0 never
    shrinks them (the recogniser picks its own scale from ``detect_min_face_px``).
    """
    return _spec(cfg).build(cfg, max_side)


def detector_settings(cfg: Config) -> dict[str, Any]:
    """The detector's name and every setting that changes what it finds (for crop settings)."""
    return {"detector": cfg.detector, **_spec(cfg).settings(cfg)}
