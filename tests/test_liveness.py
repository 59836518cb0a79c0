"""Liveness on synthetic inputs: the border cue, the pose proxies, the passive verdict, the
challenge actions, and the gate in the recogniser's pipeline (fakes of ``test_pipeline``).

Pictures are drawn here: a bright face patch with its five landmarks, optionally framed by
a device's border (a dark band with a lit screen inside) or standing next to one door post.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import pytest
from test_pipeline import GALLERY, LABELS, FakeDetector, FakeEmbedder, clock, synthetic_config

from common.config import ConfigError, load_config
from common.sources import FolderSource, Frame, LiveSource, VideoFileSource
from liveness import cues
from liveness.challenge import ACTIONS, FAILED, PASSED, PENDING, TURN, Challenge
from liveness.cues import Enclosure, enclosure, pose
from liveness.passive import (
    BORDER_SHARE,
    LIVE,
    MIN_LOOKS,
    SPOOF,
    UNDECIDED,
    WINDOW_SECONDS,
    PassiveLiveness,
)
from preprocess.detect import Face
from recognizer.liveness_gate import ACTION_SPOOF, LivenessGate, build_gates, liveness_mode
from recognizer.pipeline import RecognitionPipeline

H, W = 480, 640
FACE = 100  # face box side in the synthetic frames


def landmarks_for(box, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """Five landmarks in ``box``: eyes at 30%/70% width, 38% height; nose moved by ``yaw``
    (eye spans) and ``pitch`` (eyes-to-mouth heights); mouth at 75% height."""
    x, y, w, h = box
    eyes_y, mouth_y = y + 0.38 * h, y + 0.75 * h
    span = 0.4 * w
    nose = (x + 0.5 * w + yaw * span, eyes_y + (0.5 + pitch) * (mouth_y - eyes_y))
    return np.array(
        [[x + 0.3 * w, eyes_y], [x + 0.7 * w, eyes_y], nose,
         [x + 0.35 * w, mouth_y], [x + 0.65 * w, mouth_y]], np.float32,
    )  # fmt: skip


def rotate(points: np.ndarray, degrees: float, centre) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ((points - centre) @ rot.T + centre).astype(np.float32)


def scene(*, device: float | None = None, door: bool = False, at=(270, 160), roll: float = 0.0,
          seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float, float]]:  # fmt: skip
    """A grey frame: a textured room, a face-coloured patch at ``at`` and, with ``device``,
    a phone around it whose border lies ``device`` face sizes from the face centre."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(120, 12, size=(H, W)), 0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    x, y = at
    box = (float(x), float(y), float(FACE), float(FACE))
    cx, cy = x + FACE / 2, y + FACE / 2
    if device is not None:
        half = device * FACE
        outer = np.array([[cx - half, cy - 1.3 * half], [cx + half, cy - 1.3 * half],
                          [cx + half, cy + 1.3 * half], [cx - half, cy + 1.3 * half]])  # fmt: skip
        outer = rotate(outer, roll, (cx, cy)).astype(np.int32)
        cv2.fillConvexPoly(image, outer, 20)  # the bezel
        a, b = half - 12, 1.3 * half - 12
        screen = np.array([[cx - a, cy - b], [cx + a, cy - b], [cx + a, cy + b], [cx - a, cy + b]])
        inner = rotate(screen, roll, (cx, cy)).astype(np.int32)
        cv2.fillConvexPoly(image, inner, 190)  # the lit screen
    if door:  # one door post beside the head: a single straight edge
        cv2.rectangle(image, (int(cx + 1.2 * FACE), 0), (int(cx + 1.5 * FACE), H - 1), 60, -1)
    corners = np.array([[x, y], [x + FACE, y], [x + FACE, y + FACE], [x, y + FACE]], np.float64)
    patch = rotate(corners, roll, (cx, cy)).astype(np.int32)
    cv2.fillConvexPoly(image, patch, 160)
    return image, box


# --------------------------------------------------------------------------- cues
def test_a_device_border_around_the_face_is_found_on_every_side():
    grey, box = scene(device=1.1)
    found = enclosure(grey, box)
    assert found.sides == (True, True, True, True)
    assert all(0.55 <= o <= 2.5 for o in found.offsets)


def test_a_plain_room_or_one_door_post_is_not_a_border():
    grey, box = scene()
    assert enclosure(grey, box).count == 0
    grey, box = scene(door=True)
    found = enclosure(grey, box)
    assert found.count == 1 and found.sides[1]  # the post, on the right only


def test_a_border_beyond_reach_is_not_the_faces_frame():
    grey, box = scene(device=2.2)  # the top and bottom edges are 2.86 face sizes away
    found = enclosure(grey, box, reach=2.5)
    assert found.sides == (True, True, False, False)
    assert enclosure(grey, box, reach=1.5).count == 0


def test_a_tilted_device_is_found_along_the_faces_own_axes():
    grey, box = scene(device=1.1, roll=25.0)
    lm = rotate(landmarks_for(box), 25.0, (box[0] + FACE / 2, box[1] + FACE / 2))
    assert enclosure(grey, box, cues.roll_degrees(lm)).count == 4
    assert enclosure(grey, box, 0.0).count < 2  # 25° off the axes, the edges do not count


def test_pose_proxies_follow_the_nose_and_ignore_roll():
    box = (100.0, 100.0, 100.0, 100.0)
    yaw, pitch = pose(landmarks_for(box))
    assert yaw == pytest.approx(0.0, abs=1e-6) and pitch == pytest.approx(0.5, abs=1e-6)
    yaw, pitch = pose(landmarks_for(box, yaw=0.25, pitch=-0.1))
    assert yaw == pytest.approx(0.25, abs=1e-6) and pitch == pytest.approx(0.4, abs=1e-6)
    rolled = rotate(landmarks_for(box, yaw=0.25), 30.0, (150, 150))
    assert pose(rolled) == pytest.approx((0.25, 0.5), abs=1e-6)


# --------------------------------------------------------------------------- passive
def looks(counts, fps: float = 10.0):
    """Feed border counts (one per look, ``fps`` looks a second) to a fresh analyser."""
    passive = PassiveLiveness()
    out = []
    for i, count in enumerate(counts):
        sides = tuple(k < count for k in range(4))
        out.append(passive.add(Enclosure(sides, count, (1.0,) * 4), 100.0 + i / fps))
    return out


def test_a_face_without_border_is_live_after_the_window_and_not_before():
    seen = looks([0] * 12)
    verdicts = [s.verdict for s in seen]
    first_live = verdicts.index(LIVE)
    assert seen[first_live].seconds >= WINDOW_SECONDS > seen[first_live - 1].seconds
    assert set(verdicts[:first_live]) == {UNDECIDED}
    assert seen[-1].decided_by == ("no border",) and seen[-1].score == 0.0
    assert seen[first_live].decided_at == pytest.approx(WINDOW_SECONDS)


def test_a_face_framed_in_enough_looks_is_a_spoof_and_stays_one():
    seen = looks([2, 0, 2, 0] + [0] * 20)  # half of the first looks framed
    assert seen[MIN_LOOKS - 2].verdict == UNDECIDED  # too few looks to judge
    assert seen[MIN_LOOKS - 1].verdict == SPOOF and seen[MIN_LOOKS - 1].decided_by == ("border",)
    assert all(s.verdict == SPOOF for s in seen[MIN_LOOKS:])  # clean looks do not undo it


def test_borders_in_a_few_looks_do_not_make_a_picture():
    counts = [0] * MIN_LOOKS + [2 if i % 3 == 0 else 0 for i in range(30)]  # a third framed
    seen = looks(counts)
    assert max(s.score for s in seen) < BORDER_SHARE
    assert all(s.verdict != SPOOF for s in seen)
    assert looks([0] * 10 + [2] * 10)[-1].verdict == SPOOF  # live, then a picture after all


def test_two_looks_with_three_sides_are_enough():
    seen = looks([3, 0, 0, 3] + [0] * 30)
    assert seen[3].verdict == SPOOF


# --------------------------------------------------------------------------- challenge
class Fixed(random.Random):
    """A random source that always picks ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__(0)
        self.action = action

    def choice(self, seq):
        assert self.action in seq
        return self.action


def live_assessment(n: int = 10):
    return looks([0] * n)[-1]


BOX = (100.0, 100.0, 100.0, 100.0)


@pytest.mark.parametrize(
    ("action", "moved"),
    [("turn_left", {"yaw": TURN + 0.02}), ("turn_right", {"yaw": -TURN - 0.02}),
     ("turn_left", {"yaw": TURN + 0.02, "pitch": 0.1})],
)  # fmt: skip
def test_the_asked_movement_passes(action, moved):
    challenge = Challenge(5.0, Fixed(action))
    status = challenge.observe(0.0, landmarks_for(BOX), live_assessment())
    assert status.state == PENDING and status.prompt == ACTIONS[action]
    assert challenge.observe(0.5, landmarks_for(BOX), live_assessment()).state == PENDING
    assert challenge.observe(1.0, landmarks_for(BOX, **moved), live_assessment()).state == PENDING
    assert challenge.observe(1.3, landmarks_for(BOX), live_assessment()).state == PASSED  # back


@pytest.mark.parametrize(
    ("action", "moved"),
    [("turn_left", {"yaw": -0.3}), ("turn_right", {"yaw": 0.3}), ("turn_left", {"pitch": 0.3}),
     ("turn_left", {"yaw": TURN - 0.03})],
)  # fmt: skip
def test_another_or_a_smaller_movement_does_not_pass_and_times_out(action, moved):
    challenge = Challenge(2.0, Fixed(action))
    challenge.observe(0.0, landmarks_for(BOX), live_assessment())
    for t in (0.5, 1.0, 1.5, 2.0):
        face = landmarks_for(BOX, **moved) if t < 1.5 else landmarks_for(BOX)  # and back
        assert challenge.observe(t, face, live_assessment()).state == PENDING
    status = challenge.observe(2.1, landmarks_for(BOX, **moved), live_assessment())
    assert status.state == FAILED and "try again" in status.reason


def test_a_timed_out_face_gets_a_new_action_after_a_pause():
    rng = Fixed("turn_right")
    challenge = Challenge(1.0, rng)
    challenge.observe(0.0, landmarks_for(BOX), live_assessment())
    assert challenge.observe(1.2, landmarks_for(BOX), live_assessment()).state == FAILED
    assert challenge.observe(2.5, landmarks_for(BOX), live_assessment()).state == FAILED
    rng.action = "turn_left"
    status = challenge.observe(3.3, landmarks_for(BOX), live_assessment())  # a new baseline
    assert status.state == PENDING and status.action == "turn_left"
    assert challenge.observe(3.6, landmarks_for(BOX, yaw=0.3), live_assessment()).state == PENDING
    assert challenge.observe(3.9, landmarks_for(BOX), live_assessment()).state == PASSED


def test_a_picture_fails_the_challenge_even_when_it_moves_as_asked():
    framed = looks([2] * 10)[-1]
    challenge = Challenge(5.0, Fixed("turn_left"))
    challenge.observe(0.0, landmarks_for(BOX), framed)
    status = challenge.observe(0.5, landmarks_for(BOX, yaw=0.3), framed)
    assert status.state == FAILED and status.reason == "photo or screen?"


def test_the_movement_counts_only_once_the_passive_check_has_seen_enough():
    early = looks([0] * (MIN_LOOKS - 1))[-1]
    challenge = Challenge(5.0, Fixed("turn_left"))
    challenge.observe(0.0, landmarks_for(BOX), early)
    assert challenge.observe(0.2, landmarks_for(BOX, yaw=0.3), early).state == PENDING
    assert challenge.observe(0.3, landmarks_for(BOX), early).state == PENDING  # back, too early
    assert challenge.observe(0.4, landmarks_for(BOX), live_assessment()).state == PASSED


# --------------------------------------------------------------------------- the gate
def frame_of(grey: np.ndarray, index: int, fps: float = 10.0) -> Frame:
    return Frame(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), index, index / fps, "synthetic")


def test_gate_refuses_a_framed_face_as_spoof_and_passes_a_bare_one():
    gate = LivenessGate("passive")
    framed, framed_box = scene(device=1.1)
    bare, bare_box = scene(seed=1)
    framed_face = Face(framed_box, 0.99, landmarks_for(framed_box))
    bare_face = Face(bare_box, 0.99, landmarks_for(bare_box))
    verdicts_framed = [gate.observe(1, frame_of(framed, i), framed_face) for i in range(12)]
    verdicts_bare = [gate.observe(2, frame_of(bare, i), bare_face) for i in range(12)]
    assert verdicts_framed[-1].failed and verdicts_framed[-1].action == ACTION_SPOOF
    assert verdicts_framed[-1].reason == "photo or screen?"
    assert verdicts_bare[0].pending and verdicts_bare[-1].passed


def test_two_faces_in_one_frame_are_judged_apart():
    """A photo held up next to a live face: the photo is refused, the person is not, and
    neither borrows the other's verdict."""
    grey, framed_box = scene(device=0.9, at=(60, 160))
    bare_box = (470.0, 160.0, float(FACE), float(FACE))
    cv2.rectangle(grey, (470, 160), (470 + FACE, 160 + FACE), 160, -1)
    gate = LivenessGate("passive")
    for i in range(12):
        frame = frame_of(grey, i)
        photo = gate.observe(7, frame, Face(framed_box, 0.99, landmarks_for(framed_box)))
        person = gate.observe(8, frame, Face(bare_box, 0.99, landmarks_for(bare_box)))
    assert photo.failed and person.passed
    gate.forget(7)
    assert gate.assessment(7) is None and gate.assessment(8) is not None


def test_challenge_mode_prompts_and_passes_on_the_movement():
    gate = LivenessGate("challenge", challenge_seconds=5.0, rng=Fixed("turn_right"))
    grey, box = scene()
    first = gate.observe(1, frame_of(grey, 0), Face(box, 0.99, landmarks_for(box)))
    assert first.pending and first.reason == ACTIONS["turn_right"]
    for i in range(1, 6):
        gate.observe(1, frame_of(grey, i), Face(box, 0.99, landmarks_for(box)))
    turned = gate.observe(1, frame_of(grey, 6), Face(box, 0.99, landmarks_for(box, yaw=-0.3)))
    assert turned.pending
    assert gate.observe(1, frame_of(grey, 7), Face(box, 0.99, landmarks_for(box))).passed


@pytest.mark.parametrize(
    ("setting", "source", "expected"),
    [("auto", VideoFileSource, "off"), ("auto", FolderSource, "off"),
     ("auto", LiveSource, "passive"), ("passive", VideoFileSource, "passive"),
     ("challenge", LiveSource, "challenge"), ("off", LiveSource, "off")],
)  # fmt: skip
def test_the_mode_follows_the_setting_and_the_source(tmp_path, setting, source, expected):
    cfg = load_config(tmp_path, overrides={"liveness": setting}, env={})
    fake = source.__new__(source)  # only its kind matters
    assert liveness_mode(cfg, fake) == expected
    gates = build_gates(cfg, fake, headless=True)
    assert [g.mode for g in gates] == ([] if expected == "off" else [expected])


def test_the_setting_is_checked_and_read_from_the_environment(tmp_path):
    with pytest.raises(ConfigError, match="liveness"):
        load_config(tmp_path, overrides={"liveness": "strict"}, env={})
    assert load_config(tmp_path, env={"ATTENDANCE_LIVENESS": "passive"}).liveness == "passive"
    assert load_config(tmp_path, env={}).liveness == "auto"


# --------------------------------------------------------------------------- in the pipeline
def framed_frames(n: int, device: float | None):
    """Ada's red rectangle (what FakeDetector finds), inside a drawn phone or not."""
    out = []
    for i in range(n):
        grey, _ = scene(device=device, at=(200, 150), seed=i)
        image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        image[150 : 150 + FACE, 200 : 200 + FACE] = (40, 40, 220)  # BGR of Ada's red
        out.append(Frame(image, i, i / 10.0, "synthetic"))
    return out


class Recorder:
    def __init__(self) -> None:
        self.marks: list[str] = []
        self.logged: list[tuple[str, str]] = []

    def mark_present(self, name, when, distance, source):
        self.marks.append(name)
        return None

    def log_event(self, name, when, distance, source, action):
        self.logged.append((name, action))
        return True


@pytest.mark.parametrize(("device", "marked"), [(1.1, False), (None, True)])
def test_pipeline_records_a_live_face_and_logs_a_framed_one_as_spoof(tmp_path, device, marked):
    cfg = synthetic_config(tmp_path)
    recorder = Recorder()
    pipe = RecognitionPipeline(cfg, FakeDetector(), FakeEmbedder(), LABELS, GALLERY, recorder,
                               clock=clock(), gates=[LivenessGate("passive")])  # fmt: skip
    for frame in framed_frames(25, device):
        result = pipe.process(frame)
    if marked:
        assert recorder.marks == ["Ada"] and recorder.logged == []
        assert result.faces[0].display_status == "confirmed"
    else:
        assert recorder.marks == [] and recorder.logged == [("Ada", ACTION_SPOOF)]
        assert result.faces[0].display_status == "refused"
        assert pipe.marked == []


def test_degenerate_landmarks_have_no_pose_and_do_not_fake_a_turn():
    box = (100.0, 100.0, 100.0, 100.0)
    squashed = landmarks_for(box)
    squashed[1] = squashed[0] + [0.5, 0.0]  # the eyes (nearly) on top of each other
    assert all(math.isnan(v) for v in pose(squashed))
    challenge = Challenge(5.0, Fixed("turn_left"))
    challenge.observe(0.0, landmarks_for(box), live_assessment())
    assert challenge.observe(0.3, squashed, live_assessment()).state == PENDING
    assert challenge.observe(0.6, landmarks_for(box), live_assessment()).state == PENDING


def test_a_face_too_small_to_search_finds_no_border():
    grey, _ = scene(device=1.1)
    noise = np.random.default_rng(0).integers(0, 255, size=grey.shape, dtype=np.uint8)
    assert enclosure(noise, (100.0, 100.0, 0.0, 0.0)).count == 0
    assert enclosure(grey, (300.0, 200.0, 12.0, 12.0)).count == 0


class Waits:
    """A gate that stays undecided for its first ``n`` looks of each track, then passes;
    remembers which tracks it was told to forget."""

    name = "waits"

    def __init__(self, n: int) -> None:
        self.n, self.looks, self.forgotten = n, {}, []

    def observe(self, track_id, frame, face):
        from recognizer.gates import Verdict

        self.looks[track_id] = self.looks.get(track_id, 0) + 1
        return Verdict.allow() if self.looks[track_id] > self.n else Verdict.wait("turn")

    def forget(self, track_id):
        self.forgotten.append(track_id)
        self.looks.pop(track_id, None)


def person_frames(names: list[str], start: int = 0) -> list[Frame]:
    """One synthetic frame per name: that person's colour patch in the same place."""
    from test_pipeline import make_frame

    return [make_frame(start + i, {name: (100, 60)}) for i, name in enumerate(names)]


def test_a_look_that_names_nobody_keeps_the_gates_another_person_resets_them(tmp_path):
    """Ada turns her head mid-challenge and one look is not recognised: her gate keeps its
    looks and she is recorded once it passes. Bob stepping into her box resets it."""
    cfg = synthetic_config(tmp_path).replace(track_jump=2.0, refresh_seconds=0.0)
    gate = Waits(12)
    recorder = Recorder()
    pipe = RecognitionPipeline(cfg, FakeDetector(), FakeEmbedder(), LABELS, GALLERY, recorder,
                               clock=clock(), gates=[gate])  # fmt: skip
    for frame in person_frames(["Ada"] * 6 + ["Zed"] + ["Ada"] * 8):  # Zed: not recognised
        pipe.process(frame)
    assert gate.forgotten == [] and recorder.marks == ["Ada"]
    recorder.marks.clear()
    for frame in person_frames(["Bob"] * 10, start=15):
        pipe.process(frame)
    assert gate.forgotten == [1]  # Bob is judged afresh ...
    assert recorder.marks == []  # ... and waits for 12 looks of his own


@pytest.mark.parametrize(
    ("sides", "offsets", "framing"),
    [((True, True, False, False), (2.2, 2.2, 9, 9), True),  # opposite sides, however far
     ((False, False, True, True), (9, 9, 2.4, 2.4), True),
     ((False, True, True, False), (9, 2.0, 1.9, 9), False),  # a corner of the room behind
     ((False, True, True, False), (9, 1.2, 1.4, 9), True),  # a corner close around the face
     ((True, False, True, True), (2.3, 9, 2.3, 2.3), True),  # three sides
     ((False, True, False, False), (9, 0.7, 9, 9), False)],  # one door post
)  # fmt: skip
def test_which_edges_frame_a_face(sides, offsets, framing):
    found = Enclosure(
        sides, sum(sides), tuple(o if s else math.nan for s, o in zip(sides, offsets, strict=True))
    )
    assert found.frames_face is framing


def test_challenge_timeout_is_refused_and_a_picture_is_a_spoof():
    from recognizer.gates import ACTION_REFUSED

    still = LivenessGate("challenge", challenge_seconds=1.0, rng=Fixed("turn_left"))
    grey, box = scene()
    verdicts = [still.observe(1, frame_of(grey, i), Face(box, 0.99, landmarks_for(box)))
                for i in range(15)]  # fmt: skip
    failed = next(v for v in verdicts if v.failed)
    assert failed.action == ACTION_REFUSED and "try again" in failed.reason
    framed, fbox = scene(device=1.1)
    gate = LivenessGate("challenge", challenge_seconds=5.0, rng=Fixed("turn_left"))
    verdicts = [gate.observe(2, frame_of(framed, i), Face(fbox, 0.99, landmarks_for(fbox)))
                for i in range(6)]  # fmt: skip
    assert verdicts[-1].failed and verdicts[-1].action == ACTION_SPOOF


def test_auto_liveness_is_off_for_a_file_played_as_a_camera(tmp_path):
    import cv2

    from common.sources import replay_source
    from recognizer.liveness_gate import liveness_mode

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    cfg = synthetic_config(tmp_path)
    with replay_source(path) as source:
        assert liveness_mode(cfg, source) == "off"
        assert liveness_mode(cfg.replace(liveness="passive"), source) == "passive"
