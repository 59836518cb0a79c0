"""ROC curves and distance histograms of an evaluation, saved as PNGs.

matplotlib is imported only when plots are drawn.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.fsutil import atomic_write_bytes
from model.evaluation.report import VariantResult


def save_plots(
    out_dir: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    pairs: tuple[np.ndarray, np.ndarray],
    current: VariantResult,
    threshold: float,
    calibration: dict[str, Any] | None = None,
    decisions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, str]:
    """ROC curves (log FAR) and distance histograms as PNGs in ``out_dir``.

    ``distances.png`` shows the image-pair distances and, given ``decisions`` (genuine and
    stranger decision distances of ``current``), the distances the recogniser thresholds, with
    the configured and calibrated thresholds.
    """
    from matplotlib.figure import Figure

    distances, same = pairs
    roc = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = roc.subplots()
    floor = 1.0 / max(int((~same).sum()), 1)
    for name, (far, tar) in curves.items():
        ax.step(np.maximum(far, floor / 2), tar, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1.0)
    lowest = min(float(np.interp(floor / 2, far, tar)) for far, tar in curves.values())
    ax.set_ylim(max(0.0, np.floor((lowest - 0.05) * 10) / 10), 1.005)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC ({current.alignment}, flip {'on' if current.flip_average else 'off'}: "
                 f"AUC {current.metrics['auc']:.4f})")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")

    hist = Figure(figsize=(6.4, 8.4 if decisions is not None else 4.8), dpi=100)
    axes = hist.subplots(2 if decisions is not None else 1, 1, squeeze=False)[:, 0]
    bins = np.linspace(0.0, max(2.0, float(distances.max())), 61)
    panels = [(axes[0], distances[same], distances[~same], "distances of image pairs",
               ("same person", "different people"))]  # fmt: skip
    if decisions is not None:
        genuine, stranger = decisions
        panels.append((axes[1], genuine, stranger[np.isfinite(stranger)],
                       f"recogniser decisions ({current.match_mode}): distance to the winner",
                       ("own identity (probes)", "strangers (identity left out)")))  # fmt: skip
    for ax, genuine_d, impostor_d, title, names in panels:
        ax.hist(impostor_d, bins=bins, alpha=0.6, density=True, label=names[1])
        ax.hist(genuine_d, bins=bins, alpha=0.6, density=True, label=names[0])
        ax.set_ylabel("density")
        ax.set_title(title)
    ax = axes[-1]  # the thresholds apply to the decisions (or, without them, the only panel)
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    if calibration:
        ax.axvline(calibration["threshold"], color="r", linestyle=":",
                   label=f"calibrated {calibration['threshold']:.4f}")  # fmt: skip
    ax.set_xlabel("Euclidean distance between unit embeddings")
    for ax in axes:
        ax.legend()
    hist.tight_layout()

    out: dict[str, str] = {}
    for name, figure in (("roc", roc), ("distances", hist)):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        path = Path(out_dir) / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        out[name] = os.fspath(path)
    return out
