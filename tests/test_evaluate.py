"""model.evaluation, embed/evaluate CLIs: fakes for the logic, real weights on the sample data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import Config, load_config, read_toml
from model.evaluation import EvaluationError
from model.evaluation.calibration import calibrate
from model.evaluation.crops import crop_images
from model.evaluation.dataset import list_images, split_dataset
from model.evaluation.embedded import NPZ_ARRAYS, EmbeddedImages, embed_folder, with_flip
from model.evaluation.report import FEW_SHOT_KEY
from model.evaluation.run import evaluate_folder
from model.metrics import decision_distances
from preprocess.detect import Face

# --------------------------------------------------------------------------- fakes


class FakeDetector:
    """Finds one fixed face in every image that is not all black; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.calls += 1
        if rgb.max() == 0:
            return []
        h, w = rgb.shape[:2]
        cx, cy, s = w / 2, h / 2, min(w, h) / 200
        points = np.array([[-22, -20], [22, -20], [0, 2], [-18, 28], [18, 28]], np.float32)
        landmarks = (points * s + [cx, cy]).astype(np.float32)
        box = (cx - 50 * s, cy - 65 * s, 100 * s, 130 * s)
        return [Face(box=box, score=0.99, landmarks=landmarks)]


class FakeEmbedder:
    """Same constructor and attributes as model.embedder.Embedder; embeds a crop's thumbnail."""

    def __init__(self, model=None, model_id="fake", batch_size=32, flip_average=True) -> None:
        self.model = model if model is not None else np.random.default_rng(1).normal(size=(48, 16))
        self.batch_size = batch_size
        self.flip_average = flip_average
        self.model_id = f"{model_id}+flip" if flip_average else model_id
        self.dim = 16
        self.seen: list[int] = []

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        thumbs = np.stack([cv2.resize(c, (4, 4), interpolation=cv2.INTER_AREA) for c in crops])
        return (thumbs.reshape(len(crops), -1) / 255.0 - 0.5) @ self.model

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.seen.append(len(crops))
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        y = self._raw(crops)
        if self.flip_average:
            y = y + self._raw(crops[:, :, ::-1])
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def person_image(identity: int, shot: int) -> np.ndarray:
    """A 200x200 photo: the identity's block pattern plus per-shot noise."""
    base = np.random.default_rng(identity).integers(0, 256, size=(4, 4, 3)).astype(np.float64)
    noise = np.random.default_rng(1000 * identity + shot).normal(0, 40, size=(4, 4, 3))
    blocks = np.clip(base + noise, 1, 255).astype(np.uint8)
    return cv2.resize(blocks, (200, 200), interpolation=cv2.INTER_NEAREST)


def write_dataset(root: Path, counts: dict[str, int], blank: set[str] = frozenset()) -> Path:
    for k, (name, n) in enumerate(sorted(counts.items())):
        for shot in range(n):
            path = root / name / f"{shot:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb = person_image(k, shot)
            if f"{name}/{shot:02d}" in blank:
                rgb = np.zeros_like(rgb)
            assert cv2.imwrite(
                str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    counts = {"ann": 6, "bob": 5, "cyd": 6, "dee": 4}
    return write_dataset(tmp_path / "data", counts, blank={"bob/04"})


# --------------------------------------------------------------------------- discovery + split


def test_flat_folder_split_is_first_half_rounded_up(dataset: Path) -> None:
    (dataset / "ann" / "notes.txt").write_text("not an image")
    (dataset / ".hidden").mkdir()
    split = split_dataset(dataset)
    gallery = [it.relpath for it in split.gallery]
    probes = [it.relpath for it in split.probes]
    assert gallery[:3] == ["ann/00.jpg", "ann/01.jpg", "ann/02.jpg"]
    assert probes[:3] == ["ann/03.jpg", "ann/04.jpg", "ann/05.jpg"]
    assert [p for p in gallery if p.startswith("bob/")] == [
        "bob/00.jpg",
        "bob/01.jpg",
        "bob/02.jpg",
    ]
    assert len(gallery) == 3 + 3 + 3 + 2 and len(probes) == 3 + 2 + 3 + 2
    assert "first half" in split.description
    assert len(list_images(dataset)) == 21


def test_train_val_folders_give_gallery_train_probes_val(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d" / "train", {"ann": 3, "bob": 2})
    write_dataset(tmp_path / "d" / "val", {"ann": 1, "bob": 1})
    split = split_dataset(tmp_path / "d")
    assert [it.relpath for it in split.probes] == ["val/ann/00.jpg", "val/bob/00.jpg"]
    assert {it.identity for it in split.gallery} == {"ann", "bob"}
    assert split.description == "gallery = train/, probes = val/"
    assert [it.relpath for it in list_images(tmp_path / "d")][-2:] == [
        "val/ann/00.jpg",
        "val/bob/00.jpg",
    ]


def test_missing_or_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no such folder"):
        split_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "ann").mkdir(parents=True)
    with pytest.raises(EvaluationError, match="no images found"):
        list_images(tmp_path / "empty")
    write_dataset(tmp_path / "single", {"ann": 1, "bob": 1})
    with pytest.raises(EvaluationError, match="0 probe images"):
        split_dataset(tmp_path / "single")


# --------------------------------------------------------------------------- crops + embed export


def test_crop_images_detects_once_per_image_for_both_alignments(
    dataset: Path, workspace: Config
) -> None:
    detector = FakeDetector()
    items = list_images(dataset)
    cropset = crop_images(items, detector, workspace, ["landmarks", "margin"], progress=False)
    assert len(cropset.items) == 20
    assert cropset.failed[0][0] == "bob/04.jpg" and "no face found" in cropset.failed[0][1]
    single = FakeDetector()
    crop_images(items, single, workspace, ["margin"], progress=False)
    assert detector.calls == single.calls  # two alignments, still one detection per image
    assert single.calls > 21  # the blank photo is retried with a padded border
    assert cropset.crops["landmarks"].shape == cropset.crops["margin"].shape == (20, 160, 160, 3)
    assert not np.array_equal(cropset.crops["landmarks"], cropset.crops["margin"])
    assert cropset.boxes.shape == (20, 4) and cropset.scores.tolist() == pytest.approx([0.99] * 20)


def test_embed_folder_npz_round_trip_without_pickle(dataset: Path, workspace: Config) -> None:
    (dataset / "cyd" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    result = embed_folder(dataset, workspace, FakeDetector(), FakeEmbedder(), progress=False)
    out = result.save(workspace.root / "out" / "emb.npz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.npz"]  # no temp file left
    with np.load(out, allow_pickle=False) as data:
        assert set(data.files) == set(NPZ_ARRAYS)
        for name in ("paths", "identities", "failed_paths", "failed_reasons", "model_id"):
            assert data[name].dtype.kind == "U", name
        assert data["paths"][0] == "ann/00.jpg" and data["identities"][0] == "ann"
        assert data["embeddings"].shape == (20, 16) and data["embeddings"].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)
        assert data["boxes"].shape == (20, 4) and data["scores"].shape == (20,)
        assert data["failed_paths"].tolist() == ["bob/04.jpg", "cyd/broken.jpg"]
        assert "cyd/broken.jpg" in data["failed_reasons"][1]
        assert str(data["model_id"]) == "fake+flip" and str(data["alignment"]) == "landmarks"
        assert bool(data["flip_average"]) is True
    again = EmbeddedImages.load(out)
    assert again.paths == result.paths and again.failed_reasons == result.failed_reasons
    np.testing.assert_array_equal(again.embeddings, result.embeddings)


def test_embeddings_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(EvaluationError, match="not an embeddings file"):
        EmbeddedImages.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(EvaluationError, match="cannot read"):
        EmbeddedImages.load(tmp_path / "junk.npz")


def test_with_flip_shares_the_network() -> None:
    embedder = FakeEmbedder(flip_average=True)
    assert with_flip(embedder, True) is embedder
    plain = with_flip(embedder, False)
    assert plain.model is embedder.model and plain.flip_average is False
    assert plain.model_id == "fake" and plain.batch_size == embedder.batch_size


# --------------------------------------------------------------------------- evaluation


def test_evaluate_compare_reports_every_variant_plots_and_calibrates(
    dataset: Path, workspace: Config
) -> None:
    embedder = FakeEmbedder()
    out_dir = workspace.root / "evaluation"
    report = evaluate_folder(
        dataset,
        workspace,
        FakeDetector(),
        embedder,
        compare=True,
        out_dir=out_dir,
        calibrate_far=0.01,
        progress=False,
    )
    keys = [(r.alignment, r.flip_average, r.match_mode) for r in report.results]
    assert len(keys) == len(set(keys)) == 8
    assert keys[0] == ("landmarks", True, workspace.match_mode)
    assert report.current is report.results[0]
    assert (report.n_gallery, report.n_probes) == (11, 9) and len(report.failed) == 1
    for r in report.results:
        assert 0.5 < r.metrics["auc"] <= 1.0
        assert 0.0 <= r.metrics[FEW_SHOT_KEY] <= 1.0
    for name in ("roc", "distances"):
        assert Path(report.plots[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # calibration: written to the workspace config, and really at most 1% FAR there
    threshold = read_toml(workspace.root)["threshold"]
    assert report.calibration["threshold"] == threshold
    assert load_config(workspace.root, env={}).threshold == threshold
    text = report.to_text()
    assert "landmarks *" in text and "margin" in text and "best AUC" in text
    assert f"calibrated threshold {threshold:.4f}" in text
    assert f"decision ({workspace.match_mode}): genuine max " in text
    assert f"genuine accepted at threshold {workspace.threshold:.4f}: " in text
    data = json.loads(report.to_json())
    assert data["results"][0]["current"] is True and "tar_at_far_1e-3" in data["results"][0]
    assert {"decision_genuine_max", "decision_stranger_min"} <= set(data["results"][0])
    assert data["decision"]["mode"] == workspace.match_mode
    assert data["calibration"]["mode"] == workspace.match_mode
    assert [line.split(":")[0] for line in data["best"]] == [
        "best AUC", "best EER", "best TAR@1e-3", "best rank-1", "best open-set FA",
        "best open-set FA 3-shot",
    ]  # fmt: skip


def fake_decisions(dataset: Path, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The decision distances of the fakes on ``dataset``, recomputed outside evaluate_folder."""
    split = split_dataset(dataset)
    cropset = crop_images(split.gallery + split.probes, FakeDetector(), cfg, progress=False)
    emb = FakeEmbedder().embed(cropset.crops[cfg.alignment])
    labels = np.array([it.identity for it in cropset.items])
    g = cropset.subset([it.relpath for it in split.gallery])
    p = cropset.subset([it.relpath for it in split.probes])
    return decision_distances(emb[g], labels[g], emb[p], labels[p], cfg.match_mode)


@pytest.mark.parametrize("far", [0.05, 0.2])
def test_calibrated_threshold_meets_the_target_far_on_decisions(
    dataset: Path, workspace: Config, far: float
) -> None:
    report = evaluate_folder(
        dataset, workspace, FakeDetector(), FakeEmbedder(), calibrate_far=far, progress=False
    )
    genuine, stranger = fake_decisions(dataset, workspace)
    threshold = report.calibration["threshold"]
    assert read_toml(workspace.root)["threshold"] == threshold
    # the recogniser's rule: strangers whose winner is within the threshold get in
    assert np.mean(stranger <= threshold) <= far
    # ... and it is the largest such threshold at 4 decimals
    assert np.mean(stranger <= threshold + 1e-4) > far
    assert report.calibration["tar"] == pytest.approx(np.mean(genuine <= threshold))
    assert report.calibration["stranger_accept"] == pytest.approx(np.mean(stranger <= threshold))
    assert report.calibration["n_strangers"] == len(stranger) == 20  # every image, once
    assert len(report.results) == 2  # no --compare: current variant, both match modes
    assert report.plots == {}
    # the report's decision line uses the configured (pre-calibration) threshold
    assert report.decision["threshold"] == workspace.threshold
    assert report.decision["genuine_accept"] == pytest.approx(
        np.mean(genuine <= workspace.threshold)
    )
    assert report.decision["stranger_min"] == pytest.approx(stranger.min())
    assert report.current.metrics["decision_genuine_max"] == pytest.approx(genuine.max())


def test_calibration_follows_the_match_mode(dataset: Path, workspace: Config) -> None:
    thresholds = {}
    for mode in ("nearest", "template"):
        cfg = workspace.replace(match_mode=mode)
        report = evaluate_folder(
            dataset, cfg, FakeDetector(), FakeEmbedder(), calibrate_far=0.1, progress=False
        )
        _, stranger = fake_decisions(dataset, cfg)
        thresholds[mode] = report.calibration["threshold"]
        assert report.calibration["mode"] == report.decision["mode"] == mode
        assert (
            np.mean(stranger <= thresholds[mode])
            <= 0.1
            < np.mean(stranger <= thresholds[mode] + 1e-4)
        )
    assert thresholds["nearest"] != thresholds["template"]


def test_calibrate_reports_lost_genuine_probes_and_few_strangers(
    workspace: Config, caplog: pytest.LogCaptureFixture
) -> None:
    genuine = np.array([0.2, 0.5, 0.9])
    stranger = np.array([0.95, 0.7, 1.3, 1.2, 0.6123456])
    with caplog.at_level("WARNING", logger="model.evaluation"):
        result = calibrate(workspace, genuine, stranger, far=0.01)
    assert result["threshold"] == 0.6123  # just below the closest stranger, rounded down
    assert result["tar"] == pytest.approx(2 / 3) and result["n_strangers_accepted"] == 0
    assert result["genuine_max"] == 0.9 and result["stranger_min"] == pytest.approx(0.6123456)
    assert read_toml(workspace.root)["threshold"] == 0.6123
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "only 5 stranger decisions" in messages
    assert "1 of 3 genuine probes (33.3%) would be rejected" in messages

    caplog.clear()
    with caplog.at_level("WARNING", logger="model.evaluation"):
        result = calibrate(workspace, genuine, stranger, far=0.2)  # one stranger may get in
    assert result["threshold"] == 0.6999 and result["n_strangers_accepted"] == 1
    assert result["tar"] == pytest.approx(2 / 3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="model.evaluation"):
        result = calibrate(workspace, genuine[:2], stranger, far=0.2)
    assert result["tar"] == 1.0 and not caplog.records  # nothing lost, enough strangers


def test_calibrate_refuses_impossible_targets(workspace: Config) -> None:
    with pytest.raises(EvaluationError, match="must be in"):
        calibrate(workspace, np.array([0.5]), np.array([1.0]), far=0.0)
    with pytest.raises(EvaluationError, match="no threshold >= 0"):
        calibrate(workspace, np.array([0.5]), np.array([0.0, 1.0]), far=0.1)
    assert not (workspace.root / "attendance.toml").exists()


def test_evaluate_needs_two_identities(tmp_path: Path, workspace: Config) -> None:
    write_dataset(tmp_path / "one", {"ann": 4})
    with pytest.raises(EvaluationError, match="at least two identities"):
        evaluate_folder(tmp_path / "one", workspace, FakeDetector(), FakeEmbedder(), progress=False)


# --------------------------------------------------------------------------- CLIs


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch, use_detector):
    """Make the CLIs build the fakes instead of loading TensorFlow models."""
    import model.embedder

    monkeypatch.setattr(
        model.embedder.Embedder, "from_config", classmethod(lambda c, cfg: FakeEmbedder())
    )
    use_detector(FakeDetector())


def test_evaluate_cli_json_and_plots(
    dataset: Path, tmp_path: Path, fake_models, capsys: pytest.CaptureFixture
) -> None:
    from attendance.cli import main

    ws = tmp_path / "ws"
    ws.mkdir()
    code = main(
        [
            "evaluate",
            str(dataset),
            "--json",
            "--workspace",
            str(ws),
            "-q",
            "--out-dir",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["split"].startswith("per identity") and len(data["results"]) == 2
    assert data["failed"][0]["path"] == "bob/04.jpg"
    assert (
        data["decision"]["mode"] == "template" and data["decision"]["threshold"] == Config.threshold
    )
    assert 0.0 <= data["decision"]["stranger_accept"] <= 1.0 and data["calibration"] is None
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["distances.png", "roc.png"]
    assert not (ws / "attendance.toml").exists()  # no --calibrate: configuration untouched


def test_evaluate_cli_calibrate_and_errors(
    dataset: Path, tmp_path: Path, fake_models, capsys: pytest.CaptureFixture
) -> None:
    from attendance.cli import main

    ws = tmp_path / "ws"
    ws.mkdir()
    assert (
        main(
            ["evaluate", str(dataset), "--calibrate", "--far", "0.05", "--workspace", str(ws), "-q"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "calibrated threshold" in out and (ws / "evaluation" / "roc.png").is_file()
    assert "decision (template): genuine max" in out and "template decisions" in out
    assert "threshold" in read_toml(ws)
    assert main(["evaluate", str(tmp_path / "missing"), "--workspace", str(ws), "-q"]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(dataset), "--far", "2", "--workspace", str(ws)])


def test_embed_cli_writes_npz(dataset: Path, tmp_path: Path, fake_models, capsys) -> None:
    from model.embed_cli import main

    out = tmp_path / "e.npz"
    assert (
        main(
            [
                str(dataset),
                "--out",
                str(out),
                "--alignment",
                "margin",
                "-q",
                "--workspace",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as data:
        assert str(data["alignment"]) == "margin" and len(data["paths"]) == 20


def test_embed_cli_accepts_a_folder_of_pgm_photos(
    tmp_path: Path, fake_models, capsys: pytest.CaptureFixture
) -> None:
    """Greyscale .pgm photos (the AT&T face set: s1/1.pgm, 92x112) are listed and embedded."""
    from PIL import Image

    from model.embed_cli import main

    data = tmp_path / "att"
    for k, person in enumerate(("s1", "s2")):
        (data / person).mkdir(parents=True)
        for shot in range(1, 4):
            rgb = cv2.resize(person_image(k, shot), (92, 112), interpolation=cv2.INTER_NEAREST)
            Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).save(
                data / person / f"{shot}.pgm"
            )
    assert (data / "s1" / "1.pgm").read_bytes()[:2] == b"P5"  # binary greyscale Netpbm
    assert [it.relpath for it in list_images(data)] == [
        "s1/1.pgm", "s1/2.pgm", "s1/3.pgm", "s2/1.pgm", "s2/2.pgm", "s2/3.pgm",
    ]  # fmt: skip

    out = tmp_path / "att.npz"
    assert main([str(data), "--out", str(out), "-q", "--workspace", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as npz:
        assert npz["paths"].tolist() == [it.relpath for it in list_images(data)]
        assert npz["identities"].tolist() == ["s1"] * 3 + ["s2"] * 3
        assert npz["embeddings"].shape == (6, 16) and npz["failed_paths"].size == 0


def test_cli_modules_import_without_tensorflow() -> None:
    code = (
        "import sys, model.evaluate_cli, model.embed_cli, model.evaluation.run, store.gallery;"
        "assert 'tensorflow' not in sys.modules and 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def sample_report(sample_dir: Path, embedder, detector, tmp_path_factory, cache_dir: Path):
    """`attendance evaluate` on the sample data, once for this module (train = gallery)."""
    root = tmp_path_factory.mktemp("eval-ws")
    cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
    return evaluate_folder(sample_dir, cfg, detector, embedder, out_dir=root / "evaluation")


@pytest.mark.weights
@pytest.mark.sample
def test_sample_acceptance_rank1_and_auc(sample_report) -> None:
    current = sample_report.current.metrics
    assert sample_report.split == "gallery = train/, probes = val/"
    assert current["rank1"] == 1.0
    assert current["auc"] >= 0.995
    assert current["n_gallery"] >= 90 and current["n_probes"] == 25
    assert len(sample_report.failed) <= 2
    for name in ("roc", "distances"):
        assert Path(sample_report.plots[name]).stat().st_size > 10_000


@pytest.mark.weights
@pytest.mark.sample
def test_sample_same_person_distances_clearly_below_different_people(sample_report) -> None:
    m = sample_report.current.metrics
    assert m["genuine_distance_mean"] + 0.4 < m["impostor_distance_mean"]
    assert m["best_accuracy"] >= 0.97
    assert m["open_set_false_accept"] <= 0.05
    # the default threshold sits between the two populations
    assert m["genuine_distance_mean"] < 1.10 < m["impostor_distance_mean"]


@pytest.mark.weights
@pytest.mark.sample
def test_embed_real_weights_on_a_few_sample_photos(
    sample_dir: Path, tmp_path: Path, embedder, detector, cache_dir: Path
) -> None:
    import shutil

    data = tmp_path / "few"
    for person in ("ben_afflek", "madonna"):
        for photo in sorted((sample_dir / "val" / person).glob("*.jpg"))[:2]:
            (data / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, data / person / photo.name)
    cfg = load_config(tmp_path, overrides={"cache_dir": str(cache_dir)}, env={})
    result = embed_folder(data, cfg, detector, embedder, progress=False)
    out = result.save(tmp_path / "few.npz")
    with np.load(out, allow_pickle=False) as npz:
        emb, ids = npz["embeddings"], npz["identities"]
        assert emb.shape == (4, 128) and str(npz["model_id"]) == embedder.model_id
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    same = ids[:, None] == ids[None]
    off_diagonal = ~np.eye(4, dtype=bool)
    assert d[same & off_diagonal].max() < d[~same].min()
