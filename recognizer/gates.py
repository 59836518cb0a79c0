"""Per-face gates: checks a tracked face must pass before its confirmed identity is recorded.

A :class:`Gate` (a liveness check, say) watches every detection of every tracked face and
gives a :class:`Verdict` per track: ``PASS``, ``FAIL`` (with a short reason such as "photo or
screen?" and the audit action logged when it holds someone back, e.g. "refused") or
``PENDING`` (not enough evidence yet). ``recognizer.pipeline.RecognitionPipeline`` takes an
ordered sequence of gates and records a confirmed person only while every gate's current
verdict for that same track is ``PASS``; :class:`GateBoard` is the bookkeeping it uses.

State is per track: a gate keys everything it remembers by ``track_id`` and drops it on
:meth:`Gate.forget` (the track ended, recognition was reset, or another face took over the
track), so a face never inherits the verdict of another one. Track ids are never reused by a
pipeline. Gates are pure and headless: no window, no I/O of their own. They see the frame
(BGR image, timestamp, index, source) and the face (box and five landmarks in full-frame
pixels, ``preprocess.detect.Face``).

A gate that needs several looks (blinks, motion) stays ``PENDING`` on image folders, where
every image is its own one-detection track.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from common.sources import Frame
from preprocess.detect import Face

ACTION_REFUSED = "refused"  # the default audit action of a failing gate


class Outcome(enum.Enum):
    """What a gate thinks of one tracked face."""

    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"


@dataclass(frozen=True)
class Verdict:
    """A gate's current verdict on one track.

    ``reason``: a few words for the window (e.g. "photo or screen?", "hold still");
    ``action``: the audit-trail action written when a ``FAIL`` holds a confirmed person back.
    """

    outcome: Outcome
    reason: str = ""
    action: str = ACTION_REFUSED

    @classmethod
    def allow(cls, reason: str = "") -> Verdict:
        """A ``PASS``."""
        return cls(Outcome.PASS, reason)

    @classmethod
    def refuse(cls, reason: str, action: str = ACTION_REFUSED) -> Verdict:
        """A ``FAIL``, logged as ``action`` when it holds someone back."""
        if not action:
            raise ValueError("a failing verdict needs an audit action")
        return cls(Outcome.FAIL, reason, action)

    @classmethod
    def wait(cls, reason: str = "") -> Verdict:
        """A ``PENDING``: not decided yet."""
        return cls(Outcome.PENDING, reason)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    @property
    def pending(self) -> bool:
        return self.outcome is Outcome.PENDING


NOT_SEEN = Verdict.wait("not checked yet")  # a track no gate has looked at yet


@runtime_checkable
class Gate(Protocol):
    """A per-face check with per-track state."""

    name: str  # short and unique in a pipeline, e.g. "liveness"

    def observe(self, track_id: int, frame: Frame, face: Face) -> Verdict:
        """Look at one detection of track ``track_id``; its verdict as of now."""
        ...

    def forget(self, track_id: int) -> None:
        """Drop everything known about ``track_id`` (gone, reset, or another face now)."""
        ...


S = TypeVar("S")


class TrackStateGate(abc.ABC, Generic[S]):
    """A convenient base for gates: one state object per track, created on first sight.

    Subclasses set ``name`` and implement :meth:`new_state` and :meth:`judge`.
    """

    name = "gate"

    def __init__(self) -> None:
        self._states: dict[int, S] = {}

    @abc.abstractmethod
    def new_state(self) -> S:
        """The state of a track seen for the first time."""

    @abc.abstractmethod
    def judge(self, state: S, frame: Frame, face: Face) -> Verdict:
        """Update ``state`` with one detection; the verdict as of now."""

    def observe(self, track_id: int, frame: Frame, face: Face) -> Verdict:
        state = self._states.get(track_id)
        if state is None:
            state = self._states[track_id] = self.new_state()
        return self.judge(state, frame, face)

    def forget(self, track_id: int) -> None:
        self._states.pop(track_id, None)

    @property
    def tracks(self) -> list[int]:
        """The tracks this gate holds state for."""
        return list(self._states)


Verdicts = tuple[tuple[str, Verdict], ...]  # (gate name, verdict) in gate order


class GateBoard:
    """The latest verdict of every gate on every live track, and which refusals were told.

    Used by the pipeline: :meth:`observe` feeds one detection of a track to every gate,
    :meth:`forget` is called when a track ends (or another face takes it over).
    """

    def __init__(self, gates: Sequence[Gate]) -> None:
        self.gates = tuple(gates)
        names = [g.name for g in self.gates]
        if len(set(names)) != len(names):
            raise ValueError(f"gate names must be unique, got {names}")
        self._verdicts: dict[int, dict[str, Verdict]] = {}
        self._announced: set[tuple[int, str]] = set()  # (track, gate) refusals already told

    def __bool__(self) -> bool:
        return bool(self.gates)

    def observe(self, track_id: int, frame: Frame, face: Face) -> Verdicts:
        """Feed one detection of ``track_id`` to every gate; the new verdicts."""
        if not self.gates:
            return ()
        current = self._verdicts.setdefault(track_id, {})
        for gate in self.gates:
            current[gate.name] = gate.observe(track_id, frame, face)
        return self.verdicts(track_id)

    def verdicts(self, track_id: int) -> Verdicts:
        """Every gate's current verdict on ``track_id`` (``PENDING`` before any look)."""
        current = self._verdicts.get(track_id, {})
        return tuple((g.name, current.get(g.name, NOT_SEEN)) for g in self.gates)

    def cleared(self, track_id: int) -> bool:
        """Every gate passes ``track_id`` (always true without gates)."""
        return all(v.passed for _, v in self.verdicts(track_id))

    def pending(self, track_id: int) -> bool:
        """Some gate has not decided on ``track_id`` yet (and none fails)."""
        verdicts = [v for _, v in self.verdicts(track_id)]
        return any(v.pending for v in verdicts) and not any(v.failed for v in verdicts)

    def failures(self, track_id: int) -> list[tuple[str, Verdict]]:
        """The failing gates of ``track_id``, in gate order."""
        return [(name, v) for name, v in self.verdicts(track_id) if v.failed]

    def untold(self, track_id: int) -> list[tuple[str, Verdict]]:
        """The failing gates of ``track_id`` not yet announced."""
        return [(n, v) for n, v in self.failures(track_id) if (track_id, n) not in self._announced]

    def announce(self, track_id: int, on_new: Callable[[str, Verdict], None]) -> None:
        """Call ``on_new(gate, verdict)`` for each failing gate not yet told for this track."""
        for name, verdict in self.untold(track_id):
            on_new(name, verdict)  # told once it went through (a failed write is retried)
            self._announced.add((track_id, name))

    def forget(self, track_id: int) -> None:
        """``track_id`` is gone (or is another face now): every gate forgets it."""
        for gate in self.gates:
            gate.forget(track_id)
        self._verdicts.pop(track_id, None)
        self._announced = {key for key in self._announced if key[0] != track_id}

    @property
    def tracks(self) -> list[int]:
        """Tracks with verdicts."""
        return list(self._verdicts)
