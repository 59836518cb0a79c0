"""What ``attendance evaluate`` found: the figures of every variant, as text or JSON.

A variant is one combination of alignment, flip averaging and match mode. The report also
summarises how the recogniser's decision rule treats the probes at a threshold
(:func:`decision_summary`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.vectors import MODES

FEW_SHOT = 3  # gallery images per identity of the few-shot open-set figure
FEW_SHOT_KEY = f"open_set_false_accept_{FEW_SHOT}shot"
#: (metric key, label, higher is better, depends on the match mode) of the "best" summary
HEADLINE = (
    ("auc", "AUC", True, False),
    ("eer", "EER", False, False),
    ("tar_at_far_1e-3", "TAR@1e-3", True, False),
    ("rank1", "rank-1", True, True),
    ("open_set_false_accept", "open-set FA", False, True),
    (FEW_SHOT_KEY, f"open-set FA {FEW_SHOT}-shot", False, True),
)


@dataclass
class VariantResult:
    """The figures of one (alignment, flip averaging, match mode) combination."""

    alignment: str
    flip_average: bool
    match_mode: str
    metrics: dict[str, float | int]
    current: bool  # the workspace's configured combination

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the variant's settings and metrics (non-finite numbers as null)."""
        return {
            "alignment": self.alignment,
            "flip_average": self.flip_average,
            "match_mode": self.match_mode,
            "current": self.current,
            **{k: _finite(v) for k, v in self.metrics.items()},
        }


@dataclass
class EvaluationReport:
    """Everything ``attendance evaluate`` found."""

    dataset: str
    split: str
    model_id: str
    n_gallery: int
    n_probes: int
    failed: list[tuple[str, str]]
    results: list[VariantResult]
    plots: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None  # current variant's decisions at cfg.threshold

    @property
    def current(self) -> VariantResult:
        """The result of the configured alignment / flip / match mode."""
        return next(r for r in self.results if r.current)

    def winners(self) -> list[str]:
        """One line per headline figure: its best value and every variant reaching it."""
        lines = []
        for key, label, higher, by_mode in HEADLINE:
            values = [r.metrics[key] for r in self.results]
            best = max(values) if higher else min(values)
            names = []
            for r, v in zip(self.results, values, strict=True):
                name = f"{r.alignment}, flip {'on' if r.flip_average else 'off'}"
                name += f", {r.match_mode}" if by_mode else ""
                if abs(v - best) <= 1e-12 and name not in names:
                    names.append(name)
            every = len(names) == len(values) // (1 if by_mode else len(MODES))
            lines.append(f"best {label}: {best:.4f} ({'all' if every else '; '.join(names)})")
        return lines

    def compared(self) -> bool:
        """Whether more than one alignment / flip setting was evaluated."""
        return len({(r.alignment, r.flip_average) for r in self.results}) > 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report (the ``--json`` output)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "model_id": self.model_id,
            "n_gallery": self.n_gallery,
            "n_probes": self.n_probes,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "results": [r.as_dict() for r in self.results],
            "plots": self.plots,
            "calibration": self.calibration,
            "decision": self.decision,
            "best": self.winners() if self.compared() else [],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.as_dict(), indent=2, allow_nan=False)

    def to_text(self) -> str:
        """A human-readable report: header, one table row per variant, notes."""
        lines = [
            f"dataset: {self.dataset}",
            f"split: {self.split} ({self.n_gallery} gallery, {self.n_probes} probe images "
            f"with a face)",
            f"model: {self.model_id}",
        ]
        if self.failed:
            lines.append(f"no usable face in {len(self.failed)} images (left out):")
            lines += [f"  {reason}" for _, reason in self.failed]
        header = (
            "alignment", "flip", "mode", "AUC", "EER", "TAR@1e-2", "TAR@1e-3", "best acc",
            "@thr", "rank-1", "open-set FA", "thr@1%FRR", f"FA {FEW_SHOT}-shot",
        )  # fmt: skip
        rows = [header]
        for r in self.results:
            m = r.metrics
            rows.append(
                (
                    r.alignment + (" *" if r.current else ""),
                    "on" if r.flip_average else "off",
                    r.match_mode,
                    f"{m['auc']:.4f}",
                    f"{m['eer']:.4f}",
                    f"{m['tar_at_far_1e-2']:.4f}",
                    f"{m['tar_at_far_1e-3']:.4f}",
                    f"{m['best_accuracy']:.4f}",
                    f"{m['best_threshold']:.3f}",
                    f"{m['rank1']:.4f}",
                    f"{m['open_set_false_accept']:.4f}",
                    f"{m['threshold_at_1pct_frr']:.3f}",
                    f"{m[FEW_SHOT_KEY]:.4f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        cur = self.current.metrics
        lines.append(
            f"* = current configuration; {cur['n_genuine_pairs']} genuine / "
            f"{cur['n_impostor_pairs']} impostor pairs, mean distance "
            f"{cur['genuine_distance_mean']:.3f} / {cur['impostor_distance_mean']:.3f}"
        )
        if self.decision:
            lines.append(decision_line(self.decision))
        if self.compared():
            lines += self.winners()
        for name, path in self.plots.items():
            lines.append(f"{name}: {path}")
        if self.calibration:
            c = self.calibration
            lines.append(
                f"calibrated threshold {c['threshold']:.4f} for FAR {c['far']:g} on "
                f"{c['mode']} decisions (TAR {c['tar']:.4f}, strangers accepted "
                f"{c['n_strangers_accepted']}/{c['n_strangers']}; was {c['previous']:.4f}) "
                f"written to {c['config']}"
            )
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decision_summary(
    mode: str, genuine: np.ndarray, stranger: np.ndarray, threshold: float
) -> dict[str, Any]:
    """How the recogniser's rule (winner distance ``<= threshold``) treats the decisions.

    ``genuine`` and ``stranger`` come from :func:`model.metrics.decision_distances`.
    """
    accepted_genuine = int(np.sum(genuine <= threshold))
    accepted_strangers = int(np.sum(stranger <= threshold))
    return {
        "mode": mode,
        "threshold": float(threshold),
        "genuine_max": float(genuine.max()),
        "stranger_min": _finite(float(stranger.min())),
        "genuine_accept": accepted_genuine / len(genuine),
        "stranger_accept": accepted_strangers / len(stranger),
        "n_genuine": len(genuine),
        "n_genuine_accepted": accepted_genuine,
        "n_strangers": len(stranger),
        "n_strangers_accepted": accepted_strangers,
    }


def decision_line(d: dict[str, Any]) -> str:
    """One text line of :func:`decision_summary`."""
    stranger_min = "none" if d["stranger_min"] is None else f"{d['stranger_min']:.3f}"
    return (
        f"decision ({d['mode']}): genuine max {d['genuine_max']:.3f}, stranger min "
        f"{stranger_min}, genuine accepted at threshold {d['threshold']:.4f}: "
        f"{100 * d['genuine_accept']:.1f}% ({d['n_genuine_accepted']}/{d['n_genuine']}), "
        f"strangers accepted: {100 * d['stranger_accept']:.1f}% "
        f"({d['n_strangers_accepted']}/{d['n_strangers']})"
    )
