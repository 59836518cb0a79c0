"""model.training.decision: accept only when no interval admits a loss and one shows a gain."""

from __future__ import annotations

import math

import pytest

from model.confidence import METRICS, MetricChange
from model.training.decision import Decision, decide, describe

BETTER = dict(METRICS)


def change(key: str, before: float, after: float, low: float, high: float) -> MetricChange:
    return MetricChange(key, BETTER[key], before, after, low, high)


def same() -> dict[str, MetricChange]:
    """Every headline metric unchanged, with intervals of exactly zero."""
    return {key: change(key, 0.5, 0.5, 0.0, 0.0) for key in BETTER}


def test_too_few_identities_decide_nothing() -> None:
    gain = {**same(), "eer": change("eer", 0.1, 0.05, -0.07, -0.03)}
    d = decide(gain, n_identities=3, min_identities=20)
    assert d == Decision(False, (), (), d.reason, too_few=True, needed=20)
    assert d.reason == (
        "only 3 identities the training never saw (at least 20 needed to measure a change)"
    )
    assert decide(gain, n_identities=20, min_identities=20).accepted
    assert decide({}, n_identities=1, min_identities=1).needed == 2  # nothing to compare
    assert decide(same(), n_identities=50, min_identities=20).too_few is False


def test_no_change_is_not_accepted() -> None:
    d = decide(same(), 30, 20)
    assert (d.accepted, d.improved, d.regressed) == (False, (), ())
    assert d.reason == "no change the intervals can show"
    # a gain the interval cannot separate from zero (a third of the draws left it out)
    maybe = {**same(), "tar_at_far_1e-3": change("tar_at_far_1e-3", 0.8, 0.85, 0.0, 0.1)}
    d = decide(maybe, 30, 20)
    assert (d.accepted, d.improved, d.regressed) == (False, (), ())


@pytest.mark.parametrize(
    ("key", "before", "after", "low", "high"),
    [
        ("tar_at_far_1e-3", 0.80, 0.85, 0.01, 0.09),  # higher is better
        ("genuine_accept", 0.90, 0.95, 0.02, 0.08),
        ("eer", 0.10, 0.05, -0.08, -0.02),  # lower is better: the change is negative
        ("open_set_accept", 0.30, 0.20, -0.15, -0.04),
    ],
)
def test_a_shown_gain_and_no_possible_loss_is_accepted(key, before, after, low, high) -> None:
    d = decide({**same(), key: change(key, before, after, low, high)}, 30, 20)
    assert d.accepted and d.improved == (key,) and d.regressed == ()
    assert d.reason.startswith("better on: ")


@pytest.mark.parametrize(
    ("key", "before", "after", "low", "high"),
    [
        ("tar_at_far_1e-3", 0.80, 0.85, -0.001, 0.09),  # the point gains, the interval not
        ("genuine_accept", 0.90, 0.89, -0.03, 0.01),
        ("eer", 0.10, 0.09, -0.03, 0.001),  # lower is better: a loss is a positive change
        ("open_set_accept", 0.20, 0.21, -0.02, 0.03),
        ("stranger_accept", 0.001, 0.002, 0.0005, 0.004),  # guarded: the interval is a rise
    ],
)
def test_an_interval_admitting_a_loss_rejects(key, before, after, low, high) -> None:
    tar_gain = change("tar_at_far_1e-3", 0.8, 0.9, 0.05, 0.15)
    changes = {**same(), "tar_at_far_1e-3": tar_gain, key: change(key, before, after, low, high)}
    d = decide(changes, 30, 20)
    assert not d.accepted and d.regressed == (key,)
    assert d.reason.startswith("may be worse on: ")


def test_the_reason_names_each_possible_loss_with_its_interval() -> None:
    changes = {
        **same(),
        "tar_at_far_1e-3": change("tar_at_far_1e-3", 0.90, 0.888, -0.03, 0.004),
        "eer": change("eer", 0.05, 0.06, 0.002, 0.02),
        "genuine_accept": change("genuine_accept", 0.8, 0.9, 0.05, 0.15),
    }
    d = decide(changes, 30, 20)
    assert d.regressed == ("tar_at_far_1e-3", "eer") and d.improved == ("genuine_accept",)
    assert d.reason == (
        "may be worse on: TAR@1e-3 (change -0.0120, 95% interval -0.0300..+0.0040); "
        "EER (change +0.0100, 95% interval +0.0020..+0.0200)"
    )
    assert describe(MetricChange("eer", -1, 0.1, 0.08, -0.03, -0.01, level=0.9)) == (
        "EER (change -0.0200, 90% interval -0.0300..-0.0100)"
    )


def test_min_gain_applies_to_the_point_improvement() -> None:
    small = {**same(), "tar_at_far_1e-3": change("tar_at_far_1e-3", 0.9, 0.903, 0.001, 0.006)}
    assert decide(small, 30, 20).accepted
    d = decide(small, 30, 20, min_gain=0.005)
    assert not d.accepted and d.regressed == ()
    assert d.reason == "no change the intervals can show with a gain of at least 0.005"
    assert decide(small, 30, 20, min_gain=0.003 - 1e-9).accepted
    # min_gain never excuses a loss
    lossy = {**small, "eer": change("eer", 0.1, 0.0999, -0.001, 1e-6)}
    assert decide(lossy, 30, 20, min_gain=0.0).regressed == ("eer",)


def test_tolerance_and_unmeasured_intervals() -> None:
    rounding = {**same(), "eer": change("eer", 0.1, 0.1, -1e-15, 1e-15)}
    assert decide(rounding, 30, 20).regressed == ()  # float noise is no loss
    unmeasured = {**same(), "eer": change("eer", 0.1, 0.08, math.nan, math.nan)}
    assert decide(unmeasured, 30, 20).regressed == ("eer",)
    partial = same()
    del partial["genuine_accept"]
    d = decide(partial, 30, 20)
    assert not d.accepted and "genuine accepted" in d.reason


def test_strangers_at_the_calibrated_threshold_are_guarded_not_headline() -> None:
    """Calibration pins the rate near its target, so its interval straddles zero: that is no
    loss, and a fall is no gain; a point rise beyond the target rate is refused."""
    gain = change("tar_at_far_1e-3", 0.8, 0.9, 0.05, 0.15)
    noise = change("stranger_accept", 0.0010, 0.0012, -0.003, 0.003)
    d = decide({**same(), "tar_at_far_1e-3": gain, "stranger_accept": noise}, 30, 20, 0, 1e-3)
    assert d.accepted and d.improved == ("tar_at_far_1e-3",)
    fall = change("stranger_accept", 0.004, 0.001, -0.005, -0.001)
    d = decide({**same(), "stranger_accept": fall}, 30, 20, 0, 1e-3)
    assert not d.accepted and d.improved == () and d.regressed == ()
    rise = change("stranger_accept", 0.0010, 0.0025, -0.002, 0.004)  # +0.0015 > 1e-3
    d = decide({**same(), "tar_at_far_1e-3": gain, "stranger_accept": rise}, 30, 20, 0, 1e-3)
    assert not d.accepted and d.regressed == ("stranger_accept",)
    assert "strangers accepted at the calibrated threshold (change +0.0015" in d.reason
    assert decide(
        {**same(), "tar_at_far_1e-3": gain, "stranger_accept": rise}, 30, 20, 0, 2e-3
    ).accepted
