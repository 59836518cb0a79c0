"""model.confidence: identity-tagged scores, weighted metrics and the paired identity bootstrap.

Oracles: model.metrics (all weights one), the same data with pairs/decisions repeated (integer
weights), the calibration rule of ``attendance evaluate --calibrate``, and loops written out.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

import model.confidence as confidence
from common.vectors import l2_normalize, match_embeddings
from model.confidence import (
    METRICS,
    IdentityScores,
    MetricChange,
    calibrated_threshold,
    compare,
    identity_scores,
    interval,
    point_metrics,
    weighted_metrics,
)
from model.metrics import (
    decision_distances,
    equal_error_rate,
    pair_scores,
    round_down_threshold,
    tar_at_far,
    threshold_at_far,
    threshold_at_frr,
)
from model.training.decision import decide

KEYS = [key for key, _ in METRICS]


def clusters(
    seed: int, counts: list[int], spread: float | list[float], dim: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one random centre per identity; ``spread`` scales the noise.

    The noise (and the centres) depend on ``seed`` only, so two calls differing in ``spread``
    give the same people with tighter or looser clusters.
    """
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(len(counts), dim)))
    spreads = np.broadcast_to(np.asarray(spread, dtype=np.float64), (len(counts),))
    emb, labels = [], []
    for k, count in enumerate(counts):
        noise = rng.normal(size=(count, dim)) / np.sqrt(dim)
        emb.append(l2_normalize(centres[k] + spreads[k] * noise))
        labels += [f"person{k:02d}"] * count
    return np.concatenate(emb), np.asarray(labels)


def split(emb: np.ndarray, labels: np.ndarray) -> tuple:
    """The first half of each identity's images (at least one) are the gallery."""
    gallery = np.zeros(len(labels), dtype=bool)
    for name in np.unique(labels):
        rows = np.flatnonzero(labels == name)
        gallery[rows[: max(1, len(rows) // 2)]] = True
    return emb[gallery], labels[gallery], emb[~gallery], labels[~gallery]


def scores_of(seed: int, counts: list[int], spread, mode: str = "template") -> IdentityScores:
    return identity_scores(*split(*clusters(seed, counts, spread)), mode)


def pair_arrays(scores: IdentityScores) -> tuple[np.ndarray, np.ndarray]:
    return scores.pair_distances, scores.pair_a == scores.pair_b


# --- identity_scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "template"])
def test_identity_scores_are_model_metrics_tagged_with_identities(mode: str) -> None:
    emb, labels = clusters(3, [4, 3, 5, 2], 0.8)
    g_emb, g_lab, p_emb, p_lab = split(emb, labels)
    # a person only among the probes: a stranger, never a genuine decision
    extra, _ = clusters(9, [2], 0.5)
    p_emb = np.concatenate([p_emb, extra])
    p_lab = np.concatenate([p_lab, ["zz_visitor"] * 2])
    scores = identity_scores(g_emb, g_lab, p_emb, p_lab, mode)
    assert scores.identities == ("person00", "person01", "person02", "person03", "zz_visitor")
    assert scores.mode == mode

    pooled = list(g_lab) + list(p_lab)
    distances, same = pair_scores(np.concatenate([g_emb, p_emb]), pooled)
    np.testing.assert_array_equal(scores.pair_distances, distances)
    names = np.asarray(scores.identities)
    i, j = np.triu_indices(len(pooled), k=1)
    assert names[scores.pair_a].tolist() == np.asarray(pooled)[i].tolist()
    assert names[scores.pair_b].tolist() == np.asarray(pooled)[j].tolist()
    np.testing.assert_array_equal(scores.pair_a == scores.pair_b, same)

    genuine, stranger = decision_distances(g_emb, g_lab, p_emb, p_lab, mode)
    np.testing.assert_array_equal(scores.genuine, genuine)
    np.testing.assert_array_equal(scores.stranger, stranger)
    assert names[scores.genuine_identity].tolist() == [n for n in p_lab if n != "zz_visitor"]
    for k, name in enumerate(names):  # each stranger decision belongs to the left-out person
        keep = g_lab != name
        images = np.concatenate([g_emb[g_lab == name], p_emb[p_lab == name]])
        matches = match_embeddings(images, g_emb[keep], g_lab[keep].tolist(), np.inf, mode)
        expected = [m.distance for m in matches]
        np.testing.assert_allclose(scores.stranger[scores.stranger_identity == k], expected)


def test_identity_scores_need_two_gallery_identities_and_matching_probes() -> None:
    emb, labels = clusters(0, [3, 3], 0.5)
    with pytest.raises(ValueError, match="at least two identities in the gallery"):
        identity_scores(emb[:2], labels[:2], emb[2:], labels[2:], "template")
    with pytest.raises(ValueError, match="probes"):
        identity_scores(emb[[0, 3]], labels[[0, 3]], emb[[1]], ["nobody"], "template")


def test_folds_are_balanced_stable_and_follow_the_hash_rule() -> None:
    for n in (2, 3, 7, 20):
        names = tuple(f"n{k}" for k in range(n))
        fold = confidence._folds(names, seed=5)
        assert set(fold.tolist()) == {0, 1}
        assert abs(int(fold.sum()) - (n - int(fold.sum()))) <= 1
        np.testing.assert_array_equal(fold, confidence._folds(names, seed=5))
        ranked = sorted(names, key=lambda s: hashlib.sha256(f"5:fold:{s}".encode()).hexdigest())
        assert [int(fold[names.index(s)]) for s in ranked] == [r % 2 for r in range(n)]
    names = tuple(f"n{k}" for k in range(20))
    assert not np.array_equal(confidence._folds(names, 0), confidence._folds(names, 1))
    scores = scores_of(0, [3] * 6, 0.5)
    np.testing.assert_array_equal(scores.fold, confidence._folds(scores.identities, 0))


# --- weighted metrics: all ones = model.metrics ---------------------------------------------


def direct_scores(distances: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> IdentityScores:
    """IdentityScores from given pair distances (one genuine and one stranger per identity)."""
    ids = np.arange(n)
    return IdentityScores(
        identities=tuple(f"i{k:03d}" for k in range(n)),
        pair_distances=np.asarray(distances, dtype=np.float64),
        pair_a=a,
        pair_b=b,
        genuine=np.linspace(0.2, 0.6, n),
        genuine_identity=ids,
        stranger=np.linspace(0.7, 1.2, n),
        stranger_identity=ids,
        fold=ids % 2,
        mode="template",
    )


def random_pairs(seed: int, n: int = 12, m: int = 3000, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, m)
    b = np.where(rng.random(m) < 0.15, a, rng.integers(0, n, m))
    distances = np.where(a == b, rng.normal(0.7, 0.25, m), rng.normal(1.3, 0.15, m)).clip(0, 2)
    if decimals is not None:  # many ties, within and across genuine and impostor pairs
        distances = np.round(distances, decimals)
    return direct_scores(distances, a, b, n)


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, None), (2, 2), (3, 1), (4, 2)])
def test_all_ones_reproduce_model_metrics_exactly(seed: int, decimals: int | None) -> None:
    scores = random_pairs(seed, decimals=decimals)
    d, same = pair_arrays(scores)
    m = point_metrics(scores, 1e-3)
    assert m["tar_at_far_1e-3"] == tar_at_far(d, same, 1e-3)[0]
    assert m["eer"] == pytest.approx(equal_error_rate(d, same)[0], abs=1e-12)
    assert 0.0 < m["eer"] < 0.5 and 0.0 < m["tar_at_far_1e-3"] < 1.0  # not a degenerate case


def test_all_ones_reproduce_model_metrics_on_embeddings_with_duplicates() -> None:
    emb, labels = clusters(7, [5, 4, 6, 3, 5], 1.6)
    # exact duplicates: zero-distance genuine ties, and one photo filed under two people
    emb = np.concatenate([emb, emb[[0, 0, 7]]])
    labels = np.concatenate([labels, ["person00", "person00", "person04"]])
    scores = identity_scores(*split(emb, labels), "nearest")
    d, same = pair_arrays(scores)
    assert len(np.unique(d)) < len(d)
    m = point_metrics(scores, 1e-3)
    assert m["tar_at_far_1e-3"] == tar_at_far(d, same, 1e-3)[0]
    assert m["eer"] == pytest.approx(equal_error_rate(d, same)[0], abs=1e-12)
    assert m["n_identities"] == 5 and m["n_strangers"] == len(labels)
    assert m["n_genuine"] == len(scores.genuine)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_weights_equal_repeating_pairs(seed: int) -> None:
    scores = random_pairs(seed, n=9, m=2500, decimals=2 if seed else None)
    rng = np.random.default_rng(100 + seed)
    w = rng.multinomial(9, np.full(9, 1 / 9)).astype(float)
    a, b = scores.pair_a, scores.pair_b
    repeats = np.where(a == b, w[a], w[a] * w[b]).astype(int)
    d = np.repeat(scores.pair_distances, repeats)
    same = np.repeat(a == b, repeats)
    m = weighted_metrics(scores, w, 1e-3)
    assert m["tar_at_far_1e-3"] == pytest.approx(tar_at_far(d, same, 1e-3)[0], abs=1e-12)
    assert m["eer"] == pytest.approx(equal_error_rate(d, same)[0], abs=1e-12)
    assert m["n_identities"] == 9


def test_small_scan_chunks_give_the_same_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = random_pairs(5, decimals=2)
    w = np.random.default_rng(1).multinomial(12, np.full(12, 1 / 12)).astype(float)
    expected = weighted_metrics(scores, w, 1e-3), point_metrics(scores, 1e-3)
    monkeypatch.setattr(confidence, "_CHUNK", 3)
    assert (weighted_metrics(scores, w, 1e-3), point_metrics(scores, 1e-3)) == expected


def test_cross_fitted_decisions_against_a_loop() -> None:
    scores = scores_of(11, [4, 5, 3, 6, 4, 5, 4], 1.3, mode="nearest")
    far = 0.05
    for w in (np.ones(7), np.array([2.0, 0, 1, 1, 0, 3, 0])):
        m = weighted_metrics(scores, w, far)
        accepted = {"stranger": 0.0, "genuine": 0.0}
        totals = {"stranger": 0.0, "genuine": 0.0}
        for f in (0, 1):
            other = scores.fold[scores.stranger_identity] == 1 - f
            t = calibrated_threshold(
                scores.stranger[other], far, w[scores.stranger_identity[other]]
            )
            for kind, values, ids in (
                ("stranger", scores.stranger, scores.stranger_identity),
                ("genuine", scores.genuine, scores.genuine_identity),
            ):
                mine = scores.fold[ids] == f
                totals[kind] += w[ids[mine]].sum()
                accepted[kind] += w[ids[mine]][values[mine] <= t].sum()
        assert m["stranger_accept"] == pytest.approx(accepted["stranger"] / totals["stranger"])
        assert m["genuine_accept"] == pytest.approx(accepted["genuine"] / totals["genuine"])
        assert 0.0 < m["genuine_accept"] < 1.0
        ids = scores.stranger_identity
        assert m["threshold"] == calibrated_threshold(scores.stranger, far, w[ids])


def test_open_set_accept_is_strangers_within_the_1pct_frr_threshold() -> None:
    """Oracle: model.metrics.threshold_at_frr on the genuine decisions, then the share of
    strangers within it; integer weights equal repeating each identity's decisions."""
    scores = scores_of(12, [6, 5, 7, 4, 6, 5, 8, 5], 1.3)
    for w in (np.ones(8), np.array([2.0, 0, 1, 3, 1, 0, 1, 2])):
        genuine = np.repeat(scores.genuine, w[scores.genuine_identity].astype(int))
        stranger = np.repeat(scores.stranger, w[scores.stranger_identity].astype(int))
        expected = np.mean(stranger <= threshold_at_frr(genuine, 0.01))
        got = weighted_metrics(scores, w, 1e-3)["open_set_accept"]
        assert got == pytest.approx(expected, abs=1e-12)
        assert 0.0 < got < 1.0  # the oracle is not trivially 0 or 1 here
    looser = scores_of(12, [6, 5, 7, 4, 6, 5, 8, 5], 1.8)
    assert (
        point_metrics(looser, 1e-3)["open_set_accept"]
        > point_metrics(scores, 1e-3)["open_set_accept"]
    )


def test_undefined_metrics_are_nan() -> None:
    scores = scores_of(0, [3, 3, 3, 3], 0.5)
    m = weighted_metrics(scores, np.array([4.0, 0, 0, 0]), 1e-3)
    assert np.isnan(m["tar_at_far_1e-3"]) and np.isnan(m["eer"])  # no impostor pair
    assert np.isnan(m["stranger_accept"]) and np.isnan(m["genuine_accept"])  # one fold only
    with pytest.raises(ValueError, match="weights"):
        weighted_metrics(scores, np.ones(3), 1e-3)


# --- calibrated_threshold ----------------------------------------------------------------------


@pytest.mark.parametrize("far", [1e-3, 0.01, 0.1, 0.25, 0.5, 0.999])
def test_calibrated_threshold_is_the_calibration_rule(far: float) -> None:
    rng = np.random.default_rng(int(far * 1000))
    for stranger in (
        rng.uniform(0.5, 1.5, 300),
        np.round(rng.uniform(0.5, 1.5, 300), 2),  # ties
        np.array([0.8, 0.8, 0.8, 0.9]),
        np.array([0.0, 0.3, 0.3, 1.2]),
        np.array([0.71235, 0.9, 2.5, 3.0]),
    ):
        genuine = rng.uniform(0.0, 0.8, 50)
        same = np.r_[np.ones(len(genuine), bool), np.zeros(len(stranger), bool)]
        exact = threshold_at_far(np.r_[genuine, stranger], same, far)
        assert calibrated_threshold(stranger, far) == round_down_threshold(min(exact, 2.0))
        assert calibrated_threshold(stranger, far, np.ones(len(stranger))) == round_down_threshold(
            min(exact, 2.0)
        )


def test_calibrated_threshold_ties_and_edges() -> None:
    # 10 strangers at FAR 0.2 may accept 2, but the two closest tie with a third: none accepted
    stranger = np.array([0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2])
    assert calibrated_threshold(stranger, 0.2) == 0.4999
    assert calibrated_threshold(stranger, 0.3) == 0.5999  # the tied three fit together
    assert calibrated_threshold(stranger, 1.0) == 2.0
    assert calibrated_threshold(stranger, 0.5, np.zeros(10)) == 2.0
    assert calibrated_threshold(np.array([]), 0.1) == 2.0
    # a stranger at distance 0: nothing can be rejected-only, the threshold bottoms out at 0
    assert calibrated_threshold(np.array([0.0, 0.4, 0.9]), 0.1) == 0.0
    with pytest.raises(ValueError):
        calibrated_threshold(stranger, 0.1, np.ones(3))
    with pytest.raises(ValueError):
        calibrated_threshold(stranger, 1.5)


def test_calibrated_threshold_weights_equal_duplicated_decisions() -> None:
    rng = np.random.default_rng(4)
    stranger = np.round(rng.uniform(0.6, 1.4, 200), 3)
    identity = rng.integers(0, 10, 200)
    for far in (0.01, 0.05, 0.2):
        w = np.ones(10)
        w[identity[np.argmin(stranger)]] = 2.0  # doubles the closest stranger's person
        w[3] = 0.0
        duplicated = np.concatenate(
            [stranger[identity != 3], stranger[identity == identity[np.argmin(stranger)]]]
        )
        weighted = calibrated_threshold(stranger, far, w[identity])
        assert weighted == calibrated_threshold(duplicated, far)
        share = w[identity][stranger <= weighted].sum() / w[identity].sum()
        assert share <= far  # never accepts more than the target


# --- compare and interval ----------------------------------------------------------------------


def test_identical_models_give_zero_intervals_and_no_decision() -> None:
    scores = scores_of(1, [4] * 12, 1.4)
    again = scores_of(1, [4] * 12, 1.4)  # recomputed, not the same object
    changes = compare(scores, again, 0.01, draws=300)
    assert list(changes) == KEYS
    for key, better in METRICS:
        c = changes[key]
        assert (c.better, c.low, c.high, c.before) == (better, 0.0, 0.0, c.after)
    d = decide(changes, 12, min_identities=10)
    assert not d.accepted and d.improved == () and d.regressed == ()
    assert d.reason == "no change the intervals can show"


def test_tighter_clusters_show_gains_and_looser_ones_losses() -> None:
    counts = [4] * 25
    before = scores_of(2, counts, 1.1)
    tighter = scores_of(2, counts, 0.8)
    looser = scores_of(2, counts, 1.5)
    gains = compare(before, tighter, 0.01, draws=400)
    for key in ("tar_at_far_1e-3", "eer", "genuine_accept"):
        assert gains[key].improvement_low > 0, gains[key]
    losses = compare(before, looser, 0.01, draws=400)
    for key in ("tar_at_far_1e-3", "eer", "genuine_accept"):
        assert losses[key].improvement_high < 0, losses[key]
    d = decide(losses, 25, min_identities=20)
    assert not d.accepted and {"tar_at_far_1e-3", "eer"} <= set(d.regressed)
    assert "TAR@1e-3 (change -" in d.reason and "EER (change +" in d.reason


def test_tighter_genuine_scores_are_accepted() -> None:
    """The whole chain compare -> decide, with strangers unchanged (no calibration noise)."""
    before = scores_of(3, [4] * 24, 1.6)
    shrink = before.pair_a == before.pair_b
    after = dataclasses.replace(
        before,
        pair_distances=np.where(shrink, 0.7 * before.pair_distances, before.pair_distances),
        genuine=0.7 * before.genuine,
    )
    changes = compare(before, after, 0.01, draws=400)
    assert changes["stranger_accept"].low == changes["stranger_accept"].high == 0.0
    d = decide(changes, 24, min_identities=20)
    assert d.accepted and d.regressed == ()
    assert {"tar_at_far_1e-3", "eer", "genuine_accept"} <= set(d.improved)
    assert decide(changes, 19, min_identities=20).too_few


def test_a_gain_from_one_identity_is_not_a_gain_over_identities() -> None:
    """One person with many photos improves, nobody else changes: an image-level bootstrap
    is sure of a gain, the identity bootstrap is not (that person is left out of about a
    third of the draws)."""
    counts = [30] + [4] * 19
    before = scores_of(4, counts, [2.2] + [1.4] * 19)
    after = scores_of(4, counts, [0.6] + [1.4] * 19)
    change = compare(before, after, 0.01, draws=500)["tar_at_far_1e-3"]
    assert change.after - change.before > 0.1  # the point estimate is a clear gain
    assert change.low <= 0.0  # but the interval over identities includes no gain
    assert "tar_at_far_1e-3" not in decide({**_zero_changes(), change.key: change}, 20, 10).improved

    # the naive view: resample genuine pairs (images), each model at its own threshold
    d_b, same = pair_arrays(before)
    d_a, _ = pair_arrays(after)
    t_b = tar_at_far(d_b, same, 1e-3)[1]
    t_a = tar_at_far(d_a, same, 1e-3)[1]
    gained = (d_a[same] <= t_a).astype(float) - (d_b[same] <= t_b)
    rng = np.random.default_rng(0)
    naive = [gained[rng.integers(0, len(gained), len(gained))].mean() for _ in range(500)]
    assert np.quantile(naive, 0.025) > 0.05


def _zero_changes() -> dict[str, MetricChange]:
    return {k: MetricChange(k, b, 0.5, 0.5, 0.0, 0.0) for k, b in METRICS}


def test_compare_is_deterministic_for_a_seed_and_refuses_other_identities() -> None:
    before = scores_of(5, [4] * 10, 1.6)
    after = scores_of(5, [4] * 10, 1.3)
    first = compare(before, after, 0.05, draws=200, seed=3)
    assert compare(before, after, 0.05, draws=200, seed=3) == first
    assert compare(before, after, 0.05, draws=200, seed=4) != first
    narrow = compare(before, after, 0.05, draws=200, seed=3, level=0.5)
    assert all(narrow[k].high - narrow[k].low <= first[k].high - first[k].low for k in KEYS)
    other = scores_of(5, [4] * 11, 1.3)
    with pytest.raises(ValueError, match="different identities"):
        compare(before, other, 0.05, draws=10)
    refolded = dataclasses.replace(after, fold=1 - after.fold)
    with pytest.raises(ValueError, match="folds"):
        compare(before, refolded, 0.05, draws=10)


def test_draws_without_a_measure_are_redrawn() -> None:
    """With two people every draw that measures anything is both of them once: the point."""
    scores = scores_of(6, [4, 5], 1.2)
    point = point_metrics(scores, 0.1)
    result = interval(scores, 0.1, draws=50, seed=1)
    assert list(result) == [*KEYS, "threshold"]
    for key, (p, low, high) in result.items():
        assert p == low == high == point[key]


def test_undefined_draws_are_redrawn_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # three people, two in one calibration fold: a draw of only those two cannot be calibrated
    scores = scores_of(8, [4, 4, 4], 1.2)
    assert sorted(np.bincount(scores.fold).tolist()) == [1, 2]
    pair = np.bincount(scores.fold).argmax()
    m = weighted_metrics(scores, np.where(scores.fold == pair, 1.5, 0.0), 0.1)
    assert np.isfinite(m["eer"]) and np.isnan(m["stranger_accept"])
    result = interval(scores, 0.1, draws=200, seed=2)
    assert all(np.isfinite(v).all() for v in result.values())
    changes = compare(scores, scores_of(8, [4, 4, 4], 0.9), 0.1, draws=200, seed=2)
    assert all(np.isfinite([c.low, c.high]).all() for c in changes.values())
    # the retries are bounded: two people, half of the draws measure nothing
    monkeypatch.setattr(confidence, "RETRY_FACTOR", 0)
    with pytest.raises(ValueError, match="too few identities"):
        interval(scores_of(6, [4, 5], 1.2), 0.1, draws=200)


def test_interval_brackets_the_point_estimate() -> None:
    scores = scores_of(7, [4] * 15, 1.6)
    result = interval(scores, 0.05, draws=300)
    point = point_metrics(scores, 0.05)
    for key, (p, low, high) in result.items():
        assert p == point[key] and low <= p <= high
    assert result["eer"][2] - result["eer"][1] > 0.01  # 15 people: a wide interval
