"""``face_recognizer`` end to end, headless, with the real weights on a video of sample photos.

Stage 1 is the one-shot check-in (headless without --continuous): it stops after the first
person. Stage 2 runs the same video in --continuous mode: everyone enrolled is marked, the
person from stage 1 is not entered twice, the stranger never appears.

The gallery-reload tests at the end are fast: synthetic frames, the fake detector and embedder
of ``test_pipeline``, and a "scanner" that changes ``gallery.sqlite`` on its own connection
while the loop runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from test_pipeline import (
    PALETTE,
    FakeDetector,
    FakeEmbedder,
    ListSource,
    clock,
    make_frame,
)

from attendance.demo import build_video, load_photo, pretty_name
from common.config import Config, load_config
from common.sources import Frame, LiveSource, open_source
from common.vectors import UNKNOWN
from recognizer import cli
from recognizer.pipeline import ACTION_UNKNOWN, RecognitionPipeline
from scanner.remove_cli import remove_person
from store.factory import open_attendance_store, open_embedding_store
from store.gallery import GalleryWatcher, sync_gallery
from store.pending import PendingWriter

ENROLLED = ("ben_afflek", "jerry_seinfeld")
STRANGER = "mindy_kaling"


@pytest.fixture(scope="module")
def workspace(enrolled, sample_dir):
    """Two people enrolled from 6 train photos each; a video: Ben, the stranger, Jerry."""
    cfg = enrolled("recognizer-cli", ENROLLED, 6)
    root = cfg.root
    scenes = [
        (pretty_name(person), person != STRANGER, [load_photo(sorted(files)[0])])
        for person in ("ben_afflek", STRANGER, "jerry_seinfeld")
        for files in [list((sample_dir / "val" / person).glob("*.jpg"))]
    ]
    build_video(root / "visit.mp4", scenes, fps=12.0, hold=1.5)
    return cfg


@pytest.fixture
def run_cli(workspace, embedder, detector, monkeypatch, capsys, use_detector):
    """Run ``face_recognizer ARGS`` in-process (sharing the loaded models); no display."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("ATTENDANCE_CACHE_DIR", str(workspace.cache_dir))
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: embedder))
    use_detector(detector)

    def run(*args: str) -> tuple[int, list[str], str]:
        code = cli.main(["--workspace", str(workspace.root), *args])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err

    return run


@pytest.mark.weights
@pytest.mark.sample
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
    with open_attendance_store(workspace, create=False) as db:
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
    with open_attendance_store(workspace, create=False) as db:
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


@pytest.mark.weights
@pytest.mark.sample
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


@pytest.mark.weights
@pytest.mark.sample
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


def test_live_camera_path_with_the_real_models(run_cli, workspace, monkeypatch):
    """With detect_async=on the visit video plays in real time, as a camera (frames dropped
    when behind): detection beside the loop, tracks followed by optical flow; both people
    marked, the stranger not."""
    from common.sources import ReplaySource, replay_source

    opened: list[ReplaySource] = []

    def replay(path, fps=None):
        opened.append(replay_source(path, fps))
        return opened[-1]

    monkeypatch.setattr("common.sources.replay_source", replay)
    video = workspace.root / "visit.mp4"
    code, out, err = run_cli("--source", str(video), "--continuous", "--set", "liveness=off",
                             "--set", "cooldown_seconds=0", "--set", "detect_async=on")  # fmt: skip
    assert code == 0, err
    # (earlier tests of this module marked them today already: sightings are "seen" then)
    marked = [
        line.split("  ")[1] for line in out[:-1] if line.split("  ")[3] in ("present", "seen")
    ]
    assert sorted(set(marked)) == ["Ben Afflek", "Jerry Seinfeld"]
    assert out[-1].startswith("summary: ") and "from replay visit.mp4" in out[-1]
    (source,) = opened
    assert source.dropped < 30  # it kept up, mostly
    assert "Mindy" not in "\n".join(out)


# --------------------------------------------------------------------------- gallery reload
class ScannerAtWork(ListSource):
    """Frames; before frame ``i`` is handed out, ``actions[i]()`` runs (another program)."""

    def __init__(self, frames: list[Frame], actions: dict[int, Callable[[], None]]) -> None:
        super().__init__(frames)
        self.actions = dict(actions)

    def __next__(self) -> Frame:
        action = self.actions.pop(self.taken, None)
        if action is not None:
            action()
        return super().__next__()


def enrol_crop(cfg: Config, name: str) -> None:
    """What ``attendance scan`` leaves behind: a crop in pre_images/ and its embedding, synced
    for this person only on the scanner's own gallery connection."""
    r, g, b = PALETTE[name]
    crop = np.zeros((160, 160, 3), np.uint8)
    crop[:] = (b, g, r)
    folder = cfg.pre_images_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / "0001.png"), crop)
    with open_embedding_store(cfg) as scanner:
        summary = sync_gallery(scanner, cfg, FakeEmbedder(), names=[name], progress=False)
    assert summary.embedded == 1


@pytest.fixture
def live(tmp_path: Path, cache_dir: Path) -> Config:
    """A fast synthetic set-up (as in test_pipeline) with Bob enrolled in gallery.sqlite."""
    settings = {
        "detect_every": 1, "detect_min_face_px": 28, "confirm_k": 3, "confirm_m": 5,
        "refresh_seconds": 1.0, "cooldown_seconds": 1.0, "threshold": 0.8,
    }  # fmt: skip
    cfg = load_config(tmp_path, overrides={"cache_dir": str(cache_dir), **settings}, env={})
    enrol_crop(cfg, "Bob")
    return cfg


def recogniser(cfg: Config, writer: PendingWriter) -> tuple[RecognitionPipeline, GalleryWatcher]:
    """A pipeline on the stored gallery and a watcher checking it before every frame."""
    watcher = GalleryWatcher(open_embedding_store(cfg), FakeEmbedder.model_id, dim=4, interval=0.0)
    with open_embedding_store(cfg) as gallery:
        labels, vectors = gallery.load(FakeEmbedder.model_id, dim=4)
    pipe = RecognitionPipeline(
        cfg, FakeDetector(), FakeEmbedder(), labels, vectors, writer, clock=clock()
    )
    return pipe, watcher


def run(source, pipe, watcher, events):
    """``run_loop`` with the watcher, collecting events."""
    return cli.run_loop(source, pipe, gallery=watcher, on_event=events.append)


def history(cfg: Config) -> list[tuple[str, str]]:
    with open_attendance_store(cfg, create=False) as db:
        return [(e.name, e.action) for e in db.events()]


def test_person_enrolled_while_running_is_marked_without_restart(live: Config, caplog):
    caplog.set_level(logging.INFO, logger="recognizer.pipeline")
    frames = [make_frame(i, {"Ada": (100, 60)}) for i in range(40)]
    source = ScannerAtWork(frames, {10: lambda: enrol_crop(live, "Ada")})
    with PendingWriter(open_attendance_store(live)) as writer:
        pipe, watcher = recogniser(live, writer)
        assert pipe.people == ["Bob"]
        with watcher:
            events = []
            summary = run(source, pipe, watcher, events)
    assert watcher.reloads == 1  # one change, one reload
    assert pipe.people == ["Ada", "Bob"]
    assert "gallery reloaded: 2 people (+1, -0); added Ada" in caplog.text
    assert [(e.name, e.action) for e in events] == [(UNKNOWN, ACTION_UNKNOWN), ("Ada", "present")]
    assert events[0].frame_index < 10 < events[1].frame_index
    assert summary.present == ["Ada"] and history(live) == [("Ada", "present")]


def test_person_removed_while_running_becomes_unknown(live: Config, caplog):
    caplog.set_level(logging.INFO, logger="recognizer.pipeline")
    enrol_crop(live, "Ada")
    frames = [make_frame(i, {"Ada": (100, 60)}) for i in range(10)]
    frames += [make_frame(10 + i, {}) for i in range(10)]  # Ada leaves ...
    frames += [make_frame(20 + i, {"Ada": (100, 60)}) for i in range(30)]  # ... and comes back
    source = ScannerAtWork(frames, {12: lambda: remove_person(live, "Ada", purge=False)})
    with PendingWriter(open_attendance_store(live)) as writer:
        pipe, watcher = recogniser(live, writer)
        with watcher:
            events = []
            run(source, pipe, watcher, events)
    assert not (live.pre_images_dir / "Ada").exists() and pipe.people == ["Bob"]
    assert "gallery reloaded: 1 people (+0, -1); removed Ada" in caplog.text
    # marked once before; afterwards a stranger (the cool-down of 1 s would allow a new mark)
    assert [(e.name, e.action, e.frame_index < 10) for e in events] == [
        ("Ada", "present", True),
        (UNKNOWN, ACTION_UNKNOWN, False),
    ]
    assert history(live) == [("Ada", "present")]


def test_cli_watches_the_gallery_and_still_refuses_an_empty_one(
    live: Config, monkeypatch, capsys, caplog, use_detector
):
    """``face_recognizer --continuous`` wires the watcher in; nobody enrolled is still an error."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: FakeEmbedder()))
    use_detector(FakeDetector())
    monkeypatch.setattr(cli, "RELOAD_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="recognizer.pipeline")
    frames = [make_frame(i, {"Ada": (100, 60)}) for i in range(40)]
    source = ScannerAtWork(frames, {10: lambda: enrol_crop(live, "Ada")})
    monkeypatch.setattr("common.sources.open_source", lambda spec: source)
    flags = ["--workspace", str(live.root), "--source", "synthetic", "--continuous"]
    settings = {
        "detect_every": 1, "detect_min_face_px": 28, "refresh_seconds": 1.0, "threshold": 0.8,
        "confirm_k": 3, "confirm_m": 5,
    }  # fmt: skip
    for key, value in settings.items():
        flags += ["--set", f"{key}={value}"]
    assert cli.main(flags) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1] for line in out[:-1]] == [UNKNOWN, "Ada"]
    assert "marked: Ada;" in out[-1]
    assert "gallery reloaded: 2 people (+1, -0); added Ada" in caplog.text

    # a gallery empty at start-up is refused as before
    for name in ("Ada", "Bob"):
        remove_person(live, name, purge=False)
    assert cli.main(flags) == 2
    assert "error: nobody is enrolled" in capsys.readouterr().err


# --------------------------------------------------------------------------- image folders
def test_folder_of_photos_judges_every_photo_on_its_own(
    live: Config, tmp_path, monkeypatch, capsys, use_detector
):
    """Alternating people, one photo each, all at the same spot: every photo gets its own label
    (nothing carried over by the tracker or the refresh interval) and each person is marked."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: FakeEmbedder()))
    use_detector(FakeDetector())
    enrol_crop(live, "Ada")
    photos = tmp_path / "photos"
    photos.mkdir()
    people = ["Ada", "Bob", "Zed", "Ada", "Bob"]
    for i, person in enumerate(people):
        assert cv2.imwrite(
            str(photos / f"{i + 1:04d}.png"), make_frame(i, {person: (100, 60)}).image
        )
    flags = ["--workspace", str(live.root), "--source", str(photos), "--continuous"]
    settings = {
        "detect_every": 3, "confirm_k": 1, "confirm_m": 1, "refresh_seconds": 1.0,
        "cooldown_seconds": 0.0, "threshold": 0.8,
    }  # fmt: skip
    for key, value in settings.items():
        flags += ["--set", f"{key}={value}"]
    assert cli.main(flags) == 0
    out = capsys.readouterr().out.splitlines()
    assert [(line.split("  ")[1], line.split("  ")[3].split()[0]) for line in out[:-1]] == [
        ("Ada", "present"), ("Bob", "present"), (UNKNOWN, ACTION_UNKNOWN),
        ("Ada", "seen"), ("Bob", "seen"),
    ]  # fmt: skip
    assert out[-1].startswith("summary: 5 frames") and "marked: Ada, Bob;" in out[-1]
    assert history(live) == [
        ("Ada", "present"),
        ("Bob", "present"),
        ("Ada", "seen"),
        ("Bob", "seen"),
    ]


# --------------------------------------------------------------------------- unsaved sightings
def headless_run(live: Config, monkeypatch, frames: list[Frame], *extra: str) -> int:
    """``face_recognizer --continuous`` on ``frames`` with the fake models (no display)."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: FakeEmbedder()))
    monkeypatch.setattr("common.sources.open_source", lambda spec: ListSource(frames))
    flags = ["--workspace", str(live.root), "--source", "synthetic", "--continuous", *extra]
    for key, value in {"detect_every": 1, "threshold": 0.8, "db_timeout_seconds": 0.05}.items():
        flags += ["--set", f"{key}={value}"]
    return cli.main(flags)


def test_summary_does_not_call_an_unsaved_sighting_marked(
    live: Config, monkeypatch, capsys, use_detector
):
    """The database stays locked for the whole run: the summary says the sighting is queued,
    not marked; the run exits 2 saying it is journalled; the next run writes it (issue 9,
    item 8)."""
    import sqlite3

    use_detector(FakeDetector())
    frames = [make_frame(i, {"Bob": (100, 60)}) for i in range(12)]
    with open_attendance_store(live):
        pass
    locker = sqlite3.connect(str(live.db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert headless_run(live, monkeypatch, frames) == 2
    finally:
        locker.execute("COMMIT")
        locker.close()
    out, err = capsys.readouterr()
    summary = out.splitlines()[-1]
    assert "marked: nobody; queued (not saved yet): Bob;" in summary
    assert "1 unsaved" in summary
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith("error: 1 sighting(s) could not be saved to ")
    assert "they are journalled in " in error and "at the next start of a recogniser" in error
    assert history(live) == []

    assert headless_run(live, monkeypatch, frames[:1]) == 0  # Bob not confirmed on 1 frame
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "marked: nobody;" in summary and "0 unsaved" in summary
    assert history(live) == [("Bob", "present")]  # replayed at start, exactly once


def test_summary_counts_saved_and_queued_sightings_apart() -> None:
    from store.journal import PendingMark

    when = [dt.datetime(2025, 1, 6, 9, 0, i) for i in range(4)]
    seen = [SimpleNamespace(name=name, when=at) for name, at in zip("ABAC", when, strict=True)]
    summary = cli.RunSummary(source="cam", sightings=seen)
    summary.settle([PendingMark("A", when[2], 0.4, "cam"), PendingMark("C", when[3], 0.4, "cam")])
    assert (summary.present, summary.queued, summary.unsaved) == (["A", "B"], ["C"], 2)
    assert "marked: A, B; queued (not saved yet): C;" in summary.line()
    summary.settle([])
    assert (summary.present, summary.queued) == (["A", "B", "C"], [])
    assert "marked: A, B, C; 0 event(s)" in summary.line()


# --------------------------------------------------------------------------- the fps readout
def test_frame_rate_counts_processed_frames_over_wall_clock_time() -> None:
    rate = cli.FrameRate(span=2.0)
    assert rate.per_second() is None
    for i in range(21):  # 10 frames per second for 2 s
        rate.processed(100.0 + i / 10)
    assert rate.per_second() == pytest.approx(10.0)
    for i in range(1, 11):  # slows down to 2 per second: the old frames age out
        rate.processed(102.0 + i / 2)
    assert rate.per_second() == pytest.approx(2.0)
    rate.pause()  # a person marked: nothing is processed while paused
    assert rate.per_second() is None
    assert cli.hud_text(rate, True, "camera 0") == "paused  camera 0"
    rate.processed(500.0)  # after n: measured afresh, the pause does not count
    assert cli.hud_text(rate, False, "camera 0") == "camera 0"
    rate.processed(500.04)
    assert rate.per_second() == pytest.approx(25.0)
    assert cli.hud_text(rate, False, "camera 0") == "25.0 fps  camera 0"


class LiveFrames(LiveSource):
    """A camera (live: it keeps delivering while recognition is paused) over given frames."""

    def __init__(self, frames: list[Frame]) -> None:  # no device, no reader thread
        self.frames = list(frames)
        self.fps = None

    def describe(self) -> str:
        return "camera 9"

    def __next__(self) -> Frame:
        if not self.frames:
            raise StopIteration
        return self.frames.pop(0)

    def close(self) -> None:
        self.frames = []


class KeyWindow:
    """A window that records the readout of every frame shown and presses ``n`` once."""

    def __init__(self, press_n_at: int) -> None:
        self.shown = 0
        self.press_n_at = press_n_at

    def show(self, image) -> None:
        self.shown += 1

    def key(self, wait_ms: int) -> str | None:
        time.sleep(0.002)
        return "n" if self.shown == self.press_n_at else None

    def close(self) -> None:
        pass


def test_window_readout_shows_processed_fps_and_nothing_while_paused(live, monkeypatch):
    """Window mode on a camera: after a person is marked, the readout says "paused" (it showed
    hundreds of fps counting idle loop turns); after ``n`` it shows the processed rate."""
    import recognizer.display

    huds: list[tuple[bool, str]] = []
    real = recognizer.display.annotate

    def annotate(result, *, hint=None, hud=None):
        huds.append((result.paused, hud))
        return real(result, hint=hint, hud=hud)

    monkeypatch.setattr(recognizer.display, "annotate", annotate)
    frames = [make_frame(i, {"Bob": (100, 60)}) for i in range(10)]
    frames += [make_frame(10 + i, {}) for i in range(20)]
    with PendingWriter(open_attendance_store(live)) as writer:
        with open_embedding_store(live) as gallery:
            labels, vectors = gallery.load(FakeEmbedder.model_id, dim=4)
        pipe = RecognitionPipeline(
            live, FakeDetector(), FakeEmbedder(), labels, vectors, writer,
            continuous=False, clock=clock(),
        )  # fmt: skip
        summary = cli.run_loop(LiveFrames(frames), pipe, window=KeyWindow(press_n_at=15))
    assert summary.present == ["Bob"] and summary.frames == 30
    paused = [hud for was_paused, hud in huds if was_paused]
    running = [hud for was_paused, hud in huds if not was_paused]
    assert paused and set(paused) == {"paused  camera 9"}
    assert huds[15][0] is False  # n was pressed: scanning again
    rates = [float(hud.split()[0]) for hud in running if "fps" in hud]
    assert rates and max(rates) < 1000 / 2  # at most one frame per window.key sleep
