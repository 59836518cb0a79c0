"""The never-worse rule: :func:`decide` judges a fine-tuned model by confidence intervals.

The before/after changes come from :func:`model.confidence.compare`: a paired bootstrap over
identities training never saw, one interval per metric. The model is accepted only when

* no headline interval (:data:`model.confidence.HEADLINE`: TAR@FAR=1e-3, EER, strangers
  accepted at 1% false rejection, genuine probes accepted at the calibrated threshold) admits a
  loss, and at least one shows a gain (whose point estimate is at least the minimum gain);
* strangers accepted at the model's own calibrated threshold, on people it was not calibrated
  on (:data:`model.confidence.GUARDED`), do not rise: neither by more than the calibration's
  target rate, nor so that the interval shows a rise. Calibration pins this rate near the
  target for any model, so its interval always straddles zero and cannot be asked to exclude
  a loss.

With too few unseen identities nothing is measured and nothing accepted: a change on a handful
of people is noise, a loss is not shipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.confidence import GUARDED, HEADLINE, METRICS, MetricChange

#: How each headline metric is named in reasons.
LABELS = {
    "tar_at_far_1e-3": "TAR@1e-3",
    "eer": "EER",
    "open_set_accept": "strangers accepted at 1% FRR",
    "stranger_accept": "strangers accepted at the calibrated threshold",
    "genuine_accept": "genuine accepted at the calibrated threshold",
}
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Decision:
    """Whether the fine-tuned model is shown better on unseen identities, and why."""

    accepted: bool
    improved: tuple[str, ...]
    regressed: tuple[str, ...]
    reason: str
    too_few: bool = False  # too few unseen identities to measure a change
    needed: int = 0  # how many are needed, when too_few


def describe(change: MetricChange) -> str:
    """``"TAR@1e-3 (change -0.0120, 95% interval -0.0300..+0.0040)"``."""
    return (
        f"{LABELS.get(change.key, change.key)} (change {change.after - change.before:+.4f}, "
        f"{100 * change.level:g}% interval {change.low:+.4f}..{change.high:+.4f})"
    )


def decide(
    changes: dict[str, MetricChange],
    n_identities: int,
    min_identities: int,
    min_gain: float = 0.0,
    stranger_margin: float = 0.0,
) -> Decision:
    """Accept only if no headline interval admits a loss, one shows a gain, and strangers
    accepted at the calibrated threshold do not rise (see the module docstring).

    * fewer than ``min_identities`` unseen identities (or fewer than 2): not accepted,
      ``too_few``, ``needed`` says how many;
    * *regressed*: the interval of the improvement reaches below zero (a loss is plausible);
      an interval that could not be computed counts as a possible loss;
    * *improved*: the whole interval is a gain and the point improvement is at least
      ``min_gain``;
    * a guarded metric regresses when its point estimate gets worse by more than
      ``stranger_margin`` (the calibration target) or its whole interval is a loss.
    """
    needed = max(min_identities, 2)
    if n_identities < needed:
        return Decision(
            False, (), (),
            f"only {n_identities} identities the training never saw (at least {needed} "
            "needed to measure a change)",
            too_few=True, needed=needed,
        )  # fmt: skip
    missing = [LABELS[key] for key, _ in METRICS if key not in changes]
    if missing:
        return Decision(False, (), (), f"no interval for {', '.join(missing)}; cannot judge")
    headline = [changes[key] for key, _ in HEADLINE]
    regressed = tuple(
        c.key
        for c in headline
        if not math.isfinite(c.improvement_low) or c.improvement_low < -_TOLERANCE
    )
    regressed += tuple(
        c.key
        for c in (changes[key] for key, _ in GUARDED)
        if not math.isfinite(c.improvement_high)
        or c.improvement < -(stranger_margin + _TOLERANCE)
        or c.improvement_high < -_TOLERANCE
    )
    improved = tuple(
        c.key
        for c in headline
        if c.improvement_low > _TOLERANCE and c.better * (c.after - c.before) >= min_gain
    )
    if regressed:
        worse = "; ".join(describe(changes[key]) for key in regressed)
        return Decision(False, improved, regressed, f"may be worse on: {worse}")
    if improved:
        better = "; ".join(describe(changes[key]) for key in improved)
        return Decision(True, improved, (), f"better on: {better}; no interval admits a loss")
    reason = "no change the intervals can show"
    if min_gain > 0:
        reason += f" with a gain of at least {min_gain:g}"
    return Decision(False, (), (), reason)
