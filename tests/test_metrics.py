"""model.metrics against brute-force and hand-computed values on tiny synthetic inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from common.vectors import l2_normalize
from model.metrics import (
    best_accuracy,
    decision_distances,
    equal_error_rate,
    evaluate_embeddings,
    nearest_identity,
    open_set_false_accept,
    pair_scores,
    pairwise_distances,
    rank1_accuracy,
    roc_auc,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    threshold_at_frr,
)

# genuine 0.1 0.2 0.6 | impostor 0.5 0.8 0.9
HAND_D = np.array([0.1, 0.5, 0.2, 0.8, 0.6, 0.9])
HAND_SAME = np.array([True, False, True, False, True, False])


def brute_auc(distances: np.ndarray, same: np.ndarray) -> float:
    wins = 0.0
    genuine, impostor = distances[same], distances[~same]
    for g, i in itertools.product(genuine, impostor):
        wins += 1.0 if g < i else 0.5 if g == i else 0.0
    return wins / (len(genuine) * len(impostor))


def brute_rates(distances: np.ndarray, same: np.ndarray, t: float) -> tuple[float, float]:
    far = float(np.mean(distances[~same] <= t))
    tar = float(np.mean(distances[same] <= t))
    return far, tar


def test_pairwise_and_pair_scores_match_loops() -> None:
    rng = np.random.default_rng(0)
    emb = l2_normalize(rng.normal(size=(6, 4)))
    labels = ["a", "a", "b", "c", "b", "a"]
    full = pairwise_distances(emb)
    distances, same = pair_scores(emb, labels)
    expected_d, expected_same = [], []
    for i, j in itertools.combinations(range(6), 2):
        expected_d.append(np.linalg.norm(emb[i] - emb[j]))
        expected_same.append(labels[i] == labels[j])
        assert full[i, j] == pytest.approx(full[j, i])
    np.testing.assert_allclose(distances, expected_d, atol=1e-6)
    assert same.tolist() == expected_same
    assert len(distances) == 15 and same.sum() == 4  # a: 3 pairs, b: 1 pair


def test_roc_curve_hand_computed() -> None:
    far, tar, thresholds = roc_curve(HAND_D, HAND_SAME)
    np.testing.assert_allclose(thresholds[1:], [0.1, 0.2, 0.5, 0.6, 0.8, 0.9])
    assert thresholds[0] < 0.1
    np.testing.assert_allclose(far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])


def test_roc_curve_groups_ties_into_one_point() -> None:
    far, tar, thresholds = roc_curve(np.array([0.3, 0.3, 0.3]), np.array([True, False, True]))
    np.testing.assert_allclose(thresholds[1:], [0.3])
    np.testing.assert_allclose(far, [0, 1])
    np.testing.assert_allclose(tar, [0, 1])


def test_auc_hand_computed_and_brute_force() -> None:
    # impostor 0.5 beats genuine 0.6 once: 8 of 9 (genuine, impostor) orderings are right
    assert roc_auc(HAND_D, HAND_SAME) == pytest.approx(8 / 9)
    rng = np.random.default_rng(3)
    for _ in range(5):
        d = np.round(rng.uniform(0, 2, size=40), 1)  # rounding makes ties
        s = rng.random(40) < 0.4
        assert roc_auc(d, s) == pytest.approx(brute_auc(d, s), abs=1e-12)


def test_auc_extremes() -> None:
    same = np.array([True, True, False, False])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), same) == 1.0
    assert roc_auc(np.array([0.8, 0.9, 0.1, 0.2]), same) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), same) == 0.5


def test_equal_error_rate_hand_computed() -> None:
    eer, threshold = equal_error_rate(HAND_D, HAND_SAME)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.5)
    assert equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0], bool))[0] == 0


def test_equal_error_rate_interpolates() -> None:
    # genuine 0.1, 0.4 | impostor 0.3, 0.6: at 0.1 FAR 0 / FRR 1/2; at 0.3 FAR 1/2 / FRR 1/2
    eer, threshold = equal_error_rate(np.array([0.1, 0.4, 0.3, 0.6]), np.array([1, 1, 0, 0], bool))
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.3)
    # genuine 0.1, 0.2, 0.5 | impostor 0.4, 0.7: diff -1/3 at 0.2 and +1/6 at 0.4
    d = np.array([0.1, 0.2, 0.5, 0.4, 0.7])
    eer, threshold = equal_error_rate(d, np.array([1, 1, 1, 0, 0], bool))
    assert eer == pytest.approx(1 / 3)  # FAR goes 0 -> 1/2 two thirds of the way
    assert threshold == pytest.approx(0.2 + 2 / 3 * 0.2)


def test_threshold_and_tar_at_far_against_brute_force() -> None:
    rng = np.random.default_rng(5)
    d = rng.uniform(0, 2, size=400)
    s = rng.random(400) < 0.2
    n_impostor = int((~s).sum())
    for far in (0.0, 1e-3, 1e-2, 0.1, 0.5):
        t = threshold_at_far(d, s, far)
        got_far, got_tar = brute_rates(d, s, t)
        assert got_far <= far + 1e-12
        # maximal: the next impostor distance would exceed the target
        nxt = np.min(d[~s][d[~s] > t])
        assert brute_rates(d, s, nxt)[0] > far
        assert tar_at_far(d, s, far) == (pytest.approx(got_tar), t)
        assert int(np.floor(far * n_impostor)) == int(np.sum(d[~s] <= t))
    assert threshold_at_far(d, s, 1.0) == np.inf


def test_threshold_at_far_hand_computed() -> None:
    # 3 impostors; FAR 1/3 allows one: just below the second impostor (0.8)
    t = threshold_at_far(HAND_D, HAND_SAME, 1 / 3)
    assert 0.5 <= t < 0.8 and t == pytest.approx(0.8)
    assert tar_at_far(HAND_D, HAND_SAME, 1 / 3)[0] == 1.0
    assert tar_at_far(HAND_D, HAND_SAME, 0.0)[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="far=2"):
        threshold_at_far(HAND_D, HAND_SAME, 2)


def test_best_accuracy_hand_computed_and_brute_force() -> None:
    accuracy, threshold = best_accuracy(HAND_D, HAND_SAME)
    # t in [0.2, 0.5): 2 genuine + 3 impostor right = 5/6, first such midpoint 0.35
    assert accuracy == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.35)
    rng = np.random.default_rng(7)
    d = np.round(rng.uniform(0, 2, size=60), 2)
    s = rng.random(60) < 0.3
    accuracy, threshold = best_accuracy(d, s)
    candidates = np.concatenate([[-1.0], np.unique(d)])
    brute = max(float(np.mean((d <= t) == s)) for t in candidates)
    assert accuracy == pytest.approx(brute)
    assert float(np.mean((d <= threshold) == s)) == pytest.approx(accuracy)


def test_best_accuracy_perfect_separation_threshold_in_gap() -> None:
    accuracy, threshold = best_accuracy(
        np.array([0.2, 0.4, 1.0, 1.2]), np.array([1, 1, 0, 0], bool)
    )
    assert accuracy == 1.0 and threshold == pytest.approx(0.7)


def test_threshold_at_frr() -> None:
    genuine = np.arange(1, 201) / 100.0  # 0.01 .. 2.00
    t = threshold_at_frr(genuine, 0.01)  # two of 200 may be rejected
    assert t == pytest.approx(1.98)
    assert np.mean(genuine > t) == pytest.approx(0.01)
    assert threshold_at_frr(genuine[:50], 0.01) == pytest.approx(0.5)  # none of 50 rejected
    with pytest.raises(ValueError, match="no genuine"):
        threshold_at_frr(np.array([]))


def test_metric_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="0 impostor"):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="3 distances but 2"):
        roc_curve(np.array([0.1, 0.2, 0.3]), np.array([True, False]))


# --- identification ------------------------------------------------------------------------


def clustered(rng: np.random.Generator, names: list[str], per: int, noise: float, dim: int = 16):
    centres = l2_normalize(rng.normal(size=(len(names), dim)))
    emb, labels = [], []
    for name, centre in zip(names, centres, strict=True):
        emb.append(l2_normalize(centre + noise * rng.normal(size=(per, dim))))
        labels += [name] * per
    return np.concatenate(emb), labels


def test_nearest_identity_and_rank1_against_loops() -> None:
    rng = np.random.default_rng(11)
    gallery, g_labels = clustered(rng, ["a", "b", "c"], 4, noise=0.6)
    probes, p_labels = clustered(rng, ["a", "b", "c"], 3, noise=0.6)
    labels, distances = nearest_identity(probes, gallery, g_labels, "nearest")
    right = 0
    for k, probe in enumerate(probes):
        d = [np.linalg.norm(probe - g) for g in gallery]
        assert labels[k] == g_labels[int(np.argmin(d))]
        assert distances[k] == pytest.approx(min(d), abs=1e-5)
        right += labels[k] == p_labels[k]
    assert rank1_accuracy(gallery, g_labels, probes, p_labels, "nearest") == pytest.approx(
        right / len(probes)
    )


def test_rank1_hand_computed_and_unenrolled_probes_left_out() -> None:
    gallery = l2_normalize(np.array([[1, 0], [0, 1]], float))
    probes = l2_normalize(np.array([[1, 0.1], [1, 0.2], [0.1, 1], [1, 1.01]], float))
    # third probe says "a" but is nearest to "b"; fourth is an unenrolled "z"
    assert rank1_accuracy(
        gallery, ["a", "b"], probes, ["a", "a", "a", "z"], "nearest"
    ) == pytest.approx(2 / 3)
    template_labels, _ = nearest_identity(probes, gallery, ["a", "b"], mode="template")
    assert template_labels.tolist() == ["a", "a", "b", "b"]


def test_open_set_hand_computed() -> None:
    # points on the unit circle at these angles: distance grows with the angle between them
    def at(*angles: float) -> np.ndarray:
        return np.array([[np.cos(a), np.sin(a)] for a in angles])

    gallery, g_labels, p_labels = at(0.0, 1.0, 2.0), ["a", "b", "c"], ["a", "b", "c"]
    rate, per_identity = open_set_false_accept(
        gallery, g_labels, at(0.05, 1.05, 2.3), p_labels, mode="nearest"
    )
    # without a: genuine probes are 0.05 and 0.3 rad from their gallery image, so strangers
    # must come within 0.3 rad; a's images are >= 0.95 rad away from b and c. Same for b, c.
    assert per_identity == {"a": 0.0, "b": 0.0, "c": 0.0} and rate == 0.0

    rate, per_identity = open_set_false_accept(
        gallery, g_labels, at(0.05, 1.25, 1.2), p_labels, mode="nearest"
    )
    # without a: genuine b@1.25 (0.25 from b), c@1.2 (0.2 from b) -> 0.25 rad allowed;
    #   a@0 and a@0.05 are >= 0.95 rad from b: none accepted
    # without b: genuine a@0.05 (0.05), c@1.2 (0.8 from c) -> 0.8 rad allowed;
    #   b@1.0 is 1 rad from a and c (rejected), b@1.25 is 0.75 from c (accepted)
    # without c: genuine a@0.05, b@1.25 -> 0.25 rad allowed;
    #   c@2.0 is 1 rad from b (rejected), c@1.2 is 0.2 from b (accepted)
    assert per_identity == {"a": 0.0, "b": 0.5, "c": 0.5}
    assert rate == pytest.approx(1 / 3)


def test_open_set_against_brute_force() -> None:
    rng = np.random.default_rng(13)
    names = ["a", "b", "c", "d"]
    gallery, g_labels = clustered(rng, names, 3, noise=0.9)
    probes, p_labels = clustered(rng, names, 40, noise=0.9)
    for mode in ("nearest", "template"):
        rate, per_identity = open_set_false_accept(gallery, g_labels, probes, p_labels, mode=mode)
        brute = []
        for left in names:
            g = [(e, n) for e, n in zip(gallery, g_labels, strict=True) if n != left]
            if mode == "template":
                kept = [m for m in names if m != left]
                g = [(l2_normalize(np.mean([e for e, n in g if n == m], axis=0)), m) for m in kept]

            def nearest(x, g=g):
                return min(np.linalg.norm(x - e) for e, _ in g)

            genuine = sorted(nearest(p) for p, n in zip(probes, p_labels, strict=True) if n != left)
            threshold = genuine[len(genuine) - 1 - int(0.01 * len(genuine))]  # 120: 1 out
            strangers = [e for e, n in zip(gallery, g_labels, strict=True) if n == left]
            strangers += [p for p, n in zip(probes, p_labels, strict=True) if n == left]
            brute.append(np.mean([nearest(x) <= threshold for x in strangers]))
            assert per_identity[left] == pytest.approx(brute[-1])
        assert rate == pytest.approx(np.mean(brute))
        assert 0.0 < rate < 1.0  # noisy clusters: some strangers get in, not all


def brute_decisions(gallery, g_labels, probes, p_labels, mode):
    """decision_distances by explicit loops, the recogniser's rule written out."""

    def entries(keep):
        rows = [(e, n) for e, n in zip(gallery, g_labels, strict=True) if keep(n)]
        if mode == "nearest":
            return rows
        names = sorted({n for _, n in rows})
        return [(l2_normalize(np.sum([e for e, n in rows if n == m], axis=0)), m) for m in names]

    def winner(x, rows):
        return min(np.linalg.norm(x.astype(np.float64) - e) for e, _ in rows)

    genuine = [
        winner(p, entries(lambda n, own=own: n == own))
        for p, own in zip(probes, p_labels, strict=True)
        if own in g_labels
    ]
    stranger = []
    for left in sorted(set(g_labels) | set(p_labels)):
        rows = entries(lambda n, left=left: n != left)
        images = [e for e, n in zip(gallery, g_labels, strict=True) if n == left]
        images += [p for p, n in zip(probes, p_labels, strict=True) if n == left]
        stranger += [winner(x, rows) for x in images]
    return np.array(genuine), np.array(stranger)


@pytest.mark.parametrize("mode", ["nearest", "template"])
def test_decision_distances_against_brute_force(mode: str) -> None:
    rng = np.random.default_rng(19)
    gallery, g_labels = clustered(rng, ["a", "b", "c", "d"], 5, noise=0.7)
    probes, p_labels = clustered(rng, ["a", "b", "c", "d", "z"], 3, noise=0.7)  # z: unenrolled
    order = rng.permutation(len(probes))  # results follow the probe order, not identity order
    probes, p_labels = probes[order], [p_labels[k] for k in order]
    genuine, stranger = decision_distances(gallery, g_labels, probes, p_labels, mode)
    expected_genuine, expected_stranger = brute_decisions(gallery, g_labels, probes, p_labels, mode)
    assert genuine.shape == (12,) and stranger.shape == (20 + 15,)
    np.testing.assert_allclose(genuine, expected_genuine, atol=1e-5)
    np.testing.assert_allclose(stranger, expected_stranger, atol=1e-5)


def test_decision_distances_modes_differ_and_templates_are_closer_than_pairs() -> None:
    rng = np.random.default_rng(23)
    emb, labels = clustered(rng, ["a", "b", "c"], 10, noise=0.3)
    labels = np.array(labels)
    in_gallery = np.arange(30) % 10 < 6  # 6 gallery + 4 probe images around the same centres
    gallery, g_labels = emb[in_gallery], labels[in_gallery]
    probes, p_labels = emb[~in_gallery], labels[~in_gallery]
    near_g, near_s = decision_distances(gallery, g_labels, probes, p_labels, "nearest")
    temp_g, temp_s = decision_distances(gallery, g_labels, probes, p_labels, "template")
    assert not np.allclose(near_g, temp_g) and not np.allclose(near_s, temp_s)
    # a probe is nearer its identity's mean than to a typical image of it: pair distances
    # overstate what the recogniser compares with its threshold
    distances, same = pair_scores(emb, labels)
    assert temp_g.mean() < distances[same].mean() - 0.05
    assert temp_s.mean() < distances[~same].mean()


def test_decision_distances_hand_computed() -> None:
    def at(*angles: float) -> np.ndarray:
        return np.array([[np.cos(a), np.sin(a)] for a in angles])

    def chord(angle: float) -> float:
        return 2 * np.sin(angle / 2)

    # gallery a at 0 and 0.4 rad (template at 0.2), b at 1.5; probes a@0.1, b@1.4
    gallery, g_labels = at(0.0, 0.4, 1.5), ["a", "a", "b"]
    probes, p_labels = at(0.1, 1.4), ["a", "b"]
    genuine, stranger = decision_distances(gallery, g_labels, probes, p_labels, "nearest")
    np.testing.assert_allclose(genuine, [chord(0.1), chord(0.1)], atol=1e-6)
    # a's images 0, 0.4, 0.1 against b@1.5; b's images 1.5, 1.4 against a's nearest (0.4)
    expected = [chord(1.5), chord(1.1), chord(1.4), chord(1.1), chord(1.0)]
    np.testing.assert_allclose(stranger, expected, atol=1e-6)
    genuine, stranger = decision_distances(gallery, g_labels, probes, p_labels, "template")
    np.testing.assert_allclose(genuine, [chord(0.1), chord(0.1)], atol=1e-6)
    expected = [chord(1.5), chord(1.1), chord(1.4), chord(1.3), chord(1.2)]
    np.testing.assert_allclose(stranger, expected, atol=1e-6)


def test_decision_distances_errors() -> None:
    emb = l2_normalize(np.eye(3))
    with pytest.raises(ValueError, match="at least two identities"):
        decision_distances(emb, ["a", "a", "a"], emb[:1], ["a"], "template")
    with pytest.raises(ValueError, match="no probe belongs"):
        decision_distances(emb, ["a", "b", "b"], emb[:1], ["z"], "nearest")
    with pytest.raises(ValueError, match="match mode"):
        decision_distances(emb, ["a", "b", "b"], emb[:1], ["a"], "average")


def test_evaluate_embeddings_keys_and_values() -> None:
    rng = np.random.default_rng(17)
    names = ["a", "b", "c", "d", "e"]
    gallery, g_labels = clustered(rng, names, 6, noise=0.3)
    probes, p_labels = clustered(rng, names, 4, noise=0.3)
    result = evaluate_embeddings(gallery, g_labels, probes, p_labels, "nearest")
    required = {
        "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "best_accuracy", "best_threshold",
        "rank1", "open_set_false_accept", "threshold_at_1pct_frr",
    }  # fmt: skip
    assert required <= set(result)
    distances, same = pair_scores(np.concatenate([gallery, probes]), g_labels + p_labels)
    assert result["auc"] == pytest.approx(brute_auc(distances, same))
    assert result["n_genuine_pairs"] == int(same.sum()) == 5 * 45
    assert result["n_impostor_pairs"] == 50 * 49 // 2 - 5 * 45
    assert result["rank1"] == rank1_accuracy(gallery, g_labels, probes, p_labels, "nearest")
    assert result["tar_at_far_1e-2"] == tar_at_far(distances, same, 1e-2)[0]
    assert result["best_accuracy"] == best_accuracy(distances, same)[0]
    assert result["eer"] == equal_error_rate(distances, same)[0]
    _, nearest = nearest_identity(probes, gallery, g_labels, "nearest")
    assert result["threshold_at_1pct_frr"] == pytest.approx(nearest.max())  # 20 probes: none out
    assert result["genuine_distance_mean"] < result["impostor_distance_mean"]
    template = evaluate_embeddings(gallery, g_labels, probes, p_labels, mode="template")
    assert template["auc"] == result["auc"]  # verification does not depend on the match mode
    assert template["rank1"] == rank1_accuracy(gallery, g_labels, probes, p_labels, "template")


def test_evaluate_embeddings_refuses_a_single_identity() -> None:
    emb = l2_normalize(np.eye(3))
    with pytest.raises(ValueError, match="at least two identities"):
        evaluate_embeddings(emb, ["a", "a", "a"], emb[:1], ["a"], "nearest")
