"""Benchmark auto enrolment of people who barely move: shots, seconds and pose spread.

Usage: python bench/bench_auto_enrol.py [--media DIR] [--clips NAME ...] [--seconds 20]
                                        [--before REF] [--no-cli]

Each clip (real webcam-style videos of people talking while barely moving; default: the
genuine liveness clips in ``../shared/data/liveness/genuine``) is looped to ``--seconds`` of
video and given to ``scanner --auto`` twice, with the real MTCNN detector:

- **before**: the capture session of git revision ``--before`` (default: the last revision
  with the fixed ``scan_pose_step`` rule), loaded from ``git show``;
- **after**: the working tree's session (pose guide + relaxation of the step).

Both see exactly the same frames and detections (each clip frame is detected once and cached),
and a frame's time is its media time. For each run: shots kept, the video second of the last
shot, whether ``min_shots`` was reached, the pose step at the end and the pose spread (yaw and
pitch range). Unless ``--no-cli``, the looped video is also written to an mp4 and the real
command ``scanner --auto --headless --no-enrol`` is run on it; its exit status (0 = complete)
and summary lines are printed. Exit status 1 when an "after" run stays incomplete.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from common.config import Config, load_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "data" / "liveness" / "genuine"
CLIPS = ("talking_webcam_720x1280", "talking_head_blinks_512", "talking_blink_524")
# the last revision whose scanner kept only shots a fixed pose step apart (no guide, no relaxing)
BEFORE = "88f6fed9b09cffd24d386cabfce06913fe6d8cc6"


@dataclass
class Frame:
    image: np.ndarray
    index: int
    timestamp: float


class CachedDetector:
    """Runs the real detector once per clip frame (``key``, set before each analysis)."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.key: int | None = None
        self.cache: dict[int, list] = {}

    def detect(self, rgb: np.ndarray) -> list:
        if self.key is None:
            return self.inner.detect(rgb)
        if self.key not in self.cache:
            self.cache[self.key] = self.inner.detect(rgb)
        return self.cache[self.key]


def clip_fps(path: Path) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return fps, count


def looped(path: Path, seconds: float, detector: CachedDetector) -> Iterator[Frame]:
    """The clip played again and again for ``seconds`` of media time (decoded on the fly)."""
    fps, _ = clip_fps(path)
    total = int(round(seconds * fps))
    index = 0
    while index < total:
        capture = cv2.VideoCapture(str(path))
        try:
            clip_index = 0
            while index < total:
                ok, image = capture.read()
                if not ok:
                    break
                detector.key = clip_index
                yield Frame(image, index, index / fps)
                index += 1
                clip_index += 1
        finally:
            capture.release()
        if clip_index == 0:
            raise SystemExit(f"{path}: no frames could be decoded")
    detector.key = None


def write_looped(path: Path, seconds: float, out: Path) -> Path:
    """The looped clip as an mp4 (what a 20 s recording of the same person would be)."""
    fps, _ = clip_fps(path)
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read()
    capture.release()
    if not ok:
        raise SystemExit(f"{path}: no frames could be decoded")
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {out} (mp4v codec unavailable)")
    try:
        for frame in looped(path, seconds, CachedDetector(None)):
            writer.write(frame.image)
    finally:
        writer.release()
    return out


def old_session_module(ref: str) -> types.ModuleType:
    """``scanner/session.py`` as of git revision ``ref``, importable next to today's."""
    source = subprocess.run(
        ["git", "show", f"{ref}:scanner/session.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    name = "scanner_session_before"
    path = Path(tempfile.mkdtemp(prefix="bench-session-")) / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Outcome:
    shots: int
    seconds: float  # media time of the last shot
    complete: bool
    step: float
    relaxations: int
    spread: object
    wall: float

    def line(self, label: str) -> str:
        spread = self.spread
        return (
            f"   {label:>6}: {self.shots:2d} shots, last at {self.seconds:4.1f} s, "
            f"{'complete' if self.complete else 'INCOMPLETE'}; step {self.step:.2g} deg "
            f"({self.relaxations} relaxations); yaw range {spread.yaw_range:4.1f} deg, "
            f"pitch range {spread.pitch_range:4.1f} deg (std {spread.yaw_std:.1f}/"
            f"{spread.pitch_std:.1f}); analysed in {self.wall:.0f} s"
        )


def run_session(module, cfg: Config, root: Path, frames, detector, fps: float) -> Outcome:  # noqa: ANN001
    """Auto-capture ``frames`` with ``module``'s CaptureSession (before or after)."""
    from scanner.pose import pose_spread
    from scanner.quality import QualityLimits

    kwargs = {
        "target": cfg.target_shots,
        "min_shots": cfg.min_shots,
        "detect_width": cfg.detect_width,
        "pose_step": cfg.scan_pose_step,
        "auto": True,
    }
    if "relax_seconds" in module.CaptureSession.__init__.__code__.co_varnames:
        kwargs.update(relax_seconds=cfg.scan_relax_seconds, min_pose_step=cfg.scan_pose_step_min)
    session = module.CaptureSession(
        "Bench Person", root / "images", detector, QualityLimits.from_config(cfg), **kwargs
    )
    started = time.perf_counter()
    result = module.run_headless(session, frames, ())
    wall = time.perf_counter() - started
    last = result.shots[-1].frame_index / fps if result.shots else 0.0
    return Outcome(
        shots=len(result.shots),
        seconds=last,
        complete=result.complete,
        step=session.diversity.min_step,
        relaxations=getattr(session, "relaxations", 0),
        spread=pose_spread([s.pose for s in result.shots if s.pose is not None]),
        wall=wall,
    )


def run_cli(video: Path, workspace: Path) -> tuple[int, list[str], float]:
    """``scanner --auto --headless --no-enrol`` on ``video``: exit status and summary lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "--workspace", str(workspace), "--name",
         "Bench Person", "--source", str(video), "--headless", "--auto", "--no-enrol", "-q"],
        capture_output=True, text=True, env=env, timeout=3600, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("saved", "pose", "enrol"))]
    if proc.returncode not in (0, 1):
        lines.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?")
    return proc.returncode, lines, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=MEDIA, help=f"clip folder ({MEDIA})")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), help="clip names (no .mp4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="video length after looping")
    parser.add_argument(
        "--before", default=BEFORE, help=f"git revision of the 'before' session ({BEFORE[:10]})"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the real scanner command")
    args = parser.parse_args()

    from preprocess.detectors import make_detector
    from scanner import session as after

    before = old_session_module(args.before)
    revision = subprocess.run(
        ["git", "rev-parse", "--short", args.before], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-auto-enrol-") as tmp:
        base = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
        cfg = load_config(base, env=env)
        detector = make_detector(cfg)
        detector.detect(np.zeros((64, 64, 3), np.uint8))  # TensorFlow start-up, once
        print(
            f"auto enrolment of people who barely move, {args.seconds:g} s per clip (looped); "
            f"target {cfg.target_shots}, min {cfg.min_shots}; before = {args.before} "
            f"({revision}), after = working tree (relax after {cfg.scan_relax_seconds:g} s, "
            f"floor {cfg.scan_pose_step_min:g} deg)"
        )
        incomplete = 0
        for name in args.clips:
            path = args.media / f"{name}.mp4"
            if not path.is_file():
                raise SystemExit(f"{path} does not exist; pass --media DIR")
            fps, count = clip_fps(path)
            cached = CachedDetector(detector)
            print(f"\n{name}: {count} frames at {fps:g} fps ({count / fps:.1f} s), looped")
            for label, module in (("before", before), ("after", after)):
                root = base / f"{name}-{label}"
                frames = looped(path, args.seconds, cached)
                outcome = run_session(module, cfg, root, frames, cached, fps)
                print(outcome.line(label))
                if label == "after" and not outcome.complete:
                    incomplete += 1
            if not args.no_cli:
                video = write_looped(path, args.seconds, base / f"{name}-loop.mp4")
                code, lines, wall = run_cli(video, base / f"{name}-cli")
                print(f"   scanner --auto --headless on the {args.seconds:g} s mp4: exit {code} "
                      f"({wall:.0f} s)")  # fmt: skip
                for line in lines:
                    print(f"      {line}")
                incomplete += code != 0
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
