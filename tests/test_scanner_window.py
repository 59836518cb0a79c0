"""The scanner window under Xvfb, driven with xdotool; a screenshot is kept as an artefact.

Needs the Debian packages ``xvfb``, ``xdotool`` and ``imagemagick`` (for ``import``). The
screenshot goes to ``$ATTENDANCE_TEST_ARTIFACTS`` (default: ``artifacts/`` in the repository).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from xvfb import xvfb_display

from attendance.demo import letterbox
from common.config import Config
from scanner.quality import QualityLimits, assess
from scanner.session import DownscaledDetector

REPO = Path(__file__).resolve().parent.parent
TITLE = "scanner - Ada Lovelace"


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("ATTENDANCE_TEST_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb server; its display name, e.g. ``:7``."""
    with xvfb_display("1280x800x24") as name:
        yield name


def xdotool(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    proc = subprocess.run(
        ["xdotool", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return proc.stdout.strip()


def wait_for(condition, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def good_photo(sample_dir: Path, detector, cfg: Config) -> np.ndarray:  # noqa: ANN001
    """The first sample photo that makes a good shot once letterboxed into a webcam frame."""
    scaled = DownscaledDetector(detector, cfg.detect_width)
    for photo in sorted((sample_dir / "train" / "madonna").glob("*.jpg")):
        frame = letterbox(cv2.imread(str(photo)))
        faces = scaled.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if assess(frame, faces, QualityLimits.from_config(cfg)).ok:
            return frame
    raise AssertionError("no sample photo of madonna makes a good shot")


@pytest.mark.gui
@pytest.mark.sample
def test_window_space_captures_and_esc_finishes(
    workspace: Config, sample_dir: Path, detector, display: str, tmp_path: Path
) -> None:
    source = tmp_path / "camera"
    source.mkdir()
    cv2.imwrite(str(source / "000.png"), np.full((480, 640, 3), 90, np.uint8))  # nobody yet
    cv2.imwrite(str(source / "001.png"), good_photo(sample_dir, detector, workspace))
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = display
    scanner = subprocess.Popen(
        [
            sys.executable, "-m", "scanner.cli", "--workspace", str(workspace.root),
            "--name", "Ada Lovelace", "--source", str(source), "--no-enrol",
            "--set", "min_shots=1", "--set", "target_shots=3",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    shots = workspace.images_dir / "Ada Lovelace"
    try:
        window = wait_for(
            lambda: xdotool(display, "search", "--name", TITLE).split("\n")[0], 90, "the window"
        )
        for _ in range(5):  # the first press may land on the empty first frame: it is refused
            xdotool(display, "windowfocus", "--sync", window)
            xdotool(display, "key", "space")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not list(shots.glob("*.jpg")):
                time.sleep(0.2)
            if list(shots.glob("*.jpg")):
                break
        assert [p.name for p in shots.glob("*.jpg")] == ["0001.jpg"]
        time.sleep(0.5)  # let the window redraw the new counter
        screenshot = artifacts_dir() / "scanner_window.png"
        subprocess.run(
            ["import", "-display", display, "-window", "root", str(screenshot)],
            check=True,
            timeout=30,
        )
        xdotool(display, "windowfocus", "--sync", window)
        xdotool(display, "key", "Escape")
        out, err = scanner.communicate(timeout=30)
    finally:
        if scanner.poll() is None:
            scanner.kill()
            scanner.communicate()
    assert scanner.returncode == 0, err[-2000:]
    assert "saved 1 new shot(s) of Ada Lovelace" in out and "1/3 (esc)" in out
    # the screenshot shows the frame with the green "good face" box drawn by the overlay
    picture = cv2.imread(str(screenshot))
    assert picture is not None and picture.shape[:2] == (800, 1280)
    green = np.all(np.abs(picture.astype(int) - (80, 200, 60)) < 30, axis=2)
    assert green.sum() > 500


def test_the_overlay_draws_the_pose_target_as_in_a_mirror(workspace: Config) -> None:
    """Pure: ``render`` of an auto-mode view shows the map, the target ring and the head."""
    from preprocess.detect import Face
    from scanner.display import GOOD, TARGET, pose_map_box, pose_map_point, render
    from scanner.pose import Pose, PoseTarget
    from scanner.quality import Quality
    from scanner.session import FrameView, GuideView

    image = np.full((480, 640, 3), 90, np.uint8)
    face = Face((220.0, 130.0, 170.0, 200.0), 0.99, np.zeros((5, 2), np.float32))

    def view(target: PoseTarget, current: tuple[float, float]) -> FrameView:
        guide = GuideView(target, current, kept=((0.0, 0.0),), step=6.0, tolerance=3.0)
        return FrameView(image=image, index=0, quality=Quality((), 1, face), pose=Pose(*current),
                         hint=target.hint, total=1, target=35, auto=True, message="",
                         guide=guide)  # fmt: skip

    scale = max(0.5, 640 / 900)
    x, y, w, h = box = pose_map_box(640, scale, top=int(1.4 * int(34 * scale)))

    def yellow(picture: np.ndarray) -> np.ndarray:
        region = picture[y : y + h, x : x + w].astype(int)
        return np.all(np.abs(region - TARGET) < 40, axis=2)

    left = yellow(render(view(PoseTarget("left", 20.0, 0.0), (0.0, 0.0))))
    right = yellow(render(view(PoseTarget("right", -20.0, 0.0), (0.0, 0.0))))
    # the person's left is drawn on the left of the map (as in a mirror), their right on the right
    assert left[:, : w // 3].sum() > 30 and left[:, 2 * w // 3 :].sum() == 0
    assert right[:, 2 * w // 3 :].sum() > 30 and right[:, : w // 3].sum() == 0
    assert pose_map_point(box, 20.0, 0.0)[0] < x + w // 2 < pose_map_point(box, -20.0, 0.0)[0]
    assert pose_map_point(box, 0.0, 12.0)[1] < y + h // 2  # up is up
    # the head's dot sits where the pose is; the hint band is in the target's colour
    picture = render(view(PoseTarget("up", 0.0, 12.0), (-10.0, 5.0)))
    px, py = pose_map_point(box, -10.0, 5.0)
    assert np.all(np.abs(picture[py, px].astype(int) - GOOD) < 30)
    band = picture[480 - int(44 * scale) :, :320].astype(int)
    assert np.all(np.abs(band - TARGET) < 40, axis=2).sum() > 50
    # manual mode (no guide) draws no map
    plain = render(dataclasses.replace(view(PoseTarget("up", 0.0, 12.0), (0.0, 0.0)), guide=None))
    assert yellow(plain).sum() == 0
