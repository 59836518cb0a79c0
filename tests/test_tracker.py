"""IoU tracker, k-of-m confirmation and cool-down: pure logic, no model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.vectors import UNKNOWN, Match
from recognizer.confirm import Confirmation, Cooldown
from recognizer.tracker import IoUTracker, iou


def det(x: float, y: float, w: float = 50, h: float = 60) -> SimpleNamespace:
    return SimpleNamespace(box=(x, y, w, h))


def known(name: str, d: float = 0.5) -> Match:
    return Match(name, d, True)


def unknown(d: float = 1.3) -> Match:
    return Match(UNKNOWN, d, False)


# --------------------------------------------------------------------------- IoU
def test_iou_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges
    assert iou((0, 0, 10, 10), (50, 50, 10, 10)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(16 / 100)


# --------------------------------------------------------------------------- tracker
def test_track_keeps_its_id_while_the_face_moves_a_little():
    tracker = IoUTracker(k=3, m=5)
    first = tracker.update([det(100, 100)], 0.0)
    assert [t.id for t in first] == [1]
    for step in range(1, 6):
        tracks = tracker.update([det(100 + 4 * step, 100 + 2 * step)], step * 0.1)
    assert [t.id for t in tracks] == [1]
    assert tracks[0].hits == 6 and tracks[0].fresh
    assert tracks[0].box == (120.0, 110.0, 50.0, 60.0)
    assert tracks[0].first_seen == 0.0 and tracks[0].last_seen == pytest.approx(0.5)


def test_two_faces_are_matched_to_their_own_tracks_in_any_order():
    tracker = IoUTracker(k=3, m=5)
    a, b = tracker.update([det(10, 10), det(300, 10)], 0.0)
    # detections come back in the opposite order, both shifted
    tracks = tracker.update([det(305, 12), det(14, 11)], 0.1)
    by_id = {t.id: t for t in tracks}
    assert set(by_id) == {a.id, b.id}
    assert by_id[a.id].box[0] == 14 and by_id[b.id].box[0] == 305


def test_a_far_away_detection_starts_a_new_track():
    tracker = IoUTracker(k=3, m=5)
    tracker.update([det(10, 10)], 0.0)
    tracks = tracker.update([det(10, 10), det(400, 300)], 0.1)
    assert sorted(t.id for t in tracks) == [1, 2]
    new = next(t for t in tracks if t.id == 2)
    assert new.hits == 1 and new.first_seen == 0.1


def test_low_overlap_is_not_the_same_face():
    tracker = IoUTracker(k=3, m=5, iou_threshold=0.3)
    tracker.update([det(0, 0, 100, 100)], 0.0)
    tracks = tracker.update([det(80, 0, 100, 100)], 0.1)  # IoU = 20*100 / 18000 ~ 0.11
    assert sorted(t.id for t in tracks) == [1, 2]
    old = next(t for t in tracks if t.id == 1)
    assert not old.fresh and old.misses == 1


def test_tracks_end_after_max_missed_rounds():
    tracker = IoUTracker(k=3, m=5, max_missed=2)
    tracker.update([det(10, 10)], 0.0)
    assert len(tracker.update([], 0.1)) == 1
    assert tracker.visible() == []  # missed: kept, but not drawn
    assert len(tracker.update([], 0.2)) == 1
    assert tracker.update([], 0.3) == []
    # a face coming back later is a new track
    assert [t.id for t in tracker.update([det(10, 10)], 0.4)] == [2]


def test_a_face_back_after_max_gap_seconds_is_a_new_track_even_if_it_overlaps():
    """At 12 fps, detecting every 3rd frame (rounds 0.25 s apart), a 0.5 s empty gap holds two
    rounds; the next person then stands in the same box: rounds alone (max_missed=3) would
    hand them the old track."""
    ended: list[int] = []
    tracker = IoUTracker(k=3, m=5, max_missed=3, max_gap=0.4, on_end=lambda t: ended.append(t.id))
    tracker.update([det(10, 10)], 0.0)
    assert [t.id for t in tracker.update([], 0.25)] == [1]  # missed once: kept
    assert tracker.update([], 0.5) == [] and ended == [1]  # twice, unseen 0.5 s: ended
    (track,) = tracker.update([det(10, 10)], 0.75)
    assert track.id == 2 and track.first_seen == 0.75
    # rounds 0.15 s apart: missed twice within 0.4 s (kept), the next face at 0.45 s is
    # judged against the gap before association, so it does not take the old track over
    tracker = IoUTracker(k=3, m=5, max_missed=3, max_gap=0.4)
    tracker.update([det(10, 10)], 0.0)
    assert tracker.update([], 0.15) != [] and tracker.update([], 0.3) != []
    assert [t.id for t in tracker.update([det(10, 10)], 0.45)] == [2]
    # without max_gap the same sequence keeps one track
    rounds_only = IoUTracker(k=3, m=5, max_missed=3)
    rounds_only.update([det(10, 10)], 0.0)
    rounds_only.update([], 0.25)
    rounds_only.update([], 0.5)
    assert [t.id for t in rounds_only.update([det(10, 10)], 0.75)] == [1]


def test_one_missed_round_never_ends_a_track_however_slow_the_frames():
    """At 2 fps a single missed detection is 1 s unseen: a detector's blink, not a gap."""
    tracker = IoUTracker(k=3, m=5, max_gap=0.4)
    for i in range(5):  # 2 fps: 0.5 s between looks, found every time
        (track,) = tracker.update([det(10, 10)], 0.5 * i)
    assert track.id == 1 and track.hits == 5
    assert tracker.update([], 2.5) != []  # missed once, unseen for 0.5 s: kept
    assert [t.id for t in tracker.update([det(10, 10)], 3.0)] == [1]  # and found again
    tracker.update([], 3.5)
    assert tracker.update([], 4.0) == []  # missed twice, unseen 1 s: ended
    fast = IoUTracker(k=3, m=5, max_missed=9, max_gap=0.4)  # rounds 0.1 s apart
    fast.update([det(10, 10)], 0.0)
    for t in (0.1, 0.2, 0.3, 0.4):
        assert fast.update([], t) != []  # missed, but unseen for 0.4 s at most: kept
    assert fast.update([], 0.5) == []


def test_split_replaces_a_track_with_a_new_one_that_inherits_nothing():
    ended: list[int] = []
    tracker = IoUTracker(k=1, m=1, on_end=lambda t: ended.append(t.id))
    tracker.update([det(10, 10), det(300, 10)], 0.0)
    old = tracker.tracks[0]
    old.confirmation.add(known("Ada"), 0.0)
    old.marked.add("Ada")
    new = tracker.split(old, 0.1, frame_index=7)
    assert ended == [1] and new.id == 3 and new.box == old.box and new.face is old.face
    assert new.identity is None and new.marked == set() and new.last_vector is None
    assert new.first_seen == 0.1 and new.first_frame == 7 and new.hits == 1
    assert sorted(t.id for t in tracker.tracks) == [2, 3]
    with pytest.raises(ValueError, match="not a live track"):
        tracker.split(old, 0.2)


def test_missed_track_recovers_when_seen_again():
    tracker = IoUTracker(k=3, m=5, max_missed=2)
    tracker.update([det(10, 10)], 0.0)
    tracker.update([], 0.1)
    (track,) = tracker.update([det(12, 10)], 0.2)
    assert track.id == 1 and track.misses == 0 and track.fresh


def test_coast_keeps_boxes_and_clears_fresh():
    tracker = IoUTracker(k=3, m=5)
    tracker.update([det(10, 10)], 0.0)
    (track,) = tracker.coast()
    assert not track.fresh and track.box == (10.0, 10.0, 50.0, 60.0) and track.misses == 0
    tracker.reset()
    assert tracker.tracks == [] and tracker.coast() == []


def test_on_end_is_told_of_every_track_that_ends_and_ids_are_never_reused():
    ended: list[int] = []
    tracker = IoUTracker(k=3, m=5, max_missed=1, on_end=lambda track: ended.append(track.id))
    tracker.update([det(10, 10), det(300, 10)], 0.0)
    tracker.update([det(12, 10)], 0.1)  # the second face missed once: kept
    assert ended == []
    tracker.coast()
    tracker.update([det(14, 10)], 0.2)  # missed twice: ends
    assert ended == [2]
    tracker.update([det(14, 10), det(300, 10)], 0.3)  # back: a new track
    assert sorted(t.id for t in tracker.tracks) == [1, 3]
    tracker.reset()
    assert sorted(ended) == [1, 2, 3] and tracker.tracks == []
    tracker.reset()
    assert sorted(ended) == [1, 2, 3]  # told once
    assert [t.id for t in tracker.update([det(10, 10)], 0.4)] == [4]


def test_tracker_rejects_bad_threshold():
    with pytest.raises(ValueError):
        IoUTracker(k=3, m=5, iou_threshold=0.0)


# --------------------------------------------------------------------------- k of m
def test_identity_confirmed_after_k_known_wins():
    c = Confirmation(k=3, m=5)
    assert c.add(known("Ada"), 0.0) is None
    assert c.label() == ("Ada", 0.5, "candidate")
    assert c.add(unknown(), 0.1) is None
    assert c.add(known("Ada", 0.6), 0.2) is None
    assert c.add(known("Ada", 0.4), 0.3) == "Ada"
    assert c.label() == ("Ada", 0.4, "confirmed")


def test_unknown_never_confirms_even_with_a_full_window():
    c = Confirmation(k=3, m=5)
    for i in range(10):
        assert c.add(unknown(), i) is None
    assert c.settled and c.identity is None
    assert c.label() == (UNKNOWN, 1.3, "unknown")


def test_split_votes_do_not_confirm():
    c = Confirmation(k=3, m=5)
    for i, m in enumerate([known("Ada"), known("Bob"), known("Ada"), known("Bob"), unknown()]):
        assert c.add(m, i) is None
    assert c.identity is None


def test_old_wins_slide_out_of_the_window():
    c = Confirmation(k=3, m=5)
    for i, m in enumerate([known("Ada"), known("Ada"), unknown(), unknown(), unknown()]):
        assert c.add(m, i) is None
    assert c.add(known("Ada", 0.4), 5) is None  # 3 Ada wins seen, but the first slid out
    assert [o.identity for o in c.window] == ["Ada", UNKNOWN, UNKNOWN, UNKNOWN, "Ada"]
    assert c.distance_of("Ada") == 0.4
    assert c.distance_of("Bob") == float("inf")


def confirmed_ada() -> Confirmation:
    c = Confirmation(k=3, m=5)
    for i in range(3):
        c.add(known("Ada", 0.3), i)
    assert c.identity == "Ada"
    return c


def test_agreeing_sightings_keep_a_confirmed_window():
    c = confirmed_ada()
    assert not c.disagrees(known("Ada", 0.6))
    assert c.add(known("Ada", 0.6), 3) == "Ada" and len(c.window) == 4
    assert c.label() == ("Ada", 0.6, "confirmed")


def test_an_unknown_sighting_restarts_a_confirmed_window():
    c = confirmed_ada()
    assert c.disagrees(unknown())
    assert c.add(unknown(), 3) is None  # not 3 of the last 4 for Ada: started over
    assert len(c.window) == 1 and c.distance_of("Ada") == float("inf")
    assert c.label() == (UNKNOWN, 1.3, "unknown")
    for i in range(2):
        assert c.add(known("Ada"), 4 + i) is None  # Ada must win k times again
    assert c.add(known("Ada"), 6) == "Ada"


def test_another_name_restarts_a_confirmed_window_and_needs_k_wins():
    c = confirmed_ada()
    assert c.disagrees(known("Bob"))
    assert c.add(known("Bob", 0.4), 3) is None
    assert c.label() == ("Bob", 0.4, "candidate")
    assert c.add(known("Bob", 0.4), 4) is None
    assert c.add(known("Bob", 0.45), 5) == "Bob"
    assert c.label() == ("Bob", 0.45, "confirmed")


def test_undecided_window_is_not_restarted():
    c = Confirmation(k=3, m=5)
    c.add(known("Ada"), 0)
    assert not c.disagrees(unknown()) and not c.disagrees(known("Bob"))
    c.add(unknown(), 1)
    c.add(known("Bob"), 2)
    assert len(c.window) == 3


def test_track_observe_reports_a_restart_and_announces_the_newcomer_again():
    tracker = IoUTracker(k=1, m=1)
    (track,) = tracker.update([det(10, 10)], 0.0)
    assert not track.observe(known("Ada"), 0.0) and track.identity == "Ada"
    assert track.last_embedded == 0.0
    track.announced_unknown = True  # as if a stranger had been announced on this track before
    assert not track.observe(known("Ada"), 1.0)
    assert track.observe(unknown(), 2.0) and track.identity is None
    assert not track.announced_unknown and track.last_embedded == 2.0


def test_k_equals_one_confirms_immediately_and_k_must_fit_m():
    assert Confirmation(k=1, m=1).add(known("Ada"), 0) == "Ada"
    with pytest.raises(ValueError):
        Confirmation(k=4, m=3)
    with pytest.raises(ValueError):
        Confirmation(k=0, m=3)


def test_small_k_first_to_reach_k_wins_and_a_rival_starts_over():
    c = Confirmation(k=2, m=5)
    for i, m in enumerate([known("Ada"), known("Bob"), known("Ada")]):
        c.add(m, i)
    assert c.identity == "Ada"  # Ada reached k first
    assert c.add(known("Bob"), 3) is None  # Bob does not inherit his earlier vote
    assert c.label() == ("Bob", 0.5, "candidate") and len(c.window) == 1


def test_empty_confirmation_label():
    assert Confirmation(k=3, m=5).label() == (UNKNOWN, float("inf"), "unknown")


# --------------------------------------------------------------------------- cool-down
def test_cooldown_per_person():
    cd = Cooldown(60.0)
    assert cd.ready("Ada", 0.0)
    cd.note("Ada", 0.0)
    assert not cd.ready("Ada", 59.9)
    assert cd.ready("Bob", 10.0)
    assert cd.ready("Ada", 60.0)
    assert cd.last("Ada") == 0.0 and cd.last("Bob") is None
    assert cd.ready("Ada", -5.0)  # clock went backwards (new source): do not block forever
