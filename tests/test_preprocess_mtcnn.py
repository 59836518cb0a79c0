"""Real MTCNN on the sample celebrity photos (shared ``detector`` and ``sample_dir`` fixtures)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.config import Config
from common.image_io import read_image
from common.sdist import SAMPLE_PEOPLE
from preprocess.align import landmark_template
from preprocess.detect import Face, FaceDetector
from preprocess.pipeline import (
    MANIFEST_NAME,
    crop_largest_face,
    detect_largest_face,
    run_preprocess,
)

pytestmark = pytest.mark.sample


def sample_photos(sample_dir: Path, per_person: int) -> list[Path]:
    return [
        path
        for person in SAMPLE_PEOPLE
        for path in sorted((sample_dir / "train" / person).glob("*.jpg"))[:per_person]
    ]


def test_detector_finds_one_plausible_face_per_photo(detector: FaceDetector, sample_dir: Path):
    for path in sample_photos(sample_dir, 1):
        rgb = read_image(path)
        faces = detector.detect(rgb)
        assert faces, f"no face in {path.name}"
        assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
        face = faces[0]
        assert isinstance(face, Face) and face.score >= 0.9
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])
        x, y, w, h = face.box
        assert np.all(face.landmarks >= [x - 2, y - 2]) and np.all(face.landmarks <= [x + w, y + h])


def test_landmark_crops_put_the_face_on_the_template(
    workspace: Config, detector: FaceDetector, sample_dir: Path
):
    """Detect again on each aligned crop: the landmarks land near the template."""
    template = landmark_template(160)
    errors = []
    for path in sample_photos(sample_dir, 1):
        crop, _ = crop_largest_face(read_image(path), detector, workspace, name=path.name)
        assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
        face, _ = detect_largest_face(crop, detector, 20, name=path.name)
        errors.append(np.linalg.norm(face.landmarks - template, axis=1).mean())
    assert np.mean(errors) < 7.0, errors


def test_tight_crop_of_a_real_face_is_still_found(
    workspace: Config, detector: FaceDetector, sample_dir: Path
):
    """Cut 10% inside the face box: MTCNN alone misses it, the padded retry finds it."""
    rgb = read_image(sample_photos(sample_dir, 1)[0])
    x, y, w, h = (round(v) for v in detector.detect(rgb)[0].box)
    tight = np.ascontiguousarray(rgb[y + h // 10 : y + h - h // 10, x + w // 10 : x + w - w // 10])
    crop, face = crop_largest_face(tight, detector, workspace)
    assert crop.shape == (160, 160, 3)
    assert face.box[2] > 0.8 * tight.shape[1]  # the face's box is larger than the crop


@pytest.mark.parametrize(("alignment", "per_person"), [("landmarks", 2), ("margin", 1)])
def test_call_preprocess_on_sample_photos(
    workspace: Config, detector: FaceDetector, sample_dir: Path, alignment: str, per_person: int
):
    cfg = workspace.replace(alignment=alignment)
    photos = sample_photos(sample_dir, per_person)
    for path in photos:
        dest = cfg.images_dir / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    summary = run_preprocess(cfg, detector=detector, progress=False)
    assert summary.rejected == [] and len(summary.processed) == len(photos)
    outputs = sorted(cfg.pre_images_dir.glob("*/*.png"))
    assert len(outputs) == len(photos)  # exactly one crop per photo
    assert {p.parent.name for p in outputs} == set(SAMPLE_PEOPLE)
    for out in outputs:
        crop = read_image(out)
        assert crop.shape == (160, 160, 3)
        assert 30 < crop.mean() < 230 and crop.std() > 20  # a real picture, not a flat fill
    entries = json.loads((cfg.pre_images_dir / MANIFEST_NAME).read_text())["entries"]
    assert {e["status"] for e in entries.values()} == {"ok"}
    assert {e["alignment"] for e in entries.values()} == {alignment}
    assert len(run_preprocess(cfg, detector=detector, progress=False).skipped) == len(photos)
