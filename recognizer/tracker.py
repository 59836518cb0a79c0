"""A simple IoU tracker: follow each face between detections so it is not re-embedded every frame.

Detections of a new detection round are matched greedily to existing tracks by
intersection-over-union (highest first, at least ``iou_threshold``). Unmatched detections
start tracks; a track unmatched for more than ``max_missed`` consecutive rounds, or missed
in at least two rounds and unseen for more than ``max_gap`` seconds of frame time, ends (a
face that reappears after a gap is a new track, whatever the frame rate; one missed round
alone, a detector's blink, never ends a track). Between detection rounds tracks keep their
last box (:meth:`IoUTracker.coast`). :meth:`IoUTracker.split` ends a track whose face
changed (the recogniser calls it when a fresh embedding jumps away from the track's previous
one) and starts a new one in its place. Track ids are never reused by one tracker;
``on_end`` is told of every track that ends (dropped, split, or by :meth:`IoUTracker.reset`),
so per-track state elsewhere can be freed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from preprocess.regions import iou
from recognizer.confirm import Confirmation

Box = tuple[float, float, float, float]  # x, y, w, h
GAP_MISSES = 2  # detection rounds a track must miss before max_gap can end it


def iou_matrix(tracks: Sequence[Box], detections: Sequence[Box]) -> np.ndarray:
    """IoU of every (track, detection) pair, shape (len(tracks), len(detections))."""
    out = np.zeros((len(tracks), len(detections)), np.float64)
    for i, t in enumerate(tracks):
        for j, d in enumerate(detections):
            out[i, j] = iou(t, d)
    return out


@dataclass(eq=False)
class Track:
    """One face followed over time, with its recognition state."""

    id: int
    box: Box
    face: Any  # the latest detection (preprocess.detect.Face in full-frame coordinates)
    first_seen: float  # timestamp (s) of the first detection
    last_seen: float  # timestamp (s) of the latest matched detection
    confirmation: Confirmation
    first_frame: int = 0
    hits: int = 1  # detections matched to this track
    misses: int = 0  # consecutive detection rounds without a match
    fresh: bool = True  # matched in the latest detection round (landmarks are current)
    last_embedded: float | None = None  # timestamp of the latest embedding
    marked: set[str] = field(default_factory=set)  # identities recorded from this track
    announced_unknown: bool = False
    last_vector: np.ndarray | None = None  # the latest embedding of this track's face
    last_known: str | None = None  # the person the latest known match named (None: nobody yet)
    # points followed by optical flow between detections, in current-frame pixels (live
    # cameras: recognizer.live_detection); None where tracks only coast
    points: np.ndarray | None = None

    @property
    def identity(self) -> str | None:
        """The confirmed identity, if any."""
        return self.confirmation.identity

    def observe(self, match: Any, time: float) -> bool:
        """Add the match of a fresh embedding (``common.vectors.Match``) taken at ``time``.

        Returns true when it contradicted the confirmed identity, so the confirmation started
        over with it (a different face took over this track): the new face is announced
        afresh if it is a stranger.
        """
        restarted = self.confirmation.disagrees(match)
        self.confirmation.add(match, time)
        self.last_embedded = time
        if restarted:
            self.announced_unknown = False
        return restarted


class IoUTracker:
    """Greedy IoU association of detections to tracks."""

    def __init__(
        self, k: int, m: int, iou_threshold: float = 0.3, max_missed: int = 3,
        on_end: Callable[[Track], None] | None = None, max_gap: float | None = None,
    ) -> None:  # fmt: skip
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={iou_threshold} must be in (0, 1]")
        if max_gap is not None and max_gap < 0:
            raise ValueError(f"max_gap={max_gap} must be >= 0 seconds")
        self.k = k
        self.m = m
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.max_gap = max_gap  # seconds a track may go unmatched (None: rounds only)
        self.on_end = on_end  # called with every track that ends
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)

    def update(
        self, faces: Sequence[Any], timestamp: float, frame_index: int = 0,
        boxes: Sequence[Box] | None = None,
    ) -> list[Track]:  # fmt: skip
        """Associate one detection round's ``faces`` (objects with ``.box``); return live tracks.

        ``boxes``: where the faces are now, when that differs from ``face.box`` (a round
        detected on an older frame, its faces moved to the current one by optical flow);
        tracks are associated and drawn with these, ``track.face`` stays the detection.
        Returns the tracks still alive, matched and new ones first (their ``fresh`` is true).
        """
        if boxes is None:
            boxes = [tuple(float(v) for v in f.box) for f in faces]  # type: ignore[misc]
        elif len(boxes) != len(faces):
            raise ValueError(f"{len(boxes)} boxes for {len(faces)} faces")
        boxes = [tuple(float(v) for v in b) for b in boxes]  # type: ignore[misc]
        if self.max_gap is not None:  # gone too long: whoever is there now is someone new
            expired = [t for t in self.tracks if self._gone(t, timestamp)]
            if expired:
                self.tracks = [t for t in self.tracks if t not in expired]
                self._ended(expired)
        scores = iou_matrix([t.box for t in self.tracks], boxes)
        pairs = sorted(
            ((scores[i, j], i, j) for i in range(scores.shape[0]) for j in range(scores.shape[1])),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for score, i, j in pairs:
            if score < self.iou_threshold:
                break
            if i in used_tracks or j in used_faces:
                continue
            used_tracks.add(i)
            used_faces.add(j)
            track = self.tracks[i]
            track.box = boxes[j]  # type: ignore[assignment]
            track.face = faces[j]
            track.last_seen = timestamp
            track.hits += 1
            track.misses = 0
            track.fresh = True
        survivors: list[Track] = []
        ended: list[Track] = []
        for i, track in enumerate(self.tracks):
            if i in used_tracks:
                survivors.append(track)
                continue
            track.fresh = False
            track.misses += 1
            (ended if self._lost(track, timestamp) else survivors).append(track)
        for j, face in enumerate(faces):
            if j in used_faces:
                continue
            survivors.append(self._new_track(boxes[j], face, timestamp, frame_index))  # type: ignore[arg-type]
        self.tracks = sorted(survivors, key=lambda t: (not t.fresh, t.id))
        self._ended(ended)
        return list(self.tracks)

    def _lost(self, track: Track, timestamp: float) -> bool:
        """Has an unmatched ``track`` been missing too long (rounds, or seconds)?"""
        if track.misses > self.max_missed:
            return True
        return self._gone(track, timestamp)

    def _gone(self, track: Track, timestamp: float) -> bool:
        """Missed in at least :data:`GAP_MISSES` rounds and not detected for more than
        ``max_gap`` seconds: however slow the frames, a face missed once is not yet gone."""
        if self.max_gap is None or track.misses < GAP_MISSES:
            return False
        return timestamp - track.last_seen > self.max_gap + 1e-6

    def _new_track(self, box: Box, face: Any, timestamp: float, frame_index: int) -> Track:
        return Track(
            id=next(self._ids),
            box=box,
            face=face,
            first_seen=timestamp,
            last_seen=timestamp,
            confirmation=Confirmation(self.k, self.m),
            first_frame=frame_index,
        )

    def split(self, track: Track, timestamp: float, frame_index: int = 0) -> Track:
        """End ``track`` (another face took its place) and return a new track in its place:
        same box and detection, a new id, nothing of the old one's votes or marks."""
        if not any(t is track for t in self.tracks):
            raise ValueError(f"track {track.id} is not a live track of this tracker")
        new = self._new_track(track.box, track.face, timestamp, frame_index)
        new.fresh = track.fresh
        new.points = track.points
        self.tracks = [new if t is track else t for t in self.tracks]
        self._ended([track])
        return new

    def coast(self) -> list[Track]:
        """A frame without detection: tracks keep their boxes; none is fresh."""
        for track in self.tracks:
            track.fresh = False
        return list(self.tracks)

    def visible(self) -> list[Track]:
        """Tracks seen in the latest detection round (the ones worth drawing)."""
        return [t for t in self.tracks if t.misses == 0]

    def reset(self) -> None:
        """Drop every track (e.g. when recognition resumes after a pause)."""
        ended, self.tracks = self.tracks, []
        self._ended(ended)

    def _ended(self, tracks: list[Track]) -> None:
        if self.on_end is not None:
            for track in tracks:
                self.on_end(track)
