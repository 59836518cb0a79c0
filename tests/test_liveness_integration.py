"""Liveness end to end with the real weights on the sample data (the issue's acceptance).

Ben is enrolled. Two clips of his held-back photo are made here:

- *in person*: his face, cut out with a soft oval (no picture edge), in front of a textured
  room, swaying a little — nothing frames it;
- *replay*: the same photo on a phone held up to the camera by a moving hand
  (``attendance.demo.build_replay``).

``face_recognizer --source CLIP --headless --continuous --set liveness=passive`` must write a
Present row for the first and none for the second (a ``spoof`` event instead), and
``attendance liveness`` must agree with it on both.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from attendance import cli as attendance_cli
from attendance.demo import build_replay, load_photo, video_writer
from recognizer import cli
from store.factory import open_attendance_store

pytestmark = [pytest.mark.weights, pytest.mark.sample]

PERSON = "ben_afflek"
NAME = "Ben Afflek"


def in_person_clip(path: Path, photo: np.ndarray, fps: float = 10.0, seconds: float = 4.0) -> None:
    """``photo``'s face in an oval with a soft edge, over a textured room, swaying."""
    rng = np.random.default_rng(3)
    room = cv2.GaussianBlur(rng.integers(60, 200, size=(480, 640, 3), dtype=np.uint8), (0, 0), 6)
    h, w = photo.shape[:2]
    scale = 300.0 / h
    face = cv2.resize(photo, (round(w * scale), 300))
    fh, fw = face.shape[:2]
    mask = np.zeros((fh, fw), np.float32)
    cv2.ellipse(mask, (fw // 2, fh // 2), (int(fw * 0.42), int(fh * 0.47)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 12)[..., None]
    with video_writer(path, fps) as writer:
        for i in range(round(fps * seconds)):
            frame = room.copy()
            x = 320 - fw // 2 + int(12 * np.sin(i / 6.0))
            y = 240 - fh // 2 + int(6 * np.sin(i / 4.0))
            region = frame[y : y + fh, x : x + fw].astype(np.float32)
            frame[y : y + fh, x : x + fw] = (region * (1 - mask) + face * mask).astype(np.uint8)
            writer.write(frame)


@pytest.fixture(scope="module")
def clips(enrolled, sample_dir):
    cfg = enrolled("liveness", [PERSON], 6)
    root = cfg.root
    photo = load_photo(sorted((sample_dir / "val" / PERSON).glob("*.jpg"))[0])
    in_person_clip(root / "in_person.mp4", photo)
    build_replay(root / "replay.mp4", photo, fps=10.0)
    return cfg


@pytest.fixture
def run(clips, embedder, detector, monkeypatch, capsys, use_detector):
    """Run a command line in-process (sharing the loaded models); no display."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("ATTENDANCE_CACHE_DIR", str(clips.cache_dir))
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: embedder))
    use_detector(detector)

    def go(main, *args: str) -> tuple[int, list[str]]:
        code = main([*args, "--workspace", str(clips.root)])
        return code, capsys.readouterr().out.splitlines()

    return go


def history(cfg):
    with open_attendance_store(cfg, create=False) as db:
        return [(r.name, r.status) for r in db.rows()], [(e.name, e.action) for e in db.events()]


@pytest.mark.parametrize(("clip", "present"), [("replay.mp4", False), ("in_person.mp4", True)])
def test_recogniser_with_passive_liveness_marks_the_person_not_the_replay(
    run, clips, clip, present
):
    db = clips.root / "attendance.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    code, out = run(cli.main, "--source", str(clips.root / clip), "--headless", "--continuous",
                    "--set", "liveness=passive")  # fmt: skip
    assert code == 0, out
    rows, events = history(clips)
    if present:
        assert rows == [(NAME, "Present")] and events == [(NAME, "present")]
    else:
        assert rows == [] and events == [(NAME, "spoof")]
        assert any("spoof" in line and "photo or screen?" in line for line in out)
        assert "1 refused" in out[-1]


def test_liveness_command_agrees_with_the_recogniser(run, clips):
    code, out = run(attendance_cli.main, "liveness", str(clips.root / "replay.mp4"),
                    str(clips.root / "in_person.mp4"), "--json")  # fmt: skip
    assert code == 0
    verdicts = {Path(r["clip"]).name: r for r in map(json.loads, out)}
    assert verdicts["replay.mp4"]["verdict"] == "spoof"
    assert verdicts["replay.mp4"]["decided_by"] == ["border"]
    assert verdicts["in_person.mp4"]["verdict"] == "live"
    for result in verdicts.values():
        assert result["seconds_to_verdict"] is not None and result["seconds_to_verdict"] <= 2.0
    code, out = run(attendance_cli.main, "liveness", str(clips.root / "replay.mp4"))
    assert code == 0 and out[0].startswith(f"{clips.root / 'replay.mp4'}: spoof  score=")


def test_liveness_command_names_a_clip_it_cannot_read(run, clips, tmp_path):
    missing = tmp_path / "nothing.mp4"
    code, out = run(attendance_cli.main, "liveness", str(missing), str(clips.root / "replay.mp4"))
    assert code == 1
    assert out[0].startswith(f"{missing}: error: ") and "no such file" in out[0]
    assert ": spoof" in out[1]  # the other clip is still judged


def test_liveness_command_fails_on_a_folder_with_no_readable_frame(run, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image")
    code, out = run(attendance_cli.main, "liveness", str(folder))
    assert code == 1
    assert out == [f"{folder}: error: no frame could be read; check the file or folder"]
