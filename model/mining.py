"""Online triplet mining (FaceNet semi-hard, batch-hard) and the triplet loss.

Distances are squared Euclidean distances between embeddings, as in the FaceNet paper
(Schroff et al. 2015): a triplet (a, p, n) costs ``max(0, d(a,p) - d(a,n) + margin)``.

Mining is pure numpy on a batch's embeddings (it only chooses indices); the loss is computed
in TensorFlow on gathered rows so gradients flow through the embeddings. TensorFlow is
imported lazily, so this module also serves numpy-only callers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.vectors import squared_distances

MINING_MODES = ("semi-hard", "batch-hard")


@dataclass(frozen=True)
class Mined:
    """Triplets chosen from one batch.

    ``triplets`` is an int array (T, 3) of (anchor, positive, negative) row indices;
    ``candidates`` is how many anchor units were considered (anchor–positive pairs for
    semi-hard, anchors with a positive and a negative for batch-hard), the denominator of
    the fraction of active triplets.
    """

    triplets: np.ndarray
    candidates: int


def pairwise_sq_distances(emb: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, N) between the rows of ``emb`` (clipped at 0)."""
    d2 = squared_distances(emb, emb)
    np.fill_diagonal(d2, 0.0)
    return d2


def _label_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive pair mask without the diagonal, negative pair mask), both (N, N) bool."""
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    positive = same & ~np.eye(len(labels), dtype=bool)
    return positive, ~same


def semi_hard_mask(d2: np.ndarray, labels: np.ndarray, margin: float) -> np.ndarray:
    """Boolean (N, N, N) mask of semi-hard triplets ``[a, p, n]``.

    Valid means ``a != p`` share a label and ``n`` has another label; semi-hard means the
    negative is farther than the positive but within the margin:
    ``d(a,p) < d(a,n) < d(a,p) + margin``.
    """
    positive, negative = _label_masks(labels)
    d_ap = d2[:, :, None]
    d_an = d2[:, None, :]
    hard_enough = (d_an > d_ap) & (d_an < d_ap + margin)
    return positive[:, :, None] & negative[:, None, :] & hard_enough


def mine_semi_hard(
    emb: np.ndarray, labels: np.ndarray, margin: float, rng: np.random.Generator
) -> Mined:
    """Every valid anchor–positive pair with one random semi-hard negative.

    Pairs without any semi-hard negative yield no triplet: either every negative is already
    beyond the margin (zero loss) or the only violating negatives are harder than the
    positive, which the paper avoids because they collapse training early on.
    """
    labels = np.asarray(labels)
    d2 = pairwise_sq_distances(emb)
    mask = semi_hard_mask(d2, labels, margin)
    positive, _ = _label_masks(labels)
    anchors, positives = np.nonzero(positive)
    if anchors.size == 0:
        return Mined(np.zeros((0, 3), dtype=np.int64), 0)
    pair_masks = mask[anchors, positives]  # (pairs, N)
    # A uniform random choice among each pair's candidates: argmax of noise where allowed.
    scores = np.where(pair_masks, rng.random(pair_masks.shape), -1.0)
    chosen = np.argmax(scores, axis=1)
    keep = pair_masks.any(axis=1)
    triplets = np.stack([anchors[keep], positives[keep], chosen[keep]], axis=1)
    return Mined(triplets.astype(np.int64), int(anchors.size))


def mine_batch_hard(emb: np.ndarray, labels: np.ndarray) -> Mined:
    """One triplet per anchor: its farthest positive and its nearest negative.

    (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss".) Anchors without a
    positive or without a negative in the batch are skipped.
    """
    labels = np.asarray(labels)
    d2 = pairwise_sq_distances(emb)
    positive, negative = _label_masks(labels)
    usable = positive.any(axis=1) & negative.any(axis=1)
    anchors = np.nonzero(usable)[0]
    if anchors.size == 0:
        return Mined(np.zeros((0, 3), dtype=np.int64), 0)
    hardest_pos = np.argmax(np.where(positive, d2, -np.inf), axis=1)
    hardest_neg = np.argmin(np.where(negative, d2, np.inf), axis=1)
    triplets = np.stack([anchors, hardest_pos[anchors], hardest_neg[anchors]], axis=1)
    return Mined(triplets.astype(np.int64), int(anchors.size))


def mine(
    emb: np.ndarray,
    labels: np.ndarray,
    margin: float,
    mode: str = "semi-hard",
    rng: np.random.Generator | None = None,
) -> Mined:
    """Dispatch to :func:`mine_semi_hard` or :func:`mine_batch_hard` by ``mode``."""
    if mode == "semi-hard":
        return mine_semi_hard(emb, labels, margin, rng or np.random.default_rng(0))
    if mode == "batch-hard":
        return mine_batch_hard(emb, labels)
    raise ValueError(f"mining mode {mode!r} is not one of {', '.join(MINING_MODES)}")


def triplet_losses_np(emb: np.ndarray, triplets: np.ndarray, margin: float) -> np.ndarray:
    """Per-triplet hinge losses (T,) in numpy."""
    emb = np.asarray(emb, dtype=np.float64)
    if len(triplets) == 0:
        return np.zeros(0)
    a, p, n = (emb[triplets[:, i]] for i in range(3))
    d_ap = np.sum((a - p) ** 2, axis=1)
    d_an = np.sum((a - n) ** 2, axis=1)
    return np.maximum(d_ap - d_an + margin, 0.0)


def batch_all_loss(emb: np.ndarray, labels: np.ndarray, margin: float) -> tuple[float, float]:
    """Mean hinge loss over *all* valid triplets and the fraction of them that are active.

    Independent of any mining choice, so it is the figure to compare before and after
    training on a fixed set. Memory is O(N^2) (one anchor at a time). Returns (0.0, 0.0) when
    no valid triplet exists.
    """
    labels = np.asarray(labels)
    d2 = pairwise_sq_distances(emb)
    positive, negative = _label_masks(labels)
    total = 0.0
    active = 0
    count = 0
    for a in range(len(labels)):
        d_ap = d2[a, positive[a]]
        d_an = d2[a, negative[a]]
        if d_ap.size == 0 or d_an.size == 0:
            continue
        hinge = np.maximum(d_ap[:, None] - d_an[None, :] + margin, 0.0)
        total += float(hinge.sum())
        active += int(np.count_nonzero(hinge))
        count += hinge.size
    if count == 0:
        return 0.0, 0.0
    return total / count, active / count


def triplet_loss(emb, triplets, margin: float):  # type: ignore[no-untyped-def]
    """TensorFlow triplet loss of ``triplets`` (T, 3) (array or tensor) over ``emb``.

    Returns ``(mean_loss, per_triplet_losses)``; the mean is 0 for an empty triplet set, and
    gradients flow into ``emb``. Usable inside ``tf.function``.
    """
    import tensorflow as tf

    idx = tf.reshape(tf.cast(triplets, tf.int32), (-1, 3))
    a = tf.gather(emb, idx[:, 0])
    p = tf.gather(emb, idx[:, 1])
    n = tf.gather(emb, idx[:, 2])
    d_ap = tf.reduce_sum(tf.square(a - p), axis=1)
    d_an = tf.reduce_sum(tf.square(a - n), axis=1)
    losses = tf.maximum(d_ap - d_an + margin, 0.0)
    count = tf.cast(tf.size(losses), losses.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), count), losses
