"""Every knob of a training run, in one frozen :class:`TrainOptions`.

The settings that are configuration keys (batch shape, margin, epochs, learning rate, cut
point, seed, inference batch, flip averaging, match mode, minimum gain, identities needed,
regularisers, calibration target) have no default
here: their defaults live only in :class:`~common.config.Config`, and
:meth:`TrainOptions.from_config` is the way to build options. The remaining fields are
choices of the algorithm or switches of one run that have no configuration key; their
defaults are documented next to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import Config
from model.mining import MINING_MODES
from model.training.errors import TrainError
from model.training.split import HOLDOUT_IDENTITY_FRACTION, HOLDOUT_IMAGE_FRACTION

#: Which weights a run keeps: the epoch with the lowest monitor loss, or the last one.
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class TrainOptions:
    """Every knob of a training run; build it with :meth:`from_config`.

    Fields without a default mirror a configuration key (named in the comment).
    """

    # --- from the configuration (no defaults: see common.config.Config) ---
    identities: int  # P identities per batch (train_identities)
    images: int  # K images per identity (train_images)
    margin: float  # triplet margin on squared distances (train_margin)
    epochs: int  # (train_epochs)
    learning_rate: float  # (learning_rate)
    trainable_from: str  # first trainable block (trainable_from)
    seed: int  # (seed)
    batch_size: int  # inference batch for the frozen part and evaluation (embed_batch)
    flip_average: bool  # (flip_average)
    match_mode: str  # (match_mode)
    min_gain: float  # smallest held-out gain that counts as an improvement (train_min_gain)
    min_identities: int  # unseen identities needed to judge a run (train_min_identities)
    l2sp: float  # weight of the L2-SP drift penalty (train_l2sp)
    distill: float  # weight of the embedding distillation term (train_distill)
    calibrate_far: float  # target stranger accept rate of the saved threshold (calibrate_far)
    # --- no configuration key: constants of the algorithm and switches of one run ---
    mining: str = "semi-hard"  # FaceNet's semi-hard negatives, or "batch-hard"
    augment: int = 4  # augmented variants per training image (plus the original and its mirror)
    cache_features: bool = True  # run the frozen front once per image and variant
    checkpoint: str = "best"  # "best" (lowest monitor loss) or "last" epoch's weights
    force: bool = False  # save a version even if it is not better (never activated)
    activate: bool = True  # make an accepted version the active model
    # only used when the workspace has no split yet (a stored split keeps its own fractions)
    holdout_image_fraction: float = HOLDOUT_IMAGE_FRACTION
    holdout_identity_fraction: float = HOLDOUT_IDENTITY_FRACTION
    batches_per_epoch: int | None = None  # None: enough to see every training image once
    progress: bool = True  # progress bars
    bootstrap_draws: int = 1000  # identity resamples behind each confidence interval

    def __post_init__(self) -> None:
        if self.mining not in MINING_MODES:
            raise TrainError(f"--mining {self.mining!r} is not one of {', '.join(MINING_MODES)}")
        if self.checkpoint not in CHECKPOINTS:
            raise TrainError(
                f"--checkpoint {self.checkpoint!r} is not one of {', '.join(CHECKPOINTS)}"
            )
        if self.augment < 0 or self.augment > 64:
            raise TrainError(f"--augment {self.augment} must be within 0..64")
        if not 0.0 <= self.holdout_image_fraction < 1.0:
            raise TrainError(
                f"holdout_image_fraction={self.holdout_image_fraction} must be within [0, 1)"
            )
        if not 0.0 <= self.holdout_identity_fraction < 1.0:
            raise TrainError(
                f"holdout_identity_fraction={self.holdout_identity_fraction} must be within [0, 1)"
            )
        if self.min_identities < 2:
            raise TrainError(f"min_identities={self.min_identities} must be at least 2")
        if self.bootstrap_draws < 100:
            raise TrainError(f"bootstrap_draws={self.bootstrap_draws} must be at least 100")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise TrainError(f"batches_per_epoch={self.batches_per_epoch} must be at least 1")

    @classmethod
    def from_config(cls, cfg: Config, **changes: Any) -> TrainOptions:
        """Options from the configuration, with ``changes`` (None values ignored) on top."""
        values: dict[str, Any] = {
            "identities": cfg.train_identities,
            "images": cfg.train_images,
            "margin": cfg.train_margin,
            "epochs": cfg.train_epochs,
            "learning_rate": cfg.learning_rate,
            "trainable_from": cfg.trainable_from,
            "seed": cfg.seed,
            "batch_size": cfg.embed_batch,
            "flip_average": cfg.flip_average,
            "match_mode": cfg.match_mode,
            "min_gain": cfg.train_min_gain,
            "min_identities": cfg.train_min_identities,
            "l2sp": cfg.train_l2sp,
            "distill": cfg.train_distill,
            "calibrate_far": cfg.calibrate_far,
        }
        values.update({k: v for k, v in changes.items() if v is not None})
        return cls(**values)

    def hyperparameters(self) -> dict[str, Any]:
        """What is recorded in a version's metadata."""
        keep = (
            "identities", "images", "margin", "epochs", "learning_rate", "trainable_from",
            "seed", "mining", "augment", "checkpoint", "cache_features", "holdout_image_fraction",
            "holdout_identity_fraction", "batches_per_epoch", "flip_average", "match_mode",
            "min_gain", "min_identities", "l2sp", "distill", "calibrate_far", "bootstrap_draws",
        )  # fmt: skip
        params = {k: getattr(self, k) for k in keep}
        params.update(optimizer="adam", batchnorm="frozen", distance="squared euclidean")
        return params
