"""Benchmark preprocessing on the sample data: images/s, and call_preprocess cold and warm.

Usage: python bench/bench_preprocess.py [--keep]

The train split of the sample photos is copied into a temporary workspace's ``images/``.
Figures printed:
  - MTCNN start-up (TensorFlow import + model build + first detection)
  - in-process preprocessing throughput (images/s, detector already warm), per alignment
  - ``call_preprocess`` wall time, cold (empty pre_images/, includes TF start-up) and warm
    (nothing to do; target < 2 s)
Exit status 1 when the warm run misses its target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.config import ALIGNMENTS, load_config  # noqa: E402
from common.sdist import ensure_sample_data  # noqa: E402

WARM_TARGET_SECONDS = 2.0


def call_preprocess_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("call_preprocess")
    return [str(script)] if script.exists() else [sys.executable, "-m", "preprocess.cli"]


def timed_cli(root: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [*call_preprocess_command(), "--workspace", str(root), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"call_preprocess failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc.stdout.strip().splitlines()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    try:
        env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
        cfg = load_config(root, env=env)
        sample = ensure_sample_data(cfg.cache_dir)
        shutil.copytree(sample / "train", root / "images")
        n_images = sum(1 for _ in (root / "images").glob("*/*.jpg"))
        print(f"workspace: {root} ({n_images} train photos, 5 people)")

        from common.image_io import read_image
        from preprocess.detectors import make_detector
        from preprocess.pipeline import run_preprocess

        detector = make_detector(cfg)
        first = read_image(next((root / "images").glob("*/*.jpg")))
        started = time.perf_counter()
        detector.detect(first)
        print(f"MTCNN start-up + first detection: {time.perf_counter() - started:.1f} s")

        for alignment in ALIGNMENTS:
            run_cfg = cfg.replace(alignment=alignment)
            started = time.perf_counter()
            summary = run_preprocess(run_cfg, detector=detector, progress=False)
            elapsed = time.perf_counter() - started
            done = len(summary.processed)
            print(
                f"preprocess alignment={alignment}: {done} images in {elapsed:.1f} s = "
                f"{done / elapsed:.1f} images/s ({len(summary.rejected)} rejected)"
            )
        started = time.perf_counter()
        summary = run_preprocess(cfg.replace(alignment="margin"), progress=False)
        print(
            f"run_preprocess warm (in-process): {time.perf_counter() - started:.3f} s "
            f"({len(summary.skipped)} skipped)"
        )

        shutil.rmtree(cfg.pre_images_dir)
        cold, line = timed_cli(root)
        print(f"call_preprocess cold: {cold:.1f} s  [{line}]")
        warm, line = timed_cli(root)
        verdict = "OK" if warm < WARM_TARGET_SECONDS else "TOO SLOW"
        print(
            f"call_preprocess warm: {warm:.2f} s  [{line}]  "
            f"(target < {WARM_TARGET_SECONDS:.0f} s: {verdict})"
        )
        return 0 if warm < WARM_TARGET_SECONDS else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
