"""The capture state machine, without any window: feed it frames and key presses.

:class:`CaptureSession` analyses each frame (detection on a downscaled copy, quality checks,
head pose), decides whether a key press or auto mode captures it, and saves shots as
``images/<Name>/NNNN.jpg`` — numbered, never overwriting, each written atomically.

Auto mode keeps a good frame whose pose is at least the pose step from every kept shot, and
guides the person through poses (:class:`scanner.pose.PoseGuide`: centre, left, right, up,
down, ...) with a hint naming the target. Someone who barely moves would stall there, so after
``relax_seconds`` of good frames without a new pose the step is halved, down to
``min_pose_step`` (logged), and the guide asks for another direction.
:func:`run_headless` drives a session from a frame source and a :class:`KeyScript`; the window
loop in :mod:`scanner.display` drives the same session from real key presses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError
from common.fsutil import fsync_dir
from common.image_io import IMAGE_SUFFIXES
from common.names import person_dir
from preprocess.detect import Detector, Face, detect_at_width
from scanner.pose import (
    Pose,
    PoseDiversity,
    PoseGuide,
    PoseSpread,
    PoseTarget,
    estimate_pose,
    pose_spread,
)
from scanner.quality import Issue, Quality, QualityLimits, assess

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(\d+)(\.[a-z]+)$", re.IGNORECASE)
JPEG_QUALITY = 95
#: Longest time one frame counts towards a stall: a gap in the frames (a stream dropping, a
#: slow machine) is not time the person spent holding still.
MAX_FRAME_GAP = 1.0


class Key(enum.Enum):
    """The keys the scanner understands."""

    SPACE = "space"  # capture the current frame (if it is good)
    ESC = "esc"  # finish, keeping what was taken
    AUTO = "auto"  # toggle auto mode


class KeyScriptError(UserError, ValueError):
    """A ``--keys`` script cannot be parsed."""


# --------------------------------------------------------------------------- shot files
def count_shots(folder: Path) -> int:
    """How many shots (image files, hidden/temp files excluded) ``folder`` already holds."""
    if not folder.is_dir():
        return 0
    return sum(
        1
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def next_shot_number(folder: Path) -> int:
    """One more than the highest numbered shot in ``folder`` (1 for none)."""
    if not folder.is_dir():
        return 1
    numbers = [
        int(m.group(1))
        for p in folder.iterdir()
        if (m := _NUMBERED.match(p.name)) and m.group(2).lower() in IMAGE_SUFFIXES
    ]
    return max(numbers, default=0) + 1


def _publish_exclusive(tmp: Path, target: Path) -> None:
    """Give temp file ``tmp`` the name ``target`` atomically; ``FileExistsError`` if taken.

    A hard link never replaces an existing name. Where links are unsupported, the name is
    reserved with ``O_CREAT | O_EXCL`` and the complete file then renamed over the reservation.
    """
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    os.replace(tmp, target)


def write_new_shot(folder: Path, data: bytes, suffix: str = ".jpg") -> Path:
    """Write ``data`` as the next free ``NNNN<suffix>`` in ``folder``; never overwrites.

    The bytes go to a temp file (fsynced) that is then published under the first free number
    at or after :func:`next_shot_number`, so a crash leaves no half-written shot and two
    writers never take the same number.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".shot-", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        number = next_shot_number(folder)
        while True:
            target = folder / f"{number:04d}{suffix}"
            try:
                _publish_exclusive(tmp, target)
                break
            except FileExistsError:
                number += 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)
    return target


def encode_jpeg(bgr: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"cannot encode a frame of shape {bgr.shape} as JPEG")
    return buf.tobytes()


# --------------------------------------------------------------------------- detection
class DownscaledDetector:
    """A :class:`~preprocess.detect.Detector` running ``inner`` on a copy no wider than
    ``width`` pixels (``preprocess.detect.detect_at_width``); faces come back in full-size
    coordinates. Detection cost grows with the pixel count, and enrolment faces are large."""

    def __init__(self, inner: Detector, width: int) -> None:
        self.inner = inner
        self.width = int(width)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in RGB uint8 ``rgb``, largest first, in ``rgb``'s coordinates."""
        return detect_at_width(self.inner, rgb, self.width)


# --------------------------------------------------------------------------- session
@dataclass(frozen=True)
class Shot:
    """One shot saved by this session."""

    path: Path
    frame_index: int
    pose: Pose | None
    sharpness: float
    timestamp: float = 0.0  # seconds, of the frame (media time, or wall clock when not given)


@dataclass(frozen=True)
class GuideView:
    """The pose guide as the window draws it; (yaw, pitch) in degrees from the starting pose."""

    target: PoseTarget
    current: tuple[float, float] | None  # this frame's pose, if it had one
    kept: tuple[tuple[float, float], ...]  # the shots of this session
    step: float  # the pose step now in force
    tolerance: float  # how close counts as reaching the target

    @property
    def aim(self) -> tuple[float, float]:
        return (self.target.yaw, self.target.pitch)


@dataclass(frozen=True)
class FrameView:
    """Everything the window needs to draw one frame."""

    image: np.ndarray  # BGR, the frame as captured
    index: int
    quality: Quality
    pose: Pose | None
    hint: str  # one hint at a time ("" when nothing to say)
    total: int  # shots of this person so far (existing + this session)
    target: int
    auto: bool
    message: str  # the latest event, e.g. "saved 0013.jpg" or "not saved: move closer"
    guide: GuideView | None = None  # auto mode: where to turn the head next
    timestamp: float = 0.0

    @property
    def counter(self) -> str:
        """``"12/35"``."""
        return f"{self.total}/{self.target}"


@dataclass
class CaptureResult:
    """What a capture run did."""

    name: str
    folder: Path
    existing: int  # shots before this session
    shots: list[Shot]
    target: int
    min_shots: int
    stopped_by: str  # "target", "esc", "end of script", "end of source", "interrupted"
    pose_step: float = 0.0  # the auto-mode pose step in force at the end (degrees)
    relaxations: int = 0  # how often auto mode halved the pose step

    @property
    def spread(self) -> PoseSpread:
        """How widely this session's shots cover head poses."""
        return pose_spread([s.pose for s in self.shots if s.pose is not None])

    @property
    def new_paths(self) -> list[Path]:
        return [s.path for s in self.shots]

    @property
    def total(self) -> int:
        return self.existing + len(self.shots)

    @property
    def complete(self) -> bool:
        """At least ``min_shots`` shots of this person exist."""
        return self.total >= self.min_shots


class CaptureSession:
    """Decides, frame by frame, what to capture for one person.

    Call :meth:`analyse` for every frame, then :meth:`press` for a key pressed on it. In auto
    mode :meth:`analyse` itself captures good frames whose pose is at least ``pose_step`` degrees
    from every shot of this session, and guides the person through poses. After
    ``relax_seconds`` of good frames (by their timestamps) without a new pose, the step is
    halved, never below ``min_pose_step``; ``relax_seconds=0`` keeps it fixed. The session stops
    at ``target`` shots in total, counting the shots the person already had (a new scan of the
    same name continues from there). ``on_shot`` is called with every saved :class:`Shot` (e.g.
    to start enrolling it).
    """

    def __init__(
        self,
        name: str,
        images_dir: Path,
        detector: Detector,
        limits: QualityLimits,
        *,
        target: int,
        min_shots: int,
        detect_width: int,
        pose_step: float,
        relax_seconds: float,
        min_pose_step: float,
        auto: bool = False,
        on_shot: Callable[[Shot], None] | None = None,
    ) -> None:
        self.folder = person_dir(images_dir, name)
        self.name = self.folder.name
        self.detector = DownscaledDetector(detector, detect_width)
        self.limits = limits
        self.min_shots = int(min_shots)
        self.existing = count_shots(self.folder)
        # A complete person who is scanned again gets a fresh round on top of what exists.
        self.target = int(target) if self.existing < target else self.existing + int(target)
        self.auto = bool(auto)
        self.diversity = PoseDiversity(pose_step)
        self.relax_seconds = float(relax_seconds)
        self.min_pose_step = float(min_pose_step)
        self.relaxations = 0
        self.guide = PoseGuide()
        self._stall = 0.0  # seconds of good auto-mode frames since the last new pose
        self._last_time: float | None = None
        self.shots: list[Shot] = []
        self.message = ""
        self._current: FrameView | None = None
        self._captured_indices: set[int] = set()
        self.stopped_by: str | None = None
        self._on_shot = on_shot

    # -- state --------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.existing + len(self.shots)

    @property
    def done(self) -> bool:
        """True once the target is reached or the person pressed esc."""
        return self.stopped_by is not None

    @property
    def current(self) -> FrameView | None:
        """The latest analysed frame."""
        return self._current

    def result(self) -> CaptureResult:
        return CaptureResult(
            name=self.name,
            folder=self.folder,
            existing=self.existing,
            shots=list(self.shots),
            target=self.target,
            min_shots=self.min_shots,
            stopped_by=self.stopped_by or "end of source",
            pose_step=self.diversity.min_step,
            relaxations=self.relaxations,
        )

    def stop(self, reason: str) -> None:
        """End the session (idempotent: the first reason wins)."""
        if self.stopped_by is None:
            self.stopped_by = reason
            log.debug("capture of %s stopped: %s", self.name, reason)

    # -- frames -------------------------------------------------------------------------
    def analyse(self, image: np.ndarray, index: int, timestamp: float | None = None) -> FrameView:
        """Detect, judge and (in auto mode) capture BGR frame ``image``; return what to show.

        ``timestamp`` (seconds; the source's media time, or time since it opened) paces the
        auto-mode relaxation; without it the wall clock does.
        """
        now = time.monotonic() if timestamp is None else float(timestamp)
        elapsed = self._elapsed(now)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces = self.detector.detect(rgb)
        quality = assess(image, faces, self.limits)
        pose = _safe_pose(quality.face) if quality.face is not None else None
        good = quality.ok and pose is not None
        novel = good and pose is not None and (not self.shots or self.diversity.is_novel(pose))
        capture = False
        if self.auto and not self.done:
            if good and pose is not None:
                capture = novel
                self._stall = 0.0 if novel else self._stall + elapsed
                self.guide.observe(pose)
                if not novel:
                    self._maybe_relax()
            hint = self.guide.hint(pose) if good else quality.hint
        elif good and not novel:
            hint = quality.with_issue(Issue.SAME_POSE).hint
        else:
            hint = quality.hint
        self._current = self._view(image, index, quality, pose, hint, now)
        if capture:
            self._capture()
        if self.auto:
            self._current = dataclasses.replace(self._current, guide=self._guide_view(pose))
        return self._current

    def _elapsed(self, now: float) -> float:
        """Seconds since the previous frame, at most :data:`MAX_FRAME_GAP` (0 going back)."""
        last, self._last_time = self._last_time, now
        if last is None:
            return 0.0
        return min(max(now - last, 0.0), MAX_FRAME_GAP)

    def _maybe_relax(self) -> None:
        """After ``relax_seconds`` without a new pose: halve the step, ask for another pose."""
        if self.relax_seconds <= 0 or self._stall < self.relax_seconds:
            return
        stalled, self._stall = self._stall, 0.0
        old = self.diversity.min_step
        new = self.diversity.relax(self.min_pose_step)
        target = self.guide.advance()
        if new is None:
            log.debug("%s: still no new pose; asking for %s", self.name, target.name)
            return
        self.relaxations += 1
        log.info(
            "%s: no new pose for %.1f s; pose step relaxed from %.2g° to %.2g° (floor %.2g°)",
            self.name, stalled, old, new, self.min_pose_step,
        )  # fmt: skip
        self.say(f"smaller head movements are enough now ({new:.2g} deg)")

    def _guide_view(self, pose: Pose | None) -> GuideView:
        offset = self.guide.offset
        return GuideView(
            target=self.guide.target,
            current=offset(pose) if pose is not None else None,
            kept=tuple(offset(s.pose) for s in self.shots if s.pose is not None),
            step=self.diversity.min_step,
            tolerance=self.guide.tolerance,
        )

    def _view(
        self,
        image: np.ndarray,
        index: int,
        quality: Quality,
        pose: Pose | None,
        hint: str,
        timestamp: float = 0.0,
    ) -> FrameView:
        return FrameView(
            image=image,
            index=index,
            quality=quality,
            pose=pose,
            hint=hint,
            total=self.total,
            target=self.target,
            auto=self.auto,
            message=self.message,
            timestamp=timestamp,
        )

    # -- keys ---------------------------------------------------------------------------
    def press(self, key: Key) -> str:
        """Handle ``key`` pressed on the current frame; return the message to show."""
        if key is Key.ESC:
            self.stop("esc")
            self.say("finished" if self.total >= self.min_shots else "stopped early")
        elif key is Key.AUTO:
            self.auto = not self.auto
            self._stall = 0.0
            self.say("auto capture on" if self.auto else "auto capture off")
        elif key is Key.SPACE:
            self._capture_on_request()
        return self.message

    def _capture_on_request(self) -> None:
        view = self._current
        if self.done:
            self.say("already finished")
        elif view is None:
            self.say("not saved: no picture yet")
        elif not view.quality.ok:
            self.say(f"not saved: {view.quality.hint}")
        elif view.index in self._captured_indices:
            self.say("not saved: this picture is already saved")
        else:
            self._capture()

    def _capture(self) -> None:
        view = self._current
        if view is None or view.quality.face is None:
            return
        path = write_new_shot(self.folder, encode_jpeg(view.image))
        metrics = view.quality.metrics
        shot = Shot(
            path, view.index, view.pose, metrics.sharpness if metrics else 0.0, view.timestamp
        )
        self.shots.append(shot)
        self._captured_indices.add(view.index)
        if view.pose is not None:
            self.diversity.add(view.pose)
        self.say(f"saved {path.name} ({self.total}/{self.target})")
        log.info("%s: %s, %s", self.name, self.message, view.pose or "no pose")
        if self._on_shot is not None:
            self._on_shot(shot)
        if self.total >= self.target:
            self.stop("target")

    def say(self, message: str) -> None:
        """Show ``message`` with the current frame (it stays until the next event)."""
        self.message = message
        if self._current is not None:
            self._current = dataclasses.replace(
                self._current, message=message, total=self.total, auto=self.auto
            )


def _safe_pose(face: Face) -> Pose | None:
    try:
        return estimate_pose(face.landmarks)
    except ValueError as exc:
        log.debug("no pose for this face: %s", exc)
        return None


# --------------------------------------------------------------------------- key scripts
_SCRIPT_WORDS: dict[str, Key | None] = {
    "space": Key.SPACE,
    "esc": Key.ESC,
    "auto": Key.AUTO,
    "wait": None,
}


@dataclass(frozen=True)
class KeyStep:
    """``frames`` frames on each of which ``key`` (``None``: no key) is pressed."""

    key: Key | None
    frames: int = 1


@dataclass
class KeyScript:
    """Scripted key presses for headless runs, one step per frame.

    Syntax: steps separated by commas, spaces or new lines; ``#`` starts a comment.

    - ``space`` — press space on the next frame; ``space:N`` — on each of the next N frames;
    - ``wait:N`` (or ``wait``) — let N frames (1) pass without a key;
    - ``auto`` — toggle auto capture on the next frame;
    - ``esc`` — finish at once.

    Example: ``"space,space,wait:5,esc"``. When the script runs out, a run in auto mode goes on
    until the target or the end of the source; otherwise it finishes as if esc was pressed.
    """

    steps: list[KeyStep] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> KeyScript:
        steps: list[KeyStep] = []
        lines = [line.split("#", 1)[0] for line in text.splitlines()]
        tokens = [t for t in re.split(r"[,\s]+", " ".join(lines)) if t]
        for token in tokens:
            word, _, count = token.lower().partition(":")
            if word not in _SCRIPT_WORDS:
                raise KeyScriptError(
                    f"--keys: unknown step {token!r}; use space[:N], wait[:N], auto or esc"
                )
            frames = 1
            if count:
                if word in ("esc", "auto") or not count.isdigit() or int(count) < 1:
                    raise KeyScriptError(
                        f"--keys: bad step {token!r}; a count is a whole number >= 1 and only "
                        "space and wait take one"
                    )
                frames = int(count)
            steps.append(KeyStep(_SCRIPT_WORDS[word], frames))
        return cls(steps)

    @classmethod
    def from_file(cls, path: Path) -> KeyScript:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyScriptError(f"--keys-file {path}: cannot read it ({exc})") from None
        return cls.parse(text)

    def per_frame(self) -> Iterator[Key | None]:
        """The key (or ``None``) for each successive frame."""
        for step in self.steps:
            if step.key is Key.ESC:
                yield Key.ESC
                return
            for _ in range(step.frames):
                yield step.key


def run_headless(
    session: CaptureSession, frames: Iterable, script: KeyScript | Sequence[Key | None] = ()
) -> CaptureResult:
    """Feed ``frames`` (objects with ``image`` and ``index``, e.g. an ``common.sources``
    frame source) to ``session`` with scripted keys; return what was captured.

    Each frame is analysed (auto mode may capture it) and then gets the script's next key. An
    ``esc`` step finishes at once. When the script is used up, an auto-mode session runs on to
    the target or the end of the source; a manual one finishes. Ctrl-C keeps what was taken.
    """
    keys = script.per_frame() if isinstance(script, KeyScript) else iter(script)
    exhausted = False
    try:
        for frame in frames:
            if session.done:
                break
            key: Key | None = None
            if not exhausted:
                try:
                    key = next(keys)
                except StopIteration:
                    exhausted = True
            if key is Key.ESC:
                session.press(Key.ESC)
                break
            if exhausted and not session.auto:
                session.stop("end of script")
                break
            view = session.analyse(frame.image, frame.index, getattr(frame, "timestamp", None))
            if view.message:
                log.debug("frame %d: %s | hint: %s", frame.index, view.message, view.hint)
            if key is not None:
                message = session.press(key)
                log.info("frame %d: %s -> %s", frame.index, key.value, message)
    except KeyboardInterrupt:
        session.stop("interrupted")
    session.stop("end of source")
    return session.result()
