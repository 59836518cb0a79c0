"""Who judges a fine-tune (model.training.run): the same face under two names, the starting
model's lineage, the sanity check of the calibrated threshold, the stranger margin and the
saved threshold record."""

from __future__ import annotations

import logging
import shutil
import warnings

import numpy as np
import pytest
from test_train import BASE, SIZE, _opts, make_identities, model, tiny  # noqa: F401 (fixtures)

from common.config import Config
from model.training.data import load_crops
from model.training.decision import Decision
from model.training.errors import TrainError
from model.training.run import (
    MIN_GENUINE_AT_THRESHOLD,
    SAME_PERSON_FRACTION,
    STRANGER_RESOLUTION,
    BaseModel,
    _check_threshold,
    base_lineage,
    run_training,
    same_person_names,
)
from model.training.split import HOLDOUT, SPLIT_NAME, TRAIN, unit_hash, update_split
from model.training.trainer import FineTuner

DIM = 32
FAST = {"epochs": 1, "bootstrap_draws": 100, "force": True, "min_identities": 2}


# --- same_person_names on controlled embeddings ----------------------------------------------


class FakeTuner:
    """What :func:`same_person_names` reads of a FineTuner: ``labels`` and ``embed_rows``."""

    def __init__(self, faces: dict[str, np.ndarray], per_id: int = 3, noise: float = 0.01):
        rng = np.random.default_rng(0)
        labels, rows = [], []
        for name, face in faces.items():
            for _ in range(per_id):
                v = face / np.linalg.norm(face) + rng.normal(0, noise, DIM)
                rows.append(v / np.linalg.norm(v))
                labels.append(name)
        self.labels = np.asarray(labels, dtype=str)
        self.vectors = np.asarray(rows, np.float32)

    def embed_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows)]


def _axis(k: int) -> np.ndarray:
    return np.eye(DIM)[k]


def _between(k: int, free: int, fraction: float) -> np.ndarray:
    """A unit vector ``fraction`` x sqrt(2) (the distance of two axes) away from axis ``k``,
    orthogonal to every other axis but ``free``."""
    distance = fraction * np.sqrt(2)
    cos = 1 - distance**2 / 2
    return cos * _axis(k) + np.sqrt(1 - cos**2) * _axis(free)


def test_same_person_names_drops_judges_that_are_someone_else():
    """Distinct faces are orthogonal axes (median template distance sqrt(2)). Judges copying a
    trained identity, or an earlier judge, are dropped; trained twins and distinct judges stay.
    """
    faces = {f"t{i}": _axis(i) for i in range(6)}  # trained identities, one face each
    faces["t_twin"] = _axis(5)  # two trained names, one face: never dropped (no judges)
    faces["j_copy"] = _axis(0)  # a judge who is trained t0 under another name
    # three judges, one face; "k_three" and "k_two" are closer to each other than to "k_one"
    faces["k_one"] = _axis(6)
    faces["k_two"] = faces["k_three"] = _between(6, 10, 0.2 * SAME_PERSON_FRACTION)
    faces["j_ok"] = _axis(7)
    faces["j_near"] = _between(1, 8, 0.8 * SAME_PERSON_FRACTION)  # close to t1: dropped
    faces["j_far"] = _between(2, 9, 1.2 * SAME_PERSON_FRACTION)  # not close enough: kept
    tuner = FakeTuner(faces)
    judges = ["k_two", "k_three", "k_one", "j_copy", "j_ok", "j_near", "j_far"]  # unsorted

    from common.vectors import identity_templates

    _, templates = identity_templates(tuner.vectors, tuner.labels.tolist())
    d = np.linalg.norm(templates[:, None] - templates[None], axis=2)
    assert np.median(d[np.triu_indices(len(d), 1)]) == pytest.approx(np.sqrt(2), abs=0.02)

    dropped = same_person_names(tuner, judges)
    # of "k_one" < "k_three" < "k_two" the first is kept and the others map to it: "k_two" not
    # to its nearest, "k_three", which is itself dropped
    assert dropped == {
        "j_copy": "t0",
        "j_near": "t1",
        "k_three": "k_one",
        "k_two": "k_one",
    }
    # nobody is dropped when the identities are judged as trained people
    assert same_person_names(tuner, []) == {}


def test_same_person_names_keeps_a_judge_matching_a_later_judge_and_needs_three_identities():
    faces = {"a": _axis(0), "b": _axis(1), "z_judge": _axis(2), "y_judge": _axis(2)}
    assert same_person_names(FakeTuner(faces), ["z_judge", "y_judge"]) == {"z_judge": "y_judge"}
    # a judge matching a trained identity is dropped, even if that one's name is later
    assert same_person_names(FakeTuner(faces), ["y_judge"]) == {"y_judge": "z_judge"}
    # three identities: the median is measured and a copy found
    three = {"a": _axis(0), "b": _axis(1), "judge": _axis(0)}
    assert same_person_names(FakeTuner(three), ["judge"]) == {"judge": "a"}
    # fewer than three: no median to measure against (and no warning about an empty one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = {"a": _axis(0), "judge": _axis(0)}
        assert same_person_names(FakeTuner(two), ["judge"]) == {}
        assert same_person_names(FakeTuner({"judge": _axis(0)}), ["judge"]) == {}


# --- the calibrated threshold's sanity check -------------------------------------------------


ACCEPTED = Decision(True, ("eer",), (), "better on: EER")
REJECTED = Decision(False, (), ("eer",), "may be worse on: EER")


@pytest.mark.parametrize(
    ("threshold", "genuine"), [(0.0, 1.0), (0.8, 0.0), (0.8, MIN_GENUINE_AT_THRESHOLD - 0.01)]
)
def test_an_unusable_threshold_refuses_an_accepted_model(threshold, genuine):
    checked = _check_threshold(ACCEPTED, threshold, genuine)
    assert not checked.accepted and not checked.too_few
    assert checked.improved == ACCEPTED.improved and checked.regressed == ACCEPTED.regressed
    assert "calibrated threshold" in checked.reason and f"{threshold:.4f}" in checked.reason


@pytest.mark.parametrize(
    ("decision", "threshold", "genuine"),
    [
        (REJECTED, 0.0, 0.0),  # already refused: unchanged
        (ACCEPTED, 0.8, MIN_GENUINE_AT_THRESHOLD),  # exactly enough genuine photos
        (ACCEPTED, 0.0001, 1.0),
    ],
)
def test_a_usable_threshold_or_a_rejection_is_left_alone(decision, threshold, genuine):
    assert _check_threshold(decision, threshold, genuine) is decision


# --- lineage ---------------------------------------------------------------------------------


def _save_base(cfg: Config, **meta):
    from model.versions import save_version

    tensors = {"Bottleneck/kernel": np.zeros((2, 2), np.float32)}
    return save_version(cfg, tensors, {"metrics": {}, **meta})


def test_base_lineage_reads_the_starting_version(workspace, caplog):
    assert base_lineage(workspace, BASE) == set()
    new = _save_base(workspace, lineage_identities=["Ann", "BOB"], trained_identities=["x"])
    old = _save_base(workspace, trained_identities=["Cyd", "Straße"])
    none = _save_base(workspace)
    as_base = {v.version: BaseModel(v.version, v.model_id, "0" * 64) for v in (new, old, none)}
    assert base_lineage(workspace, as_base["v1"]) == {"ann", "bob"}  # lineage wins
    assert base_lineage(workspace, as_base["v2"]) == {"cyd", "strasse"}  # casefolded
    with caplog.at_level(logging.WARNING):
        assert base_lineage(workspace, as_base["v3"]) == set()
    assert "v3 does not record whom it was trained on" in caplog.text


def _pick_name(seed: int, role: str, fraction: float, prefix: str) -> str:
    """A new name that a stored split (``seed``, ``fraction``) assigns to ``role``."""
    for k in range(100):
        name = f"{prefix}{k}"
        held = unit_hash(seed, "identity", name) < fraction
        if held == (role == HOLDOUT):
            return name
    raise AssertionError("no name found")


def _workspace_with_split(cfg: Config, n_ids: int = 8) -> dict[str, str]:
    """``n_ids`` synthetic people, half held out by a stored split; their roles."""
    make_identities(cfg.pre_images_dir, n_ids=n_ids, per_id=8)
    crops = load_crops(cfg.pre_images_dir, SIZE)
    split = update_split(cfg.models_dir / SPLIT_NAME, crops, _opts().seed, 0.3, 0.5)
    return split.identities


def test_people_the_starting_model_was_trained_on_never_judge(
    model,  # noqa: F811
    workspace,
    caplog,
):
    """The base version v1 was trained on a person the current split holds out (its saved
    name differs in case): that person is no judge; v2 records its own and v1's trainees."""
    roles = _workspace_with_split(workspace)
    held = sorted(n for n, r in roles.items() if r == HOLDOUT)
    trained = sorted(n for n, r in roles.items() if r == TRAIN)
    assert len(held) == 4
    v1 = _save_base(workspace, lineage_identities=[held[0].upper(), "Someone Gone"])
    base = BaseModel("v1", v1.model_id, "0" * 64)
    with caplog.at_level(logging.WARNING):
        report = run_training(workspace, _opts(**FAST), model=model, base=base)
    assert report.unseen_identities == report.counts["unseen_identities"] == 3
    assert f"starting model v1 was trained on are not used to judge: {held[0]}" in caplog.text
    meta = report.version.meta
    assert report.version.version == "v2" and meta["base"]["version"] == "v1"
    assert meta["trained_identities"] == trained
    assert meta["lineage_identities"] == sorted({held[0], "someone gone", *trained})
    assert meta["judging_identities_skipped"] == []


# --- a run with the same face under two names ------------------------------------------------


def test_a_copy_of_a_trained_person_is_not_a_judge(model, workspace, caplog):  # noqa: F811
    """A held-out folder holding a trained person's photos under another name is found by its
    template (distance 0 to the original) and left out of the judges."""
    roles = _workspace_with_split(workspace)
    original = sorted(n for n, r in roles.items() if r == TRAIN)[0]
    copy = _pick_name(_opts().seed, HOLDOUT, 0.5, "person_x")
    shutil.copytree(workspace.pre_images_dir / original, workspace.pre_images_dir / copy)
    with caplog.at_level(logging.WARNING):
        report = run_training(workspace, _opts(**FAST), model=model, base=BASE)
    assert f"{copy} = {original}" in caplog.text
    assert report.unseen_identities == report.counts["unseen_identities"] == 4  # not 5
    assert report.version.meta["judging_identities_skipped"] == [copy]
    assert copy not in report.version.meta["trained_identities"]


# --- the stranger margin and the saved threshold record --------------------------------------


@pytest.mark.parametrize(("far", "resolution_wins"), [(1e-3, True), (0.1, False)])
def test_stranger_margin_and_the_recorded_tar(
    model,  # noqa: F811
    workspace,
    monkeypatch,
    far,
    resolution_wins,
):
    """``decide`` gets max(calibrate_far, 2 / stranger decisions) and the report keeps it; the
    threshold record's TAR is the share of genuine decisions the saved threshold accepts, not
    the cross-fitted ``genuine_accept``. The tiny model separates its few unseen people
    completely (both rates 1), so the genuine distances after training are spread over the
    strangers' range, where a threshold set on other people accepts a different share."""
    import dataclasses

    import model.training.run as run
    from model.thresholds import threshold_for

    _workspace_with_split(workspace)
    decided, scored = [], []
    real_decide, real_scores = run.decide, FineTuner.identity_scores

    def recording_decide(*args):
        decided.append(args)
        return real_decide(*args)

    def overlapping_scores(self, gallery, probes):
        scores = real_scores(self, gallery, probes)
        if scored:  # after training: genuine distances from half the closest stranger's up
            low, high = 0.5 * scores.stranger.min(), float(np.median(scores.stranger))
            spread = np.linspace(low, high, len(scores.genuine))
            scores = dataclasses.replace(scores, genuine=spread)
        scored.append(scores)
        return scores

    monkeypatch.setattr(run, "decide", recording_decide)
    monkeypatch.setattr(FineTuner, "identity_scores", overlapping_scores)
    opts = _opts(**FAST, calibrate_far=far)
    report = run_training(workspace, opts, model=model, base=BASE)
    assert len(decided) == 1 and len(scored) == 2  # before and after training
    after = scored[-1]
    n = len(after.stranger)
    assert n > 0 and (STRANGER_RESOLUTION / n > far) == resolution_wins  # 32 decisions
    assert report.stranger_margin == pytest.approx(max(opts.calibrate_far, 2 / n))
    assert decided[0][4] == report.stranger_margin

    record = threshold_for(workspace, report.version.model_id)
    assert record is not None and 0 < record.threshold == report.threshold
    expected = float(np.mean(after.genuine <= report.threshold))
    assert 0 < expected < 1 and record.tar == pytest.approx(expected)
    assert record.tar != pytest.approx(report.after["genuine_accept"])  # cross-fitted differs
    assert record.far == far


# --- second review: reference lineage, the second refusal, unusable forced thresholds ------


def test_a_reference_folder_of_someone_the_base_was_trained_on_never_judges(
    model,  # noqa: F811
    workspace,
    use_detector,
    caplog,
):
    """A former employee trained into v1, later removed, whose photos became a reference
    folder: not a judge of v2 (the lineage holds bare names, references are prefixed)."""
    from test_evaluate import FakeDetector, write_dataset

    use_detector(FakeDetector())
    _workspace_with_split(workspace)
    reference = write_dataset(workspace.root / "ref", {"gone": 4, "new_a": 4, "new_b": 4})
    v1 = _save_base(workspace, lineage_identities=["Gone"])
    cfg = workspace.replace(reference_dir=str(reference))
    with caplog.at_level(logging.WARNING):
        report = run_training(cfg, _opts(**FAST), model=model,
                              base=BaseModel("v1", v1.model_id, "0" * 64))  # fmt: skip
    assert "starting model v1 was trained on are not used to judge: gone" in caplog.text
    assert report.counts["unseen_reference_identities"] == 2  # new_a, new_b; not gone


def test_too_few_judges_after_the_same_face_check_refuses_before_training(
    model,  # noqa: F811
    workspace,
    monkeypatch,
):
    """Enough judges by name, too few once a copy of a trained person is dropped: refused
    after the features, before any training."""
    roles = _workspace_with_split(workspace)
    original = sorted(n for n, r in roles.items() if r == TRAIN)[0]
    copy = _pick_name(_opts().seed, HOLDOUT, 0.5, "person_x")
    shutil.copytree(workspace.pre_images_dir / original, workspace.pre_images_dir / copy)

    def never(self, *args, **kwargs):
        raise AssertionError("trained although too few judges remained")

    monkeypatch.setattr(FineTuner, "train", never)
    opts = _opts(epochs=1, bootstrap_draws=100, min_identities=5)  # 5 by name, 4 by face
    with pytest.raises(TrainError, match="only 4 identities that training never sees"):
        run_training(workspace, opts, model=model, base=BASE)


def test_a_forced_version_with_an_unusable_threshold_records_none(
    model,  # noqa: F811
    workspace,
    monkeypatch,
    caplog,
):
    """`--force` saves the version, but a threshold that accepts too few genuine photos is
    neither recorded nor kept in its metadata, so `model use` never installs it."""
    from model.thresholds import threshold_for

    _workspace_with_split(workspace)
    monkeypatch.setattr("model.training.run.MIN_GENUINE_AT_THRESHOLD", 1.01)  # nothing passes
    with caplog.at_level(logging.WARNING):
        report = run_training(workspace, _opts(**FAST), model=model, base=BASE)
    meta = report.version.meta
    assert meta["threshold"] is None and meta["threshold_tar"] is None
    assert isinstance(meta["calibrated_threshold"], float)  # what was measured, for the record
    assert threshold_for(workspace, report.version.model_id) is None
    assert "is not usable" in caplog.text
