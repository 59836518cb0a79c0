"""Batches for online triplet mining: :class:`BatchSampler` draws P identities × K images
from the training rows with a seeded generator, each image as a random variant (crop, mirror
or augmentation) of the feature cache, so every batch holds positives and negatives to mine.
"""

from __future__ import annotations

import numpy as np

from model.training.errors import TrainError


class BatchSampler:
    """P identities × K images, each image as a random variant."""

    def __init__(
        self,
        labels: np.ndarray,
        rows: np.ndarray,
        identities: int,
        images: int,
        variants: int,
        rng: np.random.Generator,
    ) -> None:
        self.rng = rng
        self.p, self.k, self.variants = identities, images, variants
        self.by_identity = [rows[labels == name] for name in np.unique(labels)]
        self.by_identity = [r for r in self.by_identity if len(r) >= 2]
        if len(self.by_identity) < 2:
            raise TrainError(
                "training needs at least two identities with two or more training images; "
                "enrol more people or more photos"
            )

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, variants, identity indices)`` of one batch."""
        count = min(self.p, len(self.by_identity))
        chosen = self.rng.choice(len(self.by_identity), size=count, replace=False)
        rows, ids = [], []
        for ident in chosen:
            pool = self.by_identity[ident]
            replace = len(pool) < self.k
            rows.append(self.rng.choice(pool, size=self.k, replace=replace))
            ids.append(np.full(self.k, ident))
        rows_arr = np.concatenate(rows)
        return (
            rows_arr,
            self.rng.integers(0, self.variants, size=len(rows_arr)),
            np.concatenate(ids).astype(np.int32),
        )
