"""Benchmark embedding throughput: faces/s at batch 1 and batch 32, real pretrained weights.

Usage: python bench/bench_embed.py [--reps 5] [--seconds 2]

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
    args = parser.parse_args()

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


if __name__ == "__main__":
    raise SystemExit(main())
