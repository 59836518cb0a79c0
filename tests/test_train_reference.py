"""Reference people (model.training.reference): cached crops, the in-memory split, a whole run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_evaluate import FakeDetector, person_image, write_dataset
from test_train import BASE, SIZE, _opts, make_identities, model, tiny  # noqa: F401 (fixtures)

from common.config import Config, read_toml
from model.training.data import CropSet
from model.training.errors import TrainError
from model.training.reference import (
    CACHE_NAME,
    PREFIX,
    ReferenceCrops,
    add_reference,
    load_reference,
)
from model.training.run import run_training
from model.training.split import GALLERY, HOLDOUT, PROBE, SPLIT_NAME, update_split

COUNTS = {"ann": 4, "bob": 3, "cyd": 5}
BLANK = {"bob/02"}  # an all-black photo: no face


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    """Three people who are not enrolled; one of bob's photos has no face."""
    return write_dataset(tmp_path / "reference", COUNTS, blank=BLANK)


def _load(cfg: Config, root: Path, detector: FakeDetector, size: int = SIZE) -> ReferenceCrops:
    """:func:`load_reference`; ``detector.calls`` then counts the detections it ran."""
    detector.calls = 0
    return load_reference(cfg, root, size, progress=False)


# --- detection and the cache -------------------------------------------------------------


def test_load_reference_crops_every_face_and_lists_the_rest(workspace, reference, use_detector):
    detector = use_detector(FakeDetector())
    found = _load(workspace, reference, detector)
    expected = sorted(
        f"{name}/{shot:02d}.jpg"
        for name, n in COUNTS.items()
        for shot in range(n)
        if f"{name}/{shot:02d}" not in BLANK
    )
    assert found.relpaths == expected
    assert found.identities == [rel.split("/")[0] for rel in expected]
    assert found.names == ["ann", "bob", "cyd"] and found.root == reference
    assert found.crops.shape == (len(expected), SIZE, SIZE, 3) and found.crops.dtype == np.uint8
    assert len(found.failed) == 1 and found.failed[0].startswith("bob/02.jpg: ")
    assert detector.calls >= len(expected) + 1
    assert (workspace.models_dir / CACHE_NAME).is_file()
    # a crop of the photo, not a blank: the block pattern's colours survive alignment
    assert all(crop.std() > 10 for crop in found.crops)
    big = _load(workspace.replace(alignment="margin"), reference, detector, size=160)
    assert big.crops.shape == (len(expected), 160, 160, 3)  # not resized at the crop size


def test_second_load_detects_nothing_and_gives_the_same_crops(workspace, reference, use_detector):
    detector = use_detector(FakeDetector())
    first = _load(workspace, reference, detector)
    assert detector.calls > 0
    again = _load(workspace, reference, detector)
    assert detector.calls == 0
    assert again.relpaths == first.relpaths and again.identities == first.identities
    assert again.failed == first.failed
    np.testing.assert_array_equal(again.crops, first.crops)


def test_a_changed_or_new_photo_is_the_only_one_detected(workspace, reference, use_detector):
    detector = use_detector(FakeDetector())
    first = _load(workspace, reference, detector)
    ann = reference / "ann" / "01.jpg"
    stat = ann.stat()
    os.utime(ann, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same photo
    touched = _load(workspace, reference, detector)
    assert detector.calls == 0
    np.testing.assert_array_equal(touched.crops, first.crops)

    k = first.relpaths.index("ann/01.jpg")
    assert cv2.imwrite(str(ann), cv2.cvtColor(person_image(8, 0), cv2.COLOR_RGB2BGR))
    changed = _load(workspace, reference, detector)
    assert detector.calls == 1 and changed.relpaths == first.relpaths
    assert not np.array_equal(changed.crops[k], first.crops[k])
    others = np.arange(len(first.relpaths)) != k
    np.testing.assert_array_equal(changed.crops[others], first.crops[others])

    new = reference / "cyd" / "99.jpg"
    assert cv2.imwrite(str(new), cv2.cvtColor(person_image(7, 0), cv2.COLOR_RGB2BGR))
    grown = _load(workspace, reference, detector)
    assert detector.calls == 1
    assert grown.relpaths == sorted([*first.relpaths, "cyd/99.jpg"])
    added = grown.relpaths.index("cyd/99.jpg")
    assert not any(np.array_equal(grown.crops[added], crop) for crop in changed.crops)

    new.unlink()  # a deleted photo leaves the results and the cache, without detecting
    shrunk = _load(workspace, reference, detector)
    assert detector.calls == 0 and shrunk.relpaths == first.relpaths
    np.testing.assert_array_equal(shrunk.crops, changed.crops)
    with np.load(workspace.models_dir / CACHE_NAME) as cached:
        assert "cyd/99.jpg" not in cached["relpaths"].tolist()


def test_other_crop_settings_detect_every_photo_again(workspace, reference, use_detector):
    detector = use_detector(FakeDetector())
    first = _load(workspace, reference, detector)
    all_calls = detector.calls
    margin = workspace.replace(alignment="margin")
    other = _load(margin, reference, detector)
    assert detector.calls == all_calls
    assert other.relpaths == first.relpaths and not np.array_equal(other.crops, first.crops)
    _load(margin, reference, detector)
    assert detector.calls == 0  # the cache now holds the margin crops


def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(
    workspace, reference, use_detector, caplog
):
    detector = use_detector(FakeDetector())
    first = _load(workspace, reference, detector)
    all_calls = detector.calls
    cache = workspace.models_dir / CACHE_NAME
    cache.write_bytes(b"PK\x03\x04 not really a zip file")
    with caplog.at_level(logging.WARNING):
        again = _load(workspace, reference, detector)
    assert "unreadable" in caplog.text and str(cache) in caplog.text
    assert detector.calls == all_calls
    np.testing.assert_array_equal(again.crops, first.crops)
    with np.load(cache) as rewritten:
        assert rewritten["relpaths"].tolist() == first.relpaths
    _load(workspace, reference, detector)
    assert detector.calls == 0


def test_a_missing_reference_folder_is_a_train_error(workspace, tmp_path, use_detector):
    detector = use_detector(FakeDetector())
    missing = tmp_path / "no-such-people"
    with pytest.raises(TrainError, match="reference_dir") as caught:
        _load(workspace, missing, detector)
    assert str(missing) in str(caught.value) and detector.calls == 0


# --- the in-memory split -----------------------------------------------------------------


def _crops(counts: dict[str, int], size: int = 4) -> CropSet:
    labels = [name for name, n in counts.items() for _ in range(n)]
    paths = [f"{name}/{j:04d}.png" for name, n in counts.items() for j in range(n)]
    return CropSet(labels, paths, ["x"] * len(labels), np.zeros((len(labels), size, size, 3), "u1"))


def _reference(root: Path, photos: list[tuple[str, str]], size: int = 4) -> ReferenceCrops:
    """``photos``: (identity, file name); crop k is filled with the value k + 1."""
    crops = np.stack([np.full((size, size, 3), k + 1, np.uint8) for k in range(len(photos))])
    return ReferenceCrops(
        root=root,
        identities=[who for who, _ in photos],
        relpaths=[f"{who}/{name}" for who, name in photos],
        crops=crops,
        failed=[],
    )


def test_add_reference_holds_out_each_person_first_half_gallery(tmp_path, caplog):
    enrolled = _crops({"ann": 6, "bob": 6, "cyd": 6})
    path = tmp_path / SPLIT_NAME
    split = update_split(path, enrolled, seed=0)
    stored = path.read_text()
    photos = [("zed", "3.jpg"), ("zed", "1.jpg"), ("zed", "5.jpg"), ("zed", "2.jpg"),
              ("zed", "4.jpg"), ("yan", "b.jpg"), ("yan", "a.jpg"),
              ("bob", "1.jpg"), ("bob", "2.jpg"),  # enrolled under the same name
              ("solo", "1.jpg")]  # fmt: skip
    reference = _reference(tmp_path / "ref", photos)
    with caplog.at_level(logging.WARNING):
        crops, merged, skipped = add_reference(enrolled, split, reference)
    assert skipped == ["bob", "solo"] and "bob, solo" in caplog.text
    assert path.read_text() == stored  # the workspace's split is not written
    assert "reference:zed" not in split.identities  # nor changed in memory

    assert merged.identities == {**split.identities, "reference:yan": HOLDOUT,
                                 "reference:zed": HOLDOUT}  # fmt: skip
    roles = {rel: role for rel, role in merged.images.items() if rel not in split.images}
    assert roles == {
        "reference:zed/zed/1.jpg": GALLERY, "reference:zed/zed/2.jpg": GALLERY,
        "reference:zed/zed/3.jpg": GALLERY, "reference:zed/zed/4.jpg": PROBE,
        "reference:zed/zed/5.jpg": PROBE,
        "reference:yan/yan/a.jpg": GALLERY, "reference:yan/yan/b.jpg": PROBE,
    }  # fmt: skip
    assert all(merged.images[rel] == role for rel, role in split.images.items())

    n = len(enrolled)
    assert len(crops) == n + 7 and crops.labels[:n] == enrolled.labels
    assert set(crops.labels[n:]) == {PREFIX + "zed", PREFIX + "yan"}
    for k in range(n, len(crops)):  # each added row carries its own photo's crop
        who, name = crops.paths[k].split("/", 1)[1].split("/")
        source = reference.relpaths.index(f"{who}/{name}")
        np.testing.assert_array_equal(crops.crops[k], reference.crops[source])
        assert crops.labels[k] == PREFIX + who
    train, gallery, probe = merged.rows(crops)
    assert not set(train) & set(range(n, len(crops)))  # never trained on
    assert len(gallery) + len(probe) + len(train) == len(crops)


# --- a whole run -------------------------------------------------------------------------


def test_run_training_judges_on_the_reference_people_too(
    model,  # noqa: F811
    workspace,
    reference,
    use_detector,
):
    """6 enrolled people (1 held out) and 3 reference people: 4 unseen identities."""
    use_detector(FakeDetector())
    make_identities(workspace.pre_images_dir)
    cfg = workspace.replace(reference_dir=reference)
    with pytest.raises(TrainError) as caught:
        run_training(cfg, _opts(), model=model, base=BASE)
    message = str(caught.value)
    assert message.startswith("only 4 identities that training never sees")
    assert "(1 held out of the workspace, 3 reference)" in message
    assert "more people to reference_dir (it gave 3)" in message

    report = run_training(cfg, _opts(epochs=1, force=True, min_identities=3), model=model,
                          base=BASE)  # fmt: skip
    assert report.counts["unseen_reference_identities"] == 3
    assert report.unseen_identities == report.counts["unseen_identities"] == 4
    assert report.before and report.before["n_identities"] == 4
    assert report.version is not None and not report.activated
    meta = report.version.meta
    assert meta["unseen"] == {
        "identities": 4,
        "held_out": 1,
        "reference": {
            "dir": str(reference),
            "identities": 3,
            "images": 11,
            "skipped_identities": [],
            "without_face": 1,
        },  # fmt: skip
    }
    assert "model_version" not in read_toml(workspace.root)
    split = json.loads((workspace.models_dir / SPLIT_NAME).read_text())
    assert not any(name.startswith(PREFIX) for name in split["identities"])  # the workspace's


def test_add_reference_keeps_a_train_val_folder_split(tmp_path):
    """``train/`` photos are the gallery and ``val/`` the probes, as `attendance evaluate`
    splits such a folder, whatever their sorted order."""
    enrolled = _crops({"ann": 6, "bob": 6, "cyd": 6})
    split = update_split(tmp_path / SPLIT_NAME, enrolled, seed=0)
    relpaths = ["train/zed/9.jpg", "val/zed/1.jpg", "val/zed/2.jpg", "val/zed/3.jpg"]
    reference = ReferenceCrops(
        tmp_path / "ref", ["zed"] * 4, relpaths, np.zeros((4, 4, 4, 3), np.uint8), []
    )
    _, merged, _ = add_reference(enrolled, split, reference)
    roles = {rel: role for rel, role in merged.images.items() if rel.startswith(PREFIX)}
    assert roles == {
        "reference:zed/train/zed/9.jpg": GALLERY, "reference:zed/val/zed/1.jpg": PROBE,
        "reference:zed/val/zed/2.jpg": PROBE, "reference:zed/val/zed/3.jpg": PROBE,
    }  # fmt: skip


def test_enrolled_names_take_no_place_in_the_cap(workspace, tmp_path, use_detector, monkeypatch):
    """People excluded (the enrolled, any letter case) are left out before the cap, so the
    cap's places all go to people who can judge."""
    import model.training.reference as reference_module

    detector = use_detector(FakeDetector())
    root = write_dataset(tmp_path / "many", {f"p{k}": 2 for k in range(6)})
    monkeypatch.setattr(reference_module, "MAX_IDENTITIES", 3)
    found = load_reference(workspace, root, SIZE, progress=False, exclude={"p0", "p1", "p2"})
    assert found.names == ["p3", "p4", "p5"] and detector.calls == 6
    assert len(load_reference(workspace, root, SIZE, progress=False).names) == 3  # the cap
