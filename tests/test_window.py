"""The real OpenCV window under Xvfb: scan → marked + paused → ``n`` → next person → ``esc``.

``face_recognizer`` runs as a subprocess (real weights) on a video of two enrolled people;
xdotool presses the keys; ImageMagick's ``import`` saves screenshots to ``artifacts/``
(git-ignored) as test artefacts. Needs the Debian packages ``xvfb xdotool imagemagick``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from attendance.demo import build_video, load_photo, pretty_name
from store.factory import open_attendance_store

pytestmark = [pytest.mark.gui, pytest.mark.weights, pytest.mark.sample]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PEOPLE = ("ben_afflek", "jerry_seinfeld")


@pytest.fixture(scope="module")
def workspace(enrolled, sample_dir):
    """Ben and Jerry enrolled (5 photos each) and a video: Ben for 4 s, then Jerry for 4 s."""
    cfg = enrolled("window", PEOPLE, 5)
    root = cfg.root
    scenes = [
        (pretty_name(p), True, [load_photo(sorted((sample_dir / "val" / p).glob("*.jpg"))[0])])
        for p in PEOPLE
    ]
    build_video(root / "door.mp4", scenes, fps=10.0, hold=4.0, gap=0.5)
    return cfg


class Lines:
    """Collects a process's stdout lines in a background thread."""

    def __init__(self, stream) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; got {self.seen}")


def xdo(display: str, *args: str) -> str:
    proc = subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def screenshot(display: str, name: str) -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    subprocess.run(
        ["import", "-window", "root", str(path)], env={**os.environ, "DISPLAY": display},
        check=True, timeout=30, capture_output=True,
    )  # fmt: skip
    image = cv2.imread(str(path))
    assert image is not None, f"screenshot {path} unreadable"
    return image


def press(display: str, window: str, key: str) -> None:
    xdo(display, "windowfocus", "--sync", window)
    xdo(display, "key", key)


def test_window_scan_next_person_and_quit(display, workspace):
    env = {
        **os.environ,
        "DISPLAY": display,
        "ATTENDANCE_CACHE_DIR": str(workspace.cache_dir),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "recognizer.cli", "--workspace", str(workspace.root),
         "--source", str(workspace.root / "door.mp4")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        lines = Lines(proc.stdout)
        first = lines.wait_for("  present", timeout=120)
        assert "  Ben Afflek  distance=" in first
        window = xdo(display, "search", "--sync", "--onlyvisible", "--name", "face_recognizer")
        window = window.splitlines()[0]
        time.sleep(0.5)  # let the paused frame with its banner be painted
        marked = screenshot(display, "window_marked.png")
        assert marked.std() > 10  # a real picture, not an empty screen

        time.sleep(1.0)  # paused: nothing else happens until n
        assert proc.poll() is None and lines.queue.empty()
        press(display, window, "n")
        second = lines.wait_for("  present", timeout=60)
        assert "  Jerry Seinfeld  distance=" in second
        time.sleep(0.5)
        screenshot(display, "window_next_person.png")

        press(display, window, "Escape")
        summary = lines.wait_for("summary:", timeout=30)
        assert proc.wait(timeout=30) == 0, "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "marked: Ben Afflek, Jerry Seinfeld;" in summary and "stopped by esc" in summary
    assert not any(line.startswith("Traceback") for line in errors)
    # the database was closed cleanly: WAL checkpointed and removed, rows readable
    assert not Path(f"{workspace.db_path}-wal").exists()
    with open_attendance_store(workspace, create=False) as db:
        assert sorted(r.name for r in db.rows()) == ["Ben Afflek", "Jerry Seinfeld"]


WINDOW_SCRIPT = """
import sys
import numpy as np
from common.window import Window

window = Window(sys.argv[1])
window.show(np.full((120, 160, 3), 90, np.uint8))
print("shown", flush=True)
key = None
while key != "esc":
    key = window.key(50)
    if key is not None:
        print(f"key {key}", flush=True)
window.close()
print("closed", flush=True)
"""


def test_common_window_shows_and_names_keys(display):
    """``common.window.Window`` (both apps' window) in a process of its own: keys by name."""
    title = "common-window-test"
    env = {**os.environ, "DISPLAY": display, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WINDOW_SCRIPT, title], cwd=Path(__file__).resolve().parents[1],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = Lines(proc.stdout)
        lines.wait_for("shown", timeout=60)
        window = xdo(display, "search", "--sync", "--onlyvisible", "--name", title).split()[0]
        press(display, window, "n")
        assert lines.wait_for("key ", timeout=20) == "key n"
        press(display, window, "Escape")
        assert lines.wait_for("key ", timeout=20) == "key esc"
        lines.wait_for("closed", timeout=20)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
