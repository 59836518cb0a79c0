"""scanner.enrol with a fake detector and embedder: this person only, duplicate checks, undo."""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_scanner_session import (
    HOSTILE_NAMES,
    FakeDetector,
    Frame,
    make_frame,
    new_session,
    pasted_command,
    run_pasted,
    scan,
)

from common.config import Config
from common.vectors import match_embeddings
from preprocess.pipeline import run_preprocess
from scanner import cli as scanner_cli
from scanner.enrol import (
    Enroller,
    check_enrolment,
    check_shots,
    crop_relpaths,
    discard_shots,
    identity_rows,
)
from scanner.session import KeyScript, run_headless
from store.factory import open_embedding_store
from store.gallery import sync_gallery

ADA_TINT = (60, 0, -40)
ALAN_TINT = (-40, 0, 60)


class FakeEmbedder:
    """Embeds a crop by its mean colour: crops of one tinted "person" land close together."""

    model_id = "fake-colour-v1"
    dim = 8
    input_size = 160

    def __init__(self) -> None:
        self.embedded: list[int] = []

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        self.embedded.append(len(crops))
        means = crops.reshape(len(crops), -1, 3).mean(axis=1)
        v = np.zeros((len(crops), self.dim))
        v[:, :3] = (means - 120.0) / 40.0
        v[:, 3] = 0.5
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def rows_of(cfg: Config, identity: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(cfg.gallery_path)) as conn:
        return conn.execute(
            "SELECT rowid, relpath, sha256, vector FROM embeddings WHERE identity = ? "
            "ORDER BY rowid",
            (identity,),
        ).fetchall()


def write_shots(cfg: Config, name: str, tint, count: int, seed: int = 0) -> list[Path]:
    folder = cfg.images_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i + 1:04d}.jpg"
        cv2.imwrite(str(path), make_frame(seed=seed + i, tint=tint))
        paths.append(path)
    return paths


@pytest.fixture
def cfg(workspace: Config) -> Config:
    """A workspace where Alan Turing is already enrolled (5 shots)."""
    cfg = workspace.replace(embed_batch=4, threshold=0.6, enrol_check_distance=0.6)
    write_shots(cfg, "Alan Turing", ALAN_TINT, 5, seed=100)
    run_preprocess(cfg, detector=FakeDetector(), progress=False)
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    return cfg


@pytest.mark.parametrize("background", [True, False])
def test_enrolment_embeds_only_this_person(cfg: Config, background: bool) -> None:
    alan_before = rows_of(cfg, "Alan Turing")
    assert len(alan_before) == 5
    embedder = FakeEmbedder()
    enroller = Enroller(cfg, "Ada Lovelace", FakeDetector(), embedder, background=background)
    session = new_session(cfg, on_shot=lambda shot: enroller.shot_saved(shot.path))
    shots = [Frame(make_frame(seed=i, tint=ADA_TINT), i) for i in range(6)]
    result = run_headless(session, shots, KeyScript.parse("space:6"))
    timing = enroller.finish()
    assert len(result.shots) == 6
    assert timing.seconds >= timing.preprocess_seconds + timing.gallery_seconds
    assert (timing.background_rounds > 0) == background
    assert "after the last shot" in timing.line()
    # other people's rows are untouched: same rowids, hashes and vectors
    assert rows_of(cfg, "Alan Turing") == alan_before
    # only this person's crops went through the model, each once
    assert sum(embedder.embedded) == 6
    crops = sorted(p.name for p in (cfg.pre_images_dir / "Ada Lovelace").iterdir())
    assert crops == [f"{i:04d}.png" for i in range(1, 7)]
    # and the recogniser knows Ada now
    with open_embedding_store(cfg) as gallery:
        labels, gallery_vectors = gallery.load(embedder.model_id)
    relpaths, ada = identity_rows(cfg, embedder.model_id, "Ada Lovelace")
    assert relpaths == [f"Ada Lovelace/{i:04d}.png" for i in range(1, 7)]
    matches = match_embeddings(ada, gallery_vectors, labels, cfg.threshold)
    assert {m.identity for m in matches} == {"Ada Lovelace"}


def test_clean_enrolment_raises_no_warning(cfg: Config) -> None:
    embedder = FakeEmbedder()
    shots = write_shots(cfg, "Ada Lovelace", ADA_TINT, 4)
    Enroller(cfg, "Ada Lovelace", FakeDetector(), embedder, background=False).finish()
    check = check_enrolment(cfg, "Ada Lovelace", shots, embedder)
    assert not check.suspicious and check.new_count == 4
    assert check.closest[0].identity == "Alan Turing"
    assert check.closest[0].mean_nearest > cfg.enrol_check_distance
    assert check.lines() == [f"closest other identity: {check.closest[0]} (threshold 0.60)"]


def test_same_person_under_two_names_is_flagged(cfg: Config) -> None:
    embedder = FakeEmbedder()
    shots = write_shots(cfg, "A. Turing", ALAN_TINT, 4, seed=200)
    Enroller(cfg, "A. Turing", FakeDetector(), embedder, background=False).finish()
    check = check_enrolment(cfg, "A. Turing", shots, embedder)
    assert check.suspicious and [d.identity for d in check.duplicates] == ["Alan Turing"]
    assert check.duplicates[0].mean_nearest < cfg.enrol_check_distance
    assert check.duplicates[0].matched == 1.0
    assert "same person under two names" in check.lines()[0]
    assert "mean nearest distance" in check.lines()[0]


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def cloud(centre, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([unit(centre + rng.normal(0, 0.05, len(centre))) for _ in range(count)])


C1, C2, C3 = unit([1, 0, 0, 0.2]), unit([0, 1, 0, 0.2]), unit([0, 0, 1, 0.2])


def test_someone_stepping_in_is_flagged() -> None:
    own = np.concatenate([cloud(C1, 8, 0), cloud(C3, 3, 1)])
    relpaths = [f"Ada/{i:04d}.png" for i in range(1, 12)]
    check = check_shots("Ada", (relpaths, own), relpaths, (["Alan"] * 5, cloud(C2, 5, 2)), 1.0)
    assert not check.duplicates
    assert len(check.groups) == 1 and check.groups[0].relpaths == tuple(relpaths[8:])
    assert check.groups[0].new == 3 and check.groups[0].distance > 1.0
    assert "more than one person" in check.lines()[0] and "0009.png" in check.lines()[0]


def test_appending_a_different_person_is_flagged() -> None:
    old = [f"Ada/{i:04d}.png" for i in range(1, 11)]
    new = [f"Ada/{i:04d}.png" for i in range(11, 21)]
    own = np.concatenate([cloud(C1, 10, 0), cloud(C3, 10, 1)])
    check = check_shots("Ada", (old + new, own), new, ([], np.zeros((0, 4))), 1.0)
    assert check.suspicious and len(check.groups) == 1
    assert len(check.groups[0].relpaths) == 10


def test_a_consistent_person_is_one_group() -> None:
    relpaths = [f"Ada/{i:04d}.png" for i in range(1, 31)]
    check = check_shots("Ada", (relpaths, cloud(C1, 30, 0)), relpaths, ([], np.zeros((0, 4))), 1.0)
    assert not check.suspicious and check.lines() == []


def test_discard_removes_only_this_sessions_shots(cfg: Config) -> None:
    embedder = FakeEmbedder()
    write_shots(cfg, "Ada Lovelace", ADA_TINT, 2)
    Enroller(cfg, "Ada Lovelace", FakeDetector(), embedder, background=False).finish()
    enroller = Enroller(cfg, "Ada Lovelace", FakeDetector(), embedder, background=True)
    session = new_session(cfg, on_shot=lambda shot: enroller.shot_saved(shot.path))
    shots = [Frame(make_frame(seed=50 + i, tint=ADA_TINT), i) for i in range(3)]
    result = run_headless(session, shots, KeyScript.parse("space:3"))
    enroller.finish()
    assert [p.name for p in result.new_paths] == ["0003.jpg", "0004.jpg", "0005.jpg"]
    assert len(rows_of(cfg, "Ada Lovelace")) == 5
    alan = rows_of(cfg, "Alan Turing")
    assert discard_shots(cfg, "Ada Lovelace", result.new_paths, embedder, FakeDetector()) == 3
    assert sorted(p.name for p in (cfg.images_dir / "Ada Lovelace").iterdir()) == [
        "0001.jpg",
        "0002.jpg",
    ]
    assert sorted(p.name for p in (cfg.pre_images_dir / "Ada Lovelace").iterdir()) == [
        "0001.png",
        "0002.png",
    ]
    assert [r[1] for r in rows_of(cfg, "Ada Lovelace")] == [
        "Ada Lovelace/0001.png",
        "Ada Lovelace/0002.png",
    ]
    assert rows_of(cfg, "Alan Turing") == alan
    assert crop_relpaths(cfg, result.new_paths) == dict.fromkeys(result.new_paths)


def test_discarding_a_new_person_leaves_no_trace(cfg: Config) -> None:
    embedder = FakeEmbedder()
    shots = write_shots(cfg, "Ada Lovelace", ADA_TINT, 3)
    Enroller(cfg, "Ada Lovelace", FakeDetector(), embedder, background=False).finish()
    discard_shots(cfg, "Ada Lovelace", shots, embedder, FakeDetector())
    assert not (cfg.images_dir / "Ada Lovelace").exists()
    assert not (cfg.pre_images_dir / "Ada Lovelace").exists()
    assert rows_of(cfg, "Ada Lovelace") == []
    with pytest.raises(ValueError, match="not a shot of"):
        discard_shots(cfg, "Ada Lovelace", [cfg.images_dir / "Alan Turing" / "0001.jpg"], embedder)


# --------------------------------------------------------------------------- CLI end to end
@pytest.fixture
def fakes(monkeypatch) -> FakeEmbedder:
    embedder = FakeEmbedder()
    monkeypatch.setattr(scanner_cli, "make_detector", lambda cfg: FakeDetector())
    monkeypatch.setattr(scanner_cli, "load_embedder", lambda cfg: embedder)
    return embedder


def frame_folder(tmp_path: Path, tint, count: int, seed: int = 0) -> Path:
    folder = tmp_path / f"frames-{seed}"
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), make_frame(seed=seed + i, tint=tint))
    return folder


def test_cli_enrols_and_reports_the_time(cfg: Config, fakes, tmp_path: Path, capsys) -> None:
    alan = rows_of(cfg, "Alan Turing")
    code = scan(
        cfg, "--name", "Ada Lovelace", "--source", str(frame_folder(tmp_path, ADA_TINT, 5)),
        "--headless", "--keys", "space:5", "--set", "min_shots=4", "--set", "target_shots=6",
        "--set", "enrol_check_distance=0.6",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "recognisable" in out and "after the last shot" in out
    assert "Ada Lovelace is recognisable now (5 new embedding(s) in the gallery)" in out
    assert "warning" not in out
    assert len(rows_of(cfg, "Ada Lovelace")) == 5 and rows_of(cfg, "Alan Turing") == alan
    assert sum(fakes.embedded) == 5


def test_cli_duplicate_warning_headless_keeps(cfg: Config, fakes, tmp_path, capsys) -> None:
    source = frame_folder(tmp_path, ALAN_TINT, 3, seed=300)
    code = scan(
        cfg, "--name", "A. Turing", "--source", str(source), "--headless", "--keys", "space:3",
        "--set", "min_shots=3", "--set", "enrol_check_distance=0.6",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "match 'Alan Turing'" in out and "keeping the shots (no one to ask" in out
    assert len(rows_of(cfg, "A. Turing")) == 3


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_undo_command_is_shell_quoted(cfg: Config, fakes, tmp_path, capsys, name) -> None:
    source = frame_folder(tmp_path, ALAN_TINT, 3, seed=300)
    code = scan(
        cfg, "--name", name, "--source", str(source), "--headless", "--keys", "space:3",
        "--set", "min_shots=3", "--set", "enrol_check_distance=0.6",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "keeping the shots (no one to ask" in out
    command = pasted_command(out, "attendance remove")
    assert command == f"attendance remove {shlex.quote(name)}"
    shell_dir = tmp_path / "shell"
    shell_dir.mkdir()
    assert run_pasted(command, "attendance remove", shell_dir) == [name]
    assert list(shell_dir.iterdir()) == []


def test_declining_removes_the_new_shots(cfg: Config, fakes, monkeypatch, capsys) -> None:
    embedder = fakes
    enroller = Enroller(cfg, "A. Turing", FakeDetector(), embedder, background=False)
    session = new_session(cfg, "A. Turing", target=3, min_shots=3)
    result = run_headless(
        session,
        [Frame(make_frame(seed=400 + i, tint=ALAN_TINT), i) for i in range(3)],
        KeyScript.parse("space:3"),
    )
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    args = scanner_cli.argparse.Namespace(yes=False)
    code = scanner_cli._finish_enrolment(args, cfg, enroller, result, can_ask=True)
    out = capsys.readouterr().out
    assert code == 1 and "discarded 3 new shot(s) of A. Turing" in out
    assert not (cfg.images_dir / "A. Turing").exists()
    assert rows_of(cfg, "A. Turing") == []
