"""Passive liveness of one tracked face: a verdict from the looks of that face alone.

:class:`PassiveLiveness` is fed every detection of one track (the frame in grey, its
timestamp, the face) and keeps a running :class:`Assessment`:

- ``spoof`` as soon as the face is framed by a device or paper border
  (:func:`liveness.cues.enclosure`, :attr:`liveness.cues.Enclosure.frames_face`) in enough
  of its looks: at least ``BORDER_SHARE`` of them, or ``STRONG_LOOKS`` looks with edges on
  three or more sides, after ``MIN_LOOKS`` looks. A spoof verdict sticks for the rest of the track;
- ``live`` once the face has been watched for ``WINDOW_SECONDS`` over at least
  ``MIN_LOOKS`` looks without that; it turns into ``spoof`` if the border shows up later;
- ``undecided`` before that.

Why only borders: see the README's liveness section and ``bench/bench_liveness.py``. On this
project's genuine clips no look had a border on two sides, while phones, tablets, laptops and
prints held up to a camera show one in most looks. Other cues were measured and left out:
the nose's projective coordinates (a flat picture keeps them) were as noisy on held stills
as on live heads with MTCNN landmarks, and the motion of the face's surroundings could not
tell a hand-held phone recording (genuine) from a hand-held replay.

State is one small record per track; nothing is shared between faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from liveness.cues import Enclosure, enclosure, roll_degrees

LIVE, SPOOF, UNDECIDED = "live", "spoof", "undecided"

WINDOW_SECONDS = 1.0  # a face is watched this long before it is called live ...
MIN_LOOKS = 4  # ... over at least this many detections
BORDER_SHARE = 0.4  # share of looks with a framing border that makes a face a picture
STRONG_LOOKS = 2  # looks with a border on 3+ sides that do, whatever the share


@dataclass(frozen=True)
class Assessment:
    """The current verdict on one face, with the evidence behind it."""

    verdict: str  # live, spoof or undecided
    score: float  # 0 (live) … 1 (a picture): the share of looks with a framing border
    seconds: float  # time watched so far (frame time)
    looks: int  # detections seen
    cues: dict[str, float] = field(default_factory=dict)
    decided_by: tuple[str, ...] = ()  # the cues that decided (empty while undecided)
    decided_at: float | None = None  # seconds after the first look when this verdict came

    @property
    def live(self) -> bool:
        return self.verdict == LIVE

    @property
    def spoof(self) -> bool:
        return self.verdict == SPOOF


class PassiveLiveness:
    """The running passive verdict on one face (one track)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.looks = 0
        self.border_looks = 0  # looks whose edges frame the face
        self.strong_looks = 0  # looks with a border on 3+ sides
        self.spoofed = False
        self.decided_at: float | None = None
        self.last: Assessment | None = None

    def observe(self, grey: np.ndarray, timestamp: float, box, landmarks) -> Assessment:
        """Take one detection of this face (``grey``: the whole frame, uint8) into account."""
        found = enclosure(grey, tuple(float(v) for v in box), roll_degrees(np.asarray(landmarks)))
        return self.add(found, timestamp)

    def add(self, found: Enclosure, timestamp: float) -> Assessment:
        """Take one look's border search into account; the verdict as of now."""
        if self.first is None or timestamp < self.first:
            self.first = timestamp
        self.looks += 1
        self.border_looks += found.frames_face
        self.strong_looks += found.count >= 3
        seconds = max(0.0, timestamp - self.first)
        share = self.border_looks / self.looks
        decided_by: tuple[str, ...] = ()
        framed = share >= BORDER_SHARE or self.strong_looks >= STRONG_LOOKS
        if not self.spoofed and self.looks >= MIN_LOOKS and framed:
            self.spoofed = True
        if self.spoofed:
            verdict, decided_by = SPOOF, ("border",)
        elif seconds >= WINDOW_SECONDS and self.looks >= MIN_LOOKS:
            verdict, decided_by = LIVE, ("no border",)
        else:
            verdict = UNDECIDED
        if verdict == UNDECIDED:
            self.decided_at = None
        elif self.last is None or self.last.verdict != verdict:
            self.decided_at = seconds  # when this verdict was first reached
        self.last = Assessment(
            verdict=verdict,
            score=round(share, 3),
            seconds=seconds,
            looks=self.looks,
            cues={"border": round(share, 3), "border3": float(self.strong_looks)},
            decided_by=decided_by,
            decided_at=self.decided_at,
        )
        return self.last
