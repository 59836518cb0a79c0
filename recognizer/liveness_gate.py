"""The liveness gate: a per-face :class:`recognizer.gates.Gate` over :mod:`liveness`.

``liveness`` (configuration) picks the mode:

- ``off``: no gate;
- ``passive``: :class:`liveness.passive.PassiveLiveness` on every detection of each track;
  the face passes once it is called live, fails ("photo or screen?", logged as a ``spoof``
  event) once it is called a picture, and waits before that;
- ``challenge``: the same passive check plus :class:`liveness.challenge.Challenge`: the
  window asks the face to turn its head to a random side and back (the prompt is the gate's
  waiting reason, drawn under the box) and the face passes once it has; a face that does not
  move in time is refused ("no movement: try again", a ``refused`` event) and asked again;
- ``auto`` (the default): ``passive`` for cameras and streams, ``off`` for video files and
  folders of photos (a folder's every image is a one-look track, so a passive verdict could
  never be reached there, and the sample demo is made of still photos).

Everything is per track (the gate forgets a track when the pipeline says so), so a face
never borrows the verdict of another face in the frame.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from common.config import Config
from common.sources import FolderSource, Frame, ReplaySource, VideoFileSource
from liveness.challenge import FAILED, PASSED, Challenge
from liveness.passive import Assessment, PassiveLiveness
from preprocess.detect import Face
from recognizer.gates import ACTION_REFUSED, Verdict

log = logging.getLogger(__name__)

ACTION_SPOOF = "spoof"  # the audit action of a face refused as a picture
REFUSED_REASON = "photo or screen?"


def liveness_mode(cfg: Config, source: Any) -> str:
    """The mode to run: ``cfg.liveness``, with ``auto`` resolved by the kind of source."""
    mode = cfg.liveness
    if mode != "auto":
        return mode
    recorded = (VideoFileSource, FolderSource, ReplaySource)  # a file played as a camera too
    return "off" if isinstance(source, recorded) else "passive"


class LivenessGate:
    """Passive (and optionally challenge) liveness, one state per track."""

    name = "liveness"

    def __init__(self, mode: str = "passive", *, challenge_seconds: float = 5.0,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        if mode not in ("passive", "challenge"):
            raise ValueError(f"liveness gate mode {mode!r}: must be passive or challenge")
        self.mode = mode
        self.challenge_seconds = float(challenge_seconds)
        self.rng = rng
        self._passive: dict[int, PassiveLiveness] = {}
        self._challenges: dict[int, Challenge] = {}
        self._grey: tuple[np.ndarray, np.ndarray] | None = None  # (frame image, its grey)

    def _grey_of(self, frame: Frame) -> np.ndarray:
        """The frame in grey, converted once for all its faces."""
        import cv2

        if self._grey is None or self._grey[0] is not frame.image:
            self._grey = (frame.image, cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
        return self._grey[1]

    def assessment(self, track_id: int) -> Assessment | None:
        """The passive assessment of ``track_id`` so far."""
        state = self._passive.get(track_id)
        return state.last if state is not None else None

    def observe(self, track_id: int, frame: Frame, face: Face) -> Verdict:
        passive = self._passive.setdefault(track_id, PassiveLiveness())
        seen = passive.observe(self._grey_of(frame), frame.timestamp, face.box, face.landmarks)
        if self.mode == "challenge":
            challenge = self._challenges.get(track_id)
            if challenge is None:
                challenge = self._challenges[track_id] = Challenge(self.challenge_seconds, self.rng)
            status = challenge.observe(frame.timestamp, face.landmarks, seen)
            if status.state == PASSED:
                return Verdict.allow("live")
            if status.state == FAILED:  # a picture is a spoof; no movement in time is refused
                action = ACTION_SPOOF if status.picture else ACTION_REFUSED
                return Verdict.refuse(status.reason or REFUSED_REASON, action)
            return Verdict.wait(status.prompt)
        if seen.spoof:
            return Verdict.refuse(REFUSED_REASON, ACTION_SPOOF)
        if seen.live:
            return Verdict.allow("live")
        return Verdict.wait("checking liveness")

    def forget(self, track_id: int) -> None:
        self._passive.pop(track_id, None)
        self._challenges.pop(track_id, None)


def build_gates(cfg: Config, source: Any, *, headless: bool) -> list[LivenessGate]:
    """The gates a recogniser on ``source`` runs (none when liveness is off)."""
    mode = liveness_mode(cfg, source)
    if mode == "off":
        return []
    if mode == "challenge" and headless:
        log.warning(
            "liveness=challenge without a window: nobody sees the prompts, so faces pass only "
            "if they happen to move as asked (use liveness=passive for a headless kiosk)"
        )
    log.info("liveness: %s", mode)
    return [LivenessGate(mode, challenge_seconds=cfg.liveness_challenge_seconds)]
