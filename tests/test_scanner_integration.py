"""A headless scripted scan of sample photos with the real MTCNN detector and FaceNet weights."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from attendance.cli import main as attendance_main
from attendance.demo import letterbox
from common.config import Config
from common.sdist import SAMPLE_PEOPLE
from common.vectors import match_embeddings
from preprocess.pipeline import crop_largest_face, run_preprocess
from scanner import cli as scanner_cli
from store.factory import open_embedding_store
from store.gallery import sync_gallery

PERSON = "mindy_kaling"
NAME = "Mindy Kaling"


def sample_frames(photos: list[Path], dest: Path) -> Path:
    """A folder source: one letterboxed 640x480 frame per photo."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(photos):
        cv2.imwrite(str(dest / f"{i:03d}.png"), letterbox(cv2.imread(str(photo))))
    return dest


class CountingEmbedder:
    """The real embedder, counting the crops it embeds."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.model_id, self.dim, self.input_size = inner.model_id, inner.dim, inner.input_size
        self.embedded = 0

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.embedded += len(crops)
        return self.inner.embed(crops)


def gallery_rows(cfg: Config, exclude: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(cfg.gallery_path)) as conn:
        return conn.execute(
            "SELECT rowid, identity, relpath, sha256, model_id, vector FROM embeddings "
            "WHERE identity != ? ORDER BY rowid",
            (exclude,),
        ).fetchall()


@pytest.mark.sample
@pytest.mark.weights
def test_headless_scan_makes_the_person_recognisable(
    workspace: Config, sample_dir: Path, detector, embedder, tmp_path: Path, monkeypatch, capsys
) -> None:
    cfg = workspace
    # the other sample people are already enrolled (their val photos keep this quick)
    for person in SAMPLE_PEOPLE:
        if person == PERSON:
            continue
        folder = cfg.images_dir / person
        folder.mkdir(parents=True)
        for photo in sorted((sample_dir / "val" / person).glob("*.jpg")):
            (folder / photo.name).write_bytes(photo.read_bytes())
    run_preprocess(cfg, detector=detector, progress=False)
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, embedder, progress=False)
    others_before = gallery_rows(cfg, NAME)
    assert {row[1] for row in others_before} == set(SAMPLE_PEOPLE) - {PERSON}

    source = sample_frames(sorted((sample_dir / "train" / PERSON).glob("*.jpg")), tmp_path / "cam")
    counting = CountingEmbedder(embedder)
    monkeypatch.setattr(scanner_cli, "make_detector", lambda cfg: detector)
    monkeypatch.setattr(scanner_cli, "load_embedder", lambda cfg: counting)
    code = attendance_main(
        [
            "scan", "--workspace", str(cfg.root), "--name", NAME, "--source", str(source),
            "--headless", "--keys", "space:30", "--set", "min_shots=8", "--yes",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    shots = sorted((cfg.images_dir / NAME).glob("*.jpg"))
    assert code == 0, out
    assert 8 <= len(shots) <= 22  # web photos: many are too small or soft for a shot
    assert f"saved {len(shots)} new shot(s) of {NAME}" in out
    assert "after the last shot" in out and f"{NAME} is recognisable now" in out
    assert "same person under two names" not in out

    # nobody else was touched or re-embedded; only this person's crops went through the model
    assert gallery_rows(cfg, NAME) == others_before
    crops = sorted((cfg.pre_images_dir / NAME).glob("*.png"))
    assert len(crops) >= len(shots) - 2
    assert counting.embedded == len(crops)

    # face_recognizer's view: the gallery as loaded, matched against unseen photos of the person
    with open_embedding_store(cfg) as gallery:
        labels, vectors = gallery.load(embedder.model_id)
    assert labels.count(NAME) == len(crops)
    val = []
    for photo in sorted((sample_dir / "val" / PERSON).glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        val.append(crop_largest_face(rgb, detector, cfg, photo.name)[0])
    matches = match_embeddings(embedder.embed(np.stack(val)), vectors, labels, cfg.threshold)
    assert sum(m.identity == NAME for m in matches) >= len(matches) - 1
