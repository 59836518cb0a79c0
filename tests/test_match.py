"""common.vectors: nearest / template matching against brute force, threshold, empty gallery."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.vectors import (
    UNKNOWN,
    Match,
    euclidean_distances,
    identity_templates,
    l2_normalize,
    match_embeddings,
)


def unit(rows) -> np.ndarray:
    return l2_normalize(np.asarray(rows, dtype=np.float32))


def random_unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    return l2_normalize(rng.normal(size=(n, dim)))


def test_euclidean_distances_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
    brute = np.array([[np.linalg.norm(x - y) for y in b] for x in a])
    np.testing.assert_allclose(euclidean_distances(a, b), brute, atol=1e-9)
    np.testing.assert_allclose(np.diag(euclidean_distances(a, a)), 0.0, atol=1e-6)


def test_nearest_mode_equals_brute_force_loop() -> None:
    rng = np.random.default_rng(1)
    gallery = random_unit(rng, 12)
    labels = [f"p{i % 4}" for i in range(12)]
    queries = random_unit(rng, 9)
    matches = match_embeddings(queries, gallery, labels, threshold=2.0)
    for query, match in zip(queries, matches, strict=True):
        distances = [float(np.linalg.norm(query - g)) for g in gallery]
        best = int(np.argmin(distances))
        assert match.identity == labels[best]
        assert match.distance == pytest.approx(distances[best], abs=1e-5)
        assert match.known


def test_exact_copy_matches_at_distance_zero() -> None:
    gallery = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    matches = match_embeddings(gallery[[2, 0]], gallery, ["b", "a", "c"], threshold=0.5)
    assert matches[0] == Match("c", pytest.approx(0.0, abs=1e-6), True)
    assert matches[1] == Match("b", pytest.approx(0.0, abs=1e-6), True)


def test_threshold_is_inclusive_and_beyond_is_unknown() -> None:
    gallery = unit([[1, 0], [0, 1]])
    query = unit([[1, 1]])  # distance to both: sqrt(2 - sqrt(2)) ~= 0.7654
    d = math.sqrt(2 - math.sqrt(2))
    known = match_embeddings(query, gallery, ["a", "b"], threshold=d + 1e-6)[0]
    assert known.known and known.identity == "a"
    unknown = match_embeddings(query, gallery, ["a", "b"], threshold=d - 1e-3)[0]
    assert unknown == Match(UNKNOWN, pytest.approx(d, abs=1e-5), False)


def test_empty_gallery_gives_unknown_at_infinite_distance() -> None:
    queries = unit([[1, 0, 0], [0, 1, 0]])
    matches = match_embeddings(queries, np.zeros((0, 3), np.float32), [], threshold=1.0)
    assert matches == [Match(UNKNOWN, math.inf, False)] * 2
    # a gallery loaded with an unknown dimension is empty all the same
    assert match_embeddings(queries, np.zeros((0, 0)), [], 1.0, "template")[0].known is False


def test_no_queries_and_single_vector_query() -> None:
    gallery = unit([[1, 0], [0, 1]])
    assert match_embeddings(np.zeros((0, 2)), gallery, ["a", "b"], 1.0) == []
    assert match_embeddings(np.array([0.0, 1.0]), gallery, ["a", "b"], 1.0)[0].identity == "b"


def test_template_is_renormalised_mean_per_identity() -> None:
    gallery = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    names, templates = identity_templates(gallery, ["x", "x", "y", "y"])
    assert names == ["x", "y"]
    np.testing.assert_allclose(templates, unit([[1, 1, 0], [0, 0, 1]]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(templates, axis=1), 1.0, atol=1e-6)


def test_template_and_nearest_modes_can_disagree() -> None:
    # "a" has one image right at the query, but its other image points elsewhere, so its
    # template is far; "b" is a tight cluster near the query.
    gallery = unit([[1, 0, 0], [-1, 0, 0.2], [0.8, 0.6, 0], [0.8, 0.6, 0.01]])
    labels = ["a", "a", "b", "b"]
    query = unit([[1, 0.05, 0]])
    nearest = match_embeddings(query, gallery, labels, 2.0, mode="nearest")[0]
    template = match_embeddings(query, gallery, labels, 2.0, mode="template")[0]
    assert nearest.identity == "a"
    assert template.identity == "b"
    _, templates = identity_templates(gallery, labels)
    assert template.distance == pytest.approx(float(np.linalg.norm(query[0] - templates[1])), 1e-5)


def test_bad_inputs_are_refused_with_a_clear_message() -> None:
    gallery = unit([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="match mode 'best'"):
        match_embeddings(gallery, gallery, ["a", "b"], 1.0, mode="best")
    with pytest.raises(ValueError, match="1 labels for 2"):
        match_embeddings(gallery, gallery, ["a"], 1.0)
    with pytest.raises(ValueError, match="another model"):
        match_embeddings(unit([[1, 0, 0]]), gallery, ["a", "b"], 1.0)


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_a_prepared_gallery_matches_exactly_as_the_full_distance_matrix() -> None:
    """GalleryIndex (float32 search, exact float64 re-check) gives the winner and distance of
    the full float64 distance matrix, ties to the first row, on a gallery with near-twins."""
    from common.vectors import GalleryIndex, euclidean_distances

    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(2000, 128))
    gallery[1000:1010] = gallery[:10] + 1e-7 * rng.normal(size=(10, 128))  # near-twins
    gallery[1500] = gallery[7]  # an exact twin, later: the first one wins
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery = gallery.astype(np.float32)
    labels = [f"p{i}" for i in range(len(gallery))]
    queries = np.concatenate([gallery[:12], rng.normal(size=(20, 128))]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = GalleryIndex(gallery, labels)
    full = euclidean_distances(queries, gallery)
    for match, row in zip(index.match(queries, 2.0), full, strict=True):
        assert match.identity == labels[int(row.argmin())]
        assert match.distance == pytest.approx(float(row.min()), abs=1e-6)  # sqrt near 0
    assert index.match(gallery[7], 0.5)[0].identity == "p7"
    empty = GalleryIndex(np.zeros((0, 128), np.float32), [])
    assert empty.match(queries[:2], 1.0)[0].distance == float("inf")


def test_a_nan_vector_never_wins_and_never_stops_matching() -> None:
    from common.vectors import GalleryIndex

    gallery = np.eye(3, dtype=np.float32)
    gallery[1] = np.nan
    index = GalleryIndex(gallery, ["a", "b", "c"])
    assert index.match(np.array([0, 1, 0], np.float32), 2.0)[0].identity in ("a", "c")
    nan_query = index.match(np.full(3, np.nan, np.float32), 2.0)[0]
    assert nan_query.identity == "Unknown" and nan_query.distance == float("inf")
