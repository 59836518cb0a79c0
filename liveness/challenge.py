"""Challenge liveness: the kiosk asks for a random head movement and checks it.

For kiosks with a screen. Each new face gets one action, drawn at random (turn the head to
the left or to the right), shown as its prompt under the face box. The action is checked
from the five landmarks (:func:`liveness.cues.pose`) against the face's own starting pose:
the nose moves sideways by ``TURN`` eye spans, in the asked direction, and then back to
within ``TURN / 2`` of where it started. Facing the camera again matters: the person is
recorded from that look's own embedding, and a turned face is often not recognised (a track
whose face stops being recognised starts its gates afresh). (A nod was tried and
left out: the face changed so much while nodding that recognition lost it, and a track that
changes identity starts its gates afresh.)

The face passes when the action is seen within ``seconds`` and the passive check
(:mod:`liveness.passive`, run on the same looks) does not call it a picture. It fails when
the passive check does (a picture), or when time runs out (no movement: not necessarily a
picture); after ``RETRY_SECONDS`` a timed-out face gets a new action (the refusal has been
shown and logged once by then).

A replay would have to show the asked movement within the time: a clip that turns both ways
passes as a live person would, which is why the passive border check still applies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from liveness.cues import pose
from liveness.passive import MIN_LOOKS, Assessment

# sideways nose shift, in eye spans, that counts as a turn: a held still photo or phone
# tilted by hand moved it by up to 0.07 in the bench's clips; a deliberate turn by 0.2-0.4
TURN = 0.15
RETRY_SECONDS = 2.0  # after a timeout, a new action is asked this much later

# action -> prompt. "left"/"right" are the person's own: turning to their left moves the
# nose towards image-right on a camera facing them (the window shows the camera unmirrored).
ACTIONS = {
    "turn_left": "turn your head to your left",
    "turn_right": "turn your head to your right",
}

PENDING, PASSED, FAILED = "pending", "passed", "failed"


@dataclass(frozen=True)
class ChallengeStatus:
    """Where one face's challenge stands."""

    state: str  # pending, passed or failed
    action: str  # the action asked
    prompt: str  # what the window shows
    seconds: float  # time since this action was asked
    reason: str = ""  # why it failed
    picture: bool = False  # failed because the passive check called the face a picture


class Challenge:
    """One face's challenge: a random action, checked look by look."""

    def __init__(self, seconds: float = 5.0, rng: random.Random | None = None) -> None:
        self.seconds = float(seconds)
        self.rng = rng or random.SystemRandom()
        self.action = ""
        self.asked: float | None = None
        self.baseline: float | None = None  # the face's yaw when the action was asked
        self.failed_at: float | None = None
        self.turned = False  # the asked turn was seen; waiting for the face to come back
        self.passed = False

    def _ask(self, timestamp: float) -> None:
        self.action = self.rng.choice(sorted(ACTIONS))
        self.asked = timestamp
        self.baseline = None
        self.failed_at = None
        self.turned = False

    def done(self, landmarks: np.ndarray) -> bool:
        """Has the face made the asked turn and come back, relative to its starting pose?"""
        yaw, _ = pose(landmarks)
        if not math.isfinite(yaw):
            return False  # degenerate landmarks: this look says nothing
        if self.baseline is None:
            self.baseline = yaw
            return False
        moved = yaw - self.baseline if self.action == "turn_left" else self.baseline - yaw
        if moved >= TURN:
            self.turned = True
        return self.turned and abs(yaw - self.baseline) <= TURN / 2

    def observe(
        self, timestamp: float, landmarks: np.ndarray, passive: Assessment
    ) -> ChallengeStatus:
        """Take one look of the face; where its challenge stands now."""
        if self.asked is None or timestamp < self.asked:
            self._ask(timestamp)
        if self.failed_at is not None and timestamp - self.failed_at >= RETRY_SECONDS:
            self._ask(timestamp)
        assert self.asked is not None
        elapsed = timestamp - self.asked
        prompt = ACTIONS[self.action]
        if passive.spoof:
            return ChallengeStatus(FAILED, self.action, prompt, elapsed, "photo or screen?", True)
        if self.failed_at is not None:
            return ChallengeStatus(FAILED, self.action, prompt, elapsed, "no movement: try again")
        if self.passed or self.done(landmarks):
            self.passed = True
            if passive.looks >= MIN_LOOKS:
                return ChallengeStatus(PASSED, self.action, prompt, elapsed)
            return ChallengeStatus(PENDING, self.action, prompt, elapsed)
        if elapsed > self.seconds:
            self.failed_at = timestamp
            return ChallengeStatus(FAILED, self.action, prompt, elapsed, "no movement: try again")
        return ChallengeStatus(PENDING, self.action, prompt, elapsed)
