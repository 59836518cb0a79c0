"""``face_recognizer`` end to end, headless, with the real weights on a video of sample photos.

Stage 1 is the one-shot check-in (headless without --continuous): it stops after the first
person. Stage 2 runs the same video in --continuous mode: everyone enrolled is marked, the
person from stage 1 is not entered twice, the stranger never appears.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attendance.config import load_config
from attendance.demo import build_video, enrol, load_photo, pretty_name
from attendance.sources import open_source
from recognizer import cli
from recognizer.db import AttendanceDB

pytestmark = [pytest.mark.weights, pytest.mark.sample]

ENROLLED = ("ben_afflek", "jerry_seinfeld")
STRANGER = "mindy_kaling"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cache_dir, sample_dir, detector):
    """Two people enrolled from 6 train photos each; a video: Ben, the stranger, Jerry."""
    from preprocess.pipeline import run_preprocess

    root = tmp_path_factory.mktemp("recognizer-cli")
    cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
    enrol(cfg, sample_dir, ENROLLED, limit=6)
    run_preprocess(cfg, detector=detector, progress=False)
    scenes = [
        (pretty_name(person), person != STRANGER, [load_photo(sorted(files)[0])])
        for person in ("ben_afflek", STRANGER, "jerry_seinfeld")
        for files in [list((sample_dir / "val" / person).glob("*.jpg"))]
    ]
    build_video(root / "visit.mp4", scenes, fps=12.0, hold=1.5)
    return cfg


@pytest.fixture
def run_cli(workspace, embedder, detector, monkeypatch, capsys):
    """Run ``face_recognizer ARGS`` in-process (sharing the loaded models); no display."""
    from model.embedder import Embedder
    from preprocess.detect import FaceDetector

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("ATTENDANCE_CACHE_DIR", str(workspace.cache_dir))
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: embedder))
    monkeypatch.setattr(FaceDetector, "from_config", classmethod(lambda cls, cfg: detector))

    def run(*args: str) -> tuple[int, list[str], str]:
        code = cli.main(["--workspace", str(workspace.root), *args])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err

    return run


def test_two_stage_headless_runs(run_cli, workspace, caplog):
    video = str(workspace.root / "visit.mp4")

    # stage 1: one-shot check-in
    code, out, err = run_cli("--source", video)
    assert code == 0, err
    assert "running headless" in caplog.text  # no $DISPLAY: headless chosen automatically
    events, summary = out[:-1], out[-1]
    assert len(events) == 1 and "  Ben Afflek  distance=" in events[0]
    assert events[0].split("  ")[3].startswith("present")
    assert "marked: Ben Afflek;" in summary and "stopped by first person marked" in summary
    with AttendanceDB(workspace.db_path, create=False) as db:
        assert [(r.name, r.status) for r in db.rows()] == [("Ben Afflek", "Present")]

    # stage 2: continuous, with an annotated recording
    record = workspace.root / "annotated.mp4"
    code, out, err = run_cli("--source", video, "--continuous", "--record", str(record))
    assert code == 0, err
    marked = [line for line in out if "distance=" in line and " unknown " not in line]
    assert [line.split("  ")[1] for line in marked] == ["Ben Afflek", "Jerry Seinfeld"]
    assert [line.split("  ")[3].split()[0] for line in marked] == ["seen", "present"]
    assert out[-1].startswith("summary: ") and "stopped by end of source" in out[-1]
    assert "marked: Ben Afflek, Jerry Seinfeld;" in out[-1]
    assert "Mindy Kaling" not in "\n".join(out)
    with AttendanceDB(workspace.db_path, create=False) as db:
        rows = sorted((r.name, r.status) for r in db.rows())
        events = [(e.name, e.action) for e in db.events()]
    assert rows == [("Ben Afflek", "Present"), ("Jerry Seinfeld", "Present")]
    assert events == [
        ("Ben Afflek", "present"),
        ("Ben Afflek", "seen"),
        ("Jerry Seinfeld", "present"),
    ]
    with open_source(str(record)) as check:
        assert sum(1 for _ in check) == int(out[-1].split()[1])  # every frame recorded


def test_nobody_enrolled_is_one_clear_line(run_cli, tmp_path, workspace, capsys):
    empty = tmp_path / "empty-ws"
    empty.mkdir()
    code = cli.main(["--workspace", str(empty), "--source", str(workspace.root / "visit.mp4")])
    err = capsys.readouterr().err
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: nobody is enrolled: {empty.resolve() / 'pre_images'} has no face crops; run "
        "`attendance scan` (or put photos in images/<Name>/) and `attendance preprocess`"
    ]


def test_headless_one_shot_exits_1_when_nobody_is_recognised(run_cli, workspace, sample_dir):
    scenes = [
        (
            "Mindy Kaling",
            False,
            [load_photo(sorted((sample_dir / "val" / STRANGER).glob("*.jpg"))[1])],
        )
    ]
    video = Path(workspace.root) / "stranger.mp4"
    build_video(video, scenes, fps=12.0, hold=1.5)
    code, out, err = run_cli("--source", str(video), "--max-frames", "200")
    assert code == 1, err
    assert out[-1].startswith("summary: ") and "marked: nobody;" in out[-1]
    assert any(" unknown " in line and line.split("  ")[1] == "Unknown" for line in out[:-1])
