"""Benchmark embedding throughput: faces/s at batch 1 and batch 32, real pretrained weights.

Usage: python bench/bench_embed.py [--reps 5] [--seconds 2] [--bfloat16]

``--bfloat16`` instead compares float32 with mixed bfloat16 (the same weights, Keras policy
``mixed_bfloat16``) at batch 1, 4 and 32, and how far the bfloat16 vectors move on the sample's
photos (issue 14's condition for adopting it: >= 1.4x at batch 32).

Figures printed (median of ``--reps`` timed repetitions, after a warm-up):
  - ``Embedder.embed`` as configured (flip averaging on: two forward passes per face) and with
    flip averaging off;
  - the reference "straightforward pipeline": ``prewhiten`` + ``keras.Model.predict`` on the
    same network, measured in the same run so the comparison is fair on a busy machine.
Target (reference pipeline measured on this machine class): 45 faces/s at batch 1 and
110 faces/s at batch 32. Exit status 1 when ``Embedder`` (flip off, the like-for-like setting)
misses a target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from common.config import load_config  # noqa: E402

TARGETS = {1: 45.0, 32: 110.0}  # faces/s of the straightforward pipeline


def faces_per_second(
    runs: dict[str, Callable[[np.ndarray], object]], crops: np.ndarray, reps: int, seconds: float
) -> dict[str, float]:
    """Median faces/s of each ``run(crops)``; each repetition calls it for about ``seconds``.

    The runs take turns within every repetition, so a burst of load from other processes hits
    them alike.
    """
    for run in runs.values():
        for _ in range(3):  # warm-up: tracing, oneDNN kernel selection, allocator
            run(crops)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            calls, started = 0, time.perf_counter()
            while True:
                run(crops)
                calls += 1
                elapsed = time.perf_counter() - started
                if elapsed >= seconds:
                    break
            rates[name].append(calls * len(crops) / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one repetition")
    parser.add_argument("--bfloat16", action="store_true", help="float32 against bfloat16")
    args = parser.parse_args()
    if args.bfloat16:
        return compare_bfloat16(args.reps, args.seconds)

    from model.embedder import Embedder, prewhiten

    env = {k: v for k, v in os.environ.items() if k.startswith("ATTENDANCE_")}
    cfg = load_config(env=env)
    started = time.perf_counter()
    flip_on = Embedder.from_config(cfg.replace(flip_average=True))
    print(f"model {flip_on.model_id} loaded in {time.perf_counter() - started:.1f} s")
    flip_off = Embedder(flip_on.model, flip_on.model_id.removesuffix("+flip"), 32, False)

    def reference(crops: np.ndarray) -> object:
        return flip_on.model.predict(prewhiten(crops), batch_size=len(crops), verbose=0)

    rng = np.random.default_rng(0)
    failed = False
    print(f"{'batch':>5}  {'Embedder flip on':>16}  {'Embedder flip off':>17}  "
          f"{'reference predict':>17}  {'target':>6}")  # fmt: skip
    for batch, target in TARGETS.items():
        crops = rng.integers(0, 256, size=(batch, 160, 160, 3), dtype=np.uint8)
        runs = {"on": flip_on.embed, "off": flip_off.embed, "ref": reference}
        rates = faces_per_second(runs, crops, args.reps, args.seconds)
        on, off, ref = rates["on"], rates["off"], rates["ref"]
        print(f"{batch:>5}  {on:>12.1f} f/s  {off:>13.1f} f/s  {ref:>13.1f} f/s  {target:>6.0f}")
        failed |= off < target
    print("faces/s = faces embedded per second (median of repetitions); flip on = 2 passes/face")
    return 1 if failed else 0


def compare_bfloat16(reps: int, seconds: float) -> int:
    """faces/s of float32 and mixed bfloat16 FaceNet, and how far bfloat16 moves the vectors."""
    import keras

    from attendance.demo import load_photo
    from common.sdist import ensure_sample_data
    from model.embedder import Embedder
    from model.versions import resolve_active
    from model.weights import load_model
    from preprocess.detectors import make_detector
    from preprocess.pipeline import crop_largest_face

    env = {k: v for k, v in os.environ.items() if k.startswith("ATTENDANCE_")}
    cfg = load_config(env=env)
    path, model_id = resolve_active(cfg)
    f32 = Embedder(load_model(path), model_id, 32, False)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        b16 = Embedder(load_model(path), model_id, 32, False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    sample = ensure_sample_data(cfg.cache_dir)
    detector = make_detector(cfg)
    crops = []
    for photo in sorted(sample.glob("val/*/*.jpg")):
        rgb = np.ascontiguousarray(load_photo(photo)[..., ::-1])
        crops.append(crop_largest_face(rgb, detector, cfg, name=photo.name)[0])
    crops_array = np.stack(crops)
    moved = np.linalg.norm(f32.embed(crops_array) - b16.embed(crops_array), axis=1)
    print(f"{'batch':>5}  {'float32':>12}  {'bfloat16':>12}  {'bf16/f32':>8}")
    for batch in (1, 4, 32):
        x = np.resize(crops_array, (batch, *crops_array.shape[1:]))
        rates = faces_per_second({"f32": f32.embed, "b16": b16.embed}, x, reps, seconds)
        print(f"{batch:>5}  {rates['f32']:>8.1f} f/s  {rates['b16']:>8.1f} f/s  "
              f"{rates['b16'] / rates['f32']:>7.2f}x")  # fmt: skip
    print(f"bfloat16 moves the unit vectors of {len(crops)} sample crops by {moved.mean():.4f} "
          f"on average (max {moved.max():.4f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
