"""The edge of the recogniser: drawing, the OpenCV window and its keys, the recorded video.

The window itself (show, keys, close, display detection) is ``common.window``'s, shared with
the scanner; this module is the recogniser's only user of it. Drawing is pure (it returns an
annotated copy), so headless runs can record the same pictures to a video file.

Faces are drawn in the colour of their ``FaceView.display_status``: confirmed, candidate,
unknown, and, with gates, ``refused`` (a gate fails: its reason is written under the box, e.g.
"photo or screen?") or ``checking`` (a recognised face waits for a gate).

Text is rendered with Pillow and the DejaVu font when available (names may be Unicode, the
banner has an em dash); otherwise OpenCV's built-in font is used with an ASCII fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from common import window as _window
from common.window import KEY_ESC as KEY_ESC  # re-exported: the recogniser's window API
from common.window import DisplayError as DisplayError
from common.window import has_display as has_display
from recognizer.pipeline import FaceView, FrameResult

log = logging.getLogger(__name__)

WINDOW_TITLE = "face_recognizer"
# BGR colours by FaceView.display_status
COLOURS = {
    "confirmed": (60, 200, 60),
    "candidate": (0, 200, 255),
    "unknown": (60, 60, 230),
    "refused": (200, 40, 200),  # a gate fails (e.g. liveness: "photo or screen?")
    "checking": (230, 170, 40),  # a recognised face waits for a gate
}
BANNER_BG = (40, 40, 40)
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


# --------------------------------------------------------------------------- text
def _font_path() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    candidates = []
    if spec is not None and spec.origin:
        mpl_fonts = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
        candidates.append(mpl_fonts / "DejaVuSans.ttf")
    candidates += [Path(p) for p in FONT_CANDIDATES]
    return next((p for p in candidates if p.is_file()), None)


def ascii_text(text: str) -> str:
    """``text`` reduced to ASCII for OpenCV's Hershey font ("José — 9:05" -> "Jose - 9:05")."""
    text = text.replace("\u2014", "-").replace("\u2013", "-")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(
        ch if ord(ch) < 128 else ("" if unicodedata.combining(ch) else "?") for ch in decomposed
    )


@functools.lru_cache(maxsize=8)
def _pil_font(size: int) -> Any:
    try:
        from PIL import ImageFont
    except ImportError:
        return None
    path = _font_path()
    if path is None:
        return None
    try:
        return ImageFont.truetype(str(path), size)
    except OSError as exc:
        log.debug("font %s unusable: %s", path, exc)
        return None


@functools.lru_cache(maxsize=512)
def _render(text: str, size: int, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(bgr patch, alpha in [0, 1])`` of ``text`` (cached: labels repeat every frame)."""
    font = _pil_font(size)
    if font is not None:
        from PIL import Image, ImageDraw

        left, top, right, bottom = font.getbbox(text)
        width, height = max(1, right - left + 2), max(1, bottom - top + 2)
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
        alpha = np.asarray(mask, dtype=np.float32) / 255.0
    else:
        import cv2

        scale = size / 30.0
        simple = ascii_text(text)
        (width, height), base = cv2.getTextSize(simple, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        canvas = np.zeros((height + base + 2, width + 2), np.uint8)
        cv2.putText(
            canvas, simple, (1, height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA
        )
        alpha = canvas.astype(np.float32) / 255.0
    patch = np.empty(alpha.shape + (3,), np.uint8)
    patch[:] = colour
    return patch, alpha


def text_size(text: str, size: int) -> tuple[int, int]:
    """Width and height in pixels of ``text`` at font ``size``."""
    _, alpha = _render(text, size, (255, 255, 255))
    return alpha.shape[1], alpha.shape[0]


def put_text(
    image: np.ndarray, text: str, origin: tuple[int, int], size: int = 18,
    colour: tuple[int, int, int] = (255, 255, 255),
) -> None:  # fmt: skip
    """Blend ``text`` into ``image`` (in place) with its top-left corner at ``origin``."""
    patch, alpha = _render(text, size, colour)
    x, y = origin
    h, w = alpha.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(image.shape[1], x + w), min(image.shape[0], y + h)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = (region * (1 - a) + patch[y0 - y : y1 - y, x0 - x : x1 - x] * a).astype(
        np.uint8
    )


# --------------------------------------------------------------------------- drawing
def face_label(face: FaceView) -> str:
    """``"Ada 0.62"``, ``"Ada? 0.95"`` (not yet confirmed) or ``"Unknown 1.31"``."""
    name = face.label + ("?" if face.status == "candidate" else "")
    if np.isfinite(face.distance):
        return f"{name} {face.distance:.2f}"
    return name


def face_note(face: FaceView) -> str | None:
    """What the gates say about ``face``: a failing gate's reason (``"photo or screen?"``),
    ``"checking..."`` (or the waiting gate's reason) for a face that waits, else ``None``."""
    status = face.display_status
    if status == "refused" and face.refusal is not None:
        gate, verdict = face.refusal
        return verdict.reason or f"{verdict.action} by {gate}"
    if status == "checking" and face.checking is not None:
        return face.checking[1].reason or "checking..."
    return None


def _tag(image: np.ndarray, text: str, x: int, top: int, colour: tuple[int, int, int]) -> None:
    """``text`` in black on a filled ``colour`` box whose top-left corner is (x - 1, top)."""
    import cv2

    tw, th = text_size(text, 16)
    cv2.rectangle(image, (x - 1, top), (x + tw + 6, top + th + 6), colour, -1)
    put_text(image, text, (x + 3, top + 3), 16, (0, 0, 0))


def draw_faces(image: np.ndarray, faces: list[FaceView]) -> None:
    """Boxes and labels of ``faces`` drawn in place (with the gates' note under the box)."""
    import cv2

    for face in faces:
        colour = COLOURS.get(face.display_status, COLOURS["unknown"])
        x, y, w, h = (int(round(v)) for v in face.box)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        label = face_label(face)
        th = text_size(label, 16)[1]
        above = y - th - 6 >= 0
        _tag(image, label, x, y - th - 6 if above else y + h + 2, colour)
        note = face_note(face)
        if note:
            below = y + h + 2 if above else y + h + th + 10  # under the box (and the label)
            if below + text_size(note, 16)[1] + 6 > image.shape[0]:
                below = max(0, y + 2)  # no room below: inside the box, at its top
            _tag(image, note, x, below, colour)


def draw_banner(image: np.ndarray, lines: list[str], *, bottom: bool = True) -> None:
    """A dark band with ``lines`` of text across the bottom (or top) of ``image``, in place."""
    if not lines:
        return
    sizes = [22] + [15] * (len(lines) - 1)
    heights = [text_size(t, s)[1] + 8 for t, s in zip(lines, sizes, strict=True)]
    band = sum(heights) + 8
    top = image.shape[0] - band if bottom else 0
    region = image[top : top + band]
    region[:] = (region.astype(np.float32) * 0.25 + np.array(BANNER_BG) * 0.75).astype(np.uint8)
    y = top + 6
    for text, size, height in zip(lines, sizes, heights, strict=True):
        put_text(image, text, (12, y), size, (255, 255, 255))
        y += height


def annotate(result: FrameResult, *, hint: str | None = None, hud: str | None = None) -> np.ndarray:
    """A copy of the result's frame with faces, the pause banner, a hint line and a HUD."""
    image = result.frame.image.copy()
    draw_faces(image, result.faces)
    if hud:
        put_text(image, hud, (8, 6), 14, (255, 255, 255))
    lines = [result.banner] if result.banner else []
    if hint:
        lines.append(hint)
    draw_banner(image, lines)
    return image


# --------------------------------------------------------------------------- window
class Window(_window.Window):
    """The recogniser's window (``common.window.Window``): ``show`` a picture, ``key`` waits
    briefly and returns the key pressed (``"esc"``, ``"n"``, ...; closing it counts as esc)."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        super().__init__(title, what="a window", hint="run with --headless")


# --------------------------------------------------------------------------- video out
class VideoRecorder:
    """Writes annotated frames to ``path`` (``.mp4`` with mp4v, ``.avi`` with MJPG).

    Frames go to a hidden partial file beside ``path``, renamed into place by :meth:`close`,
    so an interrupted run never leaves a truncated video under the requested name.
    """

    CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in self.CODECS:
            raise DisplayError(
                f"--record {self.path}: use a .mp4 or .avi file name "
                f"(supported: {', '.join(sorted(self.CODECS))})"
            )
        if not self.path.parent.is_dir():
            raise DisplayError(f"--record {self.path}: folder {self.path.parent} does not exist")
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self._fourcc = self.CODECS[suffix]
        self._partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one BGR frame (frames of another size are resized to the first one's)."""
        import cv2

        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(
                str(self._partial), cv2.VideoWriter_fourcc(*self._fourcc), self.fps, self._size
            )
            if not self._writer.isOpened():
                self._writer = None
                raise DisplayError(
                    f"--record {self.path}: cannot write a {self._fourcc} video there"
                )
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._partial, self.path)
            log.info("recorded %d frames to %s", self.frames, self.path)
