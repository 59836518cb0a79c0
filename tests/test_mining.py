"""Triplet mining against brute-force loops on random embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.mining import (
    batch_all_loss,
    mine,
    mine_batch_hard,
    mine_semi_hard,
    pairwise_sq_distances,
    semi_hard_mask,
    triplet_loss,
    triplet_losses_np,
)


def _random_batch(seed: int, p: int = 4, k: int = 4, dim: int = 8):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(p * k, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(np.arange(p), k)
    rng.shuffle(labels)
    return emb, labels


def _sqdist(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x - y) ** 2))


def _brute_semi_hard(emb, labels, margin):
    """{(a, p): {n, ...}} of semi-hard candidates, by explicit loops."""
    result = {}
    n_rows = len(labels)
    for a, p in itertools.permutations(range(n_rows), 2):
        if labels[a] != labels[p]:
            continue
        d_ap = _sqdist(emb[a], emb[p])
        cands = set()
        for n in range(n_rows):
            if labels[n] == labels[a]:
                continue
            d_an = _sqdist(emb[a], emb[n])
            if d_ap < d_an < d_ap + margin:
                cands.add(n)
        result[(a, p)] = cands
    return result


def test_pairwise_distances_match_loops():
    emb, _ = _random_batch(1)
    d2 = pairwise_sq_distances(emb)
    for i, j in itertools.product(range(len(emb)), repeat=2):
        assert d2[i, j] == pytest.approx(_sqdist(emb[i], emb[j]), abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.2, 0.5, 1.0])
def test_semi_hard_matches_brute_force(seed, margin):
    emb, labels = _random_batch(seed)
    brute = _brute_semi_hard(emb, labels, margin)
    mask = semi_hard_mask(pairwise_sq_distances(emb), labels, margin)
    for (a, p), cands in brute.items():
        assert set(np.nonzero(mask[a, p])[0]) == cands
    assert mask.sum() == sum(len(c) for c in brute.values())

    mined = mine_semi_hard(emb, labels, margin, np.random.default_rng(seed))
    assert mined.candidates == len(brute)  # every ordered anchor-positive pair
    got = {(int(a), int(p)): int(n) for a, p, n in mined.triplets}
    assert len(got) == len(mined.triplets)  # one triplet per pair
    expected_pairs = {pair for pair, cands in brute.items() if cands}
    assert set(got) == expected_pairs
    for pair, n in got.items():
        assert n in brute[pair]
    # semi-hard triplets are all active and cost less than the margin
    losses = triplet_losses_np(emb, mined.triplets, margin)
    assert np.all(losses > 0) and np.all(losses < margin)


def test_semi_hard_negative_choice_is_random_but_seeded():
    emb, labels = _random_batch(3, p=3, k=6, dim=4)
    first = mine_semi_hard(emb, labels, 1.0, np.random.default_rng(7)).triplets
    again = mine_semi_hard(emb, labels, 1.0, np.random.default_rng(7)).triplets
    other = mine_semi_hard(emb, labels, 1.0, np.random.default_rng(8)).triplets
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("seed", range(4))
def test_batch_hard_matches_brute_force(seed):
    emb, labels = _random_batch(seed, p=3, k=3)
    mined = mine_batch_hard(emb, labels)
    assert mined.candidates == len(labels)
    for a, p, n in mined.triplets:
        pos = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[a]]
        assert _sqdist(emb[a], emb[p]) == pytest.approx(max(_sqdist(emb[a], emb[j]) for j in pos))
        assert _sqdist(emb[a], emb[n]) == pytest.approx(min(_sqdist(emb[a], emb[j]) for j in neg))
        assert labels[p] == labels[a] and p != a and labels[n] != labels[a]


def test_anchors_without_positive_or_negative_are_skipped():
    emb, _ = _random_batch(0, p=1, k=4)
    labels = np.array([0, 0, 0, 1])  # the lone "1" has no positive
    hard = mine_batch_hard(emb, labels)
    assert sorted(hard.triplets[:, 0].tolist()) == [0, 1, 2]
    single = np.zeros(4, dtype=int)
    assert mine_semi_hard(emb, single, 0.2, np.random.default_rng(0)).triplets.shape == (0, 3)
    assert mine_batch_hard(emb, single).candidates == 0
    assert batch_all_loss(emb, single, 0.2) == (0.0, 0.0)


def test_mine_rejects_unknown_mode():
    emb, labels = _random_batch(0)
    with pytest.raises(ValueError, match="hardest"):
        mine(emb, labels, 0.2, mode="hardest")


def test_batch_all_loss_matches_loops():
    emb, labels = _random_batch(5, p=3, k=3)
    margin = 0.4
    losses = []
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        for n in range(len(labels)):
            if labels[n] != labels[a]:
                d = _sqdist(emb[a], emb[p]) - _sqdist(emb[a], emb[n]) + margin
                losses.append(max(d, 0.0))
    mean, active = batch_all_loss(emb, labels, margin)
    assert mean == pytest.approx(np.mean(losses))
    assert active == pytest.approx(np.mean(np.array(losses) > 0))


def test_tf_loss_matches_numpy_and_has_gradients():
    import tensorflow as tf

    emb, labels = _random_batch(2)
    mined = mine(emb, labels, 0.5, "batch-hard")
    var = tf.Variable(emb.astype(np.float32))
    with tf.GradientTape() as tape:
        mean, per = triplet_loss(var, mined.triplets, 0.5)
    np.testing.assert_allclose(
        per.numpy(), triplet_losses_np(emb, mined.triplets, 0.5), rtol=1e-4, atol=1e-5
    )
    grad = tape.gradient(mean, var)
    assert float(mean) > 0 and float(tf.reduce_sum(tf.abs(grad))) > 0

    with tf.GradientTape() as tape:
        zero, empty = triplet_loss(var, np.zeros((0, 3), dtype=np.int64), 0.5)
    assert float(zero) == 0.0 and empty.shape == (0,)
    assert float(tf.reduce_sum(tf.abs(tape.gradient(zero, var)))) == 0.0
