"""Several cameras in one process (``recognizer.cameras`` and ``face_recognizer --source A
--source B``), on synthetic frames with the fake detector and embedder of test_pipeline."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_live_detection import textured_frame
from test_pipeline import GALLERY, LABELS, FakeDetector, FakeEmbedder, ListSource, clock
from test_recognizer_cli import enrol_crop

from common.config import Config, load_config
from common.sources import FolderSource
from common.vectors import UNKNOWN
from recognizer import cli
from recognizer.cameras import Camera, mosaic, run_cameras, unique_names
from recognizer.cli import RunSummary
from recognizer.pipeline import RecognitionPipeline


@pytest.fixture
def live(tmp_path, cache_dir) -> Config:
    """A workspace with Bob enrolled (crop and fake embedding) in gallery.sqlite."""
    cfg = load_config(tmp_path, overrides={"cache_dir": str(cache_dir)}, env={})
    enrol_crop(cfg, "Bob")
    return cfg


class NamedSource(ListSource):
    """Prepared frames under a camera's name, optionally at a camera's pace."""

    def __init__(self, name: str, frames, pace: float = 0.0) -> None:
        super().__init__(frames)
        self.name = name
        self.pace = pace

    def describe(self) -> str:
        return self.name

    def __next__(self):
        if self.pace:
            time.sleep(self.pace)
        return super().__next__()


class Recorder:
    def __init__(self) -> None:
        self.marks: list[tuple[str, str]] = []

    def mark_present(self, name, when, distance, source):
        self.marks.append((name, source))
        return None

    def log_event(self, name, when, distance, source, action):
        return None


def frames(person: str, n: int, x: int = 100) -> list:
    return [textured_frame(i, {person: (x, 60)}) for i in range(n)]


def test_cameras_share_one_embedding_batch_and_events_name_their_camera(tmp_path):
    from test_pipeline import synthetic_config

    cfg = synthetic_config(tmp_path)
    embedder, recorder = FakeEmbedder(), Recorder()
    sources = [NamedSource("door", frames("Ada", 10)), NamedSource("lab", frames("Bob", 30))]
    cameras = [
        Camera(
            s,
            RecognitionPipeline(
                cfg, FakeDetector(), embedder, LABELS, GALLERY, recorder, clock=clock()
            ),
        )  # fmt: skip
        for s in sources
    ]
    summary = RunSummary(source="2 cameras")
    seen: list = []
    rates = run_cameras(cameras, embedder, summary=summary, on_event=seen.append)
    # both cameras saw a new face on the first turns: their crops went in one batch
    assert embedder.batches[:3] == [2, 2, 2]
    assert sorted(recorder.marks) == [("Ada", "door"), ("Bob", "lab")]
    assert {(e.name, e.source) for e in seen} == {("Ada", "door"), ("Bob", "lab")}
    # the door's file ended after 10 frames; the lab went on to its end
    assert [c.frames for c in cameras] == [10, 30] and summary.frames == 40
    assert rates.frames == {"door": 10, "lab": 30}
    assert summary.stopped_by == "end of source"


def test_max_frames_counts_per_camera(tmp_path):
    from test_pipeline import synthetic_config

    cfg = synthetic_config(tmp_path)
    embedder = FakeEmbedder()
    cameras = [
        Camera(NamedSource(name, frames("Ada", 30)),
               RecognitionPipeline(cfg, FakeDetector(), embedder, LABELS, GALLERY, Recorder()))
        for name in ("a", "b", "c")
    ]  # fmt: skip
    summary = RunSummary(source="3 cameras")
    run_cameras(cameras, embedder, summary=summary, max_frames=7)
    assert [c.frames for c in cameras] == [7, 7, 7]
    assert summary.stopped_by == "--max-frames 7"


def test_same_descriptions_are_numbered_and_the_mosaic_holds_every_camera():
    assert unique_names(["video a.mp4", "camera 0", "video a.mp4", "video a.mp4"]) == [
        "video a.mp4", "camera 0", "video a.mp4 #2", "video a.mp4 #3"
    ]  # fmt: skip
    small = np.full((240, 320, 3), 50, np.uint8)
    wide = np.full((720, 1280, 3), 200, np.uint8)
    picture = mosaic([small, wide, None])
    assert picture.shape == (2 * 480, 2 * 640, 3)  # 2x2 grid, tiles 640 wide
    assert picture[10, 10, 0] == 50 and picture[10, 700, 0] == 200
    assert picture[500, 10, 0] == 0  # the camera with no picture yet is black


def several(live: Config, monkeypatch, sources: dict[str, NamedSource], *flags: str):
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: FakeEmbedder()))
    monkeypatch.setattr("common.sources.open_source", lambda spec: sources[spec])
    args = ["--workspace", str(live.root), "--headless", *flags]
    for key, value in {"detect_every": 1, "threshold": 0.8, "detect_min_face_px": 28}.items():
        args += ["--set", f"{key}={value}"]
    return cli.main(args)


@pytest.mark.parametrize("detect_async", ["off", "on"])
def test_face_recognizer_runs_several_cameras_in_one_process(
    live: Config,
    monkeypatch,
    capsys,
    use_detector,
    detect_async,
):
    detector = use_detector(FakeDetector())
    pace = 0.005 if detect_async == "on" else 0.0  # a camera's pace: detection keeps up
    sources = {
        "door": NamedSource("camera door", frames("Bob", 40), pace),
        "lab": NamedSource("camera lab", frames("Zed", 40, x=200), pace),
    }
    code = several(live, monkeypatch, sources, "--source", "door", "--source", "lab",
                   "--set", f"detect_async={detect_async}")  # fmt: skip
    assert code == 0  # headless with several cameras: continuous, not a one-shot check-in
    out = capsys.readouterr().out.splitlines()
    events = {(line.split("  ")[1], line.rsplit("(", 1)[1].split(", ")[1]) for line in out[:-1]}
    assert events == {("Bob", "camera door)"), (UNKNOWN, "camera lab)")}
    assert out[-1].startswith("summary: 80 frames")
    assert "from 2 cameras (camera door, camera lab)" in out[-1]
    assert "camera door " in out[-1] and " fps, camera lab " in out[-1]
    assert "marked: Bob;" in out[-1]
    assert len(detector.shapes) > 0


def test_the_sources_setting_lists_the_cameras(live: Config, monkeypatch, capsys, use_detector):
    use_detector(FakeDetector())
    (live.root / "attendance.toml").write_text('sources = ["door", "lab"]\n')
    sources = {"door": NamedSource("camera door", frames("Bob", 20)),
               "lab": NamedSource("camera lab", frames("Bob", 20))}  # fmt: skip
    assert several(live, monkeypatch, sources, "--max-frames", "12") == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "summary: 24 frames" in last and "stopped by --max-frames 12" in last


def test_a_folder_cannot_be_one_of_several_cameras(live: Config, monkeypatch, capsys, tmp_path):
    folder = FolderSource.__new__(FolderSource)
    folder.describe = lambda: "folder photos"  # type: ignore[method-assign]
    folder.close = lambda: None  # type: ignore[method-assign]
    sources = {"door": NamedSource("camera door", frames("Bob", 5)), "photos": folder}
    assert several(live, monkeypatch, sources, "--source", "door", "--source", "photos") == 2
    err = capsys.readouterr().err
    assert "folder photos: a folder of photos cannot be one of several cameras" in err


class FlakyCamera(NamedSource):
    """A live camera: ``poll`` has no new frame every other time, then the signal is lost."""

    def __init__(self, name: str, frames, lost_after: int) -> None:
        super().__init__(name, frames)
        self.lost_after = lost_after
        self.polls = 0

    def poll(self):
        from common.sources import SourceError

        self.polls += 1
        if self.polls % 2:
            return None  # nothing new yet: the loop must not wait
        if self.taken >= self.lost_after:
            raise SourceError(f"{self.name}: lost the signal")
        return super().__next__()


def test_a_lost_camera_drops_out_and_the_others_go_on(tmp_path):
    from test_pipeline import synthetic_config

    cfg = synthetic_config(tmp_path)
    embedder, recorder = FakeEmbedder(), Recorder()
    flaky = FlakyCamera("door", frames("Ada", 40), lost_after=6)
    sources = [flaky, NamedSource("lab", frames("Bob", 30))]
    cameras = [
        Camera(s, RecognitionPipeline(cfg, FakeDetector(), embedder, LABELS, GALLERY, recorder))
        for s in sources
    ]
    summary = RunSummary(source="2 cameras")
    run_cameras(cameras, embedder, summary=summary)
    assert [c.frames for c in cameras] == [6, 30]  # the lab was never held up by the door
    assert cameras[0].lost is not None and ("Bob", "lab") in recorder.marks
    assert summary.stopped_by == "error" and "door: lost the signal" in str(summary.error)
