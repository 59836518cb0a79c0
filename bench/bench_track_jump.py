"""How far one person's embedding moves within a real clip: the ground for ``track_jump``.

For each clip (default: ``../shared/data/liveness/genuine/*.mp4``, real people turning,
nodding, blinking and talking), every 3rd frame is detected at 640 px width, the largest face
aligned as the recogniser does and embedded with the active model. Printed per clip: the
distance between consecutive looks (median / p99 / max) and the largest distance of any look
from the clip's first one. A track is split when a fresh embedding lies farther than
``track_jump`` from the previous one; a confirmed track is re-embedded every
``refresh_seconds``, so the from-first figure bounds what one person shows over that time.

Usage: ``python bench/bench_track_jump.py [CLIP ...] [--every 3] [--width 640]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import load_config  # noqa: E402

DEFAULT_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "liveness" / "genuine"


def clip_embeddings(path: Path, every: int, width: int, cfg, detector, embedder) -> np.ndarray:
    """Embeddings of the largest face of every ``every``-th frame of ``path``."""
    import cv2

    from preprocess.align import align_face
    from preprocess.detect import detect_at_width

    capture = cv2.VideoCapture(str(path))
    vectors = []
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        index += 1
        if index % every:
            continue
        faces = detect_at_width(detector, bgr, width, bgr=True)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        try:
            crop = align_face(rgb, face, method=cfg.alignment, size=160, margin=cfg.margin)
        except ValueError:
            continue
        vectors.append(embedder.embed(crop[None].astype(np.uint8))[0])
    capture.release()
    return np.asarray(vectors, np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--every", type=int, default=3, help="embed every n-th frame")
    parser.add_argument("--width", type=int, default=640, help="detection width")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    clips = args.clips or sorted(DEFAULT_CLIPS.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips: pass some, or provide {DEFAULT_CLIPS}")
    env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
    cfg = load_config(Path("/"), env=env)

    from model.embedder import Embedder
    from preprocess.detectors import make_detector

    detector, embedder = make_detector(cfg), Embedder.from_config(cfg)
    print(f"# bench_track_jump: model {embedder.model_id}, every {args.every} frames, "
          f"detection at {args.width} px")  # fmt: skip
    print("\n| clip | looks | consecutive median / p99 / max | farthest from the first look |")
    print("|---|---:|---:|---:|")
    steps, firsts = [], []
    for clip in clips:
        vectors = clip_embeddings(clip, args.every, args.width, cfg, detector, embedder)
        if len(vectors) < 2:
            print(f"| {clip.name} | {len(vectors)} | - | - |")
            continue
        step = np.linalg.norm(vectors[1:] - vectors[:-1], axis=1)
        first = np.linalg.norm(vectors - vectors[0], axis=1)
        steps.append(step)
        firsts.append(first.max())
        spread = f"{np.median(step):.3f} / {np.quantile(step, 0.99):.3f} / {step.max():.3f}"
        print(f"| {clip.name} | {len(vectors)} | {spread} | {first.max():.3f} |")
    if steps:
        every = np.concatenate(steps)
        spread = f"{np.median(every):.3f} / {np.quantile(every, 0.99):.3f} / {every.max():.3f}"
        print(f"| all | {len(every) + len(steps)} | {spread} | {max(firsts):.3f} |")
    print(f"\ntrack_jump (configured): {cfg.track_jump}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
