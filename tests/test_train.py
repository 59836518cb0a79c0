"""Fine-tuning on tiny models and synthetic identities: split, cache, loss, regularisers, and
the wiring of a run judged on identities training never sees."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import Config, load_config, read_toml, write_config_values
from model.training.augment import augment_crop
from model.training.data import CropSet, load_crops
from model.training.errors import TrainError
from model.training.network import split_model, trainable_points
from model.training.options import TrainOptions
from model.training.run import BaseModel, run_training
from model.training.split import GALLERY, HOLDOUT, PROBE, SPLIT_NAME, TRAIN, update_split
from model.training.trainer import FineTuner

SIZE = 96  # tiny models take 96x96 crops: fast, same code paths
BASE = BaseModel("pretrained", "tiny-random", "0" * 64)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def make_identities(root: Path, n_ids: int = 6, per_id: int = 16, seed: int = 0) -> None:
    """Synthetic people: a smooth colour field per identity, shifted, occluded by a random
    disc and noised per photo, so a random network separates them only partly."""
    rng = np.random.default_rng(seed)
    for i in range(n_ids):
        field = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        base = cv2.resize(field, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        for j in range(per_id):
            img = np.roll(base, tuple(rng.integers(-6, 7, 2)), axis=(0, 1)).copy()
            centre = tuple(int(c) for c in rng.integers(10, SIZE - 10, 2))
            colour = rng.uniform(0, 255, 3).tolist()
            cv2.circle(img, centre, int(rng.integers(5, 20)), colour, -1)
            img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 12, img.shape)
            _write_png(root / f"person_{i}" / f"{j:04d}.png", np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny():
    """One tiny network for the module; tests put its initial weights back afterwards."""
    import keras

    from model.facenet import build_facenet
    from model.weights import model_tensors

    keras.utils.set_random_seed(1)
    model = build_facenet(repeats=(1, 1, 1), input_size=SIZE)
    return model, model_tensors(model)


@pytest.fixture
def model(tiny):
    from model.weights import assign_weights

    net, initial = tiny
    assign_weights(net, initial)
    yield net
    assign_weights(net, initial)


@pytest.fixture
def ws(workspace: Config) -> Config:
    make_identities(workspace.pre_images_dir)
    return workspace


def _opts(**changes) -> TrainOptions:
    # flip_average and match_mode: what these tests have always trained and evaluated with;
    # no regulariser unless a test asks for one (they are tested against runs without)
    base = {"epochs": 5, "learning_rate": 1e-3, "progress": False, "batch_size": 64,
            "flip_average": True, "match_mode": "nearest", "distill": 0.0, "l2sp": 0.0}  # fmt: skip
    return TrainOptions.from_config(Config(), **{**base, **changes})


# --- data and split ----------------------------------------------------------------------


def test_load_crops_skips_bad_files_with_a_warning(tmp_path, caplog):
    good = np.full((SIZE, SIZE, 3), 120, np.uint8)
    _write_png(tmp_path / "Ada" / "0001.png", good)
    _write_png(tmp_path / "Ada" / "0002.png", good)
    _write_png(tmp_path / "Ada" / "small.png", good[:50, :50])
    (tmp_path / "Ada" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "Ada" / ".manifest.json").write_text("{}")
    (tmp_path / "Ada" / "notes.txt").write_text("hello")
    _write_png(tmp_path / ".hidden" / "0001.png", good)
    with caplog.at_level(logging.WARNING):
        crops = load_crops(tmp_path, SIZE)
    assert crops.paths == ["Ada/0001.png", "Ada/0002.png"]
    assert crops.crops.shape == (2, SIZE, SIZE, 3) and crops.labels == ["Ada", "Ada"]
    text = caplog.text
    assert "small.png" in text and "broken.png" in text and ".hidden" in text
    with pytest.raises(TrainError, match="preprocess"):
        load_crops(tmp_path / "missing", SIZE)


def _crop_set(counts: dict[str, int]) -> CropSet:
    labels, paths = [], []
    for name, n in counts.items():
        for j in range(n):
            labels.append(name)
            paths.append(f"{name}/{j:04d}.png")
    zeros = np.zeros((len(labels), 2, 2, 3), np.uint8)
    return CropSet(labels, paths, ["x"] * len(labels), zeros)


def test_split_holds_out_identities_and_images_and_stays_fixed(tmp_path):
    path = tmp_path / SPLIT_NAME
    crops = _crop_set({f"p{i}": 10 for i in range(6)})
    split = update_split(path, crops, seed=3)
    assert sorted(split.identities.values()).count(HOLDOUT) == 1
    for name, role in split.identities.items():
        roles = [split.images[f"{name}/{j:04d}.png"] for j in range(10)]
        if role == HOLDOUT:
            assert TRAIN not in roles and roles.count(GALLERY) == 5 and roles.count(PROBE) == 5
        else:  # 3 of 10 held out: 1 evaluation gallery + 2 probes
            assert roles.count(TRAIN) == 7 and roles.count(GALLERY) == 1
    train, gallery, probe = split.rows(crops)
    assert len(train) + len(gallery) + len(probe) == len(crops)
    assert not set(train) & (set(gallery) | set(probe))

    stored = path.read_text()
    again = update_split(path, crops, seed=99)  # the stored seed wins; nothing changes
    assert again == split and path.read_text() == stored

    # new people and new photos are added without touching stored assignments
    bigger = _crop_set({**{f"p{i}": 14 for i in range(6)}, "newcomer": 6})
    grown = update_split(path, bigger, seed=0)
    assert {k: grown.images[k] for k in split.images} == split.images
    assert "newcomer" in grown.identities and len(grown.images) == 6 * 14 + 6
    assert update_split(path, _crop_set({"p0": 3}), seed=0) == grown  # removed files: no rewrite


def test_split_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / SPLIT_NAME
    path.write_text("{ not json")
    with pytest.raises(TrainError, match="delete it to draw a new split"):
        update_split(path, _crop_set({"a": 4, "b": 4}), seed=0)
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "seed": 0,
                "holdout_image_fraction": 0.3,
                "holdout_identity_fraction": 0.2,
                "identities": {"a": "holdout"},
                "images": {"a/0000.png": "train"},
            }
        )  # fmt: skip
    )
    with pytest.raises(TrainError, match="held-out identity"):
        update_split(path, _crop_set({"a": 1}), seed=0)


def test_augmentation_changes_the_crop_but_keeps_its_format():
    rng = np.random.default_rng(0)
    crop = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8), (SIZE, SIZE))
    out = augment_crop(crop, np.random.default_rng(5))
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert np.abs(out.astype(int) - crop).mean() > 2
    np.testing.assert_array_equal(out, augment_crop(crop, np.random.default_rng(5)))
    # mild: still far closer to its source than to an unrelated image
    other = np.roll(crop, SIZE // 2, axis=1)
    assert np.abs(out.astype(int) - crop).mean() < np.abs(other.astype(int) - crop).mean()


# --- cutting the network and the cache -----------------------------------------------------


@pytest.mark.parametrize(
    "point", ["Block8_1", "Mixed_7a", "Block17_1", "Mixed_6a", "Bottleneck", "Conv2d_1a_3x3"]
)
def test_head_on_frozen_features_equals_the_full_model(model, point):
    x = np.random.default_rng(0).normal(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    frozen, head = split_model(model, point)
    full = np.asarray(model(x, training=False))
    cut = np.asarray(head(x if frozen is None else frozen(x, training=False), training=False))
    np.testing.assert_allclose(cut, full, atol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {layer.name for layer in head.layers[1:]} <= names  # same layers, same names
    assert point in trainable_points(model)


def test_unknown_trainable_point_lists_the_choices(model):
    with pytest.raises(TrainError, match="Block8_1"):
        split_model(model, "Block99_1")


@pytest.mark.parametrize(("cache", "flip"), [(True, True), (False, True), (True, False)])
def test_cached_embeddings_equal_the_embedder(model, ws, cache, flip):
    """Every row, training or held out, embeds as the Embedder does (with and without flip
    averaging: mirror images of held-out rows are cached only when flip averaging needs them)."""
    from model.embedder import Embedder

    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    tuner = FineTuner(model, crops, split, _opts(cache_features=cache, flip_average=flip))
    tuner.prepare()
    rows = np.arange(len(crops))
    assert len(tuner.gallery_rows) and len(tuner.probe_rows)
    expected = Embedder(model, "tiny", batch_size=16, flip_average=flip).embed(crops.crops)
    np.testing.assert_allclose(tuner.embed_rows(rows), expected, atol=2e-5)
    if cache and not flip:
        with pytest.raises(ValueError, match="only for training rows"):
            tuner.features.get(tuner.probe_rows[:1], np.ones(1, int))


# --- training ----------------------------------------------------------------------------


def test_training_lowers_the_triplet_loss(model, ws):
    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    tuner = FineTuner(model, crops, split, _opts(epochs=4))
    tuner.prepare()
    before, _ = tuner.monitor()
    history, interrupted = tuner.train()
    after, _ = tuner.monitor()
    assert not interrupted and len(history) == 4
    assert before > 0.005
    assert after < 0.5 * before, (before, [h.monitor_loss for h in history])
    assert all(0.0 <= h.active_fraction <= 1.0 for h in history)


def test_batch_hard_trains_one_triplet_per_anchor(model, ws):
    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    opts = _opts(mining="batch-hard", epochs=1, batches_per_epoch=3, checkpoint="last")
    tuner = FineTuner(model, crops, split, opts)
    (stats,), _ = tuner.train()
    assert stats.triplets == 3 * opts.identities * opts.images
    assert np.isfinite(stats.loss) and stats.loss > 0 and stats.active_fraction > 0


def test_same_seed_same_run(model, ws):
    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    runs = []
    for seed in (4, 4, 5):
        tuner = FineTuner(model, crops, split, _opts(seed=seed, epochs=2))
        history, _ = tuner.train()
        runs.append([h.loss for h in history])
        tuner.restore_initial()
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4)
    assert not np.allclose(runs[0], runs[2], rtol=1e-4)


def test_ctrl_c_keeps_the_best_checkpoint(model, ws, monkeypatch):
    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    tuner = FineTuner(model, crops, split, _opts(epochs=6))
    real_epoch = tuner.train_epoch

    def epoch_then_ctrl_c(epoch, sampler):
        if epoch == 4:
            raise KeyboardInterrupt
        return real_epoch(epoch, sampler)

    monkeypatch.setattr(tuner, "train_epoch", epoch_then_ctrl_c)
    history, interrupted = tuner.train()
    assert interrupted and len(history) == 3
    losses = [tuner.initial_monitor[0]] + [h.monitor_loss for h in history]
    assert tuner.best_epoch == int(np.argmin(losses))
    assert tuner.monitor()[0] == pytest.approx(min(losses), rel=1e-4, abs=1e-7)


# --- regularisers and the feature cache ------------------------------------------------------


def _drift_and_shift(model, ws: Config, **changes) -> tuple[float, float]:
    """Train 2 epochs (keeping the last), then return the L2 distance of the head's trainable
    weights from their start and the mean squared move of the training embeddings."""
    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    tuner = FineTuner(model, crops, split, _opts(epochs=2, checkpoint="last", **changes))
    tuner.prepare()
    start = tuner.embed_rows(tuner.train_rows)
    tuner.train()
    drift = np.sqrt(
        sum(
            float(np.sum((v.numpy() - w) ** 2))
            for v, w in zip(tuner.variables, tuner.initial_weights, strict=True)
        )
    )
    shift = float(np.mean(np.sum((tuner.embed_rows(tuner.train_rows) - start) ** 2, axis=1)))
    tuner.restore_initial()
    return float(drift), shift


def test_l2sp_keeps_the_weights_near_their_start(model, ws):
    free, _ = _drift_and_shift(model, ws)
    held, _ = _drift_and_shift(model, ws, l2sp=1e3)
    assert free > 0
    assert held < 0.3 * free, (held, free)


def test_distillation_keeps_the_embeddings_near_their_start(model, ws):
    _, free = _drift_and_shift(model, ws)
    _, held = _drift_and_shift(model, ws, distill=1e3)
    assert free > 0
    assert held < 0.3 * free, (held, free)


def test_feature_source_mirrors_only_training_rows_unless_asked():
    from model.embedder import prewhiten
    from model.training.features import FeatureSource

    crops = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    train = np.array([0, 1, 2])

    def source(mirror_all: bool) -> FeatureSource:
        return FeatureSource(None, crops, train, 1, np.random.default_rng(0), cache=True,
                             batch_size=4, progress=False, mirror_all=mirror_all)  # fmt: skip

    lean = source(mirror_all=False)
    np.testing.assert_allclose(lean.get([4], [0]), prewhiten(crops[4:5]), atol=1e-6)
    np.testing.assert_allclose(lean.get([1], [1]), prewhiten(crops[1:2, :, ::-1]), atol=1e-6)
    with pytest.raises(ValueError, match="mirror images are cached only for training rows"):
        lean.get([1, 4], [1, 1])
    with pytest.raises(ValueError, match="augmented variants exist only for training rows"):
        lean.get([4], [2])
    full = source(mirror_all=True)
    np.testing.assert_allclose(full.get([4], [1]), prewhiten(crops[4:5, :, ::-1]), atol=1e-6)


# --- a whole run -------------------------------------------------------------------------


def _held_out(ws: Config) -> list[str]:
    split = json.loads((ws.models_dir / SPLIT_NAME).read_text())
    return sorted(n for n, role in split["identities"].items() if role == HOLDOUT)


def test_improving_run_is_saved_and_activated(tiny, model, ws, monkeypatch):
    """Wiring of an accepted run: saved, activated with its calibrated threshold, recorded.

    ``decide`` is replaced by an accepting stub: the real rule is unit-tested in
    tests/test_decision.py, and a tiny random network cannot be relied on to generalise.
    """
    from model.confidence import METRICS
    from model.thresholds import threshold_for
    from model.training.decision import Decision
    from model.versions import get_version, resolve_active
    from model.weights import load_npz, model_tensors

    seen = {}

    def accept(changes, n_identities, *args):
        seen.update(changes=changes, n_identities=n_identities)
        return Decision(True, ("tar_at_far_1e-3",), (), "better on: stub")

    monkeypatch.setattr("model.training.run.decide", accept)
    make_identities(ws.pre_images_dir, n_ids=8)
    opts = _opts(epochs=2, holdout_identity_fraction=0.5, min_identities=3)
    report = run_training(ws, opts, model=model, base=BASE)
    assert len(_held_out(ws)) == 4 and report.unseen_identities == 4
    assert seen["n_identities"] == 4 and set(seen["changes"]) == {k for k, _ in METRICS}
    assert report.decision.accepted and report.version is not None and report.activated
    toml = read_toml(ws.root)
    assert toml["model_version"] == report.version.version
    active = load_config(ws.root, env={})
    path, model_id = resolve_active(active)
    assert path == ws.models_dir / "v1" / "weights.npz" and model_id.startswith("facenet-ft-v1@")
    meta = get_version(active, "v1").meta
    record = threshold_for(active, report.version.model_id)
    assert report.threshold is not None and 0 < report.threshold <= 2
    assert toml["threshold"] == meta["threshold"] == record.threshold == report.threshold
    assert record.source == "calibrated" and record.far == opts.calibrate_far
    assert active.threshold == report.threshold
    assert set(meta["intervals"]) == {k for k, _ in METRICS}
    for key, change in meta["intervals"].items():
        assert change["low"] <= change["high"]
        assert change["before"] == pytest.approx(report.before[key])
        assert change["after"] == pytest.approx(report.after[key])
    assert meta["unseen"] == {"identities": 4, "held_out": 4, "reference": {}}
    assert meta["metrics"]["before"] == report.before and meta["metrics"]["after"] == report.after
    assert report.before and report.before != report.after
    assert meta["base"] == {"version": "pretrained", "model_id": "tiny-random",
                            "weights_sha256": "0" * 64}  # fmt: skip
    assert meta["hyperparameters"]["min_identities"] == 3 and not meta["forced"]
    assert len(meta["training_data_sha256"]) == 64 and meta["created"].endswith("Z")
    saved = load_npz(path)
    trained = model_tensors(model)  # the model keeps the accepted weights
    assert saved.keys() == trained.keys()
    assert all(np.array_equal(saved[k], trained[k]) for k in saved)
    assert any(not np.array_equal(saved[k], v) for k, v in tiny[1].items())  # it did train


def test_harmful_run_is_rejected_and_force_saves_without_activating(model, ws, caplog):
    from model.thresholds import threshold_for
    from model.weights import load_npz, model_tensors

    make_identities(ws.pre_images_dir, n_ids=8)
    write_config_values(ws.root, {"threshold": 0.9})
    initial = model_tensors(model)
    harmful = {"learning_rate": 1.0, "epochs": 2, "checkpoint": "last",
               "holdout_identity_fraction": 0.5, "min_identities": 3}  # fmt: skip
    report = run_training(ws, _opts(**harmful), model=model, base=BASE)
    assert report.unseen_identities == 4 and report.before != report.after
    assert not report.decision.accepted and not report.decision.too_few
    assert report.decision.regressed
    assert report.decision.reason.startswith("may be worse on"), report.decision.reason
    assert report.version is None and not report.activated
    assert not any(ws.models_dir.glob("v*")) and read_toml(ws.root) == {"threshold": 0.9}
    current = model_tensors(model)
    assert all(np.array_equal(initial[k], current[k]) for k in initial)  # model unchanged

    with caplog.at_level(logging.WARNING):
        forced = run_training(ws, _opts(**harmful, force=True), model=model, base=BASE)
    assert not forced.decision.accepted and forced.version is not None
    assert forced.version.meta["forced"] and not forced.activated
    assert "not better" in caplog.text
    assert read_toml(ws.root) == {"threshold": 0.9}  # no model_version, threshold untouched
    # lr 1.0 wrecks the model: its calibrated threshold accepts too few genuine photos of the
    # unseen people to be kept, so `model use` would keep the current threshold
    meta = forced.version.meta
    assert meta["calibrated_threshold"] == forced.threshold and meta["threshold_tar"] is None
    assert meta["threshold"] is None and threshold_for(ws, forced.version.model_id) is None
    saved = load_npz(ws.models_dir / forced.version.version / "weights.npz")
    assert any(not np.array_equal(saved[k], initial[k]) for k in initial)  # the trained weights
    current = model_tensors(model)
    assert all(np.array_equal(initial[k], current[k]) for k in initial)  # still the caller's


def test_harmful_run_keeps_the_starting_checkpoint_by_default(model, ws):
    make_identities(ws.pre_images_dir, n_ids=8)
    opts = _opts(learning_rate=1.0, epochs=2, holdout_identity_fraction=0.5, min_identities=3)
    report = run_training(ws, opts, model=model, base=BASE)
    assert report.unseen_identities == 4 and report.before
    assert report.best_epoch == 0 and report.before == report.after
    assert not report.decision.accepted and report.version is None
    assert not any(ws.models_dir.glob("v*"))


def test_too_few_unseen_identities_refuses_before_training(model, ws, monkeypatch):
    from model.thresholds import threshold_for

    def must_not_run(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(FineTuner, "prepare", must_not_run)
    monkeypatch.setattr(FineTuner, "train", must_not_run)
    with pytest.raises(TrainError) as caught:
        run_training(ws, _opts(), model=model, base=BASE)  # 6 people, 1 held out, 30 needed
    assert len(_held_out(ws)) == 1
    message = str(caught.value)
    assert message.startswith("only 1 identity that training never sees") and "\n" not in message
    assert "(1 held out of the workspace, 0 reference)" in message
    assert "at least 30 are needed" in message and "add 29 with --reference DIR" in message
    assert "--force" in message

    monkeypatch.undo()
    forced = run_training(ws, _opts(epochs=1, force=True), model=model, base=BASE)
    assert forced.unseen_identities == 1 and forced.counts["unseen_identities"] == 1
    assert forced.before == {} and forced.after == {} and forced.changes == {}
    assert forced.decision.too_few and not forced.decision.accepted
    assert forced.history and forced.version is not None and not forced.activated
    assert forced.threshold is None and forced.version.meta["threshold"] is None
    assert threshold_for(ws, forced.version.model_id) is None  # nothing to calibrate on
    assert "model_version" not in read_toml(ws.root)


def test_too_little_data_is_a_clear_error(model, workspace):
    with pytest.raises(TrainError, match="does not exist; run `attendance preprocess`"):
        run_training(workspace, _opts(), model=model, base=BASE)
    workspace.pre_images_dir.mkdir()
    with pytest.raises(TrainError, match="no crops"):
        run_training(workspace, _opts(), model=model, base=BASE)

    def people(folder: str, n_ids: int, per_id: int) -> Config:
        """A workspace whose crops are ``n_ids`` x ``per_id`` synthetic photos, no split yet."""
        (workspace.models_dir / SPLIT_NAME).unlink(missing_ok=True)
        make_identities(workspace.root / folder, n_ids=n_ids, per_id=per_id)
        return workspace.replace(pre_images_dir=workspace.root / folder)

    with pytest.raises(TrainError, match="leaves 1 identity to train on; enrol at least 3"):
        run_training(people("one", 1, 3), _opts(force=True), model=model, base=BASE)
    with pytest.raises(TrainError, match="only 0 identities that training never sees"):
        run_training(people("two", 2, 3), _opts(), model=model, base=BASE)  # none held out
    with pytest.raises(TrainError, match="at least two identities with two or more training"):
        run_training(people("single", 3, 1), _opts(force=True), model=model, base=BASE)


def test_train_cli_reports_and_keeps_the_current_model(model, workspace, monkeypatch, capsys):
    from attendance.cli import main as cli_main

    ws = workspace
    make_identities(ws.pre_images_dir, n_ids=10, per_id=10)
    monkeypatch.setattr("model.training.run.load_active_model", lambda cfg: (model, BASE))
    # a stored split keeps its fractions: hold out half of the 10 people
    update_split(ws.models_dir / SPLIT_NAME, load_crops(ws.pre_images_dir, SIZE), ws.seed,
                 0.3, 0.5)  # fmt: skip
    assert len(_held_out(ws)) == 5
    root = str(ws.root)
    argv = ["train", "--workspace", root, "--epochs", "2", "--lr", "1.0", "--checkpoint", "last"]
    assert cli_main([*argv, "--min-identities", "5", "-q"]) == 1
    out = capsys.readouterr().out
    assert "on 5 identities training never saw" in out
    assert "TAR @ FAR 1e-3" in out and "strangers accepted at its threshold" in out
    assert "95% interval" in out
    assert "not saved: may be worse on" in out and "current model stays active" in out
    assert not any(ws.models_dir.glob("v*")) and "model_version" not in read_toml(ws.root)

    assert cli_main([*argv, "-q"]) == 2  # 5 unseen identities, 30 needed
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "only 5 identities that training never sees" in lines[0]
    assert cli_main([*argv, "--min-identities", "3", "-q"]) == 2
    assert "train_min_identities=3 is out of range [5" in capsys.readouterr().err
    assert "--reference DIR" in lines[0] and "--force" in lines[0]
    assert not any(ws.models_dir.glob("v*"))

    assert cli_main(["train", "--workspace", root, "--lr", "5", "-q"]) == 2
    assert "learning_rate=5.0 is out of range" in capsys.readouterr().err
    assert cli_main(["train", "--workspace", root, "--trainable-from", "Nope", "-q"]) == 2
    assert "names no block" in capsys.readouterr().err


def test_unseen_people_with_one_photo_do_not_count_and_do_not_crash(model, workspace):
    """A held-out person with a single photo has nothing to look for: a stranger, not a
    judge. With only such people nothing is measured and the run is refused, not a crash."""
    make_identities(workspace.pre_images_dir, n_ids=8, per_id=8)
    crops = load_crops(workspace.pre_images_dir, SIZE)
    split = update_split(workspace.models_dir / SPLIT_NAME, crops, 0, 0.3, 0.5)
    held = [n for n, role in split.identities.items() if role == HOLDOUT]
    assert len(held) == 4
    for name in held:  # keep one photo of each held-out person
        for extra in sorted((workspace.pre_images_dir / name).iterdir())[1:]:
            extra.unlink()
    opts = _opts(epochs=1, min_identities=3)
    with pytest.raises(TrainError, match="only 0 identities that training never sees"):
        run_training(workspace, opts, model=model, base=BASE)
    forced = run_training(workspace, _opts(epochs=1, min_identities=3, force=True), model=model,
                          base=BASE)  # fmt: skip
    assert forced.unseen_identities == 0 and forced.before == {} and forced.decision.too_few
