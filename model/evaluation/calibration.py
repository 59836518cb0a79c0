"""Calibrate the recogniser's threshold for a target false accept rate.

The threshold is chosen on the distances the recogniser compares (decision distances of
:func:`model.metrics.decision_distances`), written into the workspace's ``attendance.toml`` and
recorded for the active model (:mod:`model.thresholds`), so ``attendance model use`` restores it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from common.config import Config, write_config_value
from model.evaluation import EvaluationError
from model.evaluation.report import decision_summary
from model.metrics import round_down_threshold, threshold_at_far
from model.thresholds import CALIBRATED, read_thresholds, record_threshold

log = logging.getLogger(__name__)


def calibrate(
    cfg: Config,
    genuine: np.ndarray,
    stranger: np.ndarray,
    far: float,
    *,
    dataset: str = "",
) -> dict[str, Any]:
    """Write the largest threshold accepting at most a fraction ``far`` of strangers.

    ``genuine`` and ``stranger`` are the decision distances of ``cfg.match_mode``
    (:func:`model.metrics.decision_distances`) of the active model. The threshold is rounded
    down to 4 decimals, so it never accepts more strangers than the exact one; the genuine
    accept rate (TAR) there is reported, and a warning logged when the FAR target rejects
    genuine probes. The threshold goes into ``attendance.toml`` and is recorded for the active
    model's id (``model_id`` of the result; None when it could not be resolved without its
    weights). ``dataset`` (free text) prefixes the record's ``calibrated_on``.
    """
    if not 0.0 < far < 1.0:
        raise EvaluationError(f"--far {far}: the target false accept rate must be in (0, 1)")
    genuine = np.asarray(genuine, dtype=np.float64)
    stranger = np.asarray(stranger, dtype=np.float64)
    if len(stranger) * far < 1.0:
        log.warning(
            "only %d stranger decisions: FAR %g cannot be measured finer than 1/%d; the "
            "threshold is set just below the closest stranger",
            len(stranger), far, len(stranger),
        )  # fmt: skip
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(stranger), bool)])
    try:
        threshold = threshold_at_far(np.concatenate([genuine, stranger]), same, far)
    except ValueError as exc:
        raise EvaluationError(f"cannot calibrate: {exc}") from None
    value = round_down_threshold(min(threshold, 2.0))
    summary = decision_summary(cfg.match_mode, genuine, stranger, value)
    if summary["stranger_accept"] > far:
        raise EvaluationError(
            f"cannot calibrate: {summary['n_strangers_accepted']} strangers are at distance "
            f"{stranger.min():.4f} or closer, so no threshold >= 0 reaches FAR {far:g}; are "
            "the same photos filed under two identities?"
        )
    read_thresholds(cfg)  # a corrupt record file fails here, before anything is written
    path = write_config_value(cfg.root, "threshold", value)
    calibrated_on = (
        f"{len(genuine)} genuine and {len(stranger)} stranger decisions ({cfg.match_mode})"
    )
    if dataset:
        calibrated_on = f"{dataset}: {calibrated_on}"
    model_id = _active_model_id(cfg)
    if model_id is not None:
        record_threshold(
            cfg, model_id, value, far=far, source=CALIBRATED, calibrated_on=calibrated_on,
            tar=summary["genuine_accept"],
        )  # fmt: skip
    if summary["n_genuine_accepted"] < len(genuine):
        log.warning(
            "FAR %g forces threshold %.4f below the farthest genuine probe (%.4f): %d of %d "
            "genuine probes (%.1f%%) would be rejected as Unknown",
            far, value, genuine.max(), len(genuine) - summary["n_genuine_accepted"],
            len(genuine), 100.0 * (1.0 - summary["genuine_accept"]),
        )  # fmt: skip
    log.info(
        "threshold %.4f (%s decisions: strangers accepted %d/%d <= FAR %g, TAR %.4f) "
        "written to %s",
        value, cfg.match_mode, summary["n_strangers_accepted"], len(stranger), far,
        summary["genuine_accept"], path,
    )  # fmt: skip
    return {
        "threshold": value,
        "far": far,
        "tar": summary["genuine_accept"],
        "previous": cfg.threshold,
        "config": str(path),
        "model_id": model_id,
        "mode": cfg.match_mode,
        "stranger_accept": summary["stranger_accept"],
        "n_strangers_accepted": summary["n_strangers_accepted"],
        "n_strangers": summary["n_strangers"],
        "n_genuine": summary["n_genuine"],
        "genuine_max": summary["genuine_max"],
        "stranger_min": summary["stranger_min"],
    }


def _active_model_id(cfg: Config) -> str | None:
    """The id of ``cfg.model_version`` (no weights loaded); None, with a warning, if unusable."""
    from model.versions import VersionError, model_id_of

    try:
        return model_id_of(cfg, cfg.model_version)
    except VersionError as exc:
        log.warning(
            "the calibrated threshold is not recorded for model %s: %s", cfg.model_version, exc
        )
        return None
