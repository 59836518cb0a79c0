"""Head pose (yaw, pitch, roll) from MTCNN's 5 landmarks, and pose-diverse shot selection.

The pose is found by fitting a generic 3-D model of the five points (eye centres, nose tip,
mouth corners; millimetres) under weak perspective: a least-squares 2×3 affine map from the
centred model to the centred landmarks, whose rows, made orthonormal, are the first two rows
of the head's rotation. The nose tip standing ~27 mm in front of the eyes is what reveals yaw
and pitch. Angles are in degrees:

- ``yaw > 0``: the nose turns towards image-right;
- ``pitch > 0``: the nose turns up (the person looks up);
- ``roll > 0``: the head tilts clockwise on screen (the image-right eye is lower).

Absolute angles are approximate (everyone's face differs from the model); differences between
shots of the same person, which is what pose diversity needs, are reliable to a few degrees.

:class:`PoseGuide` leads a person through poses relative to where their head started: centre,
left, right, up, down, then the diagonals, naming each target in a hint. Left and right are the
person's own: their left is ``yaw > 0`` (the nose turns towards image-right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The generic face: x right, y down, z away from the camera (mm), in landmark order
#: left_eye, right_eye, nose, mouth_left, mouth_right (left = image-left). The nose tip sits at
#: 57 % of the way from the eyes down to the mouth, as MTCNN places it on frontal faces.
MODEL_POINTS = np.array(
    [
        [-31.5, -40.0, 27.0],
        [31.5, -40.0, 27.0],
        [0.0, 0.0, 0.0],
        [-26.0, 30.0, 25.0],
        [26.0, 30.0, 25.0],
    ],
    dtype=np.float64,
)
_MODEL_CENTRED = MODEL_POINTS - MODEL_POINTS.mean(axis=0)
_MODEL_PINV = np.linalg.pinv(_MODEL_CENTRED)  # (3, 5)


@dataclass(frozen=True)
class Pose:
    """Head orientation in degrees (see the module docstring for the signs)."""

    yaw: float
    pitch: float
    roll: float = 0.0

    def distance(self, other: Pose) -> float:
        """How different two poses look: Euclidean distance in (yaw, pitch), degrees."""
        return math.hypot(self.yaw - other.yaw, self.pitch - other.pitch)

    def __str__(self) -> str:
        return f"yaw {self.yaw:+.0f}° pitch {self.pitch:+.0f}°"


def rotation_matrix(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """The head rotation ``R = R_roll · R_yaw · R_pitch`` for angles in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    r_yaw = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    r_pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    r_roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return r_roll @ r_yaw @ r_pitch


def angles_from_matrix(rot: np.ndarray) -> Pose:
    """Inverse of :func:`rotation_matrix` (for |yaw| < 90°)."""
    yaw = math.degrees(math.asin(float(np.clip(rot[2, 0], -1.0, 1.0))))
    pitch = math.degrees(math.atan2(-rot[2, 1], rot[2, 2]))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    return Pose(yaw, pitch, roll)


def project_landmarks(
    pose: Pose, *, scale: float = 1.5, centre: tuple[float, float] = (320.0, 240.0)
) -> np.ndarray:
    """Synthetic landmarks (5, 2) float32 of the model face in ``pose`` (weak perspective).

    ``scale`` is pixels per millimetre (1.5 gives a ~95 px eye distance).
    """
    rotated = _MODEL_CENTRED @ rotation_matrix(pose.yaw, pose.pitch, pose.roll).T
    return (rotated[:, :2] * scale + np.asarray(centre)).astype(np.float32)


def estimate_pose(landmarks: np.ndarray) -> Pose:
    """The head pose from 5 landmarks (5, 2) in image coordinates, in the contract's order."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"expected 5 finite (x, y) landmarks, got shape {points.shape}")
    centred = points - points.mean(axis=0)
    affine = (_MODEL_PINV @ centred).T  # (2, 3): centred ≈ model @ affine.T
    row1 = affine[0]
    norm1 = np.linalg.norm(row1)
    if norm1 < 1e-9:
        raise ValueError("degenerate landmarks: all points coincide")
    r1 = row1 / norm1
    row2 = affine[1] - (affine[1] @ r1) * r1
    norm2 = np.linalg.norm(row2)
    if norm2 < 1e-9:
        raise ValueError("degenerate landmarks: the points lie on one line")
    r2 = row2 / norm2
    rot = np.stack([r1, r2, np.cross(r1, r2)])
    return angles_from_matrix(rot)


class PoseDiversity:
    """Streaming pose-diverse selection: accept a pose only if it differs from all kept ones.

    ``min_step`` degrees in (yaw, pitch) separate any two kept shots, so shots cover a range of
    poses instead of repeating one.
    """

    def __init__(self, min_step: float, kept: Sequence[Pose] = ()) -> None:
        if min_step < 0:
            raise ValueError(f"min_step={min_step} must be >= 0")
        self.min_step = float(min_step)
        self.kept: list[Pose] = list(kept)

    def nearest(self, pose: Pose) -> float:
        """Distance from ``pose`` to the nearest kept pose (``inf`` when none is kept)."""
        return min((pose.distance(k) for k in self.kept), default=math.inf)

    def is_novel(self, pose: Pose) -> bool:
        """True when ``pose`` is at least ``min_step`` away from every kept pose."""
        return self.nearest(pose) >= self.min_step

    def add(self, pose: Pose) -> None:
        """Record a kept shot's pose."""
        self.kept.append(pose)

    def relax(self, floor: float) -> float | None:
        """Halve the step, not below ``floor``; the new step, or ``None`` if already there."""
        if self.min_step <= floor:
            return None
        self.min_step = max(float(floor), self.min_step / 2.0)
        return self.min_step

    def offer(self, pose: Pose) -> bool:
        """Keep ``pose`` if it is novel; return whether it was kept."""
        if self.is_novel(pose):
            self.add(pose)
            return True
        return False


def select_diverse(poses: Sequence[Pose], count: int) -> list[int]:
    """Indices of ``count`` poses spread out by farthest-point sampling (offline selection).

    Starts from the pose nearest the mean (the most frontal), then repeatedly adds the pose
    farthest from everything chosen. Returned in ascending index order.
    """
    if count <= 0 or not poses:
        return []
    yp = np.array([[p.yaw, p.pitch] for p in poses], dtype=np.float64)
    first = int(np.argmin(np.linalg.norm(yp - yp.mean(axis=0), axis=1)))
    chosen = [first]
    nearest = np.linalg.norm(yp - yp[first], axis=1)
    nearest[first] = -np.inf
    while len(chosen) < min(count, len(poses)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(yp - yp[nxt], axis=1))
        nearest[nxt] = -np.inf
    return sorted(chosen)


@dataclass(frozen=True)
class PoseSpread:
    """How widely a set of shots covers head poses (degrees)."""

    count: int
    yaw_std: float
    pitch_std: float
    yaw_range: float
    pitch_range: float
    mean_nearest: float  # mean distance from each pose to its nearest other pose

    def __str__(self) -> str:
        return (
            f"n={self.count} yaw std {self.yaw_std:.1f}° range {self.yaw_range:.1f}°, "
            f"pitch std {self.pitch_std:.1f}° range {self.pitch_range:.1f}°, "
            f"mean nearest-neighbour {self.mean_nearest:.1f}°"
        )


def pose_spread(poses: Sequence[Pose]) -> PoseSpread:
    """Spread statistics of ``poses`` (zeros for fewer than two)."""
    if len(poses) < 2:
        return PoseSpread(len(poses), 0.0, 0.0, 0.0, 0.0, 0.0)
    yp = np.array([[p.yaw, p.pitch] for p in poses], dtype=np.float64)
    dists = np.linalg.norm(yp[:, None, :] - yp[None, :, :], axis=2)
    np.fill_diagonal(dists, np.inf)
    return PoseSpread(
        count=len(poses),
        yaw_std=float(yp[:, 0].std()),
        pitch_std=float(yp[:, 1].std()),
        yaw_range=float(np.ptp(yp[:, 0])),
        pitch_range=float(np.ptp(yp[:, 1])),
        mean_nearest=float(dists.min(axis=1).mean()),
    )


# --------------------------------------------------------------------------- guidance
#: How far the guide asks the head to turn from where it started, in degrees: comfortable
#: turns that MTCNN's landmarks still follow well (a frontal face gives way beyond ~30°).
GUIDE_YAW = 20.0
GUIDE_PITCH = 12.0
#: A target counts as reached within this many degrees short of it, per axis (for "left": a
#: yaw at least GUIDE_YAW - GUIDE_TOLERANCE to the left of the start; "centre": within it).
GUIDE_TOLERANCE = 3.0


@dataclass(frozen=True)
class PoseTarget:
    """A pose to lead the person to, as an offset from their starting pose (degrees)."""

    name: str  # "centre", "left", "up-left", ... (the person's own left)
    yaw: float
    pitch: float

    @property
    def hint(self) -> str:
        """The hint from the starting pose, e.g. ``"turn your head slightly up and left"``."""
        return self.hint_from(0.0, 0.0, 0.0)

    def missing(self, yaw: float, pitch: float, tolerance: float) -> list[str]:
        """The directions still to turn from offset (``yaw``, ``pitch``): ``["up", "left"]``.

        An axis of the target is done once the head is at most ``tolerance`` short of it in
        its direction (going further counts). Empty when the target is reached.
        """
        words = []
        for want, got, positive, negative in (
            (self.pitch, pitch, "up", "down"),
            (self.yaw, yaw, "left", "right"),
        ):
            if want and math.copysign(1.0, want) * got < abs(want) - tolerance:
                words.append(positive if want > 0 else negative)
        return words

    def reached(self, yaw: float, pitch: float, tolerance: float) -> bool:
        """Whether offset (``yaw``, ``pitch``) from the start has reached this target.

        The centre is reached within ``tolerance`` on both axes; any other target once
        :meth:`missing` is empty.
        """
        if self.yaw == 0.0 and self.pitch == 0.0:
            return abs(yaw) <= tolerance and abs(pitch) <= tolerance
        return not self.missing(yaw, pitch, tolerance)

    def hint_from(self, yaw: float, pitch: float, tolerance: float) -> str:
        """What to tell a person at offset (``yaw``, ``pitch``): only the turns still needed
        (a head already high enough for "up-left" is told "left"); ``""`` when reached."""
        if self.yaw == 0.0 and self.pitch == 0.0:
            return "" if self.reached(yaw, pitch, tolerance) else "look straight at the camera"
        words = self.missing(yaw, pitch, tolerance)
        return f"turn your head slightly {' and '.join(words)}" if words else ""


GUIDE_TARGETS: tuple[PoseTarget, ...] = (
    PoseTarget("centre", 0.0, 0.0),
    PoseTarget("left", GUIDE_YAW, 0.0),
    PoseTarget("right", -GUIDE_YAW, 0.0),
    PoseTarget("up", 0.0, GUIDE_PITCH),
    PoseTarget("down", 0.0, -GUIDE_PITCH),
    PoseTarget("up-left", 0.8 * GUIDE_YAW, 0.8 * GUIDE_PITCH),
    PoseTarget("up-right", -0.8 * GUIDE_YAW, 0.8 * GUIDE_PITCH),
    PoseTarget("down-left", 0.8 * GUIDE_YAW, -0.8 * GUIDE_PITCH),
    PoseTarget("down-right", -0.8 * GUIDE_YAW, -0.8 * GUIDE_PITCH),
)


#: Each round through the targets turns by this share of the full angles: the second and
#: third rounds fill in the poses between the centre and the first round's.
GUIDE_ROUNDS = (1.0, 0.5, 0.75)


class PoseGuide:
    """Leads the head through :data:`GUIDE_TARGETS`, relative to the first pose it sees.

    :meth:`observe` each good frame's pose: once the current target is reached the guide moves
    on to the next one; after the last it starts a new round, with the angles scaled by the
    next entry of :data:`GUIDE_ROUNDS`. :meth:`advance` moves on without reaching the target
    (the capture session does so when the person seems stuck).
    """

    def __init__(
        self,
        targets: Sequence[PoseTarget] = GUIDE_TARGETS,
        tolerance: float = GUIDE_TOLERANCE,
    ) -> None:
        if not targets:
            raise ValueError("a pose guide needs at least one target")
        self.targets = tuple(targets)
        self.tolerance = float(tolerance)
        self.index = 0
        self.round = 0
        self.reference: Pose | None = None  # where the head started: the centre

    @property
    def target(self) -> PoseTarget:
        """The pose the person is asked for now (scaled for this round)."""
        base = self.targets[self.index]
        share = GUIDE_ROUNDS[self.round % len(GUIDE_ROUNDS)]
        return PoseTarget(base.name, base.yaw * share, base.pitch * share)

    def hint(self, pose: Pose | None = None) -> str:
        """What to tell the person about the current target, seen from ``pose``."""
        if pose is None or self.reference is None:
            return self.target.hint
        return self.target.hint_from(*self.offset(pose), self.tolerance) or self.target.hint

    def offset(self, pose: Pose) -> tuple[float, float]:
        """(yaw, pitch) of ``pose`` relative to the starting pose (zeros before the first)."""
        if self.reference is None:
            return (0.0, 0.0)
        return (pose.yaw - self.reference.yaw, pose.pitch - self.reference.pitch)

    def observe(self, pose: Pose) -> bool:
        """Note a good frame's pose; move to the next target if this one is reached."""
        if self.reference is None:
            self.reference = pose
        if self.target.reached(*self.offset(pose), self.tolerance):
            self.advance()
            return True
        return False

    def advance(self) -> PoseTarget:
        """Move on to the next target (the next round after the last) and return it."""
        self.index += 1
        if self.index == len(self.targets):
            self.index = 0
            self.round += 1
        return self.target
