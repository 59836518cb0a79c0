"""The levers of the issue "Strangers recorded as employees", measured on embeddings alone.

Used by ``bench/bench_open_set.py --levers``. Every lever is a *scorer*: given an enrolled
gallery (embeddings, labels, detection scores) and probe embeddings, it returns for each
probe the winning gallery identity and a score, lower meaning "more surely that person"
(today's scorer is the distance to the person's template). Two figures per lever and set:

* strangers accepted at 1% (and 5%) false rejection, leave-one-identity-out exactly as
  ``model.metrics.open_set_false_accept``: per left-out person L, the threshold rejecting
  that share of the other people's probes (by their winning score), and the share of L's
  photos (gallery and probes) accepted at it; the mean over people;
* the same with the operating threshold of :func:`threshold_sweep` (rows of thresholds).

Pure numpy on cached embeddings: seconds per set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.vectors import euclidean_distances, identity_templates, l2_normalize


@dataclass(frozen=True)
class Split:
    """One set's protocol split: gallery and probe embeddings, labels, detection scores."""

    gallery: np.ndarray
    gallery_labels: np.ndarray
    gallery_scores: np.ndarray
    probes: np.ndarray
    probe_labels: np.ndarray


# (gallery, labels, detection scores, background templates, probes) -> (winner names, scores)
Scorer = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


def _per_identity(gallery: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None):
    names = np.unique(labels)
    rows = []
    for name in names:
        mine = labels == name
        w = np.ones(mine.sum()) if weights is None else weights[mine]
        rows.append((gallery[mine] * w[:, None]).sum(axis=0))
    return names, l2_normalize(np.stack(rows))


def template(gallery, labels, scores, background, probes):
    """Today: the distance to each person's renormalised mean embedding."""
    names, templates = identity_templates(gallery, labels.tolist())
    d = euclidean_distances(probes, templates)
    best = d.argmin(axis=1)
    return np.asarray(names)[best], d[np.arange(len(d)), best]


def quality_weighted(gallery, labels, scores, background, probes):
    """Templates weighting each enrolment photo by its detection score's margin above 0.9."""
    weights = np.clip((np.asarray(scores, np.float64) - 0.9) / 0.1, 0.05, 1.0)
    names, templates = _per_identity(gallery, labels, weights)
    d = euclidean_distances(probes, templates)
    best = d.argmin(axis=1)
    return names[best], d[np.arange(len(d)), best]


def _min_over(probes, gallery, labels, reduce: Callable[[np.ndarray], np.ndarray]):
    names = np.unique(labels)
    d = euclidean_distances(probes, gallery)
    per = np.stack([reduce(d[:, labels == n]) for n in names], axis=1)
    best = per.argmin(axis=1)
    return names[best], per[np.arange(len(per)), best]


def nearest_photo(gallery, labels, scores, background, probes):
    """One template per enrolment photo (every pose its own cluster): the nearest photo."""
    return _min_over(probes, gallery, labels, lambda d: d.min(axis=1))


def two_clusters(gallery, labels, scores, background, probes):
    """Two pose clusters per person (2-means on the enrolment photos): the nearer one."""
    names = np.unique(labels)
    centres, owners = [], []
    for name in names:
        mine = gallery[labels == name]
        if len(mine) < 4:
            centres.append(l2_normalize(mine.mean(axis=0, keepdims=True)))
            owners.append(name)
            continue
        a, b = _two_means(mine)
        for part in (a, b):
            centres.append(l2_normalize(mine[part].mean(axis=0, keepdims=True)))
            owners.append(name)
    return _min_over(probes, np.concatenate(centres), np.asarray(owners), lambda d: d.min(axis=1))


def _two_means(x: np.ndarray, rounds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    d = euclidean_distances(x, x)
    i, j = np.unravel_index(d.argmax(), d.shape)
    centres = x[[i, j]]
    for _ in range(rounds):
        near = euclidean_distances(x, centres).argmin(axis=1)
        if near.min() == near.max():
            break
        centres = np.stack([x[near == 0].mean(axis=0), x[near == 1].mean(axis=0)])
    return near == 0, near == 1


def spread_adjusted(gallery, labels, scores, background, probes):
    """A threshold per person from their enrolment spread: the distance minus (the person's
    leave-one-out spread minus the gallery's mean spread)."""
    names, templates = identity_templates(gallery, labels.tolist())
    spread = []
    for name in names:
        mine = gallery[labels == name]
        loo = []
        for k in range(len(mine)):
            rest = np.delete(mine, k, axis=0)
            loo.append(np.linalg.norm(mine[k] - l2_normalize(rest.mean(axis=0, keepdims=True))[0]))
        spread.append(np.mean(loo) if loo else 0.0)
    spread = np.asarray(spread)
    d = euclidean_distances(probes, templates)
    best = d.argmin(axis=1)
    return np.asarray(names)[best], d[np.arange(len(d)), best] - (spread - spread.mean())[best]


def _cohort(k: int) -> Scorer:
    def cohort(gallery, labels, scores, background, probes):
        names, templates = identity_templates(gallery, labels.tolist())
        d = euclidean_distances(probes, templates)
        best = d.argmin(axis=1)
        rows = np.arange(len(d))
        others = np.concatenate([d, euclidean_distances(probes, background)], axis=1)
        others[rows, best] = np.inf
        near = np.sort(others, axis=1)[:, : min(k, others.shape[1] - 1)]
        return np.asarray(names)[best], d[rows, best] - near.mean(axis=1)

    cohort.__doc__ = (
        f"Cohort-normalised: the distance minus the mean of the probe's {k} nearest other faces "
        "(the other enrolled templates and the sample people as a fixed background)."
    )
    return cohort


def runner_up_ratio(gallery, labels, scores, background, probes):
    """The runner-up margin as a ratio: nearest template distance / second nearest."""
    names, templates = identity_templates(gallery, labels.tolist())
    d = euclidean_distances(probes, templates)
    order = np.argsort(d, axis=1)
    rows = np.arange(len(d))
    return np.asarray(names)[order[:, 0]], d[rows, order[:, 0]] / d[rows, order[:, 1]]


LEVERS: dict[str, Scorer] = {
    "template (today)": template,
    "quality-weighted template (detection score)": quality_weighted,
    "nearest enrolment photo (one template per pose)": nearest_photo,
    "two pose clusters per person": two_clusters,
    "per-person threshold from enrolment spread": spread_adjusted,
    "cohort-normalised, 3 nearest": _cohort(3),
    "cohort-normalised, 10 nearest": _cohort(10),
    "runner-up ratio d1/d2": runner_up_ratio,
}


def _threshold_at_frr(scores: np.ndarray, frr: float) -> float:
    ordered = np.sort(scores)
    rejected = int(math.floor(frr * len(ordered) + 1e-9))
    return float(ordered[len(ordered) - 1 - rejected])


def strangers_at_frr(split: Split, scorer: Scorer, background: np.ndarray, frr: float) -> float:
    """Mean over left-out people of their photos accepted at the threshold that rejects
    ``frr`` of the other people's probes (``model.metrics.open_set_false_accept``'s protocol,
    with ``scorer`` in place of the template distance)."""
    rates = []
    for left_out in np.unique(split.gallery_labels):
        keep = split.gallery_labels != left_out
        genuine = split.probe_labels != left_out
        if not genuine.any() or len(np.unique(split.gallery_labels[keep])) < 2:
            continue
        args = (split.gallery[keep], split.gallery_labels[keep], split.gallery_scores[keep])
        _, score = scorer(*args, background, split.probes[genuine])
        threshold = _threshold_at_frr(score, frr)
        strangers = np.concatenate(
            [split.gallery[~keep], split.probes[split.probe_labels == left_out]]
        )
        _, stranger_score = scorer(*args, background, strangers)
        rates.append(float(np.mean(stranger_score <= threshold)))
    return float(np.mean(rates))


def lever_table(
    splits: dict[str, Split],
    backgrounds: dict[str, np.ndarray],
    extra: dict[str, dict[str, Split]] | None = None,
    frrs: Sequence[float] = (0.01, 0.05),
) -> list[str]:
    """Markdown rows: strangers accepted at each FRR, per lever and set (``extra``: levers
    that change the embeddings, e.g. flip averaging, given as their own splits)."""
    names = list(splits)
    head = ["lever", *[f"{n} @{100 * f:g}% FRR" for f in frrs for n in names]]
    lines = [
        "## Levers, per photo: strangers accepted at a fixed false rejection",
        "",
        "Leave-one-identity-out as `open_set_false_accept`, each lever's score in place of "
        "the template distance (lower is better; bench/open_set_levers.py).",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for lever, scorer in LEVERS.items():
        cells = [
            f"{100 * strangers_at_frr(splits[n], scorer, backgrounds[n], f):.1f}%"
            for f in frrs
            for n in names
        ]
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    for lever, variant in (extra or {}).items():
        cells = [
            f"{100 * strangers_at_frr(variant[n], template, backgrounds[n], f):.1f}%"
            if n in variant
            else "-"
            for f in frrs
            for n in names
        ]
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    return lines


def operating_points(split: Split, threshold: float, shows: int = 3) -> dict[str, float]:
    """At ``threshold`` (template distance): genuine probes accepted as themselves, people
    with at least one of ``shows`` photos accepted (expected, from their own rate), wrong
    person, and leave-one-out stranger photos accepted."""
    names, score = template(split.gallery, split.gallery_labels, split.gallery_scores,
                            np.zeros((0, split.gallery.shape[1])), split.probes)  # fmt: skip
    own = (names == split.probe_labels) & (score <= threshold)
    wrong = (names != split.probe_labels) & (score <= threshold)
    people = [p for p in np.unique(split.gallery_labels) if (split.probe_labels == p).any()]
    rates = [own[split.probe_labels == p].mean() for p in people]
    strangers = []
    for left_out in np.unique(split.gallery_labels):
        keep = split.gallery_labels != left_out
        photos = np.concatenate(
            [split.gallery[~keep], split.probes[split.probe_labels == left_out]]
        )
        none = np.zeros((0, photos.shape[1]))
        args = (split.gallery[keep], split.gallery_labels[keep], split.gallery_scores[keep])
        _, s = template(*args, none, photos)
        strangers.append(s <= threshold)
    accepted = np.concatenate(strangers)
    return {
        "genuine": float(own.mean()),
        "marked": float(np.mean([1 - (1 - r) ** shows for r in rates])),
        "wrong": float(wrong.mean()),
        "strangers": float(accepted.mean()),
        "n_strangers": float(len(accepted)),
    }


def threshold_sweep(splits: dict[str, Split], thresholds: Sequence[float]) -> list[str]:
    """Markdown rows: the operating points of each threshold on each set."""
    names = list(splits)
    lines = [
        "## Threshold sweep, per photo (template mode; strangers leave-one-identity-out)",
        "",
        "genuine photos accepted as themselves / people with one of 3 new photos accepted "
        "(expected) / wrong person / stranger photos accepted",
        "",
        "| threshold | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for t in thresholds:
        cells = []
        for n in names:
            p = operating_points(splits[n], t)
            cells.append(
                f"{100 * p['genuine']:.1f}% / {100 * p['marked']:.1f}% / "
                f"{100 * p['wrong']:.2f}% / {100 * p['strangers']:.2f}% "
                f"of {int(p['n_strangers'])}"
            )
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return lines


def pooled(splits: Sequence[tuple[str, Split]]) -> Split:
    """Several sets as one, each person's label prefixed with its set's name."""

    def labels(name: str, values: np.ndarray) -> np.ndarray:
        return np.asarray([f"{name}:{v}" for v in values])

    return Split(
        np.concatenate([s.gallery for _, s in splits]),
        np.concatenate([labels(n, s.gallery_labels) for n, s in splits]),
        np.concatenate([s.gallery_scores for _, s in splits]),
        np.concatenate([s.probes for _, s in splits]),
        np.concatenate([labels(n, s.probe_labels) for n, s in splits]),
    )


def calibrated(split: Split, far: float) -> tuple[float, int]:
    """The threshold ``attendance evaluate --calibrate --far FAR`` writes for this split
    (template mode, its decision distances), and the number of stranger decisions."""
    from model.metrics import decision_distances, round_down_threshold, threshold_at_far

    genuine, stranger = decision_distances(
        split.gallery, split.gallery_labels.tolist(), split.probes,
        split.probe_labels.tolist(), "template",
    )  # fmt: skip
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(stranger), bool)])
    threshold = threshold_at_far(np.concatenate([genuine, stranger]), same, far)
    return round_down_threshold(min(threshold, 2.0)), len(stranger)


def calibration_table(splits: dict[str, Split], far: float = 1e-3) -> list[str]:
    """Markdown rows: the calibrated threshold of each set, and of the sets pooled (a larger
    gallery meets each stranger more often, so pooling lowers it)."""
    rows = [(name, split) for name, split in splits.items()]
    easy = [(n, s) for n, s in rows if n != "hard24"]
    if len(easy) > 1:
        rows.append(("+".join(n for n, _ in easy), pooled(easy)))
    if len(easy) < len(splits) and len(splits) > 1:
        rows.append(("all pooled", pooled(list(splits.items()))))
    lines = [
        f"## Threshold calibrated at FAR {far:g} (as `attendance evaluate --calibrate`)",
        "",
        "| set | people | stranger decisions | threshold |",
        "|---|---:|---:|---:|",
    ]
    for name, split in rows:
        threshold, strangers = calibrated(split, far)
        people = len(np.unique(split.gallery_labels))
        lines.append(f"| {name} | {people} | {strangers} | {threshold:.4f} |")
    return lines
