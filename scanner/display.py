"""The scanner's window: the only place in the scanner that calls ``cv2.imshow``/``waitKey``.

:func:`render` draws the overlay (face box, ``12/35`` counter, one hint, the latest message
and, in auto mode, the pose target: a small map of head poses, as in a mirror, with a ring
where the head should turn next, a dot for where it is and marks for the shots taken) and is
pure; :class:`Window` (``common.window.Window``, shared with the recogniser) shows
images and reads keys; :func:`run_window` drives a :class:`scanner.session.CaptureSession`
from a frame source and the keyboard.

Keys: ``space`` capture, ``a`` toggle auto capture, ``esc`` or ``q`` finish (closing the
window also finishes). When a video file or folder ends, the last picture stays on screen
until esc.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import cv2
import numpy as np

from common import window as _window
from common.window import DisplayError as DisplayError  # re-exported: the scanner's window API
from common.window import has_display
from scanner.session import CaptureResult, CaptureSession, FrameView, GuideView, Key

log = logging.getLogger(__name__)

GOOD = (80, 200, 60)  # BGR
BAD = (40, 140, 255)
WHITE = (255, 255, 255)
TARGET = (0, 215, 255)  # BGR yellow: the pose to turn to, and the hint naming it
GREY = (170, 170, 170)
#: Half the width / height of the pose map, in degrees of yaw / pitch.
MAP_YAW = 25.0
MAP_PITCH = 18.0
FONT = cv2.FONT_HERSHEY_SIMPLEX
KEY_CODES = {32: Key.SPACE, 27: Key.ESC, ord("q"): Key.ESC, ord("a"): Key.AUTO}
END_OF_SOURCE = "end of the video: space keeps this picture, esc finishes"


def _ascii(text: str) -> str:
    """OpenCV's built-in fonts draw ASCII only."""
    return text.replace("°", " deg").encode("ascii", "replace").decode("ascii")


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour) -> None:  # noqa: ANN001
    """Text with a drop shadow (same weight: OpenCV 5 fonts widen with the thickness)."""
    thick = max(1, round(scale * 2))
    shadow = (org[0] + max(1, thick), org[1] + max(1, thick))
    cv2.putText(image, _ascii(text), shadow, FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    cv2.putText(image, _ascii(text), org, FONT, scale, colour, thick, cv2.LINE_AA)


def render(view: FrameView, footer: str = "") -> np.ndarray:
    """The frame with the overlay drawn on a copy (BGR uint8)."""
    image = view.image.copy()
    height, width = image.shape[:2]
    scale = max(0.5, width / 900)
    face = view.quality.face
    if face is not None:
        x, y, w, h = (int(round(v)) for v in face.box)
        colour = GOOD if view.quality.ok else BAD
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, max(2, round(scale * 2)))
        if view.pose is not None:
            _text(image, str(view.pose), (x, min(height - 60, y + h + 18)), scale * 0.5, colour)
    line = int(34 * scale)
    _text(image, view.counter, (10, line), scale * 1.1, WHITE)
    if view.auto:
        _text(image, "AUTO", (width - int(95 * scale), line), scale * 0.9, GOOD)
    if view.message:
        _text(image, view.message, (10, 2 * line), scale * 0.6, WHITE)
    hint = view.hint or ("good - hold on" if view.auto else "good - press space to capture")
    guiding = view.guide is not None and view.quality.ok and bool(view.hint)
    band = int(44 * scale)
    overlay = image.copy()
    cv2.rectangle(overlay, (0, height - band), (width, height), (0, 0, 0), -1)
    image = cv2.addWeighted(overlay, 0.5, image, 0.5, 0)
    colour = TARGET if guiding else (BAD if view.hint else GOOD)
    _text(image, hint, (10, height - band // 3), scale * 0.9, colour)
    if view.guide is not None:
        draw_pose_map(image, view.guide, scale, top=int(1.4 * line))
    if footer:
        _text(image, footer, (10, height - band - 8), scale * 0.5, WHITE)
    return image


def pose_map_box(width: int, scale: float, top: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the pose map in a frame ``width`` pixels wide (top-right corner)."""
    w, h = int(150 * scale), int(108 * scale)
    return (width - w - int(10 * scale), top, w, h)


def pose_map_point(box: tuple[int, int, int, int], yaw: float, pitch: float) -> tuple[int, int]:
    """Where an offset (``yaw``, ``pitch``) from the starting pose is drawn on the map.

    As in a mirror: the person's left (``yaw > 0``) is drawn on the left, up is up.
    """
    x, y, w, h = box
    px = x + w / 2 - max(-1.0, min(1.0, yaw / MAP_YAW)) * (w / 2 - 4)
    py = y + h / 2 - max(-1.0, min(1.0, pitch / MAP_PITCH)) * (h / 2 - 4)
    return (int(round(px)), int(round(py)))


def draw_pose_map(image: np.ndarray, guide: GuideView, scale: float, top: int) -> None:
    """Draw the pose target in place: the map, the shots so far, the target ring, the head."""
    box = pose_map_box(image.shape[1], scale, top)
    x, y, w, h = box
    region = image[y : y + h, x : x + w]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)
    thin = max(1, round(scale))
    cx, cy = pose_map_point(box, 0.0, 0.0)
    cv2.line(image, (x, cy), (x + w, cy), GREY, thin, cv2.LINE_AA)
    cv2.line(image, (cx, y), (cx, y + h), GREY, thin, cv2.LINE_AA)
    cv2.rectangle(image, (x, y), (x + w, y + h), GREY, thin)
    for yaw, pitch in guide.kept:
        cv2.circle(image, pose_map_point(box, yaw, pitch), max(2, round(2 * scale)), WHITE, -1)
    ring = max(4, int(guide.tolerance / MAP_YAW * (w / 2)))
    aim = pose_map_point(box, *guide.aim)
    cv2.circle(image, aim, ring, TARGET, max(2, round(2 * scale)), cv2.LINE_AA)
    if guide.current is not None:
        cv2.circle(image, pose_map_point(box, *guide.current), max(3, round(4 * scale)), GOOD, -1)
    _text(image, f"target: {guide.target.name}", (x, y + h + int(16 * scale)), scale * 0.45, TARGET)


def check_display() -> None:
    """Raise :class:`DisplayError` when no window can appear (instead of Qt aborting)."""
    if not has_display(qt_platform=True):
        raise DisplayError(
            "no display for the scanner window (DISPLAY is not set); run it on a desktop, "
            "or use --headless with --keys/--keys-file or --auto"
        )


class Window(_window.Window):
    """The scanner's window (``common.window.Window``): :meth:`poll` reads the scanner keys."""

    def __init__(self, title: str) -> None:
        check_display()
        super().__init__(
            title,
            what="the scanner window",
            hint="use --headless with --keys/--keys-file or --auto",
        )

    def poll(self, delay_ms: int) -> Key | None:
        """Wait up to ``delay_ms`` for a key; the scanner key pressed, if any."""
        code = self.wait_key(delay_ms)
        return None if code is None else KEY_CODES.get(code)


def run_window(
    session: CaptureSession, frames: Iterable, title: str, footer: str = ""
) -> CaptureResult:
    """Show ``frames`` with the overlay and capture on key presses until done.

    Frames of files and folders are paced to their timestamps; live frames are shown as they
    come. Ctrl-C, esc, ``q`` and closing the window all keep what was taken.
    """
    window = Window(title)
    iterator = iter(frames)
    ended = False
    start_wall: float | None = None
    start_ts = 0.0
    try:
        while not session.done:
            delay = 30
            if not ended:
                try:
                    frame = next(iterator)
                except StopIteration:
                    ended = True
                    if session.current is None:
                        break
                    session.say(END_OF_SOURCE)
                else:
                    session.analyse(frame.image, frame.index, frame.timestamp)
                    now = time.monotonic()
                    if start_wall is None:
                        start_wall, start_ts = now, frame.timestamp
                    due = start_wall + (frame.timestamp - start_ts)
                    delay = int(max(1.0, (due - now) * 1000.0))
            view = session.current
            if view is None:
                break
            window.show(render(view, footer))
            key = window.poll(delay)
            if window.closed():
                session.press(Key.ESC)
                break
            if key is not None:
                message = session.press(key)
                log.info("%s -> %s", key.value, message)
    except KeyboardInterrupt:
        session.stop("interrupted")
    finally:
        window.close()
    session.stop("end of source")
    return session.result()
