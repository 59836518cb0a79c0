"""Detection beside the loop: the worker, the detection scale and regions, optical flow, and
the live pipeline on synthetic frames (fake detector and embedder of test_pipeline)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_pipeline import (
    GALLERY,
    LABELS,
    PALETTE,
    FakeDetector,
    FakeEmbedder,
    FakeRecorder,
    clock,
    synthetic_config,
)

from common.sources import Frame
from preprocess.align import landmark_template
from preprocess.detect import Face
from preprocess.regions import (
    DETECT_FACE_PX,
    REGION_PX,
    DetectionRequest,
    detect_regions,
    detection_scale,
    large_enough,
    region_around,
    run_request,
    suppress_duplicates,
)
from recognizer.detect_worker import DetectionWorker, WorkerStopped
from recognizer.live_detection import AsyncDetection
from recognizer.motion import face_points, follow, grey
from recognizer.pipeline import RecognitionPipeline

W, H = 320, 240
TEXTURE = np.random.default_rng(3).integers(-20, 21, (80, 60, 3))


def textured_frame(index: int, people: dict[str, tuple[int, int]], fps: float = 10.0) -> Frame:
    """A frame with a 60x80 rectangle per person at (x, y), its colour with a fixed texture
    (so optical flow can follow it), on a black background."""
    image = np.zeros((H, W, 3), np.uint8)
    for name, (x, y) in people.items():
        r, g, b = PALETTE[name]
        patch = np.clip(np.array((b, g, r)) + TEXTURE, 0, 255).astype(np.uint8)
        image[y : y + 80, x : x + 60] = patch
    return Frame(image, index, index / fps, "synthetic")


def face_at(x: float, y: float, w: float = 60.0, h: float = 80.0, score: float = 0.99) -> Face:
    marks = (landmark_template(160) / 160.0 * [w, h] + [x, y]).astype(np.float32)
    return Face((x, y, w, h), score, marks)


# --------------------------------------------------------------------------- the worker
class Gate:
    """A detect function that blocks until released; records what it detected."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.seen: list[object] = []

    def __call__(self, job: object) -> list[object]:
        self.started.set()
        self.release.wait(5)
        self.seen.append(job)
        return [job]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_worker_replaces_a_waiting_frame_instead_of_queueing_it():
    gate = Gate()
    with DetectionWorker(gate) as worker:
        assert worker.submit("cam", 1)
        gate.started.wait(5)
        assert worker.busy("cam")
        assert not worker.submit("cam", 2)  # its frame is being detected: collect it first
        assert worker.submit("other", "a")
        for frame in range(3, 50):
            assert worker.submit("other", f"x{frame}")  # a newer frame replaces the waiting one
            assert worker.waiting() == 1
        assert worker.replaced == 47
        gate.release.set()
        wait_for(lambda: worker.collect("cam") is not None or not worker.busy("cam"))
        wait_for(lambda: worker.rounds == 2)
        done = worker.collect("other")
        assert done is not None and done.job == "x49" and done.faces == ["x49"]
        assert gate.seen == [1, "x49"]  # the replaced frames were never detected
        assert worker.collect("other") is None  # once


def test_worker_serves_cameras_in_turn():
    order: list[str] = []
    release = threading.Event()

    def detect(job):
        release.wait(5)
        order.append(job)
        return []

    with DetectionWorker(detect) as worker:
        worker.submit("a", "a1")
        time.sleep(0.05)  # a1 is being detected
        worker.submit("b", "b1")
        worker.submit("c", "c1")
        worker.submit("b", "b2")  # replaces b1, keeps b's turn (before c)
        release.set()
        wait_for(lambda: worker.rounds == 3)
    assert order == ["a1", "b2", "c1"]


def test_worker_closes_cleanly_while_detecting_and_refuses_new_frames():
    gate = Gate()
    worker = DetectionWorker(gate)
    worker.submit("cam", 1)
    gate.started.wait(5)
    worker.submit("other", 2)
    threading.Timer(0.1, gate.release.set).start()
    worker.close()
    assert not worker.alive  # the detection in progress finished, then the thread ended
    assert gate.seen == [1]  # the waiting frame was dropped
    with pytest.raises(WorkerStopped):
        worker.submit("cam", 3)
    worker.close()  # idempotent


def test_worker_error_is_raised_in_the_loop():
    def detect(job):
        raise RuntimeError("MTCNN broke")

    worker = DetectionWorker(detect)
    worker.submit("cam", 1)
    wait_for(lambda: not worker.alive)
    with pytest.raises(RuntimeError, match="MTCNN broke"):
        worker.collect("cam")
    worker.close()


# --------------------------------------------------------------------------- scale, regions
def test_detection_scale_follows_the_smallest_face_wanted():
    assert detection_scale(DETECT_FACE_PX) == 1.0
    assert detection_scale(DETECT_FACE_PX / 2) == 1.0  # never enlarged
    assert detection_scale(40) == pytest.approx(DETECT_FACE_PX / 40)
    assert detection_scale(80) == pytest.approx(DETECT_FACE_PX / 80)
    with pytest.raises(ValueError):
        detection_scale(0)


def test_small_faces_are_dropped_with_a_little_tolerance():
    faces = [face_at(0, 0, 30, 30), face_at(0, 0, 35, 40), face_at(0, 0, 50, 60)]
    assert [f.side for f in large_enough(faces, 40)] == [50, 35]
    assert [f.side for f in large_enough(faces, 40, 0.7)] == [50, 35, 30]


def test_regions_are_cut_resized_and_mapped_back():
    image = np.zeros((240, 320, 3), np.uint8)
    image[100:180, 250:310] = PALETTE["Ada"][::-1]  # BGR
    image[20:100, 10:70] = PALETTE["Bob"][::-1]
    detector = FakeDetector()
    region = region_around((250, 100, 60, 80))  # crosses the right border: padded black
    assert region[2] == region[3] == round(2.2 * 80)
    faces = detect_regions(detector, image, [region])
    assert detector.shapes == [(REGION_PX, REGION_PX, 3)]
    assert len(faces) == 1
    assert faces[0].box == pytest.approx((250, 100, 60, 80), abs=3)
    # overlapping regions find Ada twice: one face kept
    both = detect_regions(FakeDetector(), image, [region, region_around((252, 102, 60, 80))])
    assert len(both) == 1


def test_a_detector_with_detect_batch_sees_all_regions_in_one_call():
    calls: list[int] = []

    class Batched(FakeDetector):
        def detect_batch(self, images):
            calls.append(len(images))
            return [self.detect(im) for im in images]

    image = np.zeros((240, 320, 3), np.uint8)
    image[100:180, 200:260] = PALETTE["Ada"][::-1]
    image[20:100, 10:70] = PALETTE["Bob"][::-1]
    regions = [region_around((200, 100, 60, 80)), region_around((10, 20, 60, 80))]
    faces = detect_regions(Batched(), image, regions)
    assert calls == [2] and len(faces) == 2


def test_duplicates_keep_the_most_confident():
    a, b, c = face_at(10, 10, score=0.9), face_at(12, 11, score=0.99), face_at(200, 10)
    kept = suppress_duplicates([a, b, c])
    assert b in kept and c in kept and a not in kept


def test_a_request_scans_the_frame_or_only_its_regions():
    image = np.zeros((240, 320, 3), np.uint8)
    image[100:180, 200:260] = PALETTE["Ada"][::-1]
    image[20:100, 10:70] = PALETTE["Bob"][::-1]
    detector = FakeDetector()
    full = run_request(detector, DetectionRequest(image, 0.5), 40)
    assert len(full) == 2 and detector.shapes == [(120, 160, 3)]
    only_ada = run_request(
        detector, DetectionRequest(image, 0.5, (region_around((200, 100, 60, 80)),)), 40
    )
    assert len(only_ada) == 1 and only_ada[0].box[0] == pytest.approx(200, abs=3)


# --------------------------------------------------------------------------- optical flow
def test_flow_follows_a_textured_face_and_not_a_flat_one():
    before = textured_frame(0, {"Ada": (100, 60)}).image
    after = textured_frame(1, {"Ada": (106, 57)}).image
    points = face_points(face_at(100, 60).landmarks, (100, 60, 60, 80))
    (shift,) = follow(grey(before), grey(after), [points])
    assert shift is not None
    assert (shift.dx, shift.dy) == pytest.approx((6, -3), abs=0.5)
    flat = np.zeros((H, W, 3), np.uint8)
    assert follow(grey(flat), grey(flat.copy()), [points]) == [None]
    assert follow(grey(before), grey(after), []) == []


def test_flow_on_a_wide_frame_runs_shrunk_and_answers_in_frame_pixels():
    rng = np.random.default_rng(5)
    texture = rng.integers(0, 255, (540, 960, 3), dtype=np.uint8)
    big = np.kron(texture, np.ones((2, 2, 1), np.uint8))  # 1920 wide, smooth at half size
    moved = np.roll(big, (4, 10), axis=(0, 1))
    before, after = grey(big), grey(moved)
    assert before.scale == 0.5 and before.shape == (540, 960)
    (shift,) = follow(before, after, [np.array([[900.0, 500.0], [1000.0, 520.0]])])
    assert shift is not None and (shift.dx, shift.dy) == pytest.approx((10, 4), abs=0.6)


# --------------------------------------------------------------------------- live pipeline
class SlowDetector(FakeDetector):
    """The fake detector, taking ``delay`` seconds a call, on a background thread."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.threads: set[str] = set()

    def detect(self, rgb):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return super().detect(rgb)


def live_pipeline(cfg, detector, recorder=None):
    live = AsyncDetection(cfg, detector)
    pipe = RecognitionPipeline(cfg, detector, FakeEmbedder(), LABELS, GALLERY,
                               recorder or FakeRecorder(), clock=clock(), live=live)  # fmt: skip
    return pipe, live


def test_live_pipeline_detects_on_the_worker_and_follows_a_walking_face(tmp_path):
    cfg = synthetic_config(tmp_path).replace(detect_every=1, full_scan_seconds=0.0)
    detector = SlowDetector(0.03)
    pipe, live = live_pipeline(cfg, detector)
    results = []
    try:
        for i in range(40):
            frame = textured_frame(i, {"Ada": (40 + 4 * i, 60)})
            results.append(pipe.process(frame))
            time.sleep(0.01)  # a camera's pace: the worker lags a few frames behind
    finally:
        pipe.close()
    assert not live.worker.alive
    assert detector.threads == {"detector"}  # never on the loop's thread
    assert 3 <= live.landed < 40  # rounds landed on some frames only
    assert pipe.marked == ["Ada"]
    (event,) = [e for e in pipe.events if e.recorded]
    # the event names the frame the confirming round detected, which came before the frame
    # the round landed on
    (landed_on,) = [r for r in results if event in r.events]
    assert event.frame_index < landed_on.frame.index and event.source == "synthetic"
    # on frames without a round the box follows the face by optical flow
    coasting = [r for r in results[10:] if not r.detected and r.faces]
    assert coasting
    for r in coasting:
        assert r.faces[0].box[0] == pytest.approx(40 + 4 * r.frame.index, abs=3)


def test_live_pipeline_drops_frames_when_detection_is_slow(tmp_path):
    cfg = synthetic_config(tmp_path).replace(detect_every=1)
    detector = SlowDetector(0.1)
    pipe, live = live_pipeline(cfg, detector)
    waiting = []
    try:
        started = time.monotonic()
        for i in range(60):  # far faster than detection
            pipe.process(textured_frame(i, {"Ada": (100, 60)}))
            waiting.append(live.worker.waiting())
        elapsed = time.monotonic() - started
    finally:
        pipe.close()
    assert max(waiting) <= 1  # one frame waits at most: nothing queues up
    assert live.worker.rounds <= elapsed / 0.1 + 1  # the frames it had no time for: dropped
    assert len(detector.shapes) == live.worker.rounds


def test_whole_frame_scans_come_every_full_scan_seconds_and_regions_between(tmp_path):
    cfg = synthetic_config(tmp_path).replace(detect_every=1, full_scan_seconds=1.0)
    detector = FakeDetector()
    pipe, live = live_pipeline(cfg, detector)
    try:
        for i in range(40):  # 4 s at 10 fps
            pipe.process(textured_frame(i, {"Ada": (100, 60)}))
            time.sleep(0.02)
    finally:
        pipe.close()
    full = [s for s in detector.shapes if s == (H, W, 3)]
    regions = [s for s in detector.shapes if s == (REGION_PX, REGION_PX, 3)]
    assert 3 <= len(full) <= 6 and len(regions) > len(full)
    assert live.full_scans == len(full) or live.full_scans == len(full) - 1


def test_reset_drops_a_round_in_flight(tmp_path):
    cfg = synthetic_config(tmp_path).replace(detect_every=1)
    detector = SlowDetector(0.1)
    pipe, live = live_pipeline(cfg, detector)
    try:
        pipe.process(textured_frame(0, {"Ada": (100, 60)}))  # handed to the worker
        pipe.resume()  # forget the scene
        wait_for(lambda: live.worker.rounds == 1)
        result = pipe.process(textured_frame(1, {}))
        assert not result.detected and result.faces == []
    finally:
        pipe.close()


def test_a_folder_is_never_detected_asynchronously(tmp_path):
    cfg = synthetic_config(tmp_path)
    live = AsyncDetection(cfg, FakeDetector())
    try:
        with pytest.raises(ValueError, match="independent"):
            RecognitionPipeline(cfg, FakeDetector(), FakeEmbedder(), LABELS, GALLERY,
                                FakeRecorder(), independent_frames=True, live=live)  # fmt: skip
    finally:
        live.close()


def test_a_face_found_by_a_whole_frame_scan_is_in_the_next_rounds_regions(tmp_path):
    cfg = synthetic_config(tmp_path).replace(detect_every=1, full_scan_seconds=60.0)
    detector = FakeDetector()
    pipe, live = live_pipeline(cfg, detector)
    misses = []
    try:
        for i in range(30):
            pipe.process(textured_frame(i, {"Ada": (100, 60)}))
            misses += [t.misses for t in pipe.tracker.tracks]
            time.sleep(0.01)
    finally:
        pipe.close()
    assert detector.shapes[0] == (H, W, 3)  # the first round scans the whole frame
    assert detector.shapes[1:] and set(detector.shapes[1:]) == {(REGION_PX, REGION_PX, 3)}
    assert misses and max(misses) == 0  # never missed by a round: one track, seen every round
    assert [t.id for t in pipe.tracker.tracks] == [1]


def test_huge_frames_are_detected_at_most_2048_pixels_wide():
    from preprocess.regions import MAX_DETECT_SIDE, frame_scale

    assert frame_scale(0.7, (1080, 1920, 3)) == 0.7
    assert frame_scale(0.7, (2160, 3840, 3)) == pytest.approx(MAX_DETECT_SIDE / 3840)
    assert frame_scale(1.0, (3000, 4000, 3)) * 4000 == pytest.approx(MAX_DETECT_SIDE)
