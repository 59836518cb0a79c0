"""``attendance evaluate``: evaluate the model on a dataset folder, plot, optionally calibrate.

Detection runs once per image (:mod:`model.evaluation.crops`). With ``compare=True`` every
combination of alignment ("landmarks", "margin") and flip averaging (on, off) is evaluated; each
variant's embeddings are kept in memory for the run. Both match modes are always reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from common.config import ALIGNMENTS, Config
from common.vectors import MODES
from model.evaluation import EvaluationError
from model.evaluation.calibration import calibrate
from model.evaluation.crops import crop_images
from model.evaluation.dataset import split_dataset
from model.evaluation.embedded import with_flip
from model.evaluation.plots import save_plots
from model.evaluation.report import (
    FEW_SHOT,
    FEW_SHOT_KEY,
    EvaluationReport,
    VariantResult,
    decision_summary,
)
from model.metrics import (
    decision_distances,
    evaluate_embeddings,
    few_shot_open_set_false_accept,
    pair_scores,
    roc_curve,
)

log = logging.getLogger(__name__)


def evaluate_folder(
    root: Path,
    cfg: Config,
    detector: Any,
    embedder: Any,
    *,
    compare: bool = False,
    out_dir: Path | None = None,
    calibrate_far: float | None = None,
    progress: bool | None = None,
) -> EvaluationReport:
    """Evaluate ``embedder`` on dataset folder ``root``; write plots; optionally calibrate.

    The embedder's own flip setting and ``cfg.alignment`` are the "current" variant; with
    ``compare`` the other alignment and flip setting are evaluated as well. Both match modes
    are always reported. Verification figures use image pairs; the ``decision_*`` figures and
    calibration use the distances the recogniser thresholds
    (:func:`model.metrics.decision_distances`). ``calibrate_far`` writes the threshold whose
    stranger accept rate is at most that FAR (current variant and ``cfg.match_mode``) to the
    workspace configuration.
    """
    root = Path(root)
    split = split_dataset(root)
    alignments = [cfg.alignment] + (
        [a for a in ALIGNMENTS if a != cfg.alignment] if compare else []
    )
    flips = [bool(embedder.flip_average)] + ([not embedder.flip_average] if compare else [])
    cropset = crop_images(split.gallery + split.probes, detector, cfg, alignments, progress)
    g_rows = cropset.subset([it.relpath for it in split.gallery])
    p_rows = cropset.subset([it.relpath for it in split.probes])
    labels = np.array([it.identity for it in cropset.items], dtype=str)
    if len(set(labels[g_rows])) < 2 or len(p_rows) == 0:
        raise EvaluationError(
            f"{root}: faces found in {len(g_rows)} gallery images of "
            f"{len(set(labels[g_rows]))} identities and {len(p_rows)} probe images; "
            "evaluation needs at least two identities with a face in both sets"
        )
    results: list[VariantResult] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    current_pairs: tuple[np.ndarray, np.ndarray] | None = None
    current_decisions: tuple[np.ndarray, np.ndarray] | None = None
    for alignment in alignments:
        for flip in flips:
            variant = with_flip(embedder, flip)
            log.info("embedding %d crops (alignment=%s, flip=%s)", len(labels), alignment, flip)
            emb = np.asarray(variant.embed(cropset.crops[alignment]), dtype=np.float32)
            is_current = alignment == cfg.alignment and flip == flips[0]
            for mode in [cfg.match_mode] + [m for m in MODES if m != cfg.match_mode]:
                try:
                    metrics = evaluate_embeddings(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], mode=mode
                    )
                    metrics[FEW_SHOT_KEY] = few_shot_open_set_false_accept(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], FEW_SHOT,
                        mode=mode,
                    )  # fmt: skip
                    genuine, stranger = decision_distances(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], mode
                    )
                except ValueError as exc:
                    raise EvaluationError(f"{root}: cannot evaluate: {exc}") from None
                metrics["decision_genuine_max"] = float(genuine.max())
                metrics["decision_stranger_min"] = float(stranger.min())
                if is_current and mode == cfg.match_mode:
                    current_decisions = genuine, stranger
                results.append(
                    VariantResult(
                        alignment, flip, mode, metrics, is_current and mode == cfg.match_mode
                    )
                )
            pairs = pair_scores(np.concatenate([emb[g_rows], emb[p_rows]]),
                                np.concatenate([labels[g_rows], labels[p_rows]]))  # fmt: skip
            far, tar, _ = roc_curve(*pairs)
            curves[f"{alignment}, flip {'on' if flip else 'off'}"] = (far, tar)
            if is_current:
                current_pairs = pairs
    # the first variant is always the current one
    assert current_pairs is not None and current_decisions is not None
    report = EvaluationReport(
        dataset=str(root),
        split=split.description,
        model_id=str(embedder.model_id),
        n_gallery=len(g_rows),
        n_probes=len(p_rows),
        failed=cropset.failed,
        results=results,
        decision=decision_summary(cfg.match_mode, *current_decisions, cfg.threshold),
    )
    if calibrate_far is not None:
        report.calibration = calibrate(cfg, *current_decisions, far=calibrate_far)
    if out_dir is not None:
        report.plots = save_plots(
            Path(out_dir), curves, current_pairs, report.current, cfg.threshold,
            report.calibration, current_decisions,
        )  # fmt: skip
    return report
