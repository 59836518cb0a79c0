"""Pure metric functions on embeddings: verification, closed-set and open-set identification.

Conventions used throughout:

* scores are Euclidean distances between unit-norm embeddings; smaller means "same person";
* a pair (or a probe) is *accepted* at threshold ``t`` when its distance is ``<= t``;
* ``same`` marks genuine pairs (same identity) with ``True`` and impostor pairs with ``False``;
* FAR = accepted impostors / impostors, TAR = accepted genuines / genuines, FRR = 1 - TAR.

Everything here is numpy only (no model, no I/O) and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.vectors import MODES, euclidean_distances, identity_templates, match_embeddings

FAR_TARGETS = (1e-2, 1e-3)
OPEN_SET_FRR = 0.01


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (``b`` defaults to ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    return euclidean_distances(a, a if b is None else np.asarray(b, dtype=np.float64))


def pair_scores(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distances and genuine flags of all unordered pairs ``i < j`` of ``embeddings``."""
    labels = np.asarray(list(labels), dtype=str)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings")
    i, j = np.triu_indices(len(labels), k=1)
    distances = pairwise_distances(embeddings)[i, j]
    return distances, labels[i] == labels[j]


def _split(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if distances.shape != same.shape:
        raise ValueError(f"{len(distances)} distances but {len(same)} genuine flags")
    genuine, impostor = distances[same], distances[~same]
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError(
            f"need genuine and impostor pairs, got {len(genuine)} genuine and "
            f"{len(impostor)} impostor; use at least two identities with two images each"
        )
    return genuine, impostor


def roc_curve(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)`` at every distinct distance, ascending, from (0, 0) to (1, 1).

    Point ``k`` accepts every pair with distance ``<= thresholds[k]``; the first point sits just
    below the smallest distance (nothing accepted).
    """
    genuine, impostor = _split(distances, same)
    values = np.unique(np.concatenate([genuine, impostor]))
    tar = np.searchsorted(np.sort(genuine), values, side="right") / len(genuine)
    far = np.searchsorted(np.sort(impostor), values, side="right") / len(impostor)
    start = np.nextafter(values[0], -np.inf)
    return (
        np.concatenate([[0.0], far]),
        np.concatenate([[0.0], tar]),
        np.concatenate([[start], values]),
    )


def roc_auc(distances: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC: P(genuine distance < impostor distance), ties counting one half."""
    far, tar, _ = roc_curve(distances, same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)`` where FAR equals FRR, linearly interpolated between ROC points."""
    far, tar, thresholds = roc_curve(distances, same)
    diff = far - (1.0 - tar)  # rises from -1 to +1
    k = int(np.argmax(diff >= 0))
    if k == 0:
        return float(far[0]), float(thresholds[0])
    alpha = -diff[k - 1] / (diff[k] - diff[k - 1])
    eer = far[k - 1] + alpha * (far[k] - far[k - 1])
    threshold = thresholds[k - 1] + alpha * (thresholds[k] - thresholds[k - 1])
    return float(eer), float(threshold)


def threshold_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> float:
    """The largest threshold whose false accept rate is at most ``far``.

    With ``n`` impostor pairs at most ``floor(far * n)`` of them may be accepted; the threshold
    sits just below the next impostor distance (``inf`` when ``far >= 1``).
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far={far} must be within [0, 1]")
    _, impostor = _split(distances, same)
    impostor = np.sort(impostor)
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    if allowed >= len(impostor):
        return float("inf")
    return float(np.nextafter(impostor[allowed], -np.inf))


def round_down_threshold(threshold: float) -> float:
    """``threshold`` to 4 decimals, never above it (float rounding included), at least 0:
    a written threshold never accepts more than the exact one."""
    steps = math.floor(threshold * 1e4)
    while steps > 0 and steps / 1e4 > threshold:
        steps -= 1
    return max(0.0, steps / 1e4)


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """``(tar, threshold)``: the true accept rate at the threshold of :func:`threshold_at_far`."""
    threshold = threshold_at_far(distances, same, far)
    genuine, _ = _split(distances, same)
    return float(np.mean(genuine <= threshold)), threshold


def best_accuracy(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """``(accuracy, threshold)`` of the single threshold that classifies most pairs correctly.

    The threshold is placed midway between neighbouring distinct distances; among equally good
    thresholds the smallest wins.
    """
    genuine, impostor = _split(distances, same)
    values = np.unique(np.concatenate([genuine, impostor]))
    accepted_genuine = np.searchsorted(np.sort(genuine), values, side="right")
    accepted_impostor = np.searchsorted(np.sort(impostor), values, side="right")
    correct = accepted_genuine + (len(impostor) - accepted_impostor)
    correct = np.concatenate([[len(impostor)], correct])  # threshold below everything
    k = int(np.argmax(correct))
    if k == 0:
        threshold = np.nextafter(values[0], -np.inf)
    elif k == len(values):
        threshold = values[-1]
    else:
        threshold = (values[k - 1] + values[k]) / 2.0
    return float(correct[k] / (len(genuine) + len(impostor))), float(threshold)


def threshold_at_frr(genuine_distances: np.ndarray, frr: float = OPEN_SET_FRR) -> float:
    """The smallest threshold that rejects at most a fraction ``frr`` of ``genuine_distances``."""
    if not 0.0 <= frr < 1.0:
        raise ValueError(f"frr={frr} must be within [0, 1)")
    genuine = np.sort(np.asarray(genuine_distances, dtype=np.float64).ravel())
    if len(genuine) == 0:
        raise ValueError("no genuine distances to set a threshold on")
    rejected = int(np.floor(frr * len(genuine) + 1e-9))
    return float(genuine[len(genuine) - 1 - rejected])


def nearest_identity(
    probes: np.ndarray, gallery: np.ndarray, gallery_labels: Sequence[str], mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, distances)`` of the nearest gallery identity of every probe.

    ``mode="nearest"`` compares with every gallery image, ``"template"`` with each identity's
    renormalised mean embedding (as :func:`common.vectors.match_embeddings`).
    """
    if mode not in MODES:
        raise ValueError(f"match mode {mode!r} is not one of {', '.join(MODES)}")
    if len(gallery_labels) == 0:
        raise ValueError("the gallery is empty")
    if mode == "template":
        names, gallery = identity_templates(gallery, gallery_labels)
        labels = np.asarray(names, dtype=str)
    else:
        labels = np.asarray(list(gallery_labels), dtype=str)
    distances = pairwise_distances(probes, gallery)
    best = distances.argmin(axis=1)
    return labels[best], distances[np.arange(len(best)), best]


def rank1_accuracy(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    mode: str,
) -> float:
    """Closed-set rank-1: the fraction of probes whose nearest gallery identity is their own.

    Probes of identities absent from the gallery cannot be right and are left out.
    """
    probe_labels = np.asarray(list(probe_labels), dtype=str)
    enrolled = np.isin(probe_labels, np.asarray(list(gallery_labels), dtype=str))
    if not enrolled.any():
        raise ValueError("no probe belongs to an identity of the gallery")
    predicted, _ = nearest_identity(
        np.asarray(probe_emb)[enrolled], gallery_emb, gallery_labels, mode
    )
    return float(np.mean(predicted == probe_labels[enrolled]))


def open_set_false_accept(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    frr: float = OPEN_SET_FRR,
    *,
    mode: str,
) -> tuple[float, dict[str, float]]:
    """Leave-one-identity-out rate at which strangers are accepted as somebody else.

    For each identity ``L`` of the gallery: remove ``L`` from the gallery; set the threshold
    that rejects a fraction ``frr`` of the remaining identities' probes (by their nearest
    distance, as the matcher sees it); count how many of ``L``'s images (gallery and probe
    images alike) fall within it. Returns the mean rate over identities and the per-identity rates.
    """
    gallery_emb = np.asarray(gallery_emb, dtype=np.float32)
    probe_emb = np.asarray(probe_emb, dtype=np.float32)
    gallery_labels = np.asarray(list(gallery_labels), dtype=str)
    probe_labels = np.asarray(list(probe_labels), dtype=str)
    rates: dict[str, float] = {}
    for left_out in np.unique(gallery_labels):
        keep = gallery_labels != left_out
        genuine = (probe_labels != left_out) & np.isin(probe_labels, gallery_labels[keep])
        strangers = np.concatenate(
            [gallery_emb[~keep], probe_emb[probe_labels == left_out]], axis=0
        )
        if not keep.any() or not genuine.any():
            continue
        _, genuine_dist = nearest_identity(
            probe_emb[genuine], gallery_emb[keep], gallery_labels[keep], mode
        )
        threshold = threshold_at_frr(genuine_dist, frr)
        _, stranger_dist = nearest_identity(
            strangers, gallery_emb[keep], gallery_labels[keep], mode
        )
        rates[str(left_out)] = float(np.mean(stranger_dist <= threshold))
    if not rates:
        raise ValueError("open-set evaluation needs probes of at least two gallery identities")
    return float(np.mean(list(rates.values()))), rates


def few_shot_open_set_false_accept(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    shots: int = 3,
    draws: int = 50,
    seed: int = 0,
    frr: float = OPEN_SET_FRR,
    *,
    mode: str,
) -> float:
    """:func:`open_set_false_accept` averaged over ``draws`` small galleries.

    Each draw keeps ``shots`` random gallery images per identity (all of them when it has
    fewer), as after a short enrolment; the rest of the gallery is unused. Deterministic for a
    given ``seed``. Small galleries separate matching modes that a full gallery cannot.
    """
    gallery_emb = np.asarray(gallery_emb, dtype=np.float32)
    gallery_labels = np.asarray(list(gallery_labels), dtype=str)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(gallery_labels == name) for name in np.unique(gallery_labels)]
    rates = []
    for _ in range(draws):
        keep = np.concatenate(
            [rng.choice(g, size=min(shots, len(g)), replace=False) for g in groups]
        )
        keep.sort()
        rate, _ = open_set_false_accept(
            gallery_emb[keep], gallery_labels[keep], probe_emb, probe_labels, frr, mode=mode
        )
        rates.append(rate)
    return float(np.mean(rates))


def _winner_distances(
    queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray, mode: str
) -> np.ndarray:
    """Distance of the winning gallery entry per query, exactly as the recogniser matches."""
    matches = match_embeddings(queries, gallery, labels.tolist(), float("inf"), mode)
    return np.array([m.distance for m in matches], dtype=np.float64)


def decision_distances(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    mode: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``(genuine, stranger)``: the distances the recogniser compares with its threshold.

    * ``genuine``, one per probe of an enrolled identity (probe order): the distance to the
      probe's *own* identity as :func:`common.vectors.match_embeddings` measures it in
      ``mode`` (its nearest own gallery image, or its own template);
    * ``stranger``, leave-one-identity-out: for each identity ``X`` (of the gallery or the
      probes, sorted), every image of ``X`` (gallery images, then probes) is matched against the
      gallery without ``X``; the winner's distance is what a stranger would be accepted at.

    A threshold ``t`` accepts a genuine probe when ``genuine <= t`` and a stranger when
    ``stranger <= t``, the recogniser's rule.
    """
    if mode not in MODES:
        raise ValueError(f"match mode {mode!r} is not one of {', '.join(MODES)}")
    gallery_emb = np.asarray(gallery_emb, dtype=np.float32).reshape(len(gallery_labels), -1)
    probe_emb = np.asarray(probe_emb, dtype=np.float32).reshape(len(probe_labels), -1)
    gallery_labels = np.asarray(list(gallery_labels), dtype=str)
    probe_labels = np.asarray(list(probe_labels), dtype=str)
    enrolled = np.unique(gallery_labels)
    if len(enrolled) < 2:
        raise ValueError("decision distances need at least two identities in the gallery")
    genuine = np.full(len(probe_labels), np.nan)
    for name in enrolled:
        own = probe_labels == name
        if own.any():
            mine = gallery_labels == name
            genuine[own] = _winner_distances(
                probe_emb[own], gallery_emb[mine], gallery_labels[mine], mode
            )
    genuine = genuine[np.isin(probe_labels, enrolled)]
    if len(genuine) == 0:
        raise ValueError("no probe belongs to an identity of the gallery")
    stranger = []
    for name in np.unique(np.concatenate([gallery_labels, probe_labels])):
        keep = gallery_labels != name
        images = np.concatenate([gallery_emb[~keep], probe_emb[probe_labels == name]])
        stranger.append(_winner_distances(images, gallery_emb[keep], gallery_labels[keep], mode))
    return genuine, np.concatenate(stranger)


def evaluate_embeddings(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    mode: str,
) -> dict[str, float | int]:
    """All headline figures for one gallery/probe split of unit-norm embeddings.

    * verification (``auc``, ``eer``, ``tar_at_far_1e-2``, ``tar_at_far_1e-3``,
      ``best_accuracy``, ``best_threshold``) over every unordered pair of the pooled gallery and
      probe embeddings;
    * ``rank1``: closed-set rank-1 of the probes against the gallery;
    * ``open_set_false_accept``: leave-one-identity-out false accept rate at the per-fold
      threshold rejecting 1% of genuine probes; ``threshold_at_1pct_frr`` is that threshold on
      the full gallery.

    ``mode`` ("nearest" or "template") applies to rank-1 and open-set. Extra keys give counts,
    the thresholds at the FAR targets and the mean genuine/impostor distances.
    """
    gallery_emb = np.asarray(gallery_emb, dtype=np.float32).reshape(len(gallery_labels), -1)
    probe_emb = np.asarray(probe_emb, dtype=np.float32).reshape(len(probe_labels), -1)
    labels = list(gallery_labels) + list(probe_labels)
    if len(set(gallery_labels)) < 2:
        raise ValueError("evaluation needs at least two identities in the gallery")
    distances, same = pair_scores(np.concatenate([gallery_emb, probe_emb]), labels)
    auc = roc_auc(distances, same)
    eer, eer_threshold = equal_error_rate(distances, same)
    accuracy, accuracy_threshold = best_accuracy(distances, same)
    result: dict[str, float | int] = {"auc": auc, "eer": eer, "eer_threshold": eer_threshold}
    for far in FAR_TARGETS:
        tar, threshold = tar_at_far(distances, same, far)
        result[f"tar_at_far_{far:.0e}".replace("e-0", "e-")] = tar
        result[f"threshold_at_far_{far:.0e}".replace("e-0", "e-")] = threshold
    result["best_accuracy"] = accuracy
    result["best_threshold"] = accuracy_threshold
    result["rank1"] = rank1_accuracy(gallery_emb, gallery_labels, probe_emb, probe_labels, mode)
    result["open_set_false_accept"], _ = open_set_false_accept(
        gallery_emb, gallery_labels, probe_emb, probe_labels, OPEN_SET_FRR, mode=mode
    )
    enrolled = np.isin(np.asarray(list(probe_labels), dtype=str), list(gallery_labels))
    _, nearest = nearest_identity(probe_emb[enrolled], gallery_emb, gallery_labels, mode)
    result["threshold_at_1pct_frr"] = threshold_at_frr(nearest, OPEN_SET_FRR)
    result.update(
        n_gallery=len(gallery_labels),
        n_probes=len(probe_labels),
        n_identities=len(set(labels)),
        n_genuine_pairs=int(same.sum()),
        n_impostor_pairs=int((~same).sum()),
        genuine_distance_mean=float(distances[same].mean()),
        impostor_distance_mean=float(distances[~same].mean()),
    )
    return result
