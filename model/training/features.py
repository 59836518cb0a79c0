"""The inputs of the trainable head: :class:`FeatureSource`.

The frozen front of the network does not change during training, so its outputs for every
image and variant (the crop, its mirror and a few seeded augmentations) are computed once and
kept in memory; an epoch then only runs the trainable head. Without the cache every request
runs the front again, with fresh augmentations (much slower, kept for comparison).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from model.embedder import prewhiten
from model.training.augment import augment_crop

log = logging.getLogger(__name__)


class FeatureSource:
    """Inputs of the trainable head for (row, variant) pairs.

    Variant 0 is the crop, 1 its mirror image, 2.. random augmentations. With ``cache=True``
    the frozen front runs once per image and variant (augmentations drawn once, with the
    seeded generator) and the results stay in memory; otherwise every request runs the front
    again, with fresh augmentations.
    """

    def __init__(
        self,
        frozen,  # type: ignore[no-untyped-def]
        crops: np.ndarray,
        train_rows: np.ndarray,
        augment: int,
        rng: np.random.Generator,
        *,
        cache: bool,
        batch_size: int,
        progress: bool,
        mirror_all: bool = True,
    ) -> None:
        import tensorflow as tf

        self.crops = crops
        self.augment = int(augment)
        self.variants = 2 + self.augment
        self.rng = rng
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        size = crops.shape[1]
        if frozen is None:
            self._front = None
            self.feature_shape: tuple[int, ...] = (size, size, 3)
        else:
            spec = tf.TensorSpec((None, size, size, 3), tf.float32)
            self._front = tf.function(lambda x: frozen(x, training=False), input_signature=[spec])
            self.feature_shape = tuple(int(d) for d in frozen.output.shape[1:])
        self._fixed: np.ndarray | None = None  # (N, 2, *shape): crop and mirror
        self._augmented: np.ndarray | None = None  # (len(train_rows), augment, *shape)
        self._aug_pos = np.full(len(crops), -1, dtype=np.int64)
        self._aug_pos[train_rows] = np.arange(len(train_rows))
        # mirror images are cached for training rows, and for every row when asked for
        # (flip averaging); evaluation-only rows otherwise need the crop alone
        self._mirrored = np.ones(len(crops), bool) if mirror_all else np.zeros(len(crops), bool)
        self._mirrored[train_rows] = True
        self.seconds = 0.0
        if cache:
            self._fill(train_rows)

    def _run_front(self, images: np.ndarray) -> np.ndarray:
        """Front outputs of uint8 images, in inference batches."""
        out = np.empty((len(images), *self.feature_shape), np.float32)
        for start in range(0, len(images), self.batch_size):
            x = prewhiten(images[start : start + self.batch_size])
            out[start : start + len(x)] = x if self._front is None else self._front(x).numpy()
        return out

    def _variant_image(self, row: int, variant: int) -> np.ndarray:
        crop = self.crops[row]
        if variant == 0:
            return crop
        if variant == 1:
            return crop[:, ::-1]
        return augment_crop(crop, self.rng)

    def _fill(self, train_rows: np.ndarray) -> None:
        from tqdm import tqdm

        started = time.perf_counter()
        n = len(self.crops)
        fixed = np.empty((n, 2, *self.feature_shape), np.float32)
        augmented = np.empty((len(train_rows), self.augment, *self.feature_shape), np.float32)
        jobs = [(r, v) for r in range(n) for v in ((0, 1) if self._mirrored[r] else (0,))]
        jobs += [(int(r), v) for r in train_rows for v in range(2, self.variants)]
        step = max(self.batch_size, 1)
        with tqdm(
            total=len(jobs), desc="frozen features", unit="img", disable=not self.progress
        ) as bar:
            for start in range(0, len(jobs), step):
                chunk = jobs[start : start + step]
                images = np.stack([self._variant_image(r, v) for r, v in chunk])
                feats = self._run_front(images)
                for (r, v), f in zip(chunk, feats, strict=True):
                    if v < 2:
                        fixed[r, v] = f
                    else:
                        augmented[self._aug_pos[r], v - 2] = f
                bar.update(len(chunk))
        self._fixed, self._augmented = fixed, augmented
        self.seconds = time.perf_counter() - started
        log.info(
            "cached the frozen features of %d image variants in %.1f s (%.0f MB)",
            len(jobs), self.seconds, (fixed.nbytes + augmented.nbytes) / 2**20,
        )  # fmt: skip

    def get(self, rows: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Head inputs (len(rows), *feature_shape) for each (row, variant)."""
        rows = np.asarray(rows, int)
        variants = np.asarray(variants, int)
        if self.cache:
            assert self._fixed is not None and self._augmented is not None
            out = np.empty((len(rows), *self.feature_shape), np.float32)
            plain = variants < 2
            if (~self._mirrored[rows[variants == 1]]).any():
                raise ValueError("mirror images are cached only for training rows")
            out[plain] = self._fixed[rows[plain], variants[plain]]
            aug = ~plain
            if aug.any():
                pos = self._aug_pos[rows[aug]]
                if (pos < 0).any():
                    raise ValueError("augmented variants exist only for training rows")
                out[aug] = self._augmented[pos, variants[aug] - 2]
            return out
        images = np.stack(
            [self._variant_image(int(r), int(v)) for r, v in zip(rows, variants, strict=True)]
        )
        return self._run_front(images)
