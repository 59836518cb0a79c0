"""A whole training run: :func:`run_training`, and what it reports (:class:`TrainReport`).

1. read the aligned crops of ``pre_images/<Name>/`` (:func:`~model.training.data.load_crops`);
2. split them once and for all (:func:`~model.training.split.update_split`,
   ``<models_dir>/split.json``): whole identities and part of every other identity's images
   are held out; the held-out images (never trained on) form the evaluation's gallery and
   probes;
3. cut the network at ``trainable_from`` (:func:`~model.training.network.split_model`): the
   frozen front is run once per image and augmentation variant
   (:class:`~model.training.features.FeatureSource`, an in-memory cache), so an epoch only
   runs the trainable head, a sub-model built from the same layers;
4. evaluate on the held-out split with :func:`model.metrics.evaluate_embeddings` (the figures
   of ``attendance evaluate``), train with online triplet mining (:mod:`model.mining`),
   keep the best checkpoint, evaluate again (:class:`~model.training.trainer.FineTuner`);
5. :func:`~model.training.decision.decide`: save a new version (:mod:`model.versions`) and
   make it active only if the held-out metrics improve; ``force`` saves anyway (without
   activating it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.config import Config
from common.fsutil import sha256_file
from model.training.data import data_hash, load_crops
from model.training.decision import Decision, decide
from model.training.errors import TrainError
from model.training.options import TrainOptions
from model.training.split import HOLDOUT, SPLIT_NAME, update_split
from model.training.trainer import EpochStats, FineTuner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModel:
    """The model training starts from (the workspace's active model)."""

    version: str
    model_id: str
    weights_sha256: str


@dataclass
class TrainReport:
    """Everything a training run produced."""

    before: dict[str, float]
    after: dict[str, float]
    decision: Decision
    history: list[EpochStats]
    interrupted: bool
    base: BaseModel
    version: Any = None  # model.versions.ModelVersion when saved
    activated: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    monitor_before: float = 0.0  # batch-all triplet loss on the training images, before


def load_active_model(cfg: Config):  # type: ignore[no-untyped-def]
    """``(keras model, BaseModel)`` of the workspace's active model."""
    from model.versions import resolve_active
    from model.weights import load_model

    path, model_id = resolve_active(cfg)
    return load_model(Path(path)), BaseModel(cfg.model_version, model_id, sha256_file(path))


def run_training(
    cfg: Config,
    opts: TrainOptions | None = None,
    model=None,  # type: ignore[no-untyped-def]
    base: BaseModel | None = None,
) -> TrainReport:
    """Fine-tune the active model on ``cfg.pre_images_dir``; save and activate it only if
    the held-out metrics improve (see :func:`~model.training.decision.decide`).
    ``model``/``base`` override the active model (tests use tiny networks)."""
    from model.versions import save_version, use_version
    from model.weights import model_tensors

    opts = opts or TrainOptions.from_config(cfg)
    if not Path(cfg.pre_images_dir).is_dir():
        raise TrainError(f"{cfg.pre_images_dir} does not exist; run `attendance preprocess` first")
    if model is None:
        model, base = load_active_model(cfg)
    elif base is None:
        raise ValueError("pass base= with model=")
    crops = load_crops(cfg.pre_images_dir, int(model.input_shape[1]))
    if len(crops) == 0:
        raise TrainError(f"no crops in {cfg.pre_images_dir}; run `attendance preprocess` first")
    split_path = cfg.models_dir / SPLIT_NAME
    split = update_split(
        split_path, crops, opts.seed, opts.holdout_image_fraction, opts.holdout_identity_fraction
    )
    tuner = FineTuner(model, crops, split, opts)
    counts = {
        "train_identities": len({crops.labels[i] for i in tuner.train_rows}),
        "holdout_identities": sum(1 for r in split.identities.values() if r == HOLDOUT),
        "train_images": len(tuner.train_rows),
        "eval_gallery_images": len(tuner.gallery_rows),
        "eval_probe_images": len(tuner.probe_rows),
    }
    log.info("split: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    gallery_ids = set(tuner.labels[tuner.gallery_rows])
    probe_ids = set(tuner.labels[tuner.probe_rows]) & gallery_ids
    if len(gallery_ids) < 2 or len(probe_ids) < 2:
        raise TrainError(
            f"the held-out split ({split_path}) has too few images to evaluate on: "
            f"{len(gallery_ids)} identities in its gallery, probes of {len(probe_ids)}; "
            "enrol at least 3 people with 4 or more photos each"
        )
    timings = {"features_seconds": tuner.prepare()}
    before = tuner.evaluate()
    started = time.perf_counter()
    history, interrupted = tuner.train()
    timings["train_seconds"] = time.perf_counter() - started
    after = tuner.evaluate()
    decision = decide(before, after, opts.min_gain)
    report = TrainReport(before, after, decision, history, interrupted, base, counts=counts,
                         timings=timings, best_epoch=tuner.best_epoch,
                         monitor_before=(tuner.initial_monitor or (0.0, 0.0))[0])  # fmt: skip
    if decision.accepted or opts.force:
        if not decision.accepted:
            log.warning("saving a model that is not better (--force): %s", decision.reason)
        meta = {
            "base": asdict(base),
            "training_data_sha256": data_hash(crops, tuner.train_rows),
            "split_sha256": sha256_file(split_path),
            "hyperparameters": opts.hyperparameters(),
            "metrics": {"before": before, "after": after},
            "decision": asdict(decision),
            "forced": not decision.accepted,
            "counts": counts,
            "epochs_run": len(history),
            "best_epoch": tuner.best_epoch,
            "monitor_loss_before": report.monitor_before,
            "interrupted": interrupted,
            "history": [asdict(h) for h in history],
        }
        report.version = save_version(cfg, model_tensors(model), meta)
        if decision.accepted and opts.activate:
            use_version(cfg, report.version.version)
            report.activated = True
    if not report.activated:
        tuner.restore_initial()  # the caller's model stays the current model
    return report
