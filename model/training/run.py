"""A whole training run: :func:`run_training`, and what it reports (:class:`TrainReport`).

1. read the aligned crops of ``pre_images/<Name>/`` (:func:`~model.training.data.load_crops`);
2. split them once and for all (:func:`~model.training.split.update_split`,
   ``<models_dir>/split.json``): whole identities and part of every other identity's images
   are held out and never trained on;
3. add the reference people of ``reference_dir``, if set (:mod:`model.training.reference`):
   people who are not enrolled, held out like the held-out identities;
4. refuse early, before any training, when fewer than ``train_min_identities`` identities that
   training never sees are there to judge on (``force`` trains and saves anyway, never
   activating);
5. cut the network at ``trainable_from`` and cache the frozen front's outputs
   (:class:`~model.training.trainer.FineTuner`); measure, train with online triplet mining
   (L2-SP and distillation keep the model near its start when enabled), keep the best
   checkpoint, measure again;
6. judge (:func:`~model.training.decision.decide`) on the unseen identities only, with
   intervals from a paired bootstrap over identities (:func:`model.confidence.compare`); the
   held-out photos of enrolled people are reported, not decisive;
7. save a version with its own threshold, calibrated at ``calibrate_far`` on the unseen
   identities (:mod:`model.thresholds`), and make it active only if accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.fsutil import sha256_file
from model.training.data import data_hash, load_crops
from model.training.decision import Decision, decide
from model.training.errors import TrainError
from model.training.options import TrainOptions
from model.training.reference import PREFIX
from model.training.split import HOLDOUT, SPLIT_NAME, TRAIN, update_split
from model.training.trainer import EpochStats, FineTuner
from model.versions import PRETRAINED

log = logging.getLogger(__name__)

#: Two identities are one face when their mean embeddings (templates) are closer than this
#: share of the median distance between all templates. On the 71 people of
#: ../shared/data/faces (pretrained): halves of one person's photos lie at most 0.61 apart,
#: two people at least 0.84, median 1.39; half of it, 0.70, separates them with margin. A
#: share, not a distance, so the rule holds for any model's scale.
SAME_PERSON_FRACTION = 0.5
#: The stranger guard tolerates a rise of this many stranger decisions, or of the calibration
#: target, whichever is more (a calibrated rate cannot be measured finer).
STRANGER_RESOLUTION = 2
#: A saved threshold must accept at least this share of the unseen people's genuine photos.
MIN_GENUINE_AT_THRESHOLD = 0.5


@dataclass(frozen=True)
class BaseModel:
    """The model training starts from (the workspace's active model)."""

    version: str
    model_id: str
    weights_sha256: str


@dataclass
class TrainReport:
    """Everything a training run produced.

    ``before``/``after`` are point figures on the identities training never saw
    (:func:`model.confidence.point_metrics`; empty with fewer than 2 of them), ``changes``
    their paired intervals; ``enrolled_before``/``enrolled_after`` are the figures on the
    held-out photos of the trained people (empty when they cannot be measured).
    """

    before: dict[str, float]
    after: dict[str, float]
    decision: Decision
    history: list[EpochStats]
    interrupted: bool
    base: BaseModel
    changes: dict[str, Any] = field(default_factory=dict)  # key -> confidence.MetricChange
    enrolled_before: dict[str, float] = field(default_factory=dict)
    enrolled_after: dict[str, float] = field(default_factory=dict)
    unseen_identities: int = 0
    bootstrap_draws: int = 0
    stranger_margin: float = 0.0  # the rise the stranger guard tolerates
    version: Any = None  # model.versions.ModelVersion when saved
    activated: bool = False
    threshold: float | None = None  # calibrated for the trained model, saved with its version
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


def _rows_of(tuner: FineTuner, names: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """The held-out gallery and probe rows of identities ``names``."""
    gallery = tuner.gallery_rows[np.isin(tuner.labels[tuner.gallery_rows], list(names))]
    probes = tuner.probe_rows[np.isin(tuner.labels[tuner.probe_rows], list(names))]
    return gallery, probes


def _enrolled_figures(tuner: FineTuner, names: set[str]) -> dict[str, float]:
    """Figures on the held-out photos of the trained people ({} if they cannot be measured)."""
    gallery, probes = _rows_of(tuner, names)
    if len(set(tuner.labels[gallery])) < 2 or not len(probes):
        return {}
    try:
        return tuner.evaluate(gallery, probes)
    except TrainError as exc:
        log.info("held-out photos of enrolled people not measured: %s", exc)
        return {}


def _unseen_scores(tuner: FineTuner, gallery: np.ndarray, probes: np.ndarray):  # type: ignore[no-untyped-def]
    """Identity-tagged scores on the unseen identities, or None if they cannot be measured."""
    try:
        return tuner.identity_scores(gallery, probes)
    except ValueError as exc:
        log.warning("the unseen identities cannot be measured: %s", exc)
        return None


def too_few_message(n: int, needed: int, held_out: int, reference: int, has_reference: bool) -> str:
    """Why a fine-tune cannot be judged, and what would be needed (one line)."""
    more = needed - n
    source = "--reference DIR (one folder of photos per person who is not enrolled)"
    if has_reference:
        source = f"more people to reference_dir (it gave {reference})"
    return (
        f"only {n} identit{'y' if n == 1 else 'ies'} that training never sees to judge a "
        f"fine-tune on ({held_out} held out of the workspace, {reference} reference); at least "
        f"{needed} are needed to measure a change: add {more} with {source}, or enrol more "
        "people; --force trains and saves without activating"
    )


def run_training(
    cfg: Config,
    opts: TrainOptions | None = None,
    model=None,  # type: ignore[no-untyped-def]
    base: BaseModel | None = None,
) -> TrainReport:
    """Fine-tune the active model on ``cfg.pre_images_dir``; save and activate it only if it
    is shown better on identities training never saw (see the module docstring).
    ``model``/``base`` override the active model (tests use tiny networks)."""
    from model.confidence import compare, point_metrics
    from model.training.reference import add_reference, describe, load_reference
    from model.versions import save_version, use_version
    from model.weights import model_tensors

    opts = opts or TrainOptions.from_config(cfg)
    if not Path(cfg.pre_images_dir).is_dir():
        raise TrainError(f"{cfg.pre_images_dir} does not exist; run `attendance preprocess` first")
    if model is None:
        model, base = load_active_model(cfg)
    elif base is None:
        raise ValueError("pass base= with model=")
    size = int(model.input_shape[1])
    crops = load_crops(cfg.pre_images_dir, size)
    if len(crops) == 0:
        raise TrainError(f"no crops in {cfg.pre_images_dir}; run `attendance preprocess` first")
    split_path = cfg.models_dir / SPLIT_NAME
    split = update_split(
        split_path, crops, opts.seed, opts.holdout_image_fraction, opts.holdout_identity_fraction
    )
    lineage = base_lineage(cfg, base)  # everyone the starting model was trained on
    trained_names = {n for n in set(crops.labels) if split.identities.get(n) == TRAIN}
    held_out_names = {n for n in set(crops.labels) if split.identities.get(n) == HOLDOUT}
    if lineage & {n.casefold() for n in held_out_names}:
        log.warning(
            "held-out people the starting model %s was trained on are not used to judge: %s",
            base.version, ", ".join(sorted(n for n in held_out_names if n.casefold() in lineage)),
        )  # fmt: skip
    reference, skipped = None, []
    if cfg.reference_dir is not None:
        enrolled = {n.casefold() for n in crops.labels}
        reference = load_reference(
            cfg, cfg.reference_dir, size, progress=opts.progress, exclude=enrolled
        )
        crops, split, skipped = add_reference(crops, split, reference)
    tuner = FineTuner(model, crops, split, opts)
    unseen_names = {
        n
        for n, role in split.identities.items()
        if role == HOLDOUT and n not in trained_names and _bare(n).casefold() not in lineage
    }
    lineage_refs = sorted(
        n for n in split.identities if n.startswith(PREFIX) and _bare(n).casefold() in lineage
    )
    if lineage_refs:
        log.warning(
            "reference people the starting model %s was trained on are not used to judge: %s",
            base.version, ", ".join(_bare(n) for n in lineage_refs),
        )  # fmt: skip
    unseen, unseen_gallery, unseen_probes = _judges(tuner, unseen_names)
    n_trained = len(set(tuner.labels[tuner.train_rows]))
    if n_trained < 2:
        raise TrainError(
            f"the split ({split_path}) leaves {n_trained} identit{'y' if n_trained == 1 else 'ies'}"
            " to train on; enrol at least 3 people with 4 or more photos each"
        )
    _refuse_if_too_few(unseen, held_out_names, opts, reference is not None)
    timings = {"features_seconds": tuner.prepare()}
    doubles = same_person_names(tuner, unseen)  # judges that are someone else's face
    if doubles:
        log.warning(
            "not judging on %d identities whose faces match someone else's (the same person "
            "under another name): %s", len(doubles),
            ", ".join(f"{a} = {b}" for a, b in sorted(doubles.items())),
        )  # fmt: skip
        unseen, unseen_gallery, unseen_probes = _judges(tuner, unseen_names - set(doubles))
        _refuse_if_too_few(unseen, held_out_names, opts, reference is not None)
    n_reference = sum(1 for n in unseen if n not in held_out_names)
    counts = {
        "train_identities": n_trained,
        "train_images": len(tuner.train_rows),
        "unseen_identities": len(unseen),
        "unseen_reference_identities": n_reference,
        "unseen_images": len(unseen_gallery) + len(unseen_probes),
    }
    log.debug("split: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    measurable = len(unseen) >= 2
    scores_before = _unseen_scores(tuner, unseen_gallery, unseen_probes) if measurable else None
    enrolled_before = _enrolled_figures(tuner, trained_names)
    started = time.perf_counter()
    history, interrupted = tuner.train()
    timings["train_seconds"] = time.perf_counter() - started
    scores_after = _unseen_scores(tuner, unseen_gallery, unseen_probes) if measurable else None
    enrolled_after = _enrolled_figures(tuner, trained_names)
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    changes: dict[str, Any] = {}
    if scores_before is not None and scores_after is not None:
        started = time.perf_counter()
        try:
            changes = compare(
                scores_before, scores_after, opts.calibrate_far, opts.bootstrap_draws, opts.seed
            )
            before = point_metrics(scores_before, opts.calibrate_far)
            after = point_metrics(scores_after, opts.calibrate_far)
        except ValueError as exc:  # e.g. nothing to resample: judged as unmeasured
            log.warning("the unseen identities cannot be measured: %s", exc)
        timings["bootstrap_seconds"] = time.perf_counter() - started
    margin = opts.calibrate_far
    if scores_after is not None and len(scores_after.stranger):
        margin = max(margin, STRANGER_RESOLUTION / len(scores_after.stranger))
    decision = decide(changes, len(unseen), opts.min_identities, opts.min_gain, margin)
    genuine_at_threshold = None
    usable_threshold = None  # the threshold a saved version keeps (None: not usable)
    if scores_after is not None and "threshold" in after:
        genuine_at_threshold = float(np.mean(scores_after.genuine <= after["threshold"]))
        usable_threshold = after["threshold"]
        checked = _check_threshold(
            Decision(True, (), (), ""), after["threshold"], genuine_at_threshold
        )
        if not checked.accepted:
            usable_threshold = None
            if decision.accepted:
                decision = Decision(False, decision.improved, decision.regressed, checked.reason)
    report = TrainReport(before, after, decision, history, interrupted, base, changes=changes,
                         enrolled_before=enrolled_before, enrolled_after=enrolled_after,
                         unseen_identities=len(unseen), bootstrap_draws=opts.bootstrap_draws,
                         stranger_margin=margin,
                         counts=counts, timings=timings,
                         best_epoch=tuner.best_epoch, threshold=after.get("threshold"),
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
            "intervals": {k: asdict(c) for k, c in changes.items()},
            "enrolled_metrics": {"before": enrolled_before, "after": enrolled_after},
            "unseen": {
                "identities": len(unseen),
                "held_out": len(unseen) - n_reference,
                "reference": describe(reference, skipped),
            },
            "threshold": usable_threshold,
            "threshold_tar": genuine_at_threshold if usable_threshold is not None else None,
            "calibrated_threshold": after.get("threshold"),
            "trained_identities": sorted(trained_names),
            "lineage_identities": sorted(lineage | {n.casefold() for n in trained_names}),
            "judging_identities_skipped": sorted(doubles),
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
        if "threshold" in after and usable_threshold is None:
            log.warning(
                "%s: its calibrated threshold %.4f is not usable (it accepts %.1f%% of genuine "
                "photos); none is recorded, so `model use` keeps the current threshold",
                report.version.version, after["threshold"], 100 * (genuine_at_threshold or 0.0),
            )  # fmt: skip
        if usable_threshold is not None:
            from model.thresholds import record_threshold

            n_strangers = len(scores_after.stranger) if scores_after is not None else 0
            if n_strangers * opts.calibrate_far < 1:
                log.warning(
                    "only %d stranger decisions: FAR %g cannot be measured finer than 1/%d; the "
                    "threshold sits just below the closest stranger", n_strangers,
                    opts.calibrate_far, n_strangers,
                )  # fmt: skip
            record_threshold(
                cfg, report.version.model_id, after["threshold"], far=opts.calibrate_far,
                source="calibrated", tar=genuine_at_threshold,
                calibrated_on=f"{len(unseen)} identities training never saw, "
                f"{n_strangers} stranger decisions",
            )  # fmt: skip
        if decision.accepted and opts.activate:
            use_version(cfg, report.version.version)
            report.activated = True
    if not report.activated:
        tuner.restore_initial()  # the caller's model stays the current model
    return report


def base_lineage(cfg: Config, base: BaseModel) -> set[str]:
    """Everyone (case-folded names) the starting model was trained on, over all its ancestors:
    they are never judges, even if the workspace's split now holds them out."""
    if base.version == PRETRAINED:
        return set()
    from model.versions import VersionError, get_version

    try:
        meta = get_version(cfg, base.version).meta
    except VersionError as exc:
        log.warning("cannot read the starting model's metadata (%s); its trainees unknown", exc)
        return set()
    names = meta.get("lineage_identities", meta.get("trained_identities"))
    if not isinstance(names, list):
        log.warning(
            "%s does not record whom it was trained on (saved by an older version); held-out "
            "people of its split are trusted", base.version,
        )  # fmt: skip
        return set()
    return {str(n).casefold() for n in names}


def _judges(tuner: FineTuner, names: set[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The identities among ``names`` that can judge (gallery and probe photos; a person with
    one photo still serves as a stranger but does not count), and all their rows."""
    gallery, probes = _rows_of(tuner, names)
    return sorted(set(tuner.labels[gallery]) & set(tuner.labels[probes])), gallery, probes


def _refuse_if_too_few(
    unseen: list[str], held_out: set[str], opts: TrainOptions, has_reference: bool
) -> None:
    if len(unseen) < opts.min_identities and not opts.force:
        n_reference = sum(1 for n in unseen if n not in held_out)
        raise TrainError(
            too_few_message(
                len(unseen),
                opts.min_identities,
                len(unseen) - n_reference,
                n_reference,
                has_reference,
            )  # fmt: skip
        )


def same_person_names(tuner: FineTuner, judges: list[str]) -> dict[str, str]:
    """Judges whose face (mean embedding of all their photos, starting weights) is another
    identity's: closer than :data:`SAME_PERSON_FRACTION` of the median template distance. That
    is an enrolled person under another name, or one person in two reference folders (the later
    name is dropped). Maps each to the identity it matches."""
    from common.vectors import identity_templates

    if len(set(tuner.labels.tolist())) < 3:
        return {}
    rows = np.arange(len(tuner.labels))
    names, templates = identity_templates(tuner.embed_rows(rows), tuner.labels.tolist())
    names = list(names)
    t = np.asarray(templates, dtype=np.float64)  # unit rows: |a - b|² = 2 - 2 a·b
    distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (t @ t.T)))
    limit = SAME_PERSON_FRACTION * float(np.median(distances[np.triu_indices(len(names), 1)]))
    judges_set = set(judges)
    dropped: dict[str, str] = {}
    for i, name in enumerate(names):
        if name not in judges_set:
            continue
        for j in np.argsort(distances[i]):
            other = names[j]
            if j == i or distances[i, j] >= limit:
                continue
            # a judge that matches a non-judge, or an earlier judge still kept
            if other not in judges_set or (other < name and other not in dropped):
                dropped[name] = other
                break
    return dropped


def _bare(name: str) -> str:
    """A reference label without its prefix (the folder name)."""
    return name.removeprefix(PREFIX)


def _check_threshold(decision: Decision, threshold: float, genuine: float) -> Decision:
    """Refuse a model whose calibrated threshold is unusable: 0 (duplicate photos under two
    names), or rejecting most genuine photos."""
    if not decision.accepted or (threshold > 0 and genuine >= MIN_GENUINE_AT_THRESHOLD):
        return decision
    return Decision(
        False, decision.improved, decision.regressed,
        f"its calibrated threshold {threshold:.4f} accepts only {100 * genuine:.1f}% of genuine "
        "photos of the unseen people (are the same photos filed under two names?)",
    )  # fmt: skip
