"""The MTCNN wrapper's own logic (conversion, filtering, ordering, downscaling), without TF."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.detect import Face, FaceDetector, face_from_mtcnn, sort_faces


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
    detector = FaceDetector(**kwargs)
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
    detector = FaceDetector()
    assert detector._mtcnn is None  # building the wrapper loads nothing
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_sort_faces_breaks_ties_by_score():
    low = Face((0, 0, 10, 10), 0.8, np.zeros((5, 2), np.float32))
    high = Face((5, 5, 10, 10), 0.95, np.zeros((5, 2), np.float32))
    assert sort_faces([low, high]) == [high, low]
