"""The MTCNN wrapper's own logic (conversion, filtering, ordering, downscaling), without TF."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.detect import (
    Face,
    FaceDetector,
    detect_at_width,
    detect_scaled,
    face_from_mtcnn,
    sort_faces,
)


def mtcnn_result(x, y, w, h, confidence=0.99, swap=False) -> dict:
    eyes = [[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h]]
    mouth = [[x + 0.35 * w, y + 0.8 * h], [x + 0.65 * w, y + 0.8 * h]]
    if swap:
        eyes, mouth = eyes[::-1], mouth[::-1]
    return {
        "box": [x, y, w, h],
        "confidence": confidence,
        "keypoints": {
            "left_eye": eyes[0],
            "right_eye": eyes[1],
            "nose": [x + 0.5 * w, y + 0.6 * h],
            "mouth_left": mouth[0],
            "mouth_right": mouth[1],
        },
    }


class FakeMTCNN:
    """Returns canned results and remembers the image shapes it was given."""

    def __init__(self, results: list[dict]):
        self.results = results
        self.shapes: list[tuple[int, ...]] = []

    def detect_faces(self, image: np.ndarray, **kwargs) -> list[dict]:
        assert "min_face_size" not in kwargs  # broken in mtcnn 1.0
        self.shapes.append(image.shape)
        return self.results


def detector_with(results: list[dict], **kwargs) -> tuple[FaceDetector, FakeMTCNN]:
    detector = FaceDetector(**{"min_face_px": 20, "min_score": 0.9, **kwargs})
    fake = FakeMTCNN(results)
    detector._mtcnn = fake
    return detector, fake


def test_mtcnn_result_becomes_a_face_with_image_left_first():
    face = face_from_mtcnn(mtcnn_result(10, 20, 100, 120, swap=True))
    assert face.box == (10.0, 20.0, 100.0, 120.0) and face.score == pytest.approx(0.99)
    assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # eyes re-ordered
    assert face.landmarks[3, 0] < face.landmarks[4, 0]  # mouth corners re-ordered
    assert face.area == 12000.0 and face.side == 100.0


def test_mapped_moves_box_and_landmarks_together():
    face = face_from_mtcnn(mtcnn_result(10, 20, 100, 120))
    moved = face.mapped(0.5, -3, 4)
    assert moved.box == (2.0, 14.0, 50.0, 60.0)
    np.testing.assert_allclose(moved.landmarks, face.landmarks * 0.5 + [-3, 4], rtol=1e-6)


def test_weak_and_small_faces_are_dropped_and_the_rest_sorted_by_area():
    detector, _ = detector_with(
        [
            mtcnn_result(0, 0, 30, 30),
            mtcnn_result(50, 50, 80, 90),
            mtcnn_result(10, 100, 60, 60, confidence=0.5),  # weak
            mtcnn_result(200, 10, 15, 40),  # narrower than min_face_px
        ],
        min_face_px=20,
        min_score=0.9,
    )
    faces = detector.detect(np.zeros((300, 300, 3), np.uint8))
    assert [f.box for f in faces] == [(50, 50, 80, 90), (0, 0, 30, 30)]


def test_large_images_are_detected_downscaled_and_mapped_back():
    detector, fake = detector_with([mtcnn_result(100, 50, 200, 250)], max_side=1000)
    faces = detector.detect(np.zeros((1500, 2000, 3), np.uint8))
    assert fake.shapes == [(750, 1000, 3)]
    assert faces[0].box == pytest.approx((200, 100, 400, 500))
    assert faces[0].landmarks[0] == pytest.approx([200 + 0.3 * 400, 100 + 0.4 * 500])


def test_detector_is_lazy_and_checks_its_input():
    detector = FaceDetector(min_face_px=20, min_score=0.9)
    assert detector._mtcnn is None  # building the wrapper loads nothing
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_sort_faces_breaks_ties_by_score():
    low = Face((0, 0, 10, 10), 0.8, np.zeros((5, 2), np.float32))
    high = Face((5, 5, 10, 10), 0.95, np.zeros((5, 2), np.float32))
    assert sort_faces([low, high]) == [high, low]


class Recording:
    """A Detector that finds one fixed face and remembers every image it was given."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.images.append(rgb)
        return [face_from_mtcnn(mtcnn_result(10, 20, 40, 50))]


def test_detect_scaled_downscales_detects_and_maps_back():
    detector = Recording()
    image = np.zeros((300, 400, 3), np.uint8)
    (face,) = detect_scaled(detector, image, 0.5)
    assert detector.images[0].shape == (150, 200, 3)
    assert face.box == pytest.approx((20, 40, 80, 100))
    assert face.landmarks[0] == pytest.approx([2 * (10 + 0.3 * 40), 2 * (20 + 0.4 * 50)])
    (same,) = detect_scaled(detector, image, 1.0)  # no resize, no mapping
    assert detector.images[1] is image and same.box == (10, 20, 40, 50)
    (plain,) = detect_scaled(detector.detect, image, 0.25)  # a plain function works too
    assert detector.images[2].shape == (75, 100, 3)
    assert plain.box == pytest.approx((40, 80, 160, 200))


def test_detect_scaled_shrinks_with_inter_area_and_converts_bgr_after():
    detector = Recording()
    bgr = np.zeros((4, 8, 3), np.uint8)
    bgr[:, ::2] = (255, 0, 0)  # blue and black columns: INTER_AREA averages them
    detect_scaled(detector, bgr, 0.5, bgr=True)
    small = detector.images[0]
    assert small.shape == (2, 4, 3)
    np.testing.assert_array_equal(small[0, 0], [0, 0, 128])  # averaged, and now RGB (blue last)


def test_detect_at_width_keeps_narrow_images_as_they_are():
    detector = Recording()
    wide = np.zeros((480, 640, 3), np.uint8)
    (face,) = detect_at_width(detector, wide, 320)
    assert detector.images[0].shape == (240, 320, 3)
    assert face.box == pytest.approx((20, 40, 80, 100))
    narrow = np.zeros((200, 300, 3), np.uint8)
    (face,) = detect_at_width(detector, narrow, 320)
    assert detector.images[1] is narrow and face.box == (10, 20, 40, 50)
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 2] = 200  # BGR red
    detect_at_width(detector, rgb, 320, bgr=True)
    assert detector.images[2][0, 0].tolist() == [200, 0, 0]


def test_detectors_are_built_by_name_from_the_configuration(workspace):
    """``make_detector`` builds the configured detector with the configuration's thresholds,
    every name Config accepts is registered, and an unknown name is refused by Config."""
    from common.config import ConfigError
    from preprocess.detectors import detector_settings, make_detector

    cfg = workspace.replace(min_face_px=33, min_detection_score=0.7)
    detector = make_detector(cfg)
    assert isinstance(detector, FaceDetector)
    assert (detector.min_face_px, detector.min_score) == (33, 0.7)
    assert detector_settings(cfg) == {
        "detector": "mtcnn", "min_face_px": 33, "min_detection_score": 0.7,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="detector='retinaface' is not one of mtcnn"):
        workspace.replace(detector="retinaface")
