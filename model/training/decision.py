"""The never-worse rule: :func:`decide` compares held-out figures before and after training.

A fine-tuned model is accepted only if no headline metric (TAR@FAR=1e-3, open-set false
accept, rank-1) gets worse at all and one of them improves by at least the minimum gain; when
all three tie, AUC must improve without EER getting worse. A tiny gain on a small held-out set
is noise, a loss is not shipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Held-out figures that decide acceptance: (key, +1 if higher is better else -1).
HEADLINE_METRICS = (("tar_at_far_1e-3", 1), ("open_set_false_accept", -1), ("rank1", 1))
#: Consulted only when every headline metric ties.
TIEBREAK_METRICS = (("auc", 1), ("eer", -1))
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    """Whether the fine-tuned model is better on the held-out split, and why."""

    accepted: bool
    improved: tuple[str, ...]
    regressed: tuple[str, ...]
    reason: str


def _direction_change(before: float, after: float, sign: int, min_gain: float = 0.0) -> int:
    """+1 if ``after`` is better by at least ``min_gain``, -1 if it is worse at all, else 0."""
    delta = (after - before) * sign
    if not (math.isfinite(before) and math.isfinite(after)):
        return 0 if before == after else (1 if delta > 0 else -1)
    if delta < -_TOLERANCE:
        return -1
    return 1 if delta >= max(min_gain, _TOLERANCE) else 0


def decide(before: dict[str, float], after: dict[str, float], min_gain: float = 0.0) -> Decision:
    """Accept only if no headline metric (TAR@FAR=1e-3, open-set false accept, rank-1) gets
    worse and one of them improves by at least ``min_gain``; when all three tie, AUC must
    improve by ``min_gain`` without EER getting worse. Any loss, however small, rejects:
    a gain of one pair on a small held-out set is noise, a loss is not shipped."""
    changes = {key: _direction_change(before[key], after[key], sign, min_gain) for key, sign in
               HEADLINE_METRICS + TIEBREAK_METRICS}  # fmt: skip
    headline = [key for key, _ in HEADLINE_METRICS]
    regressed = tuple(k for k in headline if changes[k] < 0)
    improved = tuple(k for k in headline if changes[k] > 0)
    if regressed:
        return Decision(False, improved, regressed, f"worse on {', '.join(regressed)}")
    if improved:
        return Decision(True, improved, (), f"better on {', '.join(improved)}, worse on none")
    if changes["auc"] > 0 and changes["eer"] >= 0:
        return Decision(True, ("auc",), (), "headline metrics tie; AUC improved")
    tie_regressed = tuple(k for k, _ in TIEBREAK_METRICS if changes[k] < 0)
    reason = "no held-out improvement"
    if min_gain > 0:
        reason += f" of at least {min_gain:g}"
    return Decision(False, (), tie_regressed, reason)
