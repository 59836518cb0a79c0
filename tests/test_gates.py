"""Per-face gates in the live loop: fake gates on the synthetic frames of ``test_pipeline``.

A confirmed person is recorded only when every gate passes that very track; a failing gate
gives one audit event (``log_event``) per track and gate, never a Present; gates forget tracks
that end, and one face never borrows another one's verdict.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from test_pipeline import (
    GALLERY,
    LABELS,
    PALETTE,
    FakeDetector,
    FakeEmbedder,
    W,
    clock,
    make_frame,
    swap,
    synthetic_config,
)

from common.sources import Frame
from common.vectors import UNKNOWN
from recognizer.display import COLOURS, annotate, face_note
from recognizer.gates import (
    ACTION_REFUSED,
    Gate,
    GateBoard,
    Outcome,
    TrackStateGate,
    Verdict,
)
from recognizer.pipeline import (
    ACTION_QUEUED,
    FaceView,
    RecognitionEvent,
    RecognitionPipeline,
)
from store.factory import open_attendance_store
from store.pending import PendingWriter


# --------------------------------------------------------------------------- fakes
class Recorder:
    """Remembers every call; the database is 'busy' (mark_present returns None: queued)."""

    def __init__(self) -> None:
        self.marks: list[tuple] = []
        self.logged: list[tuple] = []

    def mark_present(self, name, when, distance, source):
        self.marks.append((name, when, distance, source))
        return None

    def log_event(self, name, when, distance, source, action):
        self.logged.append((name, when, distance, source, action))
        return True


class Spy(TrackStateGate[list]):
    """Remembers what it saw and what it forgot; subclasses judge."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.seen: list[tuple[int, int, tuple]] = []  # (track, frame index, box)
        self.forgotten: list[int] = []

    def new_state(self) -> list:
        return []

    def observe(self, track_id: int, frame: Frame, face) -> Verdict:
        self.seen.append((track_id, frame.index, tuple(face.box)))
        return super().observe(track_id, frame, face)

    def forget(self, track_id: int) -> None:
        self.forgotten.append(track_id)
        super().forget(track_id)


class PendingFor(Spy):
    """PENDING for the first ``n`` detections of each track, then PASS."""

    def __init__(self, n: int, name: str = "slow") -> None:
        super().__init__(name)
        self.n = n

    def judge(self, state: list, frame: Frame, face) -> Verdict:
        state.append(frame.index)
        if len(state) < self.n:
            return Verdict.wait(f"look {len(state)}/{self.n}")
        return Verdict.allow()


class FailsLeftHalf(Spy):
    """FAIL for faces in the left half of the frame (a 'photo'), PASS elsewhere."""

    def __init__(self, name: str = "liveness", action: str = ACTION_REFUSED) -> None:
        super().__init__(name)
        self.action = action

    def judge(self, state: list, frame: Frame, face) -> Verdict:
        x, _, w, _ = face.box
        if x + w / 2 < W / 2:
            return Verdict.refuse("photo or screen?", self.action)
        return Verdict.allow()


class PendingThenFail(Spy):
    """PENDING for the first ``n - 1`` detections of each track, then FAIL."""

    def __init__(self, n: int, name: str = "liveness") -> None:
        super().__init__(name)
        self.n = n

    def judge(self, state: list, frame: Frame, face) -> Verdict:
        state.append(frame.index)
        return Verdict.wait() if len(state) < self.n else Verdict.refuse("no blink")


class AlwaysPass(Spy):
    def judge(self, state: list, frame: Frame, face) -> Verdict:
        return Verdict.allow()


@pytest.fixture
def cfg(tmp_path):
    return synthetic_config(tmp_path)


def engine(cfg, recorder, gates=(), *, continuous=True, **changes):
    cfg = cfg.replace(**changes) if changes else cfg
    embedder = FakeEmbedder()
    pipe = RecognitionPipeline(
        cfg, FakeDetector(), embedder, LABELS, GALLERY, recorder, continuous=continuous,
        clock=clock(), gates=gates,
    )  # fmt: skip
    return pipe, embedder


def run(pipe, frames):
    results = [pipe.process(f) for f in frames]
    return results, [e for r in results for e in r.events]


ADA = {"Ada": (20, 60)}  # left half: FailsLeftHalf refuses her
BOB = {"Bob": (220, 60)}  # right half


# --------------------------------------------------------------------------- verdicts, board
def test_verdicts_and_the_gate_protocol():
    assert Verdict.allow().passed and Verdict.wait().pending and Verdict.refuse("x").failed
    refused = Verdict.refuse("photo or screen?")
    assert (refused.outcome, refused.reason, refused.action) == (Outcome.FAIL, "photo or screen?",
                                                                  "refused")  # fmt: skip
    assert Verdict.refuse("spoof", action="spoof-attempt").action == "spoof-attempt"
    with pytest.raises(ValueError, match="audit action"):
        Verdict.refuse("x", action="")
    assert isinstance(PendingFor(2), Gate) and isinstance(FailsLeftHalf(), Gate)
    assert not isinstance(object(), Gate)


def test_board_keeps_verdicts_per_track_and_announces_each_failure_once():
    slow, live = PendingFor(2), FailsLeftHalf()
    board = GateBoard([slow, live])
    frame = make_frame(0, {})
    from preprocess.detect import Face

    left = Face((10, 10, 40, 40), 0.99, np.zeros((5, 2), np.float32))
    right = Face((250, 10, 40, 40), 0.99, np.zeros((5, 2), np.float32))
    assert [v.outcome for _, v in board.verdicts(1)] == [Outcome.PENDING] * 2  # not seen yet
    board.observe(1, frame, left)
    board.observe(2, frame, right)
    assert board.failures(1) == [("liveness", Verdict.refuse("photo or screen?"))]
    assert not board.pending(1)  # a failure is not "pending", even with a gate still waiting
    assert board.pending(2) and not board.cleared(2)
    board.observe(2, frame, right)
    assert board.cleared(2) and not board.cleared(1)
    told: list = []
    for _ in range(3):
        board.announce(1, lambda gate, verdict: told.append((gate, verdict.action)))
        board.announce(2, lambda gate, verdict: told.append(("track 2", gate)))
    assert told == [("liveness", "refused")]
    board.forget(1)
    assert slow.forgotten == live.forgotten == [1] and slow.tracks == [2]
    assert [v.outcome for _, v in board.verdicts(1)] == [Outcome.PENDING] * 2
    board.observe(1, frame, left)
    board.announce(1, lambda gate, verdict: told.append((gate, verdict.action)))
    assert len(told) == 2  # a forgotten track starts over: its refusal is told again
    with pytest.raises(ValueError, match="unique"):
        GateBoard([PendingFor(1), PendingFor(2)])


def test_a_failed_write_is_announced_again():
    board = GateBoard([FailsLeftHalf()])
    from preprocess.detect import Face

    board.observe(1, make_frame(0, {}), Face((0, 0, 9, 9), 0.9, np.zeros((5, 2), np.float32)))

    def broken(gate, verdict):
        raise OSError("database is locked")

    with pytest.raises(OSError):
        board.announce(1, broken)
    told: list = []
    board.announce(1, lambda gate, verdict: told.append(gate))
    assert told == ["liveness"]


# --------------------------------------------------------------------------- the pipeline
def test_no_gates_changes_nothing(cfg):
    frames = [make_frame(i, {"Ada": (20, 60), "Bob": (220, 60)}) for i in range(30)]
    plain, plain_embedder = engine(cfg, Recorder())
    passing, passing_embedder = engine(cfg, Recorder(), [AlwaysPass("ok")])
    plain_results, plain_events = run(plain, frames)
    passing_results, passing_events = run(passing, frames)
    assert [(e.name, e.action, e.frame_index) for e in plain_events] == [
        ("Ada", ACTION_QUEUED, 2), ("Bob", ACTION_QUEUED, 2),
    ]  # fmt: skip
    assert passing_events == plain_events  # a gate that always passes changes no decision
    assert passing_embedder.batches == plain_embedder.batches
    views = [f for r in plain_results for f in r.faces]
    assert all(f.verdicts == () and f.display_status == f.status for f in views)
    assert set(plain.stage_ms()) == {"detect", "align", "embed", "match", "record"}
    assert set(passing.stage_ms()) == {"detect", "gates", "align", "embed", "match", "record"}
    assert all(f.display_status == f.status for r in passing_results for f in r.faces)


def test_pending_gate_holds_a_confirmed_person_back_until_it_passes(cfg):
    recorder = Recorder()
    slow = PendingFor(6)
    pipe, embedder = engine(cfg, recorder, [slow])
    results, events = run(pipe, [make_frame(i, ADA) for i in range(30)])
    # confirmed at frame 2 (3 of 5), but recorded only at frame 5: the gate's 6th look
    assert [(e.name, e.action, e.frame_index) for e in events] == [("Ada", ACTION_QUEUED, 5)]
    assert [m[0] for m in recorder.marks] == ["Ada"] and recorder.logged == []
    assert pipe.marked == ["Ada"]
    shown = [(r.faces[0].status, r.faces[0].display_status) for r in results[:7]]
    assert shown == [
        ("candidate", "checking"), ("candidate", "checking"), ("confirmed", "checking"),
        ("confirmed", "checking"), ("confirmed", "checking"), ("confirmed", "confirmed"),
        ("confirmed", "confirmed"),
    ]  # fmt: skip
    assert results[3].faces[0].verdicts == (("slow", Verdict.wait("look 4/6")),)
    # the gate saw every detection; the confirmed track is not re-embedded while the gate
    # waits, but on the round it passes (the record comes from that round's own embedding),
    # then only at the refresh (1 s)
    assert [index for _, index, _ in slow.seen] == list(range(30))
    assert [i for i, r in enumerate(results) if r.embedded] == [0, 1, 2, 5, 15, 25]


def test_pending_gate_is_fed_on_detection_rounds_without_an_embedding(cfg):
    slow = PendingFor(4)
    pipe, embedder = engine(cfg, Recorder(), [slow], detect_every=2, refresh_seconds=60.0)
    results, events = run(pipe, [make_frame(i, ADA) for i in range(40)])
    rounds = [r.frame.index for r in results if r.detected]
    assert [index for _, index, _ in slow.seen] == rounds  # every detection round, no more
    assert [e.frame_index for e in events] == [rounds[3]]  # the gate's 4th look
    assert len(embedder.batches) == 4  # after that: no refresh due within 60 s
    assert sum(r.detected and not r.embedded for r in results) > 10


def test_failing_gate_refuses_once_per_track_and_never_records(cfg):
    recorder = Recorder()
    live = FailsLeftHalf()
    pipe, _ = engine(cfg, recorder, [live], cooldown_seconds=1.0)
    results, events = run(pipe, [make_frame(i, ADA) for i in range(40)])
    assert [(e.name, e.action, e.frame_index, e.gate) for e in events] == [
        ("Ada", "refused", 2, "liveness")
    ]
    (event,) = events
    assert event.refused and not event.recorded and event.reason == "photo or screen?"
    assert event.distance == pytest.approx(0.0, abs=1e-5)
    assert recorder.marks == []  # never a Present
    assert recorder.logged == [("Ada", event.when, event.distance, "synthetic", "refused")]
    assert pipe.marked == []
    assert event.line() == (
        "2025-01-06 09:00:00  Ada  distance=0.000  refused  "
        "(track 1, synthetic; liveness: photo or screen?)"
    )
    face = results[-1].faces[0]
    assert (face.label, face.status, face.display_status) == ("Ada", "confirmed", "refused")
    assert face.refusal == ("liveness", Verdict.refuse("photo or screen?"))
    assert face_note(face) == "photo or screen?"


def test_a_gate_failing_after_pending_refuses_on_that_very_round(cfg):
    recorder = Recorder()
    gate = PendingThenFail(6)
    pipe, embedder = engine(cfg, recorder, [gate], detect_every=2, refresh_seconds=60.0)
    results, events = run(pipe, [make_frame(i, ADA) for i in range(60)])
    rounds = [r.frame.index for r in results if r.detected]
    assert [(e.action, e.frame_index, e.reason) for e in events] == [
        ("refused", rounds[5], "no blink")
    ]
    assert recorder.marks == [] and [call[-1] for call in recorder.logged] == ["refused"]
    # embedded while undecided (3 of 5), then on the round the gate fails; then no more: the
    # refusal is told and no refresh is due
    assert [i for i, r in enumerate(results) if r.embedded] == [0, 2, 4, rounds[5]]


def test_gate_action_is_the_audit_action(cfg):
    recorder = Recorder()
    pipe, _ = engine(cfg, recorder, [FailsLeftHalf(action="spoof")], continuous=False)
    results, events = run(pipe, [make_frame(i, ADA) for i in range(10)])
    assert [(e.action, e.recorded) for e in events] == [("spoof", False)]
    assert [call[-1] for call in recorder.logged] == ["spoof"]
    assert not pipe.paused and results[-1].banner is None  # a refusal does not end the scan


def test_each_failing_gate_gives_its_own_refusal(cfg):
    recorder = Recorder()
    gates = [FailsLeftHalf("liveness"), FailsLeftHalf("mask", action="masked")]
    pipe, _ = engine(cfg, recorder, gates)
    _, events = run(pipe, [make_frame(i, ADA) for i in range(20)])
    assert [(e.gate, e.action) for e in events] == [("liveness", "refused"), ("mask", "masked")]
    assert [call[-1] for call in recorder.logged] == ["refused", "masked"]


def test_two_faces_one_failing_one_passing_only_the_passing_one_is_recorded(cfg):
    recorder = Recorder()
    live = FailsLeftHalf()
    pipe, _ = engine(cfg, recorder, [live])
    results, events = run(pipe, [make_frame(i, {**ADA, **BOB}) for i in range(30)])
    assert sorted((e.name, e.action) for e in events) == [("Ada", "refused"), ("Bob", "queued")]
    assert [m[0] for m in recorder.marks] == ["Bob"]
    assert [call[0] for call in recorder.logged] == ["Ada"]
    assert pipe.marked == ["Bob"]
    by_name = {f.label: f for f in results[-1].faces}
    assert by_name["Ada"].display_status == "refused"
    assert by_name["Bob"].display_status == "confirmed"
    assert by_name["Bob"].verdicts == (("liveness", Verdict.allow()),)
    # every face's detections went to the gate under its own track
    tracks = {f.label: f.track_id for f in results[-1].faces}
    assert {box[0] for track, _, box in live.seen if track == tracks["Ada"]} == {20.0}
    assert {box[0] for track, _, box in live.seen if track == tracks["Bob"]} == {220.0}


def test_a_new_track_never_inherits_a_passed_verdict(cfg):
    """Ada passes the slow gate, leaves, comes back: a new track, judged from scratch."""
    slow = PendingFor(4)
    pipe, _ = engine(cfg, Recorder(), [slow], cooldown_seconds=0.5)
    first, events = run(pipe, [make_frame(i, ADA) for i in range(5)])
    assert [e.frame_index for e in events] == [3]
    gone, _ = run(pipe, [make_frame(5 + i, {}) for i in range(5)])
    assert slow.forgotten == [first[0].faces[0].track_id] and slow.tracks == []
    back, events = run(pipe, [make_frame(10 + i, ADA) for i in range(6)])
    assert back[0].faces[0].track_id != first[0].faces[0].track_id
    assert [r.faces[0].display_status for r in back[:3]] == ["checking"] * 3
    assert [(e.name, e.frame_index) for e in events] == [("Ada", 13)]  # 4 looks again


@pytest.mark.parametrize("jump", [0.9, 2.0])
def test_a_face_taking_over_a_track_is_judged_afresh_by_the_gates(cfg, jump):
    """Bob steps into Ada's box: Ada's PASS does not carry over to him, whether his first
    embedding splits the track (track_jump 0.9: a new track, fed to the gates from that very
    detection) or restarts it (track_jump 2: one track)."""
    slow = PendingFor(5)
    pipe, _ = engine(cfg, Recorder(), [slow], cooldown_seconds=2.0, track_jump=jump)
    results, change = swap("Ada", "Bob", pipe, seconds=1.0, after=30)
    first = next(i for i in range(change, len(results)) if results[i].embedded)
    bob_track = 2 if jump < 1.41 else 1
    assert {r.faces[0].track_id for r in results[:first]} == {1}
    assert {r.faces[0].track_id for r in results[first:]} == {bob_track}
    assert slow.forgotten == [1]  # Ada's track: ended, or restarted by his first embedding
    assert slow.seen[-1][0] == bob_track and (bob_track, first, slow.seen[-1][2]) in slow.seen
    bob = [(e.name, e.frame_index) for r in results for e in r.events if e.name == "Bob"]
    # Bob is confirmed after 3 looks but waits for 5 gate looks of his own
    assert bob[0] == ("Bob", first + 4)
    assert results[first + 2].faces[0].display_status == "checking"


def test_gates_forget_tracks_when_recognition_resumes_and_for_every_photo(cfg):
    slow = PendingFor(1)
    pipe, _ = engine(cfg, Recorder(), [slow], continuous=False)
    run(pipe, [make_frame(i, ADA) for i in range(3)])
    assert pipe.paused and slow.forgotten == []
    pipe.resume()
    assert slow.forgotten == [1] and slow.tracks == []

    photos = AlwaysPass("ok")
    pipe = RecognitionPipeline(
        cfg, FakeDetector(), FakeEmbedder(), LABELS, GALLERY, Recorder(), clock=clock(),
        independent_frames=True, gates=[photos],
    )  # fmt: skip
    _, events = run(pipe, [make_frame(i, {p: (100, 60)}) for i, p in enumerate(["Ada", "Bob"])])
    assert [e.name for e in events] == ["Ada", "Bob"]
    assert photos.forgotten == [1]  # the first photo's track ended with the second photo


def test_refusals_are_written_to_the_audit_trail_of_the_attendance_store(cfg):
    writer = PendingWriter(open_attendance_store(cfg))
    try:
        pipe, _ = engine(cfg, writer, [FailsLeftHalf()])
        _, events = run(pipe, [make_frame(i, {**ADA, **BOB}) for i in range(10)])
    finally:
        writer.close()
    assert sorted((e.name, e.action) for e in events) == [("Ada", "refused"), ("Bob", "present")]
    with open_attendance_store(cfg, create=False) as db:
        assert [(r.name, r.status) for r in db.rows()] == [("Bob", "Present")]
        assert sorted((e.name, e.action) for e in db.events()) == [
            ("Ada", "refused"), ("Bob", "present"),
        ]  # fmt: skip


# --------------------------------------------------------------------------- drawing
def test_refused_and_checking_faces_are_drawn_in_their_own_colours(cfg):
    frame = make_frame(0, {})
    box = (100.0, 60.0, 60.0, 80.0)
    views = {
        "refused": FaceView(1, box, "Ada", 0.3, "confirmed",
                            (("liveness", Verdict.refuse("photo or screen?")),)),
        "checking": FaceView(1, box, "Ada", 0.3, "confirmed", (("liveness", Verdict.wait()),)),
        "confirmed": FaceView(1, box, "Ada", 0.3, "confirmed", (("liveness", Verdict.allow()),)),
        "unknown": FaceView(1, box, UNKNOWN, 1.3, "unknown", (("liveness", Verdict.wait()),)),
    }  # fmt: skip
    from recognizer.pipeline import FrameResult

    for status, view in views.items():
        assert view.display_status == status
        image = annotate(FrameResult(frame=frame, faces=[view]))
        edge = image[100, 100].astype(int)  # on the box's left edge
        assert np.abs(edge - COLOURS[status]).max() <= 1, status
    assert face_note(views["refused"]) == "photo or screen?"
    assert face_note(views["checking"]) == "checking..."
    assert face_note(views["confirmed"]) is None and face_note(views["unknown"]) is None
    # the refusal's reason is written under the box, in the refusal colour
    refused = annotate(FrameResult(frame=frame, faces=[views["refused"]]))
    plain = annotate(FrameResult(frame=frame, faces=[views["confirmed"]]))
    below = refused[143:160, 100:160].reshape(-1, 3).astype(int)
    assert (np.abs(below - COLOURS["refused"]).max(axis=1) <= 1).sum() > 100
    assert not np.array_equal(refused[143:160], plain[143:160])


def test_refusal_event_line_without_reason():
    event = RecognitionEvent(
        dt.datetime(2025, 1, 6, 9, 0), "Ada", 0.5, "refused", "camera 0", 3, 10, 1.0, 0.5,
        gate="liveness",
    )  # fmt: skip
    assert event.line().endswith("refused  (track 3, camera 0; liveness)")
    assert event.refused and not event.recorded


class StickyLiveness(Spy):
    """Like a liveness check that accumulates evidence: a face proven live in 3 looks stays
    PASS for its track; a face of ``photo`` colour (a printed photo) is refused before that."""

    def __init__(self, photo: str, name: str = "liveness") -> None:
        super().__init__(name)
        self.photo = np.array(PALETTE[photo][::-1], np.int16)  # BGR

    def judge(self, state: list, frame: Frame, face) -> Verdict:
        if len(state) >= 3:
            return Verdict.allow("live")
        x, y, w, h = (int(v) for v in face.box)
        centre = frame.image[y + h // 2, x + w // 2].astype(np.int16)
        if np.abs(centre - self.photo).sum() < 60:
            return Verdict.refuse("photo or screen?")
        state.append(frame.index)
        return Verdict.allow("live") if len(state) >= 3 else Verdict.wait("look")


@pytest.mark.parametrize("jump", [0.9, 2.0])
def test_a_photo_held_into_a_strangers_track_does_not_borrow_his_liveness(cfg, jump):
    """A live stranger (never confirmed, Unknown) proves his track live, then holds Ada's photo
    into the same box: the first embedding that names Ada judges the face afresh, so the photo
    is refused and Ada is never recorded."""
    gate = StickyLiveness("Ada")
    recorder = Recorder()
    pipe, _ = engine(cfg, recorder, [gate], track_jump=jump)
    results, change = swap("Zed", "Ada", pipe, seconds=1.0, after=30)
    tracks = {r.faces[0].track_id for r in results}
    assert tracks == ({1, 2} if jump < 1.41 else {1})  # split by the jump, or one track
    assert recorder.marks == []
    assert [(r[0], r[4]) for r in recorder.logged] == [("Ada", "refused")]
    assert gate.forgotten == [1]  # the stranger's track: ended, or its identity became Ada
    assert results[-1].faces[0].display_status == "refused"
