"""run_preprocess / call_preprocess with synthetic photos and a fake detector.

The fake detector "sees" pure-red squares as faces, so every test controls exactly where the
faces are. Like MTCNN on a tight crop, it misses a face that fills most of the image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from common.config import Config
from common.errors import UserError
from common.image_io import encode_png, read_image, read_png_metadata
from common.names import InvalidName
from preprocess import cli
from preprocess.detect import Face
from preprocess.pipeline import (
    MANIFEST_NAME,
    SAVE_EVERY,
    LockTimeout,
    NoFaceError,
    PreprocessSummary,
    crop_largest_face,
    output_names,
    run_preprocess,
)

# landmark positions relative to the face box: eyes, nose, mouth corners
RELATIVE_LANDMARKS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])


class RedSquareDetector:
    """Finds pure-red squares; counts calls; can crash or SIGKILL the process on call n."""

    def __init__(self, max_fraction: float = 0.75, crash_on: int = 0, kill_on: int = 0):
        self.max_fraction = max_fraction
        self.crash_on = crash_on
        self.kill_on = kill_on
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.calls += 1
        if self.calls == self.kill_on:
            os.kill(os.getpid(), 9)
        if self.calls == self.crash_on:
            raise RuntimeError("simulated crash in the detector")
        mask = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        height, width = rgb.shape[:2]
        faces = []
        for x, y, w, h, area in stats[1:count]:
            if area < 25 or max(w / width, h / height) > self.max_fraction:
                continue  # too small, or filling the frame (MTCNN misses tight crops)
            landmarks = (RELATIVE_LANDMARKS * [w, h] + [x, y]).astype(np.float32)
            faces.append(Face(box=(x, y, w, h), score=0.99, landmarks=landmarks))
        return faces  # deliberately unsorted: the pipeline must pick the largest itself


def make_photo(
    path: Path,
    faces: tuple[tuple[int, int, int], ...] = ((30, 25, 50),),
    size: tuple[int, int] = (120, 100),
    seed: int = 0,
) -> Path:
    """A noisy dark photo (width, height = ``size``) with red squares (x, y, side) as faces."""
    width, height = size
    rgb = np.random.default_rng(seed).integers(0, 120, (height, width, 3), dtype=np.uint8)
    for x, y, side in faces:
        rgb[y : y + side, x : x + side] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def populate(cfg: Config, people: dict[str, int]) -> list[str]:
    """``people[name]`` photos per person; returns their paths relative to images/."""
    rels = []
    for p, (name, count) in enumerate(people.items()):
        for i in range(count):
            make_photo(cfg.images_dir / name / f"{i:04d}.png", seed=100 * p + i)
            rels.append(f"{name}/{i:04d}.png")
    return rels


def crops(cfg: Config) -> set[str]:
    pre = cfg.pre_images_dir
    return {p.relative_to(pre).as_posix() for p in pre.rglob("*") if p.is_file()} - {
        MANIFEST_NAME,
        ".lock",
    }


def manifest(cfg: Config) -> dict:
    return json.loads((cfg.pre_images_dir / MANIFEST_NAME).read_text(encoding="utf-8"))["entries"]


def run(cfg: Config, detector=None, **kwargs) -> PreprocessSummary:
    return run_preprocess(cfg, detector=detector or RedSquareDetector(), progress=False, **kwargs)


# --------------------------------------------------------------------------- first run


def test_first_run_writes_one_png_crop_per_photo(workspace: Config):
    rels = populate(workspace, {"Ada Lovelace": 3, "Bob": 2})
    summary = run(workspace)
    assert sorted(summary.processed) == sorted(rels)
    assert summary.skipped == [] and summary.rejected == [] and summary.removed == []
    assert crops(workspace) == {r.replace(".png", ".png") for r in rels}
    for rel in rels:
        crop = read_image(workspace.pre_images_dir / rel)
        assert crop.shape == (160, 160, 3)
        assert crop[100, 80, 0] > 200 and crop[100, 80, 1] < 60  # the red "face" is centred
    entries = manifest(workspace)
    assert set(entries) == set(rels)
    entry = entries["Bob/0000.png"]
    assert entry["status"] == "ok" and entry["output"] == "Bob/0000.png"
    assert entry["alignment"] == "landmarks" and entry["identity"] == "Bob"
    assert len(entry["sha256"]) == 64 and entry["faces"] == 1
    assert summary.lines()[0].startswith("processed 5, skipped 0 (unchanged), rejected 0")


def test_jpeg_inputs_get_png_outputs(workspace: Config):
    make_photo(workspace.images_dir / "Ann" / "0001.jpg")
    run(workspace)
    assert crops(workspace) == {"Ann/0001.png"}


# --------------------------------------------------------------------------- incremental


def test_warm_run_detects_nothing_and_writes_nothing(workspace: Config):
    rels = populate(workspace, {"Ada": 3, "Bob": 2})
    run(workspace)
    manifest_file = workspace.pre_images_dir / MANIFEST_NAME
    before = manifest_file.stat().st_mtime_ns
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert counting.calls == 0
    assert sorted(summary.skipped) == sorted(rels)
    assert summary.processed == [] and summary.removed == []
    assert manifest_file.stat().st_mtime_ns == before


def test_warm_run_does_not_build_mtcnn(workspace: Config, monkeypatch: pytest.MonkeyPatch):
    populate(workspace, {"Ada": 2})
    run(workspace)

    def refuse(*_args, **_kwargs):
        raise AssertionError("MTCNN was built although nothing needed detecting")

    monkeypatch.setattr("preprocess.detect.FaceDetector._model", refuse)
    summary = run_preprocess(workspace, progress=False)  # default detector, never used
    assert len(summary.skipped) == 2


def test_changed_removed_and_added_inputs(workspace: Config):
    populate(workspace, {"Ada": 3, "Bob": 2})
    run(workspace)
    old_crop = (workspace.pre_images_dir / "Ada/0001.png").read_bytes()
    make_photo(workspace.images_dir / "Ada/0001.png", faces=((10, 10, 60),), seed=7)  # changed
    (workspace.images_dir / "Ada/0002.png").unlink()  # removed
    make_photo(workspace.images_dir / "Bob/0009.png", seed=9)  # added
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert sorted(summary.processed) == ["Ada/0001.png", "Bob/0009.png"]
    assert counting.calls == 2
    assert summary.removed == ["Ada/0002.png"]
    assert sorted(summary.skipped) == ["Ada/0000.png", "Bob/0000.png", "Bob/0001.png"]
    assert (workspace.pre_images_dir / "Ada/0001.png").read_bytes() != old_crop
    assert "Ada/0002.png" not in crops(workspace) and "Ada/0002.png" not in manifest(workspace)


def test_removed_person_folder_is_removed(workspace: Config):
    populate(workspace, {"Ada": 2, "Bob": 2})
    run(workspace)
    shutil.rmtree(workspace.images_dir / "Bob")
    summary = run(workspace)
    assert sorted(summary.removed) == ["Bob/0000.png", "Bob/0001.png"]
    assert not (workspace.pre_images_dir / "Bob").exists()
    assert crops(workspace) == {"Ada/0000.png", "Ada/0001.png"}
    assert all(not rel.startswith("Bob/") for rel in manifest(workspace))


def test_deleted_crop_is_remade(workspace: Config):
    populate(workspace, {"Ada": 2})
    run(workspace)
    (workspace.pre_images_dir / "Ada/0000.png").unlink()
    summary = run(workspace)
    assert summary.processed == ["Ada/0000.png"]
    assert (workspace.pre_images_dir / "Ada/0000.png").is_file()


def test_alignment_change_reprocesses_everything(workspace: Config):
    rels = populate(workspace, {"Ada": 2, "Bob": 1})
    run(workspace)
    landmark_crop = read_image(workspace.pre_images_dir / "Ada/0000.png")
    margin_cfg = workspace.replace(alignment="margin")
    summary = run(margin_cfg)
    assert sorted(summary.processed) == sorted(rels)
    assert {e["alignment"] for e in manifest(workspace).values()} == {"margin"}
    margin_crop = read_image(workspace.pre_images_dir / "Ada/0000.png")
    assert margin_crop.shape == (160, 160, 3)
    assert not np.array_equal(margin_crop, landmark_crop)
    # margin crop: the square box fills [16, 144) of the crop
    assert margin_crop[20, 20, 0] > 200 and margin_crop[8, 8, 0] < 130
    # the margin only matters to the margin method
    assert len(run(margin_cfg.replace(margin=20)).processed) == len(rels)
    assert len(run(workspace).processed) == len(rels)  # back to landmarks
    assert run(workspace.replace(margin=20)).processed == []


def test_detector_change_reprocesses_everything(workspace: Config, monkeypatch):
    """The detector and its settings are part of the crop settings: another detector, or
    another threshold of the same one, redoes every crop; an unrelated key does not."""
    import dataclasses

    from common import config
    from preprocess.detectors import REGISTRY

    monkeypatch.setitem(config._CHOICES, "detector", (*config.DETECTORS, "other"))
    monkeypatch.setitem(REGISTRY, "other", dataclasses.replace(REGISTRY["mtcnn"]))
    rels = populate(workspace, {"Ada": 2, "Bob": 1})
    run(workspace)
    assert run(workspace).processed == []
    assert sorted(run(workspace.replace(detector="other")).processed) == sorted(rels)
    assert {e["settings"]["detector"] for e in manifest(workspace).values()} == {"other"}
    assert sorted(run(workspace).processed) == sorted(rels)  # back to mtcnn
    assert sorted(run(workspace.replace(min_detection_score=0.8)).processed) == sorted(rels)
    assert run(workspace.replace(min_detection_score=0.8, threshold=0.9)).processed == []


def test_crops_made_before_detectors_had_names_are_kept(workspace: Config):
    """A manifest written before the ``detector`` setting existed (every crop then came from
    MTCNN) is up to date for ``detector = "mtcnn"``: upgrading redoes nothing."""
    populate(workspace, {"Ada": 2, "Bob": 1})
    run(workspace)
    path = workspace.pre_images_dir / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["entries"].values():
        del entry["settings"]["detector"]
        crop = workspace.pre_images_dir / entry["output"]
        meta = read_png_metadata(crop)
        del meta["settings"]["detector"]
        crop.write_bytes(encode_png(read_image(crop), meta))
    path.write_text(json.dumps(data), encoding="utf-8")
    before = {p: p.read_bytes() for p in workspace.pre_images_dir.rglob("*.png")}
    assert run(workspace).processed == []
    assert {p: p.read_bytes() for p in workspace.pre_images_dir.rglob("*.png")} == before


def test_names_limits_the_run_to_those_people(workspace: Config):
    populate(workspace, {"Ada": 2, "Bob": 2})
    run(workspace)
    make_photo(workspace.images_dir / "Ada/0005.png", seed=55)
    (workspace.images_dir / "Bob/0000.png").unlink()  # not in scope: Bob's crop must stay
    summary = run(workspace, names=["Ada"])
    assert summary.processed == ["Ada/0005.png"]
    assert sorted(summary.skipped) == ["Ada/0000.png", "Ada/0001.png"]
    assert summary.removed == []
    assert "Bob/0000.png" in crops(workspace) and "Bob/0000.png" in manifest(workspace)


def test_names_with_a_removed_person_removes_only_their_crops(workspace: Config):
    populate(workspace, {"Ada": 2, "Bob": 2})
    run(workspace)
    shutil.rmtree(workspace.images_dir / "Ada")
    summary = run(workspace, names=["Ada"])
    assert sorted(summary.removed) == ["Ada/0000.png", "Ada/0001.png"]
    assert not (workspace.pre_images_dir / "Ada").exists()
    assert crops(workspace) == {"Bob/0000.png", "Bob/0001.png"}


def test_renamed_person_reuses_the_crops_byte_for_byte(workspace: Config):
    populate(workspace, {"Ada": 2})
    run(workspace)
    before = (workspace.pre_images_dir / "Ada/0000.png").read_bytes()
    (workspace.images_dir / "Ada").rename(workspace.images_dir / "Ada Lovelace")
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert counting.calls == 0
    assert sorted(summary.processed) == ["Ada Lovelace/0000.png", "Ada Lovelace/0001.png"]
    assert crops(workspace) == {"Ada Lovelace/0000.png", "Ada Lovelace/0001.png"}
    assert (workspace.pre_images_dir / "Ada Lovelace/0000.png").read_bytes() == before


def test_stem_clashes_keep_both_photos(workspace: Config):
    make_photo(workspace.images_dir / "Ada/shot.png", seed=1)
    make_photo(workspace.images_dir / "Ada/shot.jpg", seed=2)
    make_photo(workspace.images_dir / "Ada/other.jpg", seed=3)
    run(workspace)
    assert crops(workspace) == {"Ada/shot.png.png", "Ada/shot.jpg.png", "Ada/other.png"}
    assert output_names(["A.jpg", "a.png"]) == {"A.jpg": "A.jpg.png", "a.png": "a.png.png"}


def test_foreign_files_in_pre_images_are_left_alone(workspace: Config, caplog):
    populate(workspace, {"Ada": 1})
    run(workspace)
    foreign = workspace.pre_images_dir / "Ada" / "hand_made.png"
    Image.fromarray(np.zeros((160, 160, 3), np.uint8)).save(foreign)
    with caplog.at_level(logging.WARNING):
        run(workspace)
    assert foreign.exists()
    assert "not made by call_preprocess" in caplog.text


# --------------------------------------------------------------------------- crash safety


def test_crash_mid_run_keeps_finished_work(workspace: Config):
    rels = populate(workspace, {"Ada": 4, "Bob": 3})
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(workspace, RedSquareDetector(crash_on=5))
    assert len(crops(workspace)) == 4
    assert not list(workspace.pre_images_dir.rglob("*.tmp"))
    assert len(manifest(workspace)) == 4  # saved on the way out
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert counting.calls == 3
    assert len(summary.skipped) == 4 and len(summary.processed) == 3
    assert crops(workspace) == set(rels)


def test_kill_9_mid_run_resumes_without_redoing_finished_work(workspace: Config):
    """A real SIGKILL in a child process (no clean-up code runs), then a resumed run."""
    count = SAVE_EVERY + 5
    rels = populate(workspace, {"Ada": count})
    kill_on = SAVE_EVERY + 3  # after SAVE_EVERY + 2 finished crops: one manifest save happened
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from common.config import load_config\n"
        "from preprocess.pipeline import run_preprocess\n"
        "from test_preprocess_pipeline import RedSquareDetector\n"
        "cfg = load_config(sys.argv[2], env={})\n"
        f"run_preprocess(cfg, detector=RedSquareDetector(kill_on={kill_on}), progress=False)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(workspace.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    finished = kill_on - 1
    assert len(crops(workspace)) == finished
    assert len(manifest(workspace)) == SAVE_EVERY  # the crops after the last save are unlisted
    for rel in crops(workspace):  # every crop on disk is complete
        assert read_image(workspace.pre_images_dir / rel).shape == (160, 160, 3)
    # leave a half-written temp file as a kill during a write would
    (workspace.pre_images_dir / "Ada" / ".0003.png.abc.tmp").write_bytes(b"\x89PNG half")
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert counting.calls == count - finished
    assert len(summary.skipped) == finished and len(summary.processed) == count - finished
    assert crops(workspace) == set(rels)
    assert not list(workspace.pre_images_dir.rglob("*.tmp"))
    assert len(manifest(workspace)) == count


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_lost_manifest_is_rebuilt_from_the_crops(workspace: Config, damage: str):
    rels = populate(workspace, {"Ada": 3})
    run(workspace)
    manifest_file = workspace.pre_images_dir / MANIFEST_NAME
    if damage == "delete":
        manifest_file.unlink()
    else:
        manifest_file.write_text("{not json", encoding="utf-8")
    counting = RedSquareDetector()
    summary = run(workspace, counting)
    assert counting.calls == 0
    assert sorted(summary.skipped) == sorted(rels)
    assert set(manifest(workspace)) == set(rels)


def test_crops_record_their_source_and_settings(workspace: Config):
    populate(workspace, {"Ada": 1})
    run(workspace)
    meta = read_png_metadata(workspace.pre_images_dir / "Ada/0000.png")
    entry = manifest(workspace)["Ada/0000.png"]
    assert meta == {"source_sha256": entry["sha256"], "settings": entry["settings"]}


# --------------------------------------------------------------------------- bad input


def test_bad_files_are_rejected_with_reasons_and_never_stop_the_run(workspace: Config):
    images = workspace.images_dir
    make_photo(images / "Ada/good.png")
    (images / "Ada/empty.jpg").write_bytes(b"")
    (images / "Ada/notes.txt").write_text("hello", encoding="utf-8")
    good = (images / "Ada/good.png").read_bytes()
    (images / "Ada/truncated.png").write_bytes(good[: len(good) // 2])
    make_photo(images / "Ada/noface.png", faces=())
    make_photo(images / "Ada/tiny.png", faces=(), size=(12, 10))
    summary = run(workspace)
    assert summary.processed == ["Ada/good.png"]
    reasons = dict(summary.rejected)
    assert set(reasons) == {
        "Ada/empty.jpg",
        "Ada/notes.txt",
        "Ada/truncated.png",
        "Ada/noface.png",
        "Ada/tiny.png",
    }
    assert "empty" in reasons["Ada/empty.jpg"]
    assert "not an image" in reasons["Ada/notes.txt"]
    assert "corrupt or truncated" in reasons["Ada/truncated.png"]
    assert "no face found" in reasons["Ada/noface.png"]
    assert "12x10 px, smaller than min_face_px=20" in reasons["Ada/tiny.png"]
    for rel, reason in reasons.items():
        assert reason.startswith(rel) and "\n" not in reason
    assert crops(workspace) == {"Ada/good.png"}
    # unchanged rejected files are reported again without being decoded or detected again
    counting = RedSquareDetector()
    again = run(workspace, counting)
    assert counting.calls == 0
    assert dict(again.rejected) == reasons
    assert any("rejected Ada/tiny.png" in line for line in again.lines())


def test_photo_that_loses_its_face_loses_its_crop(workspace: Config):
    make_photo(workspace.images_dir / "Ada/0000.png")
    run(workspace)
    make_photo(workspace.images_dir / "Ada/0000.png", faces=(), seed=4)
    summary = run(workspace)
    assert [r.path for r in summary.rejected] == ["Ada/0000.png"]
    assert crops(workspace) == set()


def test_several_faces_keep_the_largest(workspace: Config, caplog):
    rgb = read_image(
        make_photo(
            workspace.root / "group.png",
            faces=((5, 5, 30), (60, 30, 50), (10, 60, 20)),
            size=(140, 100),
        )
    )
    with caplog.at_level(logging.INFO, logger="preprocess"):
        crop, face = crop_largest_face(rgb, RedSquareDetector(), workspace, name="group.png")
    assert face.box == (60, 30, 50, 50)
    assert crop.shape == (160, 160, 3)
    assert "group.png: 3 faces found, keeping the largest" in caplog.text
    make_photo(workspace.images_dir / "Ada/group.png", faces=((5, 5, 30), (60, 30, 50)))
    run(workspace)
    assert manifest(workspace)["Ada/group.png"]["faces"] == 2


def test_tight_crop_is_found_after_padding(workspace: Config):
    rgb = read_image(make_photo(workspace.root / "tight.png", faces=((4, 4, 92),), size=(100, 100)))
    detector = RedSquareDetector(max_fraction=0.75)
    assert detector.detect(rgb) == []  # the plain image fails, as MTCNN does on tight crops
    crop, face = crop_largest_face(rgb, detector, workspace)
    np.testing.assert_allclose(face.box, (4, 4, 92, 92))  # mapped back to the original image
    assert crop.shape == (160, 160, 3)
    with pytest.raises(NoFaceError, match="no face found"):
        crop_largest_face(rgb[:, :, ::-1].copy(), detector, workspace)  # blue: no face at all


# --------------------------------------------------------------------------- names


def test_unicode_names_are_welcome(workspace: Config):
    make_photo(workspace.images_dir / "José Álvarez" / "0001.jpg")
    decomposed = unicodedata.normalize("NFD", "Zoë")
    make_photo(workspace.images_dir / decomposed / "0001.png", seed=3)
    summary = run(workspace)
    assert summary.rejected == []
    assert crops(workspace) == {"José Álvarez/0001.png", "Zoë/0001.png"}  # NFC identities
    assert manifest(workspace)[f"{decomposed}/0001.png"]["identity"] == "Zoë"
    assert run(workspace).skipped  # and stable on the next run
    assert crops(workspace) == {"José Álvarez/0001.png", "Zoë/0001.png"}


def test_hidden_and_invalid_folders_are_skipped_not_crashes(workspace: Config):
    images = workspace.images_dir
    make_photo(images / "Ada/0001.png")
    make_photo(images / "Ada/.hidden.png", seed=1)
    make_photo(images / ".trash/0001.png", seed=2)
    make_photo(images / "bad:name/0001.png", seed=3)
    make_photo(images / "tab\there/0001.png", seed=4)
    make_photo(images / "Ada/nested/0001.png", seed=5)
    (images / "README.md").write_text("# images\n", encoding="utf-8")
    summary = run(workspace)
    assert summary.processed == ["Ada/0001.png"]
    reasons = dict(summary.rejected)
    assert set(reasons) == {"bad:name/", "tab\there/", "Ada/nested/"}
    assert "':'" in reasons["bad:name/"]
    assert "nested folders" in reasons["Ada/nested/"]
    assert crops(workspace) == {"Ada/0001.png"}


@pytest.mark.parametrize("name", ["", "   ", "../evil", ".hidden", "a/b"])
def test_refused_names_for_a_limited_run(workspace: Config, name: str):
    populate(workspace, {"Ada": 1})
    with pytest.raises(InvalidName):
        run(workspace, names=[name])
    assert not (workspace.pre_images_dir / "Ada").exists()


def test_missing_images_folder_is_a_user_error(workspace: Config):
    with pytest.raises(UserError, match="does not exist"):
        run(workspace)


def test_unwritable_pre_images_is_a_user_error(workspace: Config):
    populate(workspace, {"Ada": 1})
    workspace.pre_images_dir.write_text("a file where the folder should be", encoding="utf-8")
    with pytest.raises(UserError, match="cannot write .*pre_images"):
        run(workspace)
    assert (workspace.images_dir / "Ada/0000.png").is_file()


# --------------------------------------------------------------------------- command line


def test_call_preprocess_main(workspace: Config, use_detector, capsys):
    populate(workspace, {"Ada": 2})
    (workspace.images_dir / "Ada/broken.jpg").write_bytes(b"")
    use_detector(RedSquareDetector())
    code = cli.main(["--workspace", str(workspace.root), "-q", "--set", "alignment=margin"])
    out = capsys.readouterr().out
    assert code == 0
    assert "processed 2, skipped 0 (unchanged), rejected 1" in out
    assert "rejected Ada/broken.jpg: the file is empty" in out
    assert {e["alignment"] for e in manifest(workspace).values()} == {"margin"}
    assert cli.main(["--workspace", str(workspace.root), "-q", "--alignment", "landmarks"]) == 0
    assert "processed 2" in capsys.readouterr().out


def test_call_preprocess_reports_user_errors_in_one_line(workspace: Config, capsys):
    code = cli.main(["--workspace", str(workspace.root), "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err


def test_python_dash_m_help_is_instant_and_tf_free(tmp_path: Path):
    code = (
        "import sys, runpy\n"
        "sys.argv = ['call_preprocess', '--help']\n"
        "try:\n"
        "    runpy.run_module('preprocess.cli', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'tensorflow' not in sys.modules and 'mtcnn' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "--alignment" in proc.stdout and "--name" in proc.stdout


# --------------------------------------------------------------------------- hostile input (#9)


def outside_dir(workspace: Config) -> Path:
    """A folder beside the workspace (outside it), with a sentinel file."""
    folder = workspace.root.parent / f"{workspace.root.name}-outside"
    folder.mkdir()
    (folder / "sentinel.txt").write_text("keep me", encoding="utf-8")
    return folder


def test_tampered_manifest_never_deletes_or_reads_outside_pre_images(workspace: Config, caplog):
    """Item 1: an entry whose output is ``../../x``, absolute, or behind a symlinked folder is
    dropped with a warning naming it; the files it names survive, even our own crops."""
    populate(workspace, {"Ada": 2, "Bob": 1})
    run(workspace)
    outside = outside_dir(workspace)
    crop = (workspace.pre_images_dir / "Ada/0000.png").read_bytes()
    victims = {name: outside / name for name in ("rel.png", "abs.png", "linked.png", "key.png")}
    for path in victims.values():
        path.write_bytes(crop)  # made by call_preprocess: it would pass the "is ours" check
    (workspace.pre_images_dir / "Evil").symlink_to(outside, target_is_directory=True)
    pre = workspace.pre_images_dir
    path = pre / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    good = data["entries"]["Ada/0000.png"]
    tampered = {
        "Gone/1.png": {**good, "output": f"../../{outside.name}/rel.png"},
        "Gone/2.png": {**good, "output": str(victims["abs.png"])},
        "Gone/3.png": {**good, "identity": "Evil", "output": "Evil/linked.png"},
        f"../{outside.name}/key.png": {**good, "output": None},
        "Gone/4.png": {**good, "output": "Ada/../../x.png"},
        "Gone/5.png": {**good, "sha256": ["not", "a", "string"]},
        "Ada/0001.png": {**data["entries"]["Ada/0001.png"], "output": f"/{outside}/abs.png"},
    }
    data["entries"].update(tampered)
    path.write_text(json.dumps(data), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        summary = run(workspace)
    assert all(p.read_bytes() == crop for p in victims.values())
    assert (outside / "sentinel.txt").read_text(encoding="utf-8") == "keep me"
    for rel in ("Gone/1.png", "Gone/2.png", "Gone/4.png", "Gone/5.png", "Ada/0001.png"):
        assert f"dropped the entry {rel!r}" in caplog.text
    assert "'Evil/linked.png' leads outside" in caplog.text  # lexically fine, resolves outside
    assert f"dropped the entry '../{outside.name}/key.png'" in caplog.text
    assert "Evil/linked.png" not in summary.removed
    assert summary.processed == []  # Ada/0001.png lost its entry: its crop is adopted again
    assert sorted(summary.skipped) == ["Ada/0000.png", "Ada/0001.png", "Bob/0000.png"]
    assert crops(workspace) == {"Ada/0000.png", "Ada/0001.png", "Bob/0000.png"}
    assert set(manifest(workspace)) == {"Ada/0000.png", "Ada/0001.png", "Bob/0000.png"}
    again = run(workspace)
    assert again.processed == [] and again.removed == []


def _unblock_fifo_after(path: Path, seconds: float) -> tuple[threading.Event, list[bool]]:
    """A watchdog: whenever ``path`` has been waited on for ``seconds``, open it for writing
    (which frees a blocked reader) and note that it had to; until ``done`` is set."""
    done, needed = threading.Event(), []

    def watch() -> None:
        while not done.wait(seconds):
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # only works if a reader waits
                needed.append(True)
                os.close(fd)

    threading.Thread(target=watch, daemon=True).start()
    return done, needed


def test_manifest_that_is_a_fifo_is_not_read(workspace: Config, caplog):
    populate(workspace, {"Ada": 1})
    workspace.pre_images_dir.mkdir()
    os.mkfifo(workspace.pre_images_dir / MANIFEST_NAME)
    done, needed = _unblock_fifo_after(workspace.pre_images_dir / MANIFEST_NAME, 10.0)
    try:
        with caplog.at_level(logging.WARNING):
            summary = run(workspace)
    finally:
        done.set()
    assert not needed, "the manifest FIFO was opened"
    assert summary.processed == ["Ada/0000.png"]
    assert "not a regular file" in caplog.text
    assert set(manifest(workspace)) == {"Ada/0000.png"}  # replaced by a real file


def test_fifo_photo_is_rejected_without_being_opened(workspace: Config):
    """Item 3: a FIFO named like a photo is rejected at once ("not a regular file")."""
    populate(workspace, {"Ada": 1})
    fifo = workspace.images_dir / "Ada" / "x.jpg"
    os.mkfifo(fifo)
    done, needed = _unblock_fifo_after(fifo, 10.0)
    try:
        summary = run(workspace)
    finally:
        done.set()
    assert not needed, "run_preprocess blocked on the FIFO"
    assert summary.processed == ["Ada/0000.png"]
    reasons = dict(summary.rejected)
    assert reasons["Ada/x.jpg"].startswith("Ada/x.jpg: not a regular file (a FIFO")
    assert "\n" not in reasons["Ada/x.jpg"]
    again = run(workspace)  # not recorded, reported again, still without blocking
    assert again.processed == [] and set(dict(again.rejected)) == {"Ada/x.jpg"}


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from common.config import load_config
from preprocess.pipeline import run_preprocess
from test_preprocess_pipeline import RedSquareDetector

class Hang(RedSquareDetector):
    def detect(self, rgb):
        print("locked", flush=True)
        time.sleep(600)

cfg = load_config(sys.argv[2], env={})
run_preprocess(cfg, detector=Hang(), progress=False)
"""


def _start_holder(workspace: Config) -> subprocess.Popen:
    """A real preprocess run that takes the lock and then hangs in detection."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(Path(__file__).parent), str(workspace.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read() if proc.poll() is not None else line
    return proc


def test_lock_held_by_a_live_run_times_out_naming_its_pid(workspace: Config):
    """Item 3: a run waits at most lock_timeout_seconds and names the holder's PID."""
    populate(workspace, {"Ada": 1})
    holder = _start_holder(workspace)
    result: list[BaseException | PreprocessSummary] = []
    try:
        lock_text = (workspace.pre_images_dir / ".lock").read_text(encoding="utf-8")
        assert lock_text.startswith(f"{holder.pid} ")
        cfg = workspace.replace(lock_timeout_seconds=1)
        waiter = threading.Thread(target=lambda: result.append(_capture(run, cfg)), daemon=True)
        started = time.monotonic()
        waiter.start()
        waiter.join(30)
        assert not waiter.is_alive(), "run_preprocess waited for the lock without a limit"
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait(30)
    assert len(result) == 1 and isinstance(result[0], LockTimeout), result
    message = str(result[0])
    assert f"process {holder.pid}" in message and ".lock" in message
    assert "lock_timeout_seconds=1" in message and "\n" not in message
    assert isinstance(result[0], UserError)


def test_lock_held_by_a_run_making_progress_is_waited_for_past_the_timeout(workspace: Config):
    """A long run that keeps working (it touches the lock at every photo) is not a hang: the
    waiting run outlasts lock_timeout_seconds and proceeds once the holder is done."""
    populate(workspace, {"Ada": 1})
    holder = _start_holder(workspace)
    lock = workspace.pre_images_dir / ".lock"
    result: list[BaseException | PreprocessSummary] = []
    cfg = workspace.replace(lock_timeout_seconds=1)
    waiter = threading.Thread(target=lambda: result.append(_capture(run, cfg)), daemon=True)
    try:
        waiter.start()
        for _ in range(12):  # 3 s of progress, three times the timeout
            time.sleep(0.25)
            os.utime(lock)
        assert waiter.is_alive() and not result, result
    finally:
        holder.kill()
        holder.wait(30)
    waiter.join(30)
    assert len(result) == 1 and isinstance(result[0], PreprocessSummary), result
    assert result[0].processed == ["Ada/0000.png"]


def _capture(func, *args):
    try:
        return func(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return exc


def test_lock_left_by_a_run_killed_with_sigkill_never_blocks(workspace: Config):
    """Item 3: kill -9 while holding the lock; the next run takes it over at once."""
    populate(workspace, {"Ada": 2})
    holder = _start_holder(workspace)
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(30) == -signal.SIGKILL
    lock = workspace.pre_images_dir / ".lock"
    assert lock.read_text(encoding="utf-8").startswith(f"{holder.pid} ")  # left behind
    started = time.monotonic()
    summary = run(workspace.replace(lock_timeout_seconds=5))
    assert time.monotonic() - started < 5
    assert sorted(summary.processed) == ["Ada/0000.png", "Ada/0001.png"]
    assert lock.read_text(encoding="utf-8") == ""  # released, names nobody


def test_lock_file_that_is_not_a_regular_file_is_refused(workspace: Config):
    populate(workspace, {"Ada": 1})
    workspace.pre_images_dir.mkdir()
    os.mkfifo(workspace.pre_images_dir / ".lock")
    with pytest.raises(UserError, match=r"\.lock: not a regular file \(a FIFO"):
        run(workspace)


def test_group_photo_is_refused_unless_one_face_clearly_dominates(workspace: Config):
    """Item 5: similar-sized faces are refused; a small face in the background is not."""
    images = workspace.images_dir
    make_photo(images / "Ben/pair.png", faces=((5, 20, 50), (65, 25, 45)), size=(120, 100))
    make_photo(images / "Ben/background.png", faces=((10, 20, 60), (90, 5, 20)), size=(120, 100))
    make_photo(images / "Ben/single.png")
    ratio = workspace.min_dominant_ratio
    assert (45 * 45) * ratio > 50 * 50 and ratio * (20 * 20) < 60 * 60
    summary = run(workspace)
    assert sorted(summary.processed) == ["Ben/background.png", "Ben/single.png"]
    reason = dict(summary.rejected)["Ben/pair.png"]
    assert reason.startswith("Ben/pair.png: 2 or more faces (2 found")
    assert reason.endswith("crop the photo to one person")
    assert crops(workspace) == {"Ben/background.png", "Ben/single.png"}
    crop = read_image(workspace.pre_images_dir / "Ben/background.png")
    assert crop[100, 80, 0] > 200  # the large face, centred
    entry = manifest(workspace)["Ben/pair.png"]
    assert entry["status"] == "rejected" and entry["faces"] == 2
    assert run(workspace).processed == []  # the verdict is remembered
    # the verdict depends on min_dominant_ratio: changing it redoes those photos only
    relaxed = run(workspace.replace(min_dominant_ratio=1.0))
    assert sorted(relaxed.processed) == ["Ben/background.png", "Ben/pair.png"]
    assert "Ben/pair.png" in crops(workspace)
    strict = run(workspace)
    assert strict.processed == ["Ben/background.png"]  # redone: still dominant enough
    assert [r.path for r in strict.rejected] == ["Ben/pair.png"]
    assert "Ben/pair.png" not in crops(workspace)


def test_group_photo_accepted_before_the_check_is_checked_again(workspace: Config):
    """Crops of several-face photos made before group photos were refused are redone."""
    make_photo(workspace.images_dir / "Ben/pair.png", faces=((5, 20, 50), (65, 25, 45)))
    make_photo(workspace.images_dir / "Ben/single.png", seed=2)
    run(workspace.replace(min_dominant_ratio=1.0))
    path = workspace.pre_images_dir / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["entries"]["Ben/pair.png"]["checks"]  # as written by an older version
    path.write_text(json.dumps(data), encoding="utf-8")
    summary = run(workspace)
    assert summary.processed == [] and summary.skipped == ["Ben/single.png"]
    assert [r.path for r in summary.rejected] == ["Ben/pair.png"]
    assert crops(workspace) == {"Ben/single.png"}


def test_symlinked_person_folder_and_files_leading_outside_are_refused(workspace: Config):
    """Item 6: a person folder that is a symlink, and a photo linking out of images/, are
    refused with a reason and never read; a photo linking inside images/ is read."""
    outside = outside_dir(workspace)
    make_photo(outside / "Eve" / "0000.png", seed=5)
    make_photo(outside / "stray.png", seed=6)
    populate(workspace, {"Ada": 1, "Bob": 1})
    images = workspace.images_dir
    (images / "Eve").symlink_to(outside / "Eve", target_is_directory=True)
    (images / "Alias").symlink_to(images / "Bob", target_is_directory=True)
    (images / "Ada" / "stray.png").symlink_to(outside / "stray.png")
    (images / "Ada" / "bob.png").symlink_to(images / "Bob" / "0000.png")
    (images / "Ada" / "outdir").symlink_to(outside, target_is_directory=True)
    summary = run(workspace)
    assert sorted(summary.processed) == ["Ada/0000.png", "Ada/bob.png", "Bob/0000.png"]
    reasons = dict(summary.rejected)
    assert set(reasons) == {"Eve/", "Alias/", "Ada/stray.png", "Ada/outdir"}
    assert reasons["Eve/"].startswith("Eve/: the person folder is a symbolic link")
    assert "outside images/" in reasons["Eve/"] and "not read" in reasons["Eve/"]
    assert "outside images/" not in reasons["Alias/"]
    assert reasons["Ada/stray.png"].startswith("Ada/stray.png: a symbolic link to a file outside")
    assert "outside images/" in reasons["Ada/outdir"]
    assert all("\n" not in r for r in reasons.values())
    assert not (workspace.pre_images_dir / "Eve").exists()
    assert crops(workspace) == {"Ada/0000.png", "Ada/bob.png", "Bob/0000.png"}
    assert sorted(os.listdir(outside)) == ["Eve", "sentinel.txt", "stray.png"]
    assert run(workspace).processed == []


def test_crop_folder_that_is_a_symlink_is_never_written_through(workspace: Config):
    """A pre_images/<Name> folder linked outside: no crop is written or deleted there."""
    outside = outside_dir(workspace)
    populate(workspace, {"Ada": 1})
    workspace.pre_images_dir.mkdir()
    (workspace.pre_images_dir / "Ada").symlink_to(outside, target_is_directory=True)
    summary = run(workspace)
    assert summary.processed == []
    assert "would leave" in dict(summary.rejected)["Ada/"]
    assert sorted(os.listdir(outside)) == ["sentinel.txt"]


def test_pixel_limit_comes_from_the_configuration(workspace: Config):
    """Item 9: run_preprocess decodes with cfg.max_image_pixels; raising it redoes the photo."""
    make_photo(workspace.images_dir / "Ada/0000.png", size=(120, 100))
    small = workspace.replace(max_image_pixels=10_000)
    summary = run(small)
    reason = dict(summary.rejected)["Ada/0000.png"]
    assert "120x100 px" in reason and "max_image_pixels=10000" in reason
    assert run(small).processed == []
    assert run(workspace).processed == ["Ada/0000.png"]


def test_very_long_file_names_get_short_crop_names(workspace: Config):
    long_stem = "x" * 250
    make_photo(workspace.images_dir / "Ada" / f"{long_stem}.png")
    make_photo(workspace.images_dir / "Ada" / f"{long_stem[:-1]}.jpg", seed=3)
    summary = run(workspace)
    assert len(summary.processed) == 2 and summary.rejected == []
    assert all(len(name.encode()) <= 240 for name in os.listdir(workspace.pre_images_dir / "Ada"))
    assert run(workspace).processed == []
