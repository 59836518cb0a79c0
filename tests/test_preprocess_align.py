"""Alignment: the similarity fit, the template data, the margin crop and the warp itself."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from preprocess.align import (
    TEMPLATE_PATH,
    AlignmentError,
    align_face,
    apply_transform,
    landmark_template,
    margin_transform,
    similarity_transform,
    transform_for,
)
from preprocess.detect import Face

DOT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def face_with_landmarks(points: np.ndarray) -> Face:
    x0, y0 = points.min(axis=0) - 20
    x1, y1 = points.max(axis=0) + 20
    return Face(box=(x0, y0, x1 - x0, y1 - y0), score=0.99, landmarks=points.astype(np.float32))


def draw_dots(shape: tuple[int, int], points: np.ndarray, radius: int) -> np.ndarray:
    """A grey image with one coloured disc per landmark."""
    image = np.full((*shape, 3), 128, dtype=np.uint8)
    for (x, y), colour in zip(points, DOT_COLOURS, strict=True):
        cv2.circle(image, (round(x), round(y)), radius, colour, -1, lineType=cv2.LINE_AA)
    return image


def dot_centres(crop: np.ndarray) -> np.ndarray:
    """Centroid of each coloured disc in ``crop`` (order of DOT_COLOURS)."""
    centres = []
    for colour in DOT_COLOURS:
        distance = np.abs(crop.astype(int) - np.array(colour)).sum(axis=2)
        ys, xs = np.nonzero(distance < 60)
        assert len(xs) > 3, f"disc {colour} not found in the crop"
        centres.append((xs.mean(), ys.mean()))
    return np.array(centres)


def test_template_data_is_the_documented_derivation():
    data = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert data["comment"], "the template must say how it was derived"
    source = np.array(data["source_112"])
    derived = np.column_stack(
        [
            (source[:, 0] - 56.0) * data["scale"] + data["center_x"],
            source[:, 1] * data["scale"] + data["offset_y"],
        ]
    )
    np.testing.assert_allclose(derived, data["landmarks"], atol=1e-3)
    template = landmark_template(160)
    assert template.shape == (5, 2)
    # A plausible face: inside the crop, eyes level and left of right, eyes > nose > mouth.
    assert np.all((template > 10) & (template < 150))
    left_eye, right_eye, nose, mouth_left, mouth_right = template
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0]
    assert abs(left_eye[1] - right_eye[1]) < 1
    assert left_eye[1] < nose[1] < mouth_left[1]
    assert abs((left_eye[0] + right_eye[0]) / 2 - 80) < 1  # centred horizontally
    np.testing.assert_allclose(landmark_template(80), template / 2)


@pytest.mark.parametrize(
    ("angle", "scale", "tx", "ty"), [(0, 1, 0, 0), (17, 0.6, 40, -12), (-35, 2.5, -100, 60)]
)
def test_similarity_transform_recovers_a_known_transform(angle, scale, tx, ty):
    src = np.random.default_rng(1).uniform(0, 200, size=(5, 2))
    truth = similarity(angle, scale, tx, ty)
    fitted = similarity_transform(src, apply_transform(truth, src))
    np.testing.assert_allclose(fitted, truth, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = np.array([[0, 0], [10, 0], [5, 5], [2, 10], [8, 10]], dtype=float)
    mirrored = src * [-1, 1]
    fitted = similarity_transform(src, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0


def test_degenerate_landmarks_are_refused():
    with pytest.raises(AlignmentError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), landmark_template())


def test_landmark_transform_maps_landmarks_onto_the_template():
    template = landmark_template(160)
    truth = similarity(25, 1.7, 300, 120)  # template -> image
    landmarks = apply_transform(truth, template)
    matrix = transform_for(face_with_landmarks(landmarks), "landmarks", 160, 32)
    np.testing.assert_allclose(apply_transform(matrix, landmarks), template, atol=1e-6)


@pytest.mark.parametrize(("angle", "scale"), [(20.0, 1.8), (-10.0, 0.8), (8.0, 4.0)])
def test_aligned_crop_puts_the_landmarks_on_the_template(angle, scale):
    """Render discs at rotated/scaled landmark positions; after alignment they sit on the template.

    scale=4 makes the face 4x larger than the crop: the two-step (area resize + warp) path.
    """
    template = landmark_template(160)
    centre = np.array([80.0, 80.0])
    truth = similarity(angle, scale, 0, 0)
    landmarks = apply_transform(truth, template - centre) + [300, 260]
    image = draw_dots((560, 640), landmarks, radius=max(3, round(3 * scale)))
    face = face_with_landmarks(landmarks)
    crop = align_face(image, face, method="landmarks", size=160, margin=32)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(dot_centres(crop), template, atol=1.0)


def test_margin_transform_math():
    box = (40.0, 50.0, 64.0, 80.0)
    matrix = margin_transform(box, size=160, margin=32)
    corners = np.array([[40.0, 50.0], [104.0, 130.0]])
    np.testing.assert_allclose(apply_transform(matrix, corners), [[16, 16], [144, 144]])
    # the box spans size - margin pixels on each axis: 128/64 horizontally, 128/80 vertically
    np.testing.assert_allclose(np.diag(matrix[:, :2]), [2.0, 1.6])
    full = margin_transform(box, size=160, margin=0)
    np.testing.assert_allclose(apply_transform(full, corners), [[0, 0], [160, 160]])


def test_margin_crop_shows_the_box_with_the_margin_around_it():
    image = np.full((300, 400, 3), 30, dtype=np.uint8)
    image[100:200, 150:230] = (200, 60, 10)  # the "face box": x 150..230, y 100..200
    face = Face(box=(150, 100, 80, 100), score=1.0, landmarks=np.zeros((5, 2), np.float32))
    crop = align_face(image, face, method="margin", size=160, margin=32)
    assert crop.shape == (160, 160, 3)
    inside = crop[20:140, 20:140]
    assert np.all(np.abs(inside.astype(int) - (200, 60, 10)).max(axis=2) <= 2)
    for ring in (crop[:14, :], crop[-14:, :], crop[:, :14], crop[:, -14:]):
        assert np.all(ring == 30)


def test_margin_must_leave_room_for_the_face():
    with pytest.raises(AlignmentError, match="margin"):
        margin_transform((0, 0, 10, 10), size=160, margin=160)
    with pytest.raises(AlignmentError, match="empty"):
        margin_transform((0, 0, 0, 10), size=160, margin=32)


def test_faces_at_the_edge_give_full_crops_with_replicated_border():
    image = np.full((120, 120, 3), 200, dtype=np.uint8)
    face = Face(box=(-30, -20, 70, 80), score=1.0, landmarks=np.zeros((5, 2), np.float32))
    crop = align_face(image, face, method="margin", size=160, margin=32)
    assert crop.min() == 200  # no black fill anywhere


def test_unknown_method_is_refused():
    face = face_with_landmarks(landmark_template())
    with pytest.raises(ValueError, match="alignment method"):
        align_face(np.zeros((160, 160, 3), np.uint8), face, method="affine", size=160, margin=32)


def test_output_size_follows_the_size_argument():
    face = face_with_landmarks(landmark_template() + 40)
    image = np.zeros((240, 240, 3), np.uint8)
    for method in ("landmarks", "margin"):
        assert align_face(image, face, method=method, size=96, margin=16).shape == (96, 96, 3)
