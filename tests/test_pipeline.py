"""The per-frame engine and the loop, on synthetic frames with a fake detector and embedder.

Faces are coloured rectangles; the fake detector finds them by colour, the real aligner
crops them, and the fake embedder maps a crop's colour to a scripted embedding.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import load_config
from common.sources import Frame, FrameSource, SourceError, open_source
from common.vectors import UNKNOWN
from preprocess.align import landmark_template
from preprocess.detect import Face
from recognizer.cli import run_loop
from recognizer.display import (
    VideoRecorder,
    annotate,
    ascii_text,
    face_label,
    put_text,
)
from recognizer.pipeline import ACTION_QUEUED, ACTION_UNKNOWN, FaceView, RecognitionPipeline
from store.factory import open_attendance_store
from store.pending import PendingWriter

W, H = 320, 240
PALETTE = {  # RGB colour of each synthetic person
    "Ada": (220, 40, 40),
    "Bob": (40, 220, 40),
    "Zed": (40, 40, 220),  # a stranger far from everyone
    "Amb": (220, 220, 40),  # a stranger who looks like Ada in 2 of every 5 views
}
E = np.eye(4, dtype=np.float32)
NEAR_ADA = (E[0] + 0.3 * E[3]) / np.linalg.norm(E[0] + 0.3 * E[3])  # distance ~0.29 to Ada
SCRIPTS = {
    "Ada": [E[0]],
    "Bob": [E[1]],
    "Zed": [E[2]],
    "Amb": [NEAR_ADA, E[3], NEAR_ADA, E[3], E[3]],
}
LABELS = ["Ada", "Bob"]
GALLERY = np.stack([E[0], E[1]])


def make_frame(index: int, people: dict[str, tuple[int, int]], fps: float = 10.0) -> Frame:
    """A BGR frame with a 60x80 rectangle per person at its (x, y)."""
    image = np.full((H, W, 3), 0, np.uint8)
    for name, (x, y) in people.items():
        r, g, b = PALETTE[name]
        image[y : y + 80, x : x + 60] = (b, g, r)
    return Frame(image, index, index / fps, "synthetic")


class FakeDetector:
    """Finds the palette's rectangles; remembers the size of every image it was given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.shapes.append(rgb.shape)
        faces = []
        template = landmark_template(160) / 160.0
        pixels = rgb.astype(np.int16)
        for colour in PALETTE.values():
            mask = np.all(np.abs(pixels - np.array(colour, np.int16)) < 30, axis=2)
            if mask.sum() < 16:
                continue
            ys, xs = np.nonzero(mask)
            x, y = float(xs.min()), float(ys.min())
            w, h = float(xs.max() - x + 1), float(ys.max() - y + 1)
            marks = (template * [w, h] + [x, y]).astype(np.float32)
            faces.append(Face((x, y, w, h), 0.99, marks))
        return sorted(faces, key=lambda f: -f.area)


class FakeEmbedder:
    """Maps each crop's centre colour to its person's scripted embeddings (cycled)."""

    input_size = 160
    dim = 4
    model_id = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._cycles = {name: itertools.cycle(vectors) for name, vectors in SCRIPTS.items()}

    def embed(self, crops: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (160, 160, 3)
        self.batches.append(len(crops))
        out = []
        for crop in crops:
            centre = crop[70:90, 70:90].reshape(-1, 3).mean(axis=0)
            name = min(PALETTE, key=lambda n: np.abs(np.array(PALETTE[n]) - centre).sum())
            out.append(next(self._cycles[name]))
        return np.stack(out).astype(np.float32)


class ListSource(FrameSource):
    """A file-like source over prepared frames, counting how many were taken."""

    def __init__(self, frames: list[Frame], fps: float | None = 10.0) -> None:
        self.frames = list(frames)
        self.taken = 0
        self.fps = fps

    def describe(self) -> str:
        return "synthetic"

    def __next__(self) -> Frame:
        if self.taken >= len(self.frames):
            raise StopIteration
        self.taken += 1
        return self.frames[self.taken - 1]

    def close(self) -> None:
        self.taken = len(self.frames)


class FakeRecorder:
    """The database is busy: every sighting is queued (PendingWriter returns None)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mark_present(self, name, when, distance, source):
        self.calls.append((name, when, distance, source))
        return None


def clock():
    ticks = itertools.count()
    start = dt.datetime(2025, 1, 6, 9, 0, 0)
    return lambda: start + dt.timedelta(seconds=next(ticks))


def synthetic_config(tmp_path):
    """A workspace configuration for the synthetic frames: detection on every frame."""
    return load_config(
        tmp_path,
        overrides={
            "detect_every": 1,
            "detect_min_face_px": 28,  # detection at full size
            "confirm_k": 3,
            "confirm_m": 5,
            "refresh_seconds": 1.0,
            "cooldown_seconds": 60.0,
            "threshold": 0.8,
        },
        env={},
    )


@pytest.fixture
def cfg(tmp_path):
    return synthetic_config(tmp_path)


@pytest.fixture
def db(cfg):
    writer = PendingWriter(open_attendance_store(cfg))
    yield writer
    writer.close()


def engine(cfg, recorder, *, continuous=True, **changes):
    cfg = cfg.replace(**changes) if changes else cfg
    detector, embedder = FakeDetector(), FakeEmbedder()
    pipe = RecognitionPipeline(
        cfg, detector, embedder, LABELS, GALLERY, recorder, continuous=continuous, clock=clock()
    )
    return pipe, detector, embedder


def rows(cfg):
    with open_attendance_store(cfg, create=False) as db:
        return [(r.name, r.status) for r in db.rows()], [(e.name, e.action) for e in db.events()]


# --------------------------------------------------------------------------- recognition
def test_face_is_marked_once_after_k_of_m_and_not_embedded_every_frame(cfg, db):
    pipe, detector, embedder = engine(cfg, db)
    results = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(20)]
    events = [e for r in results for e in r.events]
    assert [(e.name, e.action, e.frame_index) for e in events] == [("Ada", "present", 2)]
    assert events[0].distance == pytest.approx(0.0, abs=1e-5)
    assert events[0].entry_time == "09:00:00" and events[0].source == "synthetic"
    # k embeddings to confirm, then one refresh after refresh_seconds (t=1.2), not 20
    assert embedder.batches == [1, 1, 1, 1]
    assert len(detector.shapes) == 20
    assert [r.faces[0].status for r in results[:3]] == ["candidate", "candidate", "confirmed"]
    face = results[-1].faces[0]
    assert face.label == "Ada" and face.box == (100.0, 60.0, 60.0, 80.0)
    assert rows(cfg) == ([("Ada", "Present")], [("Ada", "present")])
    assert pipe.marked == ["Ada"]


def test_detects_every_nth_frame_on_a_downscaled_copy(cfg, db):
    pipe, detector, embedder = engine(cfg, db, detect_every=3, detect_min_face_px=56)
    results = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(12)]
    assert [r.detected for r in results] == [True, False, False] * 4
    assert detector.shapes == [(120, 160, 3)] * 4
    box = results[0].faces[0].box  # mapped back to full-frame pixels
    assert box == pytest.approx((100, 60, 60, 80), abs=2)
    assert all(r.faces and r.faces[0].track_id == 1 for r in results)  # tracked in between
    assert sum(embedder.batches) == 3  # embedded on detection frames only
    assert [e.frame_index for r in results for e in r.events] == [6]


def test_stranger_stays_unknown_and_is_never_written(cfg, db):
    pipe, _, embedder = engine(cfg, db)
    results = [pipe.process(make_frame(i, {"Zed": (40, 40)})) for i in range(40)]
    events = [e for r in results for e in r.events]
    assert [(e.name, e.action) for e in events] == [(UNKNOWN, ACTION_UNKNOWN)]
    assert not events[0].recorded and events[0].distance == pytest.approx(np.sqrt(2), abs=1e-4)
    assert {f.label for r in results for f in r.faces} == {UNKNOWN}
    # m observations to decide, then refreshed once per second only
    assert len(embedder.batches) == 5 + 3
    assert rows(cfg) == ([], [])
    assert pipe.marked == []


def test_lookalike_below_threshold_in_2_of_5_views_is_not_marked(cfg, db):
    # judged on every single frame; Amb's scripted looks are 1.19 apart, which would split the
    # track at every look (track_jump): 2 keeps one track, so its k-of-m window is what decides
    pipe, _, _ = engine(cfg, db, refresh_seconds=0.0, track_jump=2.0)
    results = [pipe.process(make_frame(i, {"Amb": (40, 40)})) for i in range(60)]
    assert {f.track_id for r in results for f in r.faces} == {1}
    assert [e.action for r in results for e in r.events] == [ACTION_UNKNOWN]  # window filled
    statuses = {f.status for r in results for f in r.faces}
    assert statuses == {"candidate", "unknown"}  # it did win single frames ...
    assert rows(cfg) == ([], [])  # ... but never k of m
    assert all(not e.recorded for r in results for e in r.events)


def test_several_faces_are_embedded_in_one_batch_and_all_marked(cfg, db):
    pipe, _, embedder = engine(cfg, db)
    people = {"Ada": (20, 40), "Bob": (120, 40), "Zed": (220, 40)}
    results = [pipe.process(make_frame(i, people)) for i in range(5)]
    assert embedder.batches[:3] == [3, 3, 3]
    assert sorted(f.label for f in results[-1].faces) == ["Ada", "Bob", UNKNOWN]
    assert sorted(rows(cfg)[0]) == [("Ada", "Present"), ("Bob", "Present")]


def test_continuous_mode_cooldown_per_person(cfg, db):
    pipe, _, _ = engine(cfg, db, cooldown_seconds=10.0)
    fps = 2.0
    frames = [make_frame(i, {"Ada": (100, 60)}, fps) for i in range(50)]  # 25 s in view
    frames += [make_frame(50 + i, {}, fps) for i in range(4)]  # leaves ...
    frames += [make_frame(54 + i, {"Ada": (100, 60)}, fps) for i in range(6)]  # back at 27 s
    events = [e for f in frames for e in pipe.process(f).events]
    times = [e.timestamp for e in events]
    assert [e.action for e in events] == ["present", "seen", "seen"]
    assert times == pytest.approx([1.0, 11.0, 21.0])  # re-recorded only after the cool-down
    names, logged = rows(cfg)
    assert names == [("Ada", "Present")] and len(logged) == 3


def swap(first: str, second: str, pipe, *, seconds: float = 3.0, after: int = 40):
    """``first`` stands at one spot for ``seconds`` at 10 fps, then ``second`` takes the very
    same box (one track, never lost); returns the results of every frame."""
    spot = (100, 60)
    before = [make_frame(i, {first: spot}) for i in range(round(10 * seconds))]
    later = [make_frame(len(before) + i, {second: spot}) for i in range(after)]
    return [pipe.process(f) for f in before + later], len(before)


def test_stranger_taking_over_a_confirmed_track_is_never_recorded_as_its_owner(cfg, db):
    # track_jump=2 keeps one track: the contradiction of a confirmed identity alone guards it
    pipe, _, _ = engine(cfg, db, cooldown_seconds=2.0, track_jump=2.0)
    results, change = swap("Ada", "Zed", pipe)
    assert {r.faces[0].track_id for r in results} == {1}  # the tracker kept one track
    events = [(e.name, e.action, e.frame_index) for r in results for e in r.events]
    assert events[:2] == [("Ada", "present", 2), ("Ada", "seen", 22)]
    assert not [e for e in events[2:] if e[0] == "Ada"]  # nothing for Ada once Zed stands there
    assert [(name, action) for name, action, _ in events[2:]] == [(UNKNOWN, ACTION_UNKNOWN)]
    # Zed's first embedding is the next refresh of the confirmed track (at most 1 s later) ...
    first = next(i for i in range(change, len(results)) if results[i].embedded)
    assert first <= change + 10
    # ... and from that very frame on he is shown Unknown, then judged (embedded) every frame
    assert all(r.faces[0].label == UNKNOWN for r in results[first:])
    assert results[first].faces[0].status == "unknown"
    assert all(r.embedded for r in results[first : first + 5])
    assert rows(cfg) == ([("Ada", "Present")], [("Ada", "present"), ("Ada", "seen")])


def test_a_new_face_in_a_confirmed_track_starts_a_new_track(cfg, db):
    """Zed steps into Ada's box: his first embedding is 1.41 from Ada's last one (> track_jump
    0.9), so Ada's track ends there and Zed's starts empty."""
    pipe, _, _ = engine(cfg, db, cooldown_seconds=2.0)
    ended: list[int] = []
    hook = pipe.tracker.on_end
    pipe.tracker.on_end = lambda track: (ended.append(track.id), hook(track))
    results, change = swap("Ada", "Zed", pipe)
    first = next(i for i in range(change, len(results)) if results[i].embedded)
    assert first <= change + 10  # the next refresh of Ada's confirmed track
    assert {r.faces[0].track_id for r in results[:first]} == {1}
    assert {r.faces[0].track_id for r in results[first:]} == {2} and ended == [1]
    (zed,) = pipe.tracker.tracks
    assert [o.identity for o in zed.confirmation.window][0] == UNKNOWN  # no vote of Ada's
    assert all(r.faces[0].label == UNKNOWN for r in results[first:])
    events = [(e.name, e.action, e.track_id) for r in results for e in r.events]
    assert events == [("Ada", "present", 1), ("Ada", "seen", 1), (UNKNOWN, ACTION_UNKNOWN, 2)]


@pytest.mark.parametrize("gap_seconds", [0.4, 60.0])
def test_the_next_person_after_a_short_gap_is_a_new_track(cfg, db, gap_seconds):
    """Detection every 3rd frame at 10 fps; Ada, 0.5 s of nobody, then Bob in the same box.
    Within max_missed rounds, only track_gap_seconds (0.4) keeps Bob from Ada's track; the
    face-change split is off here (track_jump=2) to see the gap rule alone."""
    pipe, _, _ = engine(cfg, db, detect_every=3, track_jump=2.0, track_gap_seconds=gap_seconds)
    spot = (100, 60)
    frames = [make_frame(i, {"Ada": spot}) for i in range(15)]
    frames += [make_frame(15 + i, {}) for i in range(5)]
    frames += [make_frame(20 + i, {"Bob": spot}) for i in range(15)]
    results = [pipe.process(f) for f in frames]
    ada = {f.track_id for r in results[:15] for f in r.faces}
    bob = {f.track_id for r in results[20:] for f in r.faces}
    if gap_seconds < 0.5:
        assert ada == {1} and bob == {2}
    else:
        assert ada == bob == {1}  # inherited: the behaviour track_gap_seconds ends
    assert sorted(rows(cfg)[0]) == [("Ada", "Present"), ("Bob", "Present")]


@pytest.mark.parametrize("jump", [0.9, 2.0])  # a new track (the default), or one track
def test_enrolled_person_taking_over_a_confirmed_track_is_confirmed_afresh(cfg, db, jump):
    pipe, _, _ = engine(cfg, db, cooldown_seconds=2.0, track_jump=jump)
    results, change = swap("Ada", "Bob", pipe)
    first = next(i for i in range(change, len(results)) if results[i].embedded)
    bob_track = 2 if jump < 1.41 else 1  # E[0] to E[1]: 1.41 apart
    assert {r.faces[0].track_id for r in results[:first]} == {1}
    assert {r.faces[0].track_id for r in results[first:]} == {bob_track}
    shown = [(r.faces[0].label, r.faces[0].status) for r in results[first : first + 3]]
    assert shown == [("Bob", "candidate"), ("Bob", "candidate"), ("Bob", "confirmed")]  # k of m
    events = [(e.name, e.action, e.frame_index) for r in results for e in r.events]
    assert not [e for e in events if e[0] == "Ada" and e[2] >= change]
    assert [e for e in events if e[0] == "Bob"][0] == ("Bob", "present", first + 2)
    assert all(r.faces[0].label == "Bob" for r in results[first:])
    names, logged = rows(cfg)
    assert names == [("Ada", "Present"), ("Bob", "Present")]
    assert logged[:3] == [("Ada", "present"), ("Ada", "seen"), ("Bob", "present")]
    assert ("Ada", "seen") not in logged[3:]


@pytest.mark.parametrize("k,m", [(1, 1), (3, 5)])
def test_independent_frames_judge_every_photo_on_its_own(cfg, db, k, m):
    """A folder of photos, all at the same spot, different people: each photo is judged on
    its own sighting whatever confirm_k/confirm_m say (one look is all a photo gives)."""
    settings = cfg.replace(confirm_k=k, confirm_m=m, detect_every=3, refresh_seconds=60.0)
    pipe = RecognitionPipeline(
        settings, FakeDetector(), FakeEmbedder(), LABELS, GALLERY, db, clock=clock(),
        independent_frames=True,
    )  # fmt: skip
    people = ["Ada", "Bob", "Zed", "Ada", "Bob", "Bob"]
    results = [pipe.process(make_frame(i, {p: (100, 60)})) for i, p in enumerate(people)]
    assert all(r.detected and r.embedded == 1 for r in results)
    shown = [(r.faces[0].label, r.faces[0].status) for r in results]
    assert shown == [
        ("Ada", "confirmed"), ("Bob", "confirmed"), (UNKNOWN, "unknown"),
        ("Ada", "confirmed"), ("Bob", "confirmed"), ("Bob", "confirmed"),
    ]  # fmt: skip
    assert len({r.faces[0].track_id for r in results}) == len(people)  # no track carried over
    events = [(e.name, e.action, e.frame_index) for r in results for e in r.events]
    assert events == [("Ada", "present", 0), ("Bob", "present", 1), (UNKNOWN, ACTION_UNKNOWN, 2)]
    assert pipe.marked == ["Ada", "Bob"]
    assert sorted(rows(cfg)[0]) == [("Ada", "Present"), ("Bob", "Present")]


def test_window_mode_pauses_after_one_person_until_resumed(cfg, db):
    pipe, detector, _ = engine(cfg, db, continuous=False)
    both = {"Ada": (20, 40), "Bob": (200, 40)}
    results = [pipe.process(make_frame(i, both)) for i in range(3)]
    events = [e for r in results for e in r.events]
    assert len(events) == 1 and events[0].action == "present"  # only one person per scan
    first = events[0].name
    assert results[-1].paused and results[-1].banner == f"{first} \u2014 present at 09:00"
    calls = len(detector.shapes)
    paused = [pipe.process(make_frame(3 + i, both)) for i in range(10)]
    assert all(r.paused and not r.detected and r.faces == [] for r in paused)
    assert len(detector.shapes) == calls  # recognition really is paused
    pipe.resume()
    assert not pipe.paused and pipe.banner is None
    later = [pipe.process(make_frame(13 + i, both)) for i in range(3)]
    second = [e for r in later for e in r.events]
    assert len(second) == 1 and later[-1].paused
    assert sorted(rows(cfg)[0]) == [("Ada", "Present"), ("Bob", "Present")]


def test_busy_database_sighting_is_queued_not_lost(cfg):
    recorder = FakeRecorder()
    pipe, _, _ = engine(cfg, recorder, continuous=False)
    results = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(3)]
    (event,) = results[-1].events
    assert event.action == ACTION_QUEUED and event.recorded
    assert recorder.calls[0][0] == "Ada" and recorder.calls[0][3] == "synthetic"
    assert results[-1].banner == "Ada \u2014 present at 09:00"


def test_unalignable_detection_is_skipped(cfg, db):
    pipe, _, embedder = engine(cfg, db)

    def refuse(rgb, face):
        raise ValueError("degenerate landmarks")

    pipe.align = refuse
    result = pipe.process(make_frame(0, {"Ada": (100, 60)}))
    assert result.embedded == 0 and embedder.batches == [] and result.events == []
    assert result.faces[0].label == UNKNOWN


def test_stage_timings_are_reported(cfg, db):
    pipe, _, _ = engine(cfg, db)
    for i in range(4):
        pipe.process(make_frame(i, {"Ada": (100, 60)}))
    ms = pipe.stage_ms()
    assert set(ms) == {"detect", "align", "embed", "match", "record"}
    assert all(v >= 0 for v in ms.values()) and ms["detect"] > 0
    assert pipe.frames == 4 and pipe.detections == 4 and pipe.embedded == 3


def test_gallery_and_labels_must_agree(cfg, db):
    with pytest.raises(ValueError, match="2 labels for 1 embeddings"):
        RecognitionPipeline(cfg, FakeDetector(), FakeEmbedder(), LABELS, GALLERY[:1], db)


# --------------------------------------------------------------------------- gallery updates
def test_update_gallery_adds_a_person_and_undecided_tracks_go_on(cfg, db, caplog):
    caplog.set_level("INFO", logger="recognizer.pipeline")
    pipe = RecognitionPipeline(
        cfg, FakeDetector(), FakeEmbedder(), ["Bob"], E[1:2], db, clock=clock()
    )  # Bob only
    early = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(10)]
    assert [(e.name, e.action) for r in early for e in r.events] == [(UNKNOWN, ACTION_UNKNOWN)]
    change = pipe.update_gallery(["Ada", "Bob"], GALLERY)
    assert (change.people, change.added, change.removed) == (2, ("Ada",), ())
    assert "gallery reloaded: 2 people (+1, -0); added Ada" in caplog.text
    assert pipe.people == ["Ada", "Bob"]
    later = [pipe.process(make_frame(10 + i, {"Ada": (100, 60)})) for i in range(30)]
    events = [e for r in later for e in r.events]
    assert [(e.name, e.action) for e in events] == [("Ada", "present")]
    assert events[0].track_id == early[0].faces[0].track_id  # the same track, not restarted
    assert rows(cfg) == ([("Ada", "Present")], [("Ada", "present")])


def test_update_gallery_with_the_same_contents_changes_nothing(cfg, db, caplog):
    caplog.set_level("INFO", logger="recognizer.pipeline")
    pipe, _, _ = engine(cfg, db)
    before = pipe.embeddings
    assert pipe.update_gallery(list(LABELS), GALLERY.copy()) is None
    assert pipe.embeddings is before and "gallery reloaded" not in caplog.text


@pytest.mark.parametrize("mode", ["template", "nearest"])
def test_update_gallery_prepares_the_gallery_like_the_constructor(cfg, db, mode):
    from common.vectors import identity_templates

    labels = ["Ada", "Ada", "Bob", "Cy"]
    vectors = np.stack([E[0], NEAR_ADA, E[1], E[2]])
    updated, _, _ = engine(cfg, db, match_mode=mode)
    built = RecognitionPipeline(updated.cfg, FakeDetector(), FakeEmbedder(), labels, vectors, db)
    change = updated.update_gallery(labels, vectors)
    assert (change.people, change.embeddings, change.added) == (3, 4, ("Cy",))
    assert updated.labels == built.labels
    np.testing.assert_array_equal(updated.embeddings, built.embeddings)
    if mode == "template":  # one unit-norm mean per person
        names, templates = identity_templates(vectors, labels)
        assert updated.labels == names == ["Ada", "Bob", "Cy"]
        np.testing.assert_allclose(updated.embeddings, templates)
    else:
        assert updated.labels == labels
        np.testing.assert_array_equal(updated.embeddings, vectors)


def test_removed_person_keeps_a_confirmed_track_but_is_unknown_when_back(cfg, db, caplog):
    caplog.set_level("INFO", logger="recognizer.pipeline")
    pipe, _, _ = engine(cfg, db, cooldown_seconds=1.0)  # would be recorded again if known
    first = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(5)]
    assert first[-1].faces[0].status == "confirmed"
    change = pipe.update_gallery(["Bob"], E[1:2])
    assert change.removed == ("Ada",) and change.added == ()
    assert "gallery reloaded: 1 people (+0, -1); removed Ada" in caplog.text
    lingering = pipe.process(make_frame(5, {"Ada": (100, 60)})).faces[0]
    assert (lingering.label, lingering.status) == ("Ada", "confirmed")  # identity kept
    assert lingering.track_id == first[0].faces[0].track_id
    gone = [pipe.process(make_frame(6 + i, {})) for i in range(10)]
    assert gone[-1].faces == []
    back = [pipe.process(make_frame(16 + i, {"Ada": (100, 60)})) for i in range(40)]
    assert {f.label for r in back for f in r.faces} == {UNKNOWN}
    assert [(e.name, e.action) for r in back for e in r.events] == [(UNKNOWN, ACTION_UNKNOWN)]
    assert rows(cfg) == ([("Ada", "Present")], [("Ada", "present")])


def test_a_gallery_emptied_while_running_makes_everyone_unknown(cfg, db):
    pipe, _, _ = engine(cfg, db)
    change = pipe.update_gallery([], np.zeros((0, 4), np.float32))
    assert (change.people, change.removed) == (0, ("Ada", "Bob"))
    assert pipe.labels == [] and pipe.embeddings.shape == (0, 4)
    results = [pipe.process(make_frame(i, {"Ada": (20, 40), "Bob": (200, 40)})) for i in range(8)]
    assert {f.label for r in results for f in r.faces} == {UNKNOWN}
    assert [e.name for r in results for e in r.events] == [UNKNOWN, UNKNOWN]
    assert rows(cfg) == ([], [])


def test_update_gallery_refuses_a_gallery_of_another_dimension(cfg, db):
    pipe, _, _ = engine(cfg, db)
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*dimension 4"):
        pipe.update_gallery(LABELS, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="1 labels for 2 embeddings"):
        pipe.update_gallery(["Ada"], GALLERY)
    assert pipe.labels == LABELS  # the gallery in use is untouched


# --------------------------------------------------------------------------- the loop
class FakeWindow:
    """Plays a key script: the i-th call of key() returns keys[i] (then None)."""

    def __init__(self, keys: dict[int, str]) -> None:
        self.keys = keys
        self.calls = 0
        self.shown: list[np.ndarray] = []

    def show(self, image: np.ndarray) -> None:
        self.shown.append(image)

    def key(self, delay_ms: int = 1) -> str | None:
        self.calls += 1
        return self.keys.get(self.calls)


def test_loop_window_keys_n_resumes_and_esc_quits(cfg, db):
    pipe, _, _ = engine(cfg, db, continuous=False)
    frames = [make_frame(i, {"Ada": (20, 40)}) for i in range(8)]
    # Bob arrives while Ada lingers: the next scan must find Bob, not Ada again
    frames += [make_frame(8 + i, {"Ada": (20, 40), "Bob": (200, 40)}) for i in range(30)]
    source = ListSource(frames, fps=None)
    # key() calls 1-3 follow frames 1-3 (Ada marked at 3); 4-10 hold the paused frame while
    # the file waits; n at 10; frames 4-11 (Bob marked at 11); 19-20 hold; esc at 20
    window = FakeWindow({10: "n", 20: "esc"})
    summary = run_loop(source, pipe, window=window)
    assert summary.stopped_by == "esc"
    assert summary.present == ["Ada", "Bob"] and summary.events == 2
    assert source.taken == 11  # the file did not run on while paused
    assert len(window.shown) == source.taken
    assert "summary: 11 frames" in summary.line() and "marked: Ada, Bob" in summary.line()


def test_loop_headless_one_shot_stops_after_the_first_person(cfg, db):
    pipe, _, _ = engine(cfg, db, continuous=False)
    source = ListSource([make_frame(i, {"Ada": (20, 40)}) for i in range(30)])
    lines = []
    summary = run_loop(source, pipe, stop_after_first=True, on_event=lambda e: lines.append(e))
    assert summary.stopped_by == "first person marked" and source.taken == 3
    assert [e.name for e in lines] == ["Ada"]
    assert lines[0].line().startswith("2025-01-06 09:00:00  Ada  distance=0.000  present")


def test_loop_stops_on_signal_and_max_frames(cfg, db):
    pipe, _, _ = engine(cfg, db)
    source = ListSource([make_frame(i, {}) for i in range(30)])
    summary = run_loop(source, pipe, max_frames=7)
    assert summary.frames == 7 and summary.stopped_by == "--max-frames 7"
    stop = threading.Event()
    stop.set()
    summary = run_loop(source, pipe, stop=stop)
    assert summary.frames == 0 and summary.stopped_by == "stop signal"


def test_loop_keeps_a_mid_run_failure_for_after_the_summary(cfg, db):
    class LostStream(ListSource):
        def __next__(self) -> Frame:
            if self.taken == 4:
                raise SourceError("stream x was lost and did not come back")
            return super().__next__()

    pipe, _, _ = engine(cfg, db)
    summary = run_loop(LostStream([make_frame(i, {"Ada": (20, 40)}) for i in range(9)]), pipe)
    assert summary.frames == 4 and summary.stopped_by == "error"
    assert isinstance(summary.error, SourceError) and summary.present == ["Ada"]


def test_loop_records_an_annotated_video(cfg, db, tmp_path):
    pipe, _, _ = engine(cfg, db)
    source = ListSource([make_frame(i, {"Ada": (100, 60)}) for i in range(10)])
    out = tmp_path / "out.mp4"
    video = VideoRecorder(out, 10.0)
    run_loop(source, pipe, video=video)
    assert not out.exists()  # written under a partial name until closed
    video.close()
    with open_source(str(out)) as check:
        frames = list(check)
    assert len(frames) == 10
    b, g, r = frames[-1].image[100, 100].astype(int)  # the left edge of the confirmed box
    assert g > 150 and r < 120 and b < 120  # green (COLOURS["confirmed"]), not Ada's red


# --------------------------------------------------------------------------- drawing
def test_annotate_draws_boxes_labels_and_banner(cfg, db):
    pipe, _, _ = engine(cfg, db, continuous=False)
    results = [pipe.process(make_frame(i, {"Ada": (100, 60)})) for i in range(3)]
    plain = results[-1].frame.image
    image = annotate(results[-1], hint="n: next person   esc: quit", hud="10 fps")
    assert image.shape == plain.shape and not np.array_equal(image, plain)
    assert np.array_equal(plain, make_frame(2, {"Ada": (100, 60)}).image)  # input untouched
    assert np.abs(image[H - 5, 5].astype(int) - plain[H - 5, 5]).max() > 10  # banner band


def test_labels_and_text_rendering():
    assert face_label(FaceView(1, (0, 0, 1, 1), "Ada", 0.6234, "confirmed")) == "Ada 0.62"
    assert face_label(FaceView(1, (0, 0, 1, 1), "Ada", 0.9, "candidate")) == "Ada? 0.90"
    assert face_label(FaceView(1, (0, 0, 1, 1), UNKNOWN, float("inf"), "unknown")) == UNKNOWN
    assert ascii_text("José Álvarez \u2014 09:05") == "Jose Alvarez - 09:05"
    image = np.zeros((40, 200, 3), np.uint8)
    put_text(image, "José \u2014 present", (2, 2), 18)
    assert image.max() > 200
    put_text(image, "off the edge", (190, 30), 18)  # clipped, no error
    put_text(image, "far away", (500, 500), 18)


def test_video_recorder_refuses_bad_names(tmp_path):
    from recognizer.display import DisplayError

    with pytest.raises(DisplayError, match="use a .mp4 or .avi"):
        VideoRecorder(tmp_path / "out.gif", 10)
    with pytest.raises(DisplayError, match="does not exist"):
        VideoRecorder(tmp_path / "nope" / "out.mp4", 10)
    recorder = VideoRecorder(tmp_path / "ok.avi", 0)
    recorder.write(np.zeros((48, 64, 3), np.uint8))
    recorder.write(np.zeros((96, 128, 3), np.uint8))  # resized to the first frame's size
    recorder.close()
    cap = cv2.VideoCapture(str(tmp_path / "ok.avi"))
    assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 64
    cap.release()
    assert Path(tmp_path / "ok.avi").stat().st_size > 0


def test_a_sighting_the_store_did_not_record_is_not_counted_as_marked() -> None:
    """A shared store answers ``removed`` for someone removed meanwhile: the event says so
    and the person is not among those marked."""
    from recognizer.pipeline import RecognitionEvent
    from store.records import ACTION_REMOVED

    event = RecognitionEvent(
        dt.datetime(2024, 5, 1, 9), "Ada", 0.4, ACTION_REMOVED, "door", 1, 10, 1.0, 0.5
    )
    assert not event.recorded and "removed" in event.line()
