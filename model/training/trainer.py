"""The training loop: :class:`FineTuner` trains the head of a model on one split.

It cuts the network at ``trainable_from`` (:mod:`model.training.network`), fills the
frozen-feature cache (:mod:`model.training.features`), embeds held-out images exactly as
:class:`~model.embedder.Embedder` does to evaluate them with
:func:`model.metrics.evaluate_embeddings`, and trains with online triplet mining
(:mod:`model.mining`) on P×K batches (:mod:`model.training.sampler`), keeping the checkpoint
with the lowest batch-all loss on the clean training images (:class:`EpochStats`).
BatchNorm layers stay frozen (inference statistics): batches of P×K = 16 faces are far too
small to re-estimate them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.vectors import l2_normalize
from model.mining import batch_all_loss, mine, triplet_loss
from model.training.data import CropSet
from model.training.errors import TrainError
from model.training.features import FeatureSource
from model.training.network import freeze_batchnorm, reseed_layers, split_model
from model.training.options import TrainOptions
from model.training.sampler import BatchSampler
from model.training.split import Split

log = logging.getLogger(__name__)


@dataclass
class EpochStats:
    """One epoch's figures; ``monitor_loss`` (batch-all loss on the clean training images)
    picks the best checkpoint without looking at held-out data."""

    epoch: int
    loss: float
    active_fraction: float
    triplets: int
    monitor_loss: float
    monitor_active: float
    seconds: float  # the whole epoch, including the monitor pass
    step_seconds: float  # the training steps alone (batch assembly included)


class FineTuner:
    """Trains the head of ``model`` on one split; see the module docstring."""

    def __init__(
        self,
        model,  # type: ignore[no-untyped-def]
        crops: CropSet,
        split: Split,
        opts: TrainOptions,
    ) -> None:
        import keras

        self.model = model
        self.crops = crops
        self.opts = opts
        self.labels = np.asarray(crops.labels, dtype=str)
        self.train_rows, self.gallery_rows, self.probe_rows = split.rows(crops)
        size = int(model.input_shape[1])
        if crops.crops.shape[1:] != (size, size, 3):
            raise TrainError(f"crops are {crops.crops.shape[1:]}, the model wants {size}x{size}")
        keras.utils.set_random_seed(opts.seed)
        seeds = np.random.SeedSequence(opts.seed).spawn(3)
        self._aug_rng = np.random.default_rng(seeds[0])
        self._batch_rng = np.random.default_rng(seeds[1])
        self._mine_rng = np.random.default_rng(seeds[2])
        self.frozen, self.head = split_model(model, opts.trainable_from)
        freeze_batchnorm(self.head)
        reseed_layers(self.head, opts.seed)
        self.variables = list(self.head.trainable_variables)
        if not self.variables:
            raise TrainError(f"nothing to train from {opts.trainable_from!r}")
        self.initial_weights = self._snapshot()
        self.best_epoch = 0
        self.initial_monitor: tuple[float, float] | None = None
        self.features: FeatureSource | None = None
        self._infer = None
        self._step = None

    # -- plumbing --
    def _snapshot(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.variables]

    def _restore(self, weights: list[np.ndarray]) -> None:
        for variable, value in zip(self.variables, weights, strict=True):
            variable.assign(value)

    def restore_initial(self) -> None:
        """Put the model back to the weights it had before training."""
        self._restore(self.initial_weights)

    def prepare(self) -> float:
        """Build the feature source (the frozen cache) and compiled functions; return seconds."""
        import tensorflow as tf

        self.features = FeatureSource(
            self.frozen,
            self.crops.crops,
            self.train_rows,
            self.opts.augment,
            self._aug_rng,
            cache=self.opts.cache_features,
            batch_size=self.opts.batch_size,
            progress=self.opts.progress,
            mirror_all=self.opts.flip_average,
        )
        spec = tf.TensorSpec((None, *self.features.feature_shape), tf.float32)
        head = self.head
        self._infer = tf.function(lambda x: head(x, training=False), input_signature=[spec])
        self._step = self._make_step(spec)
        return self.features.seconds

    def _make_step(self, spec):  # type: ignore[no-untyped-def]
        import keras
        import tensorflow as tf

        opts = self.opts
        optimizer = keras.optimizers.Adam(learning_rate=opts.learning_rate)
        optimizer.build(self.variables)
        head, variables, rng = self.head, self.variables, self._mine_rng
        anchors = [tf.constant(w) for w in self.initial_weights] if opts.l2sp > 0 else []
        teacher = self._teacher() if opts.distill > 0 else None

        def mine_np(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.int32]:
            mined = mine(emb, labels, opts.margin, opts.mining, rng)
            return mined.triplets.astype(np.int32), np.int32(mined.candidates)

        @tf.function(input_signature=[spec, tf.TensorSpec((None,), tf.int32)])
        def step(x, labels):
            with tf.GradientTape() as tape:
                emb = head(x, training=True)
                triplets, candidates = tf.numpy_function(
                    mine_np, [tf.stop_gradient(emb), labels], [tf.int32, tf.int32], stateful=True
                )
                loss, losses = triplet_loss(emb, triplets, opts.margin)
                if anchors:  # L2-SP: stay near the starting weights
                    drift = tf.add_n(
                        [
                            tf.reduce_sum(tf.square(v - a))
                            for v, a in zip(variables, anchors, strict=True)
                        ]
                    )
                    loss = loss + opts.l2sp * drift
                if teacher is not None:  # distillation: keep embeddings where they started
                    target = tf.stop_gradient(teacher(x, training=False))
                    moved = tf.reduce_mean(tf.reduce_sum(tf.square(emb - target), axis=1))
                    loss = loss + opts.distill * moved
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            active = tf.reduce_sum(tf.cast(losses > 0, tf.int32))
            return loss, active, tf.size(losses), candidates

        return step

    def _teacher(self):  # type: ignore[no-untyped-def]
        """A frozen copy of the head with the starting weights (the distillation target)."""
        import keras

        teacher = keras.models.clone_model(self.head)
        teacher.set_weights(self.head.get_weights())
        teacher.trainable = False
        return teacher

    def embed_rows(self, rows: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings of ``rows`` exactly as :class:`~model.embedder.Embedder`
        computes them (mirror-averaged when ``flip_average``)."""
        assert self.features is not None and self._infer is not None
        dim = int(self.model.output_shape[-1])
        out = np.empty((len(rows), dim), np.float32)
        for start in range(0, len(rows), self.opts.batch_size):
            chunk = rows[start : start + self.opts.batch_size]
            emb = self._infer(self.features.get(chunk, np.zeros(len(chunk), int))).numpy()
            if self.opts.flip_average:
                emb = emb + self._infer(self.features.get(chunk, np.ones(len(chunk), int))).numpy()
            out[start : start + len(chunk)] = emb
        return l2_normalize(out)

    def evaluate(
        self, gallery_rows: np.ndarray | None = None, probe_rows: np.ndarray | None = None
    ) -> dict[str, float]:
        """Figures of the current weights (``model.metrics.evaluate_embeddings``) on held-out
        rows (default: every held-out gallery and probe image)."""
        from model.metrics import evaluate_embeddings

        gallery_rows = self.gallery_rows if gallery_rows is None else gallery_rows
        probe_rows = self.probe_rows if probe_rows is None else probe_rows
        try:
            metrics = evaluate_embeddings(
                self.embed_rows(gallery_rows),
                self.labels[gallery_rows].tolist(),
                self.embed_rows(probe_rows),
                self.labels[probe_rows].tolist(),
                mode=self.opts.match_mode,
            )
        except ValueError as exc:
            raise TrainError(f"the held-out split cannot be evaluated: {exc}") from None
        return {k: float(v) for k, v in metrics.items()}

    def identity_scores(self, gallery_rows: np.ndarray, probe_rows: np.ndarray):  # type: ignore[no-untyped-def]
        """Distances of the current weights on held-out rows, grouped by identity
        (:func:`model.confidence.identity_scores`, for intervals over identities)."""
        from model.confidence import identity_scores

        return identity_scores(
            self.embed_rows(gallery_rows),
            self.labels[gallery_rows].tolist(),
            self.embed_rows(probe_rows),
            self.labels[probe_rows].tolist(),
            mode=self.opts.match_mode,
            seed=self.opts.seed,
        )

    def monitor(self) -> tuple[float, float]:
        """Batch-all triplet loss (and active fraction) on the clean training images."""
        emb = self.embed_rows(self.train_rows)
        return batch_all_loss(emb, self.labels[self.train_rows], self.opts.margin)

    def sampler(self) -> BatchSampler:
        """The seeded P×K batch sampler over the training rows (prepares features if needed)."""
        if self.features is None:
            self.prepare()
        assert self.features is not None
        return BatchSampler(
            self.labels[self.train_rows],
            self.train_rows,
            self.opts.identities,
            self.opts.images,
            self.features.variants,
            self._batch_rng,
        )

    def batches_per_epoch(self) -> int:
        if self.opts.batches_per_epoch is not None:
            return self.opts.batches_per_epoch
        per_batch = self.opts.identities * self.opts.images
        return max(1, math.ceil(len(self.train_rows) / per_batch))

    def train_epoch(self, epoch: int, sampler: BatchSampler) -> EpochStats:
        """One epoch of online-mined triplet steps, then the monitor loss."""
        from tqdm import tqdm

        assert self.features is not None and self._step is not None
        started = time.perf_counter()
        total_loss, active, triplets, candidates = 0.0, 0, 0, 0
        n = self.batches_per_epoch()
        with tqdm(
            total=n, desc=f"epoch {epoch}/{self.opts.epochs}", unit="batch",
            disable=not self.opts.progress, leave=False,
        ) as bar:  # fmt: skip
            for _ in range(n):
                rows, variants, ids = sampler()
                x = self.features.get(rows, variants)
                loss, n_active, n_triplets, n_candidates = self._step(x, ids)
                total_loss += float(loss)
                active += int(n_active)
                triplets += int(n_triplets)
                candidates += int(n_candidates)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(loss):.4f}", active=f"{active / max(candidates, 1):.2f}"
                )
        step_seconds = time.perf_counter() - started
        monitor_loss, monitor_active = self.monitor()
        return EpochStats(
            epoch=epoch,
            loss=total_loss / n,
            active_fraction=active / max(candidates, 1),
            triplets=triplets,
            monitor_loss=monitor_loss,
            monitor_active=monitor_active,
            seconds=time.perf_counter() - started,
            step_seconds=step_seconds,
        )

    def train(
        self, on_epoch: Callable[[EpochStats], None] | None = None
    ) -> tuple[list[EpochStats], bool]:
        """Train for ``opts.epochs``; keep the checkpoint with the lowest monitor loss
        (the starting weights count as epoch 0), or the last one with ``checkpoint="last"``.
        Ctrl-C stops training early and keeps that checkpoint.

        Returns ``(history, interrupted)``; the model holds the best weights afterwards.
        """
        sampler = self.sampler()
        self.initial_monitor = self.monitor()
        best_loss = self.initial_monitor[0]
        best_weights = self.initial_weights
        self.best_epoch = 0
        history: list[EpochStats] = []
        interrupted = False
        try:
            for epoch in range(1, self.opts.epochs + 1):
                stats = self.train_epoch(epoch, sampler)
                history.append(stats)
                if stats.monitor_loss < best_loss or self.opts.checkpoint == "last":
                    best_loss, best_weights, self.best_epoch = (
                        stats.monitor_loss, self._snapshot(), epoch,
                    )  # fmt: skip
                log.info(
                    "epoch %d/%d: loss %.4f, active %.2f, train batch-all loss %.4f%s (%.1f s)",
                    epoch, self.opts.epochs, stats.loss, stats.active_fraction,
                    stats.monitor_loss, " *" if self.best_epoch == epoch else "", stats.seconds,
                )  # fmt: skip
                if on_epoch is not None:
                    on_epoch(stats)
        except KeyboardInterrupt:
            interrupted = True
            log.warning(
                "interrupted: stopping after %d epoch(s); keeping the best checkpoint (epoch %d)",
                len(history), self.best_epoch,
            )  # fmt: skip
        self._restore(best_weights)
        return history, interrupted
