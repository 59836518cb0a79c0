"""Fine-tuning on tiny models and synthetic identities: split, cache, loss, never-worse rule."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import Config, load_config, read_toml
from model.training.augment import augment_crop
from model.training.data import CropSet, load_crops
from model.training.decision import decide
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
    # flip_average and match_mode: what these tests have always trained and evaluated with
    base = {"epochs": 5, "learning_rate": 1e-3, "progress": False, "batch_size": 64,
            "flip_average": True, "match_mode": "nearest"}  # fmt: skip
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


@pytest.mark.parametrize("cache", [True, False])
def test_cached_embeddings_equal_the_embedder(model, ws, cache):
    from model.embedder import Embedder

    crops = load_crops(ws.pre_images_dir, SIZE)
    split = update_split(ws.models_dir / SPLIT_NAME, crops, seed=0)
    tuner = FineTuner(model, crops, split, _opts(cache_features=cache))
    tuner.prepare()
    rows = np.arange(0, len(crops), 3)
    expected = Embedder(model, "tiny", batch_size=16, flip_average=True).embed(crops.crops[rows])
    np.testing.assert_allclose(tuner.embed_rows(rows), expected, atol=2e-5)


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


# --- never worse -------------------------------------------------------------------------


def _metrics(tar=0.9, fa=0.1, rank1=0.9, auc=0.95, eer=0.05):
    return {"tar_at_far_1e-3": tar, "open_set_false_accept": fa, "rank1": rank1,
            "auc": auc, "eer": eer}  # fmt: skip


@pytest.mark.parametrize(
    ("after", "accepted", "regressed"),
    [
        (_metrics(tar=0.95), True, ()),
        (_metrics(fa=0.05), True, ()),
        (_metrics(rank1=0.95, auc=0.90), True, ()),  # headline wins over the tie-break
        (_metrics(tar=0.99, rank1=0.85), False, ("rank1",)),  # any headline loss rejects
        (_metrics(fa=0.2, tar=0.99), False, ("open_set_false_accept",)),
        (_metrics(), False, ()),  # identical: nothing to gain
        (_metrics(auc=0.97), True, ()),  # headline tie, AUC better
        (_metrics(auc=0.97, eer=0.06), False, ("eer",)),
        (_metrics(auc=0.94), False, ("auc",)),
    ],
)
def test_decide(after, accepted, regressed):
    decision = decide(_metrics(), after)
    assert decision.accepted is accepted
    assert decision.regressed == regressed
    assert decision.reason


def test_decide_needs_a_real_gain_but_rejects_any_loss():
    one_pair = _metrics(tar=0.9 + 1 / 375)  # one genuine pair more on a small held-out set
    assert decide(_metrics(), one_pair).accepted
    small = decide(_metrics(), one_pair, min_gain=0.005)
    assert not small.accepted and "at least 0.005" in small.reason
    assert decide(_metrics(), _metrics(tar=0.91), min_gain=0.005).accepted
    tiny_loss = _metrics(tar=0.95, rank1=0.9 - 1e-4)
    assert decide(_metrics(), tiny_loss, min_gain=0.005).regressed == ("rank1",)


def test_improving_run_is_saved_and_activated(model, ws):
    from model.versions import get_version, resolve_active
    from model.weights import load_npz, model_tensors

    # Held-out photos of the trained people only, and enough epochs: on this synthetic set the
    # tiny network then improves clearly (TAR@1e-3 0.32 -> 0.57, open-set FA 0.53 -> 0.22,
    # AUC 0.93 -> 0.99, rank-1 equal); with held-out identities a random tiny network's
    # generalisation is a coin toss, which the rule rightly rejects.
    opts = _opts(epochs=20, holdout_identity_fraction=0.0, holdout_image_fraction=0.4)
    report = run_training(ws, opts, model=model, base=BASE)
    assert report.decision.accepted, (report.before, report.after)
    assert report.version is not None and report.activated
    assert read_toml(ws.root)["model_version"] == report.version.version
    active = load_config(ws.root, env={})
    path, model_id = resolve_active(active)
    assert path == ws.models_dir / "v1" / "weights.npz" and model_id.startswith("facenet-ft-v1@")
    saved = load_npz(path)
    trained = model_tensors(model)  # the model keeps the accepted weights
    assert saved.keys() == trained.keys()
    assert all(np.array_equal(saved[k], trained[k]) for k in saved)
    meta = get_version(active, "v1").meta
    assert meta["base"] == {"version": "pretrained", "model_id": "tiny-random",
                            "weights_sha256": "0" * 64}  # fmt: skip
    assert meta["metrics"]["before"] == report.before and meta["metrics"]["after"] == report.after
    assert meta["hyperparameters"]["learning_rate"] == 1e-3 and not meta["forced"]
    assert len(meta["training_data_sha256"]) == 64 and meta["created"].endswith("Z")


def test_harmful_run_is_rejected_and_force_saves_without_activating(model, ws, caplog):
    from model.weights import model_tensors

    initial = model_tensors(model)
    harmful = _opts(learning_rate=1.0, epochs=2, checkpoint="last")
    report = run_training(ws, harmful, model=model, base=BASE)
    assert not report.decision.accepted and report.decision.regressed
    assert report.version is None and not report.activated
    assert not any(ws.models_dir.glob("v*")) and "model_version" not in read_toml(ws.root)
    current = model_tensors(model)
    assert all(np.array_equal(initial[k], current[k]) for k in initial)  # model unchanged

    with caplog.at_level(logging.WARNING):
        forced = run_training(ws, _opts(learning_rate=1.0, epochs=2, checkpoint="last",
                                        force=True), model=model, base=BASE)  # fmt: skip
    assert not forced.decision.accepted and forced.version is not None
    assert forced.version.meta["forced"] and not forced.activated
    assert "not better" in caplog.text and "model_version" not in read_toml(ws.root)


def test_harmful_run_keeps_the_starting_checkpoint_by_default(model, ws):
    report = run_training(ws, _opts(learning_rate=1.0, epochs=2), model=model, base=BASE)
    assert report.best_epoch == 0 and report.before == report.after
    assert not report.decision.accepted and report.version is None


def test_too_little_data_is_a_clear_error(model, workspace):
    with pytest.raises(TrainError, match="does not exist; run `attendance preprocess`"):
        run_training(workspace, _opts(), model=model, base=BASE)
    workspace.pre_images_dir.mkdir()
    with pytest.raises(TrainError, match="no crops"):
        run_training(workspace, _opts(), model=model, base=BASE)
    make_identities(workspace.pre_images_dir, n_ids=2, per_id=3)
    with pytest.raises(TrainError, match="too few images"):
        run_training(workspace, _opts(), model=model, base=BASE)


def test_train_cli_reports_and_keeps_the_current_model(model, ws, monkeypatch, capsys):
    from attendance.cli import main as cli_main

    monkeypatch.setattr("model.training.run.load_active_model", lambda cfg: (model, BASE))
    root = str(ws.root)
    argv = ["train", "--workspace", root, "--epochs", "2", "--lr", "1.0", "--checkpoint", "last"]
    assert cli_main([*argv, "-q"]) == 0
    out = capsys.readouterr().out
    assert "TAR @ FAR 1e-3" in out and "rank-1" in out and "open-set false accept" in out
    assert "not saved: worse on" in out and "current model stays active" in out
    assert not any(ws.models_dir.glob("v*")) and (ws.models_dir / SPLIT_NAME).is_file()

    assert cli_main(["train", "--workspace", root, "--lr", "5", "-q"]) == 2
    assert "learning_rate=5.0 is out of range" in capsys.readouterr().err
    assert cli_main(["train", "--workspace", root, "--trainable-from", "Nope", "-q"]) == 2
    assert "names no block" in capsys.readouterr().err
