"""Decisions over time: k-of-m identity confirmation per track, and per-person cool-down.

Pure logic (no model, no I/O), driven by timestamps in seconds.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from common.vectors import UNKNOWN, Match


@dataclass(frozen=True)
class Observation:
    """One match of a track's face at ``time`` (seconds)."""

    identity: str  # UNKNOWN when the nearest gallery face was beyond the threshold
    distance: float
    known: bool
    time: float


class Confirmation:
    """k-of-m voting over the last ``m`` observations of one tracked face.

    An identity is *confirmed* once it won at least ``k`` of the last ``m`` observations,
    each below the threshold (``known``). Unknown observations fill the window but never
    confirm anything, so a stranger stays :data:`UNKNOWN`.

    A confirmed identity holds only while new observations agree with it: an observation
    that :meth:`disagrees` (Unknown, or another name) starts the window over with itself, so
    a different face that takes over a confirmed track is judged afresh at once instead of
    inheriting the old votes.
    """

    def __init__(self, k: int, m: int) -> None:
        if not 1 <= k <= m:
            raise ValueError(f"need 1 <= k <= m, got k={k}, m={m}")
        self.k = k
        self.m = m
        self.window: deque[Observation] = deque(maxlen=m)

    def disagrees(self, match: Match) -> bool:
        """Would ``match`` contradict the confirmed identity (Unknown or another name)?"""
        confirmed = self.identity
        return confirmed is not None and (not match.known or match.identity != confirmed)

    def add(self, match: Match, time: float) -> str | None:
        """Record one match; return the identity confirmed by the window (or ``None``).

        A match that :meth:`disagrees` with the confirmed identity clears the window first.
        """
        if self.disagrees(match):
            self.window.clear()
        self.window.append(Observation(match.identity, float(match.distance), match.known, time))
        return self.identity

    @property
    def identity(self) -> str | None:
        """The identity with at least ``k`` known wins in the window, else ``None``.

        Should two identities qualify (``k <= m/2``; :meth:`add` prevents it by restarting the
        window when a rival follows a confirmed identity), the one with more wins (then the
        most recent) is chosen.
        """
        votes = Counter(o.identity for o in self.window if o.known)
        if not votes:
            return None
        best = max(votes.values())
        if best < self.k:
            return None
        for obs in reversed(self.window):
            if obs.known and votes[obs.identity] == best:
                return obs.identity
        return None  # pragma: no cover - the loop always finds the best identity

    @property
    def settled(self) -> bool:
        """The window is full: more observations only refresh it."""
        return len(self.window) >= self.m

    @property
    def latest(self) -> Observation | None:
        """The most recent observation."""
        return self.window[-1] if self.window else None

    def distance_of(self, identity: str) -> float:
        """The most recent distance at which ``identity`` won (``inf`` if it never did)."""
        for obs in reversed(self.window):
            if obs.identity == identity and obs.known:
                return obs.distance
        return float("inf")

    def label(self) -> tuple[str, float, str]:
        """``(label, distance, status)`` to show: status is confirmed, candidate or unknown."""
        confirmed = self.identity
        if confirmed is not None:
            return confirmed, self.distance_of(confirmed), "confirmed"
        latest = self.latest
        if latest is None:
            return UNKNOWN, float("inf"), "unknown"
        if latest.known:
            return latest.identity, latest.distance, "candidate"
        return UNKNOWN, latest.distance, "unknown"

    def reset(self) -> None:
        """Forget every observation."""
        self.window.clear()


class Cooldown:
    """A per-person quiet period: :meth:`ready` is false within ``seconds`` of :meth:`note`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._last: dict[str, float] = {}

    def ready(self, name: str, time: float) -> bool:
        """May ``name`` be recorded again at ``time``?"""
        last = self._last.get(name)
        return last is None or time - last >= self.seconds or time < last

    def note(self, name: str, time: float) -> None:
        """``name`` was recorded at ``time``."""
        self._last[name] = time

    def last(self, name: str) -> float | None:
        """When ``name`` was last recorded (``None`` if never)."""
        return self._last.get(name)
