"""Confidence intervals over identities: is one model better than another on unseen people?

A model is judged on identities it never saw. Its images are not independent (a person's photos
share lighting, age and a face), so the unit of resampling is the *identity*: a bootstrap draw
picks ``n`` identities with replacement out of ``n`` and weighs every score by how often its
identities were drawn (:func:`compare`, :func:`interval`).

* :func:`identity_scores` computes one model's distances once, tagged with identities: every
  image pair (verification), and the decision distances the recogniser thresholds
  (:func:`model.metrics.decision_distances`: genuine probes and leave-one-identity-out
  strangers);
* :func:`weighted_metrics` computes the :data:`METRICS` under identity weights; with all
  weights one it reproduces :mod:`model.metrics` exactly. Weights: a genuine pair or a decision
  of identity ``k`` weighs ``w[k]``, an impostor pair ``(a, b)`` weighs ``w[a] * w[b]``;
* ``stranger_accept``/``genuine_accept`` are *cross-fitted*: identities are split into two fixed
  folds, each fold is judged at the threshold calibrated (:func:`calibrated_threshold`) on the
  other fold's strangers, so they measure what a threshold set on some people does on new ones;
* :func:`compare` applies the same draws to two models (a paired bootstrap) and returns a
  percentile interval of each change (:class:`MetricChange`).

Pure numpy and deterministic for a seed: no model, no I/O, no logging.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from model.metrics import OPEN_SET_FRR, decision_distances, pair_scores, round_down_threshold

#: The metrics that judge a model: (key, +1 if higher is better else -1). A better model must
#: show no loss on any of them and a gain on one.
HEADLINE = (("tar_at_far_1e-3", 1), ("eer", -1), ("open_set_accept", -1), ("genuine_accept", 1))
#: Guarded, not headline: strangers accepted at the model's own calibrated threshold. The
#: calibration pins it near the target rate for any model, so its change is noise around zero
#: that no interval over tens of identities can exclude; a rise is refused instead
#: (:func:`model.training.decision.decide`).
GUARDED = (("stranger_accept", -1),)
#: Every metric :func:`compare` and :func:`interval` report.
METRICS = HEADLINE + GUARDED
#: The pairwise false accept rate of ``tar_at_far_1e-3``.
PAIR_FAR = 1e-3
#: Calibrated thresholds never exceed this (two unit vectors are at most 2 apart).
THRESHOLD_CAP = 2.0
#: Draws retried at most this many times over (plus 100) before giving up on undefined metrics.
RETRY_FACTOR = 10
_TOLERANCE = 1e-9  # as model.metrics.threshold_at_far: cumulative weight within far*total + tol
_CHUNK = 16384  # first block of sorted pairs scanned per draw; doubles while more is needed


@dataclass(frozen=True)
class IdentityScores:
    """One model's distances on an evaluation set, grouped by identity (for identity bootstrap).

    Built by :func:`identity_scores`; treat the arrays as read-only (the sorted orders used by
    the metrics are cached on first use).
    """

    identities: tuple[str, ...]  # sorted identity names; index = identity id
    pair_distances: np.ndarray  # float64, every unordered pair of the pooled gallery+probe images
    pair_a: np.ndarray  # int identity index of each pair's first image
    pair_b: np.ndarray  # int identity index of the second (== pair_a for genuine pairs)
    genuine: np.ndarray  # float64 decision distances of probes to their own identity
    genuine_identity: np.ndarray  # int identity index per genuine decision
    stranger: np.ndarray  # float64 leave-one-identity-out winner distances
    stranger_identity: np.ndarray  # int identity index per stranger decision
    fold: np.ndarray  # int 0/1 per identity, for cross-fitted calibration
    mode: str

    def __post_init__(self) -> None:
        n = len(self.identities)
        checks = (
            ("pair_a", len(self.pair_a), len(self.pair_distances)),
            ("pair_b", len(self.pair_b), len(self.pair_distances)),
            ("genuine_identity", len(self.genuine_identity), len(self.genuine)),
            ("stranger_identity", len(self.stranger_identity), len(self.stranger)),
            ("fold", len(self.fold), n),
        )
        for name, got, expected in checks:
            if got != expected:
                raise ValueError(f"IdentityScores.{name} has {got} entries, expected {expected}")
        for name in ("pair_a", "pair_b", "genuine_identity", "stranger_identity"):
            index = np.asarray(getattr(self, name))
            if len(index) and (index.min() < 0 or index.max() >= n):
                raise ValueError(f"IdentityScores.{name} refers to an identity outside 0..{n - 1}")

    @cached_property
    def _evaluator(self) -> _Evaluator:
        return _Evaluator(self)


@dataclass(frozen=True)
class MetricChange:
    """The change of one metric from ``before`` to ``after`` with its bootstrap interval."""

    key: str
    better: int  # +1 higher is better, -1 lower is better
    before: float  # point estimates (all weights one)
    after: float
    low: float  # percentile interval of (after - before) over bootstrap draws
    high: float
    level: float = 0.95  # the interval's coverage

    @property
    def improvement(self) -> float:
        """The point change, signed so that positive is better."""
        return self.better * (self.after - self.before)

    @property
    def improvement_low(self) -> float:
        """The worst plausible improvement (negative: the interval admits a loss)."""
        return self.low if self.better > 0 else -self.high

    @property
    def improvement_high(self) -> float:
        """The best plausible improvement."""
        return self.high if self.better > 0 else -self.low


# --- scores -------------------------------------------------------------------------------


def identity_scores(
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[str],
    probe_emb: np.ndarray,
    probe_labels: Sequence[str],
    mode: str,
    seed: int = 0,
) -> IdentityScores:
    """All distances one model's metrics need, tagged with identities.

    Pairs are every unordered pair of the pooled gallery and probe embeddings (as
    :func:`model.metrics.pair_scores`); decisions are exactly
    :func:`model.metrics.decision_distances` in ``mode``. ``seed`` only picks the two folds
    of the cross-fitted calibration (stable per identity name). Needs two gallery identities.
    """
    gallery_labels = np.asarray(list(gallery_labels), dtype=str)
    probe_labels = np.asarray(list(probe_labels), dtype=str)
    enrolled = np.unique(gallery_labels)
    if len(enrolled) < 2:
        raise ValueError(
            f"identity scores need at least two identities in the gallery, got {len(enrolled)}"
        )
    if not np.isin(probe_labels, enrolled).any():
        raise ValueError("identity scores need probes of an identity of the gallery")
    gallery_emb = _rows(gallery_emb, len(gallery_labels), "gallery")
    probe_emb = _rows(probe_emb, len(probe_labels), "probe")
    genuine, stranger = decision_distances(
        gallery_emb, gallery_labels, probe_emb, probe_labels, mode
    )
    pooled_labels = np.concatenate([gallery_labels, probe_labels])
    names = np.unique(pooled_labels)
    index = np.searchsorted(names, pooled_labels).astype(np.int32)
    distances, _ = pair_scores(np.concatenate([gallery_emb, probe_emb]), pooled_labels)
    i, j = np.triu_indices(len(pooled_labels), k=1)
    # decision_distances: genuine in probe order (enrolled probes only); strangers per sorted
    # identity, its gallery images then its probes
    genuine_identity = np.searchsorted(names, probe_labels[np.isin(probe_labels, enrolled)])
    per_identity = np.bincount(index, minlength=len(names))
    stranger_identity = np.repeat(np.arange(len(names)), per_identity)
    identities = tuple(str(n) for n in names)
    return IdentityScores(
        identities=identities,
        pair_distances=np.asarray(distances, dtype=np.float64),
        pair_a=index[i],
        pair_b=index[j],
        genuine=np.asarray(genuine, dtype=np.float64),
        genuine_identity=genuine_identity.astype(np.int32),
        stranger=np.asarray(stranger, dtype=np.float64),
        stranger_identity=stranger_identity.astype(np.int32),
        fold=_folds(identities, seed),
        mode=mode,
    )


def _rows(embeddings: np.ndarray, n: int, what: str) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        emb = emb.reshape(n, -1)
    if len(emb) != n:
        raise ValueError(f"{n} {what} labels for {len(emb)} {what} embeddings")
    return emb


def _folds(identities: Sequence[str], seed: int) -> np.ndarray:
    """0/1 per identity: sorted by sha256(f"{seed}:fold:{name}"), then alternately assigned."""

    def key(k: int) -> tuple[str, str]:
        name = identities[k]
        return hashlib.sha256(f"{seed}:fold:{name}".encode()).hexdigest(), name

    fold = np.zeros(len(identities), dtype=np.int64)
    for rank, k in enumerate(sorted(range(len(identities)), key=key)):
        fold[k] = rank % 2
    return fold


# --- thresholds -----------------------------------------------------------------------------


def _largest_threshold(values: np.ndarray, cumulative: np.ndarray, far: float) -> float:
    """The largest threshold accepting a weighted fraction of at most ``far``.

    ``values`` are sorted ascending and ``cumulative`` is the running sum of their weights
    (non-negative). The accepted values are the longest prefix whose cumulative weight is at
    most ``far * total`` (plus a tolerance); the threshold sits just below the next value, so a
    block of equal values is accepted all together or not at all (``inf`` when all fit).
    """
    k = int(np.searchsorted(cumulative, far * cumulative[-1] + _TOLERANCE, side="right"))
    if k >= len(values):
        return float("inf")
    return float(np.nextafter(values[k], -np.inf))


def calibrated_threshold(
    stranger: np.ndarray, far: float, weights: np.ndarray | None = None
) -> float:
    """The largest threshold accepting at most a (weighted) fraction ``far`` of strangers.

    Ties are accepted together or not at all; the result is capped at 2.0 and rounded down to 4
    decimals, so it never accepts more than the exact one. With all weights one this is what
    ``attendance evaluate --calibrate`` writes. 2.0 when no stranger has a positive weight.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far={far} must be within [0, 1]")
    stranger = np.asarray(stranger, dtype=np.float64).ravel()
    if weights is None:
        weights = np.ones(len(stranger))
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != stranger.shape:
        raise ValueError(f"{len(weights)} weights for {len(stranger)} stranger distances")
    if np.any(weights < 0):
        raise ValueError("weights must not be negative")
    if not np.any(weights > 0):
        return THRESHOLD_CAP
    order = np.argsort(stranger, kind="stable")
    return _capped(_largest_threshold(stranger[order], np.cumsum(weights[order]), far))


def _capped(threshold: float) -> float:
    return round_down_threshold(min(threshold, THRESHOLD_CAP))


# --- metrics ----------------------------------------------------------------------------------


def weighted_metrics(scores: IdentityScores, weights: np.ndarray, far: float) -> dict[str, float]:
    """The metrics of ``scores`` with identity ``k`` counted ``weights[k]`` times.

    * ``tar_at_far_1e-3``: genuine pairs accepted at the largest threshold whose weighted
      impostor-pair FAR is at most 1e-3 (:func:`model.metrics.tar_at_far`);
    * ``eer``: weighted pairwise equal error rate (:func:`model.metrics.equal_error_rate`);
    * ``stranger_accept``/``genuine_accept``: weighted shares of stranger/genuine decisions
      accepted, each identity at the threshold calibrated at ``far`` on the *other* fold's
      strangers (cross-fitted);
    * ``open_set_accept``: the weighted share of stranger decisions accepted at the threshold
      that rejects 1% of the genuine decisions (:func:`model.metrics.threshold_at_frr`), the
      "strangers accepted at 1% false rejection" of open-set evaluation;
    * ``threshold``: :func:`calibrated_threshold` at ``far`` on all strangers;
    * ``n_identities``, ``n_genuine``, ``n_strangers``: weighted counts (sums of weights) of
      identities, genuine and stranger decisions, the plain counts when all weights are one.

    A metric without anything to measure in this weighting (say no impostor pair has weight)
    is NaN.
    """
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if len(weights) != len(scores.identities):
        raise ValueError(f"{len(weights)} weights for {len(scores.identities)} identities")
    if np.any(weights < 0):
        raise ValueError("weights must not be negative")
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far={far} must be within [0, 1]")
    return scores._evaluator.metrics(weights, far)


def point_metrics(scores: IdentityScores, far: float) -> dict[str, float]:
    """:func:`weighted_metrics` with every identity counted once (the point estimates)."""
    return weighted_metrics(scores, np.ones(len(scores.identities)), far)


class _Evaluator:
    """The sorted orders of one :class:`IdentityScores`, so a draw only gathers and sums.

    Reuses its running-sum buffers between calls: not for concurrent use from threads.
    """

    def __init__(self, scores: IdentityScores) -> None:
        n = len(scores.identities)
        self.n = n
        a = np.asarray(scores.pair_a, dtype=np.int64)
        b = np.asarray(scores.pair_b, dtype=np.int64)
        same = a == b
        code = np.minimum(a, b) * n + np.maximum(a, b)  # identity pair, one cell of an n*n table
        code = code.astype(np.int32 if n * n < 2**31 else np.int64)
        order = np.argsort(scores.pair_distances, kind="stable")
        # every pair, by distance (EER), with the totals per identity pair
        self.pair_d = np.asarray(scores.pair_distances, dtype=np.float64)[order]
        self.pair_code = code[order]
        self.impostor_count = np.bincount(code[~same], minlength=n * n).astype(np.float64)
        self.genuine_count = np.bincount(a[same], minlength=n).astype(np.float64)
        # impostor pairs alone (the FAR threshold) and genuine pairs alone (TAR)
        impostor = ~same[order]
        self.imp_d = self.pair_d[impostor]
        self.imp_code = self.pair_code[impostor]
        self.gen_d = self.pair_d[~impostor]
        self.gen_id = a[order][~impostor]
        self._cum_g = np.empty(len(self.pair_d))
        self._cum_i = np.empty(len(self.pair_d))
        # decisions, sorted, per fold and (strangers) all together
        fold = np.asarray(scores.fold, dtype=np.int64)
        self.stranger = [
            _sorted(scores.stranger, scores.stranger_identity, fold == f) for f in (0, 1)
        ]
        self.genuine = [_sorted(scores.genuine, scores.genuine_identity, fold == f) for f in (0, 1)]
        self.stranger_all = _sorted(scores.stranger, scores.stranger_identity, np.ones(n, bool))
        self.genuine_all = _sorted(scores.genuine, scores.genuine_identity, np.ones(n, bool))

    # -- one weighting ---------------------------------------------------------------------
    def metrics(self, w: np.ndarray, far: float) -> dict[str, float]:
        n = self.n
        impostor_table = np.outer(w, w).ravel()
        impostor_table[:: n + 1] = 0.0
        genuine_table = np.zeros(n * n)
        genuine_table[:: n + 1] = w
        total_i = float(self.impostor_count @ impostor_table)
        total_g = float(self.genuine_count @ w)
        if total_i > 0 and total_g > 0:
            tar = self._tar(w, impostor_table, total_i, total_g)
            eer = self._eer(impostor_table, genuine_table, total_i, total_g)
        else:
            tar = eer = math.nan
        stranger_accept, genuine_accept = self._cross_fitted(w, far)
        values, ids = self.stranger_all
        ws = w[ids]
        return {
            "tar_at_far_1e-3": tar,
            "eer": eer,
            "open_set_accept": self._open_set(w, OPEN_SET_FRR),
            "stranger_accept": stranger_accept,
            "genuine_accept": genuine_accept,
            "threshold": _capped(_largest_threshold(values, np.cumsum(ws), far))
            if np.any(ws > 0)
            else THRESHOLD_CAP,
            "n_identities": float(w.sum()),
            "n_genuine": float(sum(w[g[1]].sum() for g in self.genuine)),
            "n_strangers": float(ws.sum()),
        }

    def _tar(self, w: np.ndarray, table: np.ndarray, total_i: float, total_g: float) -> float:
        """TAR at the largest threshold with weighted impostor FAR <= PAIR_FAR."""
        limit = PAIR_FAR * total_i + _TOLERANCE
        threshold = math.inf
        carry, start, size = 0.0, 0, _CHUNK
        while start < len(self.imp_d):
            chunk = table[self.imp_code[start : start + size]]
            chunk[0] += carry
            cum = np.cumsum(chunk)
            k = int(np.searchsorted(cum, limit, side="right"))
            if k < len(cum):  # the first impostor that no longer fits (it has a weight)
                threshold = float(np.nextafter(self.imp_d[start + k], -np.inf))
                break
            carry, start, size = float(cum[-1]), start + size, size * 2
        accepted = int(np.searchsorted(self.gen_d, threshold, side="right"))
        return float(w[self.gen_id[:accepted]].sum() / total_g)

    def _eer(
        self, table_i: np.ndarray, table_g: np.ndarray, total_i: float, total_g: float
    ) -> float:
        """Weighted EER, interpolated as :func:`model.metrics.equal_error_rate`."""
        cum_i, cum_g, done = self._cum_i, self._cum_g, 0
        size = _CHUNK

        def extend(upto: int) -> None:  # running sums computed through index ``upto - 1``
            nonlocal done
            if upto <= done:
                return
            codes = self.pair_code[done:upto]
            gi, gg = table_i[codes], table_g[codes]
            if done:
                gi[0] += cum_i[done - 1]
                gg[0] += cum_g[done - 1]
            np.cumsum(gi, out=cum_i[done:upto])
            np.cumsum(gg, out=cum_g[done:upto])
            done = upto

        def diff(k: int) -> float:
            return cum_i[k] / total_i - (1.0 - cum_g[k] / total_g)

        first = len(self.pair_d) - 1  # diff reaches +1 at the end
        while done < len(self.pair_d):
            start = done
            extend(min(done + size, len(self.pair_d)))
            size *= 2
            seg = cum_i[start:done] / total_i - (1.0 - cum_g[start:done] / total_g)
            crossed = seg >= 0
            if crossed.any():
                first = start + int(np.argmax(crossed))
                break
        # ROC points sit at the ends of blocks of equal distances
        value = self.pair_d[first]
        end = int(np.searchsorted(self.pair_d, value, side="right")) - 1
        begin = int(np.searchsorted(self.pair_d, value, side="left"))
        extend(end + 1)
        far_k, diff_k = cum_i[end] / total_i, diff(end)
        if begin == 0:
            far_p, diff_p = 0.0, 0.0 - (1.0 - 0.0)
        else:
            far_p, diff_p = cum_i[begin - 1] / total_i, diff(begin - 1)
        alpha = -diff_p / (diff_k - diff_p)
        return float(far_p + alpha * (far_k - far_p))

    def _open_set(self, w: np.ndarray, frr: float) -> float:
        """Weighted share of strangers within the threshold rejecting ``frr`` of genuines."""
        values, ids = self.genuine_all
        wg = w[ids]
        total = float(wg.sum())
        strangers, sids = self.stranger_all
        ws = w[sids]
        if total <= 0 or not np.any(ws > 0):
            return math.nan
        cum = np.cumsum(wg)
        k = int(np.searchsorted(cum, total - frr * total - _TOLERANCE, side="left"))
        threshold = values[min(k, len(values) - 1)]
        accepted = float(ws[: np.searchsorted(strangers, threshold, side="right")].sum())
        return accepted / float(ws.sum())

    def _cross_fitted(self, w: np.ndarray, far: float) -> tuple[float, float]:
        """Stranger and genuine accept rates, each fold at the other fold's threshold."""
        accepted = {"stranger": 0.0, "genuine": 0.0}
        totals = {"stranger": 0.0, "genuine": 0.0}
        for f in (0, 1):
            other_values, other_ids = self.stranger[1 - f]
            other_w = w[other_ids]
            calibrable = bool(np.any(other_w > 0))
            threshold = (
                _capped(_largest_threshold(other_values, np.cumsum(other_w), far))
                if calibrable
                else math.nan
            )
            for kind, (values, ids) in (
                ("stranger", self.stranger[f]),
                ("genuine", self.genuine[f]),
            ):
                mine = w[ids]
                weight = float(mine.sum())
                if weight <= 0:
                    continue
                if not calibrable:  # people to judge but no strangers to calibrate on
                    return math.nan, math.nan
                totals[kind] += weight
                accepted[kind] += float(mine[: np.searchsorted(values, threshold, "right")].sum())
        return tuple(  # type: ignore[return-value]
            accepted[k] / totals[k] if totals[k] > 0 else math.nan for k in ("stranger", "genuine")
        )


def _sorted(
    values: np.ndarray, identity: np.ndarray, keep_identity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, identity)`` of the decisions whose identity is kept, sorted by value."""
    values = np.asarray(values, dtype=np.float64)
    identity = np.asarray(identity, dtype=np.int64)
    mask = keep_identity[identity]
    order = np.argsort(values[mask], kind="stable")
    return values[mask][order], identity[mask][order]


# --- bootstrap --------------------------------------------------------------------------------


def _draws(
    evaluators: Sequence[_Evaluator], far: float, draws: int, seed: int, keys: Sequence[str]
) -> np.ndarray:
    """``(len(evaluators), draws, len(keys))`` metrics over the same identity draws.

    A draw in which any of ``keys`` is undefined for any evaluator is redrawn, at most
    ``RETRY_FACTOR * draws + 100`` draws in all.
    """
    if draws < 1:
        raise ValueError(f"draws={draws} must be at least 1")
    n = evaluators[0].n
    rng = np.random.default_rng(seed)
    probabilities = np.full(n, 1.0 / n)
    out = np.empty((len(evaluators), draws, len(keys)))
    done = attempts = 0
    while done < draws:
        if attempts >= RETRY_FACTOR * draws + 100:
            raise ValueError(
                f"only {done} of {attempts} bootstrap draws over {n} identities had every "
                "metric defined; too few identities (or images per identity) to resample"
            )
        attempts += 1
        w = rng.multinomial(n, probabilities).astype(np.float64)
        if np.count_nonzero(w) < 2:
            continue  # one identity: no impostor pair, no calibration fold
        rows = []
        for ev in evaluators:
            m = ev.metrics(w, far)
            rows.append([m[k] for k in keys])
            if not all(math.isfinite(v) for v in rows[-1]):
                break
        else:
            out[:, done] = rows
            done += 1
    return out


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must be within (0, 1)")


def _point(scores: IdentityScores, far: float) -> dict[str, float]:
    point = point_metrics(scores, far)
    missing = [k for k, _ in METRICS if not math.isfinite(point[k])]
    if missing:
        raise ValueError(f"cannot measure {', '.join(missing)} on this evaluation set")
    return point


def compare(
    before: IdentityScores,
    after: IdentityScores,
    far: float,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, MetricChange]:
    """The change of every metric of :data:`METRICS` from ``before`` to ``after``.

    Both are scored on the same identities; the same identity draws weigh both (a paired
    bootstrap), and the interval is the ``level`` percentile interval of ``after - before``.
    Deterministic for a ``seed``.
    """
    if before.identities != after.identities:
        raise ValueError("before and after were scored on different identities")
    if not np.array_equal(before.fold, after.fold):
        raise ValueError("before and after use different calibration folds (fold seed)")
    _check_level(level)
    point_before, point_after = _point(before, far), _point(after, far)
    keys = [k for k, _ in METRICS]
    values = _draws([before._evaluator, after._evaluator], far, draws, seed, keys)
    deltas = values[1] - values[0]
    changes = {}
    for column, (key, better) in enumerate(METRICS):
        low, high = _percentiles(deltas[:, column], level)
        changes[key] = MetricChange(
            key, better, point_before[key], point_after[key], low, high, level
        )
    return changes


def interval(
    scores: IdentityScores,
    far: float,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float, float]]:
    """``(point, low, high)`` of one model's :data:`METRICS` and ``threshold``."""
    _check_level(level)
    point = _point(scores, far)
    keys = [k for k, _ in METRICS] + ["threshold"]
    values = _draws([scores._evaluator], far, draws, seed, keys)[0]
    return {
        key: (point[key], *_percentiles(values[:, column], level))
        for column, key in enumerate(keys)
    }
