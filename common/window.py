"""The OpenCV window shared by the live apps: display detection, show, keys, close.

Only the live apps' display modules (``recognizer.display``, ``scanner.display``) use it; what
they draw stays with them. OpenCV is imported when a window is actually opened.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from common.errors import UserError

log = logging.getLogger(__name__)

KEY_ESC = 27
SYSTEM_FONTS = "/usr/share/fonts/truetype"  # Qt in the OpenCV wheel ships no fonts of its own
_NEEDS_DISPLAY_VAR = ("linux", "freebsd", "openbsd", "netbsd")


class DisplayError(UserError):
    """No window can be opened (no display), or an output video cannot be written."""


def has_display(*, qt_platform: bool = False) -> bool:
    """Can a window be shown? On Linux/BSD this needs ``$DISPLAY`` or ``$WAYLAND_DISPLAY``.

    ``qt_platform``: an explicit ``$QT_QPA_PLATFORM`` (e.g. ``eglfs``, ``offscreen``) counts too.
    """
    if not sys.platform.startswith(_NEEDS_DISPLAY_VAR):
        return True
    names = ("DISPLAY", "WAYLAND_DISPLAY") + (("QT_QPA_PLATFORM",) if qt_platform else ())
    return any(os.environ.get(name) for name in names)


def key_name(code: int) -> str | None:
    """The name of a key code from ``cv2.waitKey``: ``"esc"``, a lower-case character (``"n"``,
    ``" "`` for space) or ``None`` for keys without one."""
    code &= 0xFF
    if code == KEY_ESC:
        return "esc"
    return chr(code).lower() if 32 <= code < 127 else None


class Window:
    """One OpenCV window without a toolbar: :meth:`show` a picture, read keys, :meth:`close`.

    ``what`` and ``hint`` word the :class:`DisplayError` raised when the window cannot open:
    ``cannot open <what> (<OpenCV's reason>); <hint>``.
    """

    def __init__(
        self, title: str, *, what: str = "a window", hint: str = "run with --headless"
    ) -> None:
        import cv2

        if os.path.isdir(SYSTEM_FONTS):
            os.environ.setdefault("QT_QPA_FONTDIR", SYSTEM_FONTS)
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        except cv2.error as exc:
            reason = (str(exc).strip().splitlines() or ["unknown error"])[-1]
            raise DisplayError(f"cannot open {what} ({reason}); {hint}") from None
        self._open = True
        self._shown = False

    def show(self, image: np.ndarray) -> None:
        """Display ``image`` (BGR)."""
        import cv2

        cv2.imshow(self.title, image)
        self._shown = True

    def wait_key(self, delay_ms: int = 1) -> int | None:
        """Wait up to ``delay_ms`` (at least 1) for a key; its code (``& 0xFF``) or ``None``."""
        import cv2

        code = cv2.waitKey(max(1, int(delay_ms)))
        return None if code == -1 else code & 0xFF

    def key(self, delay_ms: int = 1) -> str | None:
        """The key pressed within ``delay_ms`` (``"esc"``, ``"n"``, ...), ``None`` if none.

        Closing the window with its close button counts as ``"esc"``.
        """
        code = self.wait_key(delay_ms)
        if code is not None:
            return key_name(code)
        return "esc" if self.closed() else None

    def closed(self) -> bool:
        """True when the person closed the window with the mouse (after a first picture)."""
        if not self._shown:
            return False
        import cv2

        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        """Destroy the window (idempotent)."""
        if not self._open:
            return
        import cv2

        self._open = False
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error as exc:
            log.debug("closing the window: %s", exc)
