"""scanner.quality and scanner.pose: pure checks on synthetic images and landmarks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from preprocess.detect import Face
from scanner.pose import (
    Pose,
    PoseDiversity,
    estimate_pose,
    pose_spread,
    project_landmarks,
    rotation_matrix,
    select_diverse,
)
from scanner.quality import (
    Issue,
    QualityLimits,
    assess,
    choose_hint,
    laplacian_variance,
    measure_face,
)

LIMITS = QualityLimits(min_face_px=80, min_sharpness=60.0)


def textured(h: int, w: int, seed: int = 0, lo: int = 60, hi: int = 200) -> np.ndarray:
    """Sharp random 4-px blocks (high Laplacian variance), BGR uint8."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(lo, hi, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(blocks, (w // 4 * 4 + 4, h // 4 * 4 + 4), interpolation=cv2.INTER_NEAREST)[
        :h, :w
    ]


def frame_with_face(box=(220, 140, 160, 180), seed: int = 0, background: int = 120) -> np.ndarray:
    image = np.full((480, 640, 3), background, np.uint8)
    x, y, w, h = box
    image[y : y + h, x : x + w] = textured(h, w, seed)
    return image


FRONTAL = Pose(0, 0)


def face(box=(220.0, 140.0, 160.0, 180.0), pose: Pose = FRONTAL) -> Face:
    x, y, w, h = box
    scale = w / 100.0
    landmarks = project_landmarks(pose, scale=scale, centre=(x + w / 2, y + h / 2))
    return Face(box=(x, y, w, h), score=0.99, landmarks=landmarks)


# --------------------------------------------------------------------------- quality
def test_good_frame_has_no_issue() -> None:
    quality = assess(frame_with_face(), [face()], LIMITS)
    assert quality.ok and quality.issues == () and quality.hint == ""
    assert quality.faces == 1 and quality.face is not None
    assert quality.metrics.sharpness > LIMITS.min_sharpness
    assert 60 < quality.metrics.brightness < 200


def test_no_face_asks_to_look_at_the_camera() -> None:
    quality = assess(frame_with_face(), [], LIMITS)
    assert not quality.ok and quality.issues == (Issue.NO_FACE,)
    assert quality.hint == "look at the camera"


def test_dark_frame_without_face_says_too_dark_first() -> None:
    dark = np.full((480, 640, 3), 12, np.uint8)
    quality = assess(dark, [], LIMITS)
    assert quality.issues == (Issue.TOO_DARK, Issue.NO_FACE)
    assert quality.hint == "too dark"


def test_two_faces_only_one_person_please() -> None:
    image = frame_with_face()
    image[20:120, 20:120] = textured(100, 100, seed=3)
    faces = [face(), face((20.0, 20.0, 100.0, 100.0))]
    quality = assess(image, faces, LIMITS)
    assert Issue.SEVERAL_FACES in quality.issues
    assert quality.hint == "only one person please"
    assert quality.face.box[2] == 160.0  # the largest face is the one measured


def test_small_face_move_closer() -> None:
    box = (300, 200, 60, 70)
    quality = assess(frame_with_face(box), [face(tuple(map(float, box)))], LIMITS)
    assert quality.issues == (Issue.TOO_SMALL,)
    assert quality.hint == "move closer"


def test_blurred_face_hold_still() -> None:
    image = frame_with_face()
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    sharp = assess(image, [face()], LIMITS)
    soft = assess(blurred, [face()], LIMITS)
    assert sharp.ok
    assert soft.issues == (Issue.BLURRY,) and soft.hint == "hold still"
    assert soft.metrics.sharpness < LIMITS.min_sharpness < sharp.metrics.sharpness


@pytest.mark.parametrize(
    ("lo", "hi", "issue"),
    [(0, 40, Issue.TOO_DARK), (215, 256, Issue.TOO_BRIGHT)],
)
def test_exposure(lo: int, hi: int, issue: Issue) -> None:
    image = np.full((480, 640, 3), 120, np.uint8)
    image[140:320, 220:380] = textured(180, 160, lo=lo, hi=hi)
    quality = assess(image, [face()], LIMITS)
    assert issue in quality.issues
    assert quality.hint == issue.hint


def test_face_cut_off_by_the_border() -> None:
    box = (560.0, 140.0, 160.0, 180.0)  # half outside the 640 px wide frame
    image = frame_with_face((560, 140, 80, 180))
    quality = assess(image, [face(box)], LIMITS)
    assert Issue.CUT_OFF in quality.issues
    assert quality.metrics.outside_fraction == pytest.approx(0.5, abs=0.01)


def test_one_hint_at_a_time_follows_priority() -> None:
    assert choose_hint([Issue.BLURRY, Issue.TOO_SMALL]) == "move closer"
    assert choose_hint([Issue.SAME_POSE, Issue.BLURRY]) == "hold still"
    assert choose_hint([Issue.SAME_POSE]) == "turn your head slightly"
    assert choose_hint([Issue.NO_FACE, Issue.TOO_DARK]) == "too dark"
    assert choose_hint([]) == ""


def test_sharpness_is_measured_at_a_fixed_size() -> None:
    # the same face seen from two distances: 200 px and 100 px across
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 255, (200, 200)).astype(np.uint8)
    near = cv2.GaussianBlur(noise, (0, 0), 2)
    far = cv2.resize(near, (100, 100), interpolation=cv2.INTER_AREA)
    fixed = laplacian_variance(near) / laplacian_variance(far)
    raw = laplacian_variance(near, size=None) / laplacian_variance(far, size=None)
    assert 0.5 < fixed < 2.0
    assert abs(math.log(fixed)) < abs(math.log(raw)) / 3  # far less scale-dependent
    assert laplacian_variance(np.zeros((0, 0), np.uint8)) == 0.0


def test_limits_from_config(workspace) -> None:
    cfg = workspace.replace(min_scan_face_px=120, min_sharpness=10.0)
    limits = QualityLimits.from_config(cfg)
    assert (limits.min_face_px, limits.min_sharpness) == (120.0, 10.0)


def test_measure_face_outside_the_image() -> None:
    gray = np.full((100, 100), 100, np.uint8)
    metrics = measure_face(gray, face((200.0, 200.0, 50.0, 50.0)))
    assert metrics.outside_fraction == 1.0 and metrics.sharpness == 0.0


# --------------------------------------------------------------------------- pose
@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"),
    [(0, 0, 0), (25, 0, 0), (-25, 0, 0), (0, 15, 0), (0, -15, 0), (-30, 10, 20), (40, -20, -15)],
)
def test_pose_round_trip_from_synthetic_landmarks(yaw: float, pitch: float, roll: float) -> None:
    landmarks = project_landmarks(Pose(yaw, pitch, roll), scale=1.3, centre=(300, 200))
    pose = estimate_pose(landmarks)
    assert pose.yaw == pytest.approx(yaw, abs=0.5)
    assert pose.pitch == pytest.approx(pitch, abs=0.5)
    assert pose.roll == pytest.approx(roll, abs=0.5)


def test_pose_signs_match_the_picture() -> None:
    frontal = project_landmarks(Pose(0, 0))
    right = project_landmarks(Pose(20, 0))
    up = project_landmarks(Pose(0, 20))
    eyes_mid = frontal[:2, 0].mean()
    assert right[2, 0] - right[:2, 0].mean() > frontal[2, 0] - eyes_mid  # nose to image-right
    assert up[2, 1] < frontal[2, 1]  # nose higher in the image when looking up
    assert estimate_pose(right).yaw > 0 and estimate_pose(up).pitch > 0


def test_pose_is_invariant_to_scale_and_position() -> None:
    a = estimate_pose(project_landmarks(Pose(15, -10), scale=0.8, centre=(100, 100)))
    b = estimate_pose(project_landmarks(Pose(15, -10), scale=3.0, centre=(900, 40)))
    assert a.distance(b) < 1e-3


def test_pose_tolerates_landmark_noise() -> None:
    rng = np.random.default_rng(0)
    landmarks = project_landmarks(Pose(20, 10), scale=1.5)  # ~95 px between the eyes
    noisy = landmarks + rng.normal(0, 1.0, landmarks.shape).astype(np.float32)
    assert estimate_pose(noisy).distance(Pose(20, 10)) < 5.0


def test_rotation_matrix_is_a_rotation() -> None:
    rot = rotation_matrix(30, -20, 10)
    assert np.allclose(rot @ rot.T, np.eye(3)) and math.isclose(np.linalg.det(rot), 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((5, 2)),
        np.zeros((4, 2)),
        np.full((5, 2), np.nan),
        np.array([[i, i] for i in range(5)]),
    ],
)
def test_degenerate_landmarks_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        estimate_pose(bad)


def test_pose_diversity_keeps_only_novel_poses() -> None:
    diversity = PoseDiversity(min_step=6.0)
    assert diversity.offer(Pose(0, 0))
    assert not diversity.offer(Pose(3, 3))  # 4.2 degrees away
    assert diversity.offer(Pose(6, 0))
    assert not diversity.is_novel(Pose(6, 5))
    assert diversity.is_novel(Pose(-6, 0))
    assert diversity.nearest(Pose(0, 8)) == pytest.approx(8.0)
    assert PoseDiversity(6.0).nearest(Pose(0, 0)) == math.inf
    with pytest.raises(ValueError):
        PoseDiversity(-1.0)


def test_streaming_selection_spreads_more_than_every_nth_frame() -> None:
    # a person who mostly looks straight ahead and turns briefly: 80 frontal-ish frames, 20 turned
    rng = np.random.default_rng(1)
    frontal = [Pose(*rng.normal(0, 1.5, 2)) for _ in range(80)]
    turned = [Pose(y, p) for y in (-30, -15, 15, 30) for p in (-10, -5, 0, 5, 10)]
    poses = frontal[:40] + turned + frontal[40:]
    diversity = PoseDiversity(min_step=6.0)
    kept = [p for p in poses if diversity.offer(p)]
    nth = poses[:: max(1, len(poses) // len(kept))][: len(kept)]
    assert pose_spread(kept).yaw_std > 1.5 * pose_spread(nth).yaw_std
    assert pose_spread(kept).mean_nearest >= 6.0 > pose_spread(nth).mean_nearest


def test_select_diverse_farthest_points() -> None:
    poses = [Pose(0, 0), Pose(0.5, 0), Pose(30, 0), Pose(-30, 0), Pose(0, 20), Pose(1, 1)]
    assert select_diverse(poses, 4) == [2, 3, 4, 5]  # (1, 1) is nearest the mean: first
    assert select_diverse(poses, 10) == list(range(6))
    assert select_diverse(poses, 0) == [] and select_diverse([], 3) == []
    repeats = [Pose(0, 0)] * 3
    assert select_diverse(repeats, 2) == [0, 1]


def test_pose_spread() -> None:
    spread = pose_spread([Pose(-10, 0), Pose(10, 0), Pose(0, 20)])
    assert spread.count == 3
    assert spread.yaw_range == 20 and spread.pitch_range == 20
    assert spread.mean_nearest == pytest.approx((20 + 20 + math.hypot(10, 20)) / 3)
    assert pose_spread([Pose(1, 1)]).yaw_std == 0.0
    assert "yaw std" in str(spread)
