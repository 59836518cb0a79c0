"""``attendance demo``: the whole product on the sample data, in one command.

1. acquire the pretrained weights and the sample photos (cached after the first run);
2. enrol 4 of the 5 sample people into a demo workspace (``./demo_workspace``, ``--dir``):
   their *train* photos are copied to ``images/<Name>/``, preprocessed and embedded;
3. build a 640×480 video from their held-back *val* photos and from photos of the 5th person,
   the stranger, who is not enrolled;
4. recognise it as ``face_recognizer --headless --continuous --source VIDEO`` would;
5. replay one enrolled person's photo on a phone held up to the camera (rendered by
   ``liveness.simulate``) and recognise it with ``--set liveness=passive``: the face is
   recognised, refused as "photo or screen?" and logged as a ``spoof`` event, never marked;
6. print the attendance table: each enrolled person Present exactly once, the stranger never.

The workspace is reused by later runs (enrolment is incremental and fast); its attendance
database is started afresh each time. A folder that is not empty and was not made by the
demo is refused, so a real workspace is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.errors import UserError
from store.factory import pending_journal_dir

log = logging.getLogger(__name__)

HELP = "run the product on sample data: enrol 4 people, recognise them in a video, show attendance"
DEMO_MARKER = ".attendance-demo"
DEFAULT_DIR = "demo_workspace"
DEFAULT_STRANGER = "mindy_kaling"
VIDEO_NAME = "demo.mp4"
REPLAY_NAME = "replay.mp4"
FRAME_SIZE = (640, 480)
BACKGROUND = (70, 70, 70)  # BGR


class DemoError(UserError):
    """The demo cannot run (workspace refused, unexpected sample data)."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``attendance demo``."""
    parser.add_argument(
        "--dir",
        metavar="DIR",
        default=DEFAULT_DIR,
        help=f"demo workspace, created if needed (default: ./{DEFAULT_DIR})",
    )
    parser.add_argument(
        "--stranger",
        metavar="PERSON",
        default=DEFAULT_STRANGER,
        help=f"sample person left out of enrolment (default: {DEFAULT_STRANGER})",
    )
    parser.add_argument(
        "--photos",
        type=int,
        default=3,
        metavar="N",
        help="held-back photos per person in the video (1-5, default 3)",
    )
    parser.add_argument(
        "--fps", type=float, default=12.0, help="frame rate of the demo video (default 12)"
    )
    parser.add_argument(
        "--hold", type=float, default=1.2, help="seconds each photo stays in view (default 1.2)"
    )


def pretty_name(sample_name: str) -> str:
    """``"ben_afflek"`` -> ``"Ben Afflek"``."""
    return " ".join(part.capitalize() for part in sample_name.split("_"))


# --------------------------------------------------------------------------- video
@dataclass(frozen=True)
class Appearance:
    """One person's photo in the video: frames ``start`` (inclusive) to ``end`` (exclusive)."""

    name: str
    enrolled: bool
    start: int
    end: int


def letterbox(bgr: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """``bgr`` scaled to fit a ``width``x``height`` grey frame, like a webcam picture."""
    import cv2

    h, w = bgr.shape[:2]
    scale = min(height / h, width / w)
    resized = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    frame = np.full((height, width, 3), 90, np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return frame


def fit_height(image: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """``image`` resized to ``height`` pixels high (narrower if it would exceed ``max_width``)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(height / h, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interp)


def compose(photos: Sequence[np.ndarray], size: tuple[int, int] = FRAME_SIZE,
            offset: int = 0, side: int = 0) -> np.ndarray:  # fmt: skip
    """A BGR canvas of ``size`` with ``photos`` side by side (shifted ``offset`` px).

    One photo is placed on the left (``side`` 0) or right (1) half of the canvas; several are
    spread evenly across its width.
    """
    width, height = size
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    if not photos:
        return canvas
    n = len(photos)
    if n == 1:
        photo = fit_height(photos[0], int(height * 0.75), int(width * 0.55))
        x = 30 if side == 0 else width - 30 - photo.shape[1]
        paste(canvas, photo, x + offset, (height - photo.shape[0]) // 2)
        return canvas
    slot = width // n
    for i, photo in enumerate(photos):
        photo = fit_height(photo, int(height * 0.5), slot - 16)
        x = i * slot + (slot - photo.shape[1]) // 2
        paste(canvas, photo, x + offset, (height - photo.shape[0]) // 2)
    return canvas


def paste(canvas: np.ndarray, photo: np.ndarray, x: int, y: int) -> None:
    """Copy ``photo`` into ``canvas`` with its top-left corner at (x, y), clipped to the canvas."""
    h, w = photo.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = photo[y0 - y : y1 - y, x0 - x : x1 - x]


@contextlib.contextmanager
def video_writer(path: Path, fps: float, size: tuple[int, int] = FRAME_SIZE) -> Iterator[Any]:
    """An mp4v ``cv2.VideoWriter`` on a partial file, renamed to ``path`` on success."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not writer.isOpened():
        raise DemoError(f"cannot write the demo video {path} (OpenCV mp4v encoder unavailable)")
    try:
        yield writer
    except BaseException:
        writer.release()
        partial.unlink(missing_ok=True)
        raise
    writer.release()
    partial.replace(path)


def build_video(
    path: Path,
    scenes: Sequence[tuple[str, bool, Sequence[np.ndarray]]],
    *,
    fps: float = 12.0,
    hold: float = 1.2,
    gap: float = 0.4,
    drift: int = 1,
) -> list[Appearance]:
    """Write a video of ``scenes`` ``(name, enrolled, photos)``; return who is seen when.

    Each scene shows its photos (BGR) for ``hold`` seconds, drifting ``drift`` px per frame,
    followed by ``gap`` seconds of empty background. Single photos alternate left and right.
    """
    hold_frames = max(1, round(hold * fps))
    gap_frames = max(0, round(gap * fps))
    appearances: list[Appearance] = []
    index = 0
    with video_writer(path, fps) as writer:
        for number, (name, enrolled, photos) in enumerate(scenes):
            for step in range(hold_frames):
                writer.write(compose(photos, offset=step * drift, side=number % 2))
            appearances.append(Appearance(name, enrolled, index, index + hold_frames))
            index += hold_frames
            for _ in range(gap_frames):
                writer.write(compose([]))
            index += gap_frames
    return appearances


def load_photo(path: Path) -> np.ndarray:
    """A sample photo as BGR uint8."""
    from common.image_io import read_image

    return np.ascontiguousarray(read_image(path)[..., ::-1])


# --------------------------------------------------------------------------- workspace
def claim_workspace(folder: Path) -> Path:
    """Create or reuse ``folder`` as a demo workspace; refuse any other non-empty folder."""
    folder = folder.expanduser().resolve()
    marker = folder / DEMO_MARKER
    if folder.exists() and not folder.is_dir():
        raise DemoError(f"--dir {folder} is a file; choose a folder for the demo workspace")
    if folder.is_dir() and not marker.exists() and any(folder.iterdir()):
        raise DemoError(
            f"--dir {folder} is not empty and was not created by the demo; "
            "choose a new folder so no real data is touched"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("created by `attendance demo`; safe to delete\n", encoding="utf-8")
    return folder


def demo_config(base: Config, folder: Path) -> Config:
    """``base`` (thresholds, cache, weights) re-rooted at the demo workspace ``folder``, on
    that workspace's own SQLite files: the demo never writes into a shared store."""
    import dataclasses

    return dataclasses.replace(
        base,
        root=folder,
        images_dir=folder / "images",
        pre_images_dir=folder / "pre_images",
        db_path=folder / "attendance.db",
        gallery_path=folder / "gallery.sqlite",
        store="",
    )


def reset_attendance(cfg: Config) -> None:
    """Start the demo's attendance database afresh (only ever called inside a demo workspace),
    with its journal of unsaved sightings: a demo killed earlier must not replay into it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{cfg.db_path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(pending_journal_dir(cfg), ignore_errors=True)


def enrol(cfg: Config, sample: Path, people: Sequence[str], limit: int | None = None) -> int:
    """Copy the train photos of ``people`` into ``images/<Pretty Name>/``; return how many new.

    ``limit`` takes only the first photos of each person (in name order).
    """
    from common.fsutil import atomic_write_bytes
    from common.names import person_dir

    copied = 0
    for person in people:
        target = person_dir(Path(cfg.images_dir), pretty_name(person))
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted((sample / "train" / person).glob("*.jpg"))[:limit]:
            out = target / photo.name
            if not out.exists():
                atomic_write_bytes(out, photo.read_bytes())
                copied += 1
    return copied


# --------------------------------------------------------------------------- the demo
@dataclass
class DemoResult:
    """What the demo did and found."""

    workspace: Path
    video: Path
    enrolled: list[str]
    stranger: str
    rows: list[Any] = field(default_factory=list)  # store.records.AttendanceRow (this run)
    events: list[Any] = field(default_factory=list)  # recognizer.pipeline.RecognitionEvent
    steps: list[tuple[str, float]] = field(default_factory=list)
    appearances: list[Appearance] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    replayed: str = ""  # the person shown on a phone in step 5
    replay_events: list[Any] = field(default_factory=list)

    @property
    def replay_refused(self) -> bool:
        """The phone replay was recognised and refused by liveness, and never recorded."""
        return any(e.refused and e.name == self.replayed for e in self.replay_events) and not any(
            e.recorded for e in self.replay_events
        )

    @property
    def present(self) -> list[str]:
        return sorted(r.name for r in self.rows if r.status == "Present")

    @property
    def as_expected(self) -> bool:
        """Every enrolled person Present exactly once today, the stranger absent."""
        names = [r.name for r in self.rows]
        return (
            sorted(names) == sorted(self.enrolled)
            and self.present == sorted(self.enrolled)
            and self.replay_refused
        )


class _Steps:
    def __init__(self, result: DemoResult, out: Callable[[str], None], total: int) -> None:
        self.result, self.out, self.total = result, out, total

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        number = len(self.result.steps) + 1
        self.out(f"[{number}/{self.total}] {title} ...")
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.result.steps.append((title, seconds))
        self.out(f"[{number}/{self.total}] {title}: done in {seconds:.1f} s")


def run_demo(
    base_cfg: Config,
    folder: Path,
    *,
    stranger: str = DEFAULT_STRANGER,
    photos: int = 3,
    fps: float = 12.0,
    hold: float = 1.2,
    embedder: Any = None,
    detector: Any = None,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the five demo steps; ``embedder``/``detector`` may be passed in to reuse them."""
    from common.sdist import SAMPLE_PEOPLE, ensure_sample_data

    if stranger not in SAMPLE_PEOPLE:
        raise DemoError(f"--stranger {stranger!r} is not one of {', '.join(SAMPLE_PEOPLE)}")
    if not 1 <= photos <= 5:
        raise DemoError(f"--photos {photos}: choose 1 to 5 photos per person")
    if not (1.0 <= fps <= 60.0 and 0.3 <= hold <= 10.0):
        raise DemoError(f"--fps {fps:g} / --hold {hold:g}: use 1-60 fps and 0.3-10 s")
    folder = claim_workspace(Path(folder))
    cfg = demo_config(base_cfg, folder)
    people = [p for p in SAMPLE_PEOPLE if p != stranger]
    result = DemoResult(
        workspace=folder,
        video=folder / VIDEO_NAME,
        enrolled=[pretty_name(p) for p in people],
        stranger=pretty_name(stranger),
    )
    steps = _Steps(result, out, 6)

    with steps.step("acquire the FaceNet weights and the sample photos"):
        sample = ensure_sample_data(cfg.cache_dir)
        if embedder is None:
            from model.embedder import Embedder

            embedder = Embedder.from_config(cfg)

    with steps.step(f"enrol {', '.join(result.enrolled)}"):
        from preprocess.detectors import make_detector
        from preprocess.pipeline import run_preprocess
        from store.factory import open_embedding_store
        from store.gallery import sync_gallery

        detector = detector or make_detector(cfg)
        copied = enrol(cfg, sample, people)
        summary = run_preprocess(cfg, detector=detector, progress=False)
        for line in summary.lines():
            out(f"      {line}")
        with open_embedding_store(cfg) as gallery:
            synced = sync_gallery(gallery, cfg, embedder, progress=False)
        out(f"      {copied} photos copied; {synced}")

    with steps.step(f"build a video of held-back photos, with {result.stranger} as the stranger"):
        scenes = []
        for i in range(photos):
            for person in [*people[:2], stranger, *people[2:]]:
                files = sorted((sample / "val" / person).glob("*.jpg"))
                if len(files) <= i:
                    raise DemoError(f"{sample}/val/{person} has fewer than {photos} photos")
                scenes.append((pretty_name(person), person != stranger, [load_photo(files[i])]))
        result.appearances = build_video(result.video, scenes, fps=fps, hold=hold)
        out(f"      {result.video} ({len(scenes)} photos, {fps:g} fps, {hold:g} s each)")

    with steps.step(f"face_recognizer --headless --continuous --source {result.video.name}"):
        _recognise(cfg, result, embedder, detector, out)

    result.replayed = result.enrolled[0]
    replay = f"face_recognizer --set liveness=passive --source {REPLAY_NAME}"
    with steps.step(f"{replay} ({result.replayed}'s photo on a phone)"):
        first = sorted((sample / "val" / people[0]).glob("*.jpg"))[0]
        build_replay(folder / REPLAY_NAME, load_photo(first), fps=fps)
        _replay(cfg, result, folder / REPLAY_NAME, embedder, detector, out)

    with steps.step("read the attendance table"):
        from store.factory import open_attendance_store

        with open_attendance_store(cfg, create=False) as db:
            result.rows = db.rows()  # the database was started afresh by this run
    for line in attendance_table(result):
        out(line)
    return result


def _recognise(cfg: Config, result: DemoResult, embedder: Any, detector: Any,
               out: Callable[[str], None]) -> None:  # fmt: skip
    from common.sources import open_source
    from recognizer.cli import build_pipeline, run_loop
    from store.factory import open_pending_writer

    reset_attendance(cfg)
    with (
        open_source(str(result.video)) as source,
        open_pending_writer(cfg) as writer,
    ):
        pipeline = build_pipeline(
            cfg, writer, continuous=True, embedder=embedder, detector=detector
        )
        summary = run_loop(source, pipeline, on_event=lambda e: out(f"      {e.line()}"))
    result.events = list(pipeline.events)
    result.frames, result.seconds = summary.frames, summary.seconds
    out(f"      {summary.line()}")
    if summary.error is not None:
        raise summary.error


def build_replay(path: Path, photo: np.ndarray, *, fps: float, seconds: float = 4.0) -> None:
    """A video of ``photo`` on a phone held up to the camera by a moving hand."""
    from liveness import simulate

    scene = simulate.background(7)
    motion = simulate.HandMotion(7)
    rng = np.random.default_rng(7)
    with video_writer(path, fps) as writer:
        for i in range(max(1, round(seconds * fps))):
            frame = simulate.render(photo, simulate.DEVICES["phone"], motion, i / fps, scene)
            writer.write(simulate.camera(frame, rng))


def _replay(cfg: Config, result: DemoResult, video: Path, embedder: Any, detector: Any,
            out: Callable[[str], None]) -> None:  # fmt: skip
    from common.sources import open_source
    from recognizer.cli import build_pipeline, run_loop
    from recognizer.liveness_gate import build_gates
    from store.factory import open_pending_writer

    live_cfg = cfg.replace(liveness="passive")
    with open_source(str(video)) as source, open_pending_writer(cfg) as writer:
        pipeline = build_pipeline(
            live_cfg, writer, continuous=True, embedder=embedder, detector=detector,
            gates=build_gates(live_cfg, source, headless=True),
        )  # fmt: skip
        summary = run_loop(source, pipeline, on_event=lambda e: out(f"      {e.line()}"))
    result.replay_events = list(pipeline.events)
    out(f"      {summary.line()}")
    if summary.error is not None:
        raise summary.error


def attendance_table(result: DemoResult) -> list[str]:
    """The attendance table and the verdict, as printable lines."""
    lines = [f"attendance table ({result.workspace / 'attendance.db'}):"]
    lines.append(f"  {'Name':<20} {'Date':<10} {'Status':<8} {'Time':<8} {'Last seen':<8}")
    for row in result.rows:
        lines.append(
            f"  {row.name:<20} {row.date:<10} {row.status:<8} {row.time or '-':<8} "
            f"{row.last_seen or '-':<8}"
        )
    if not result.rows:
        lines.append("  (no rows)")
    stranger_rows = [r for r in result.rows if r.name == result.stranger]
    lines.append(
        f"  {result.stranger} (not enrolled): "
        + ("never marked" if not stranger_rows else "WRONGLY MARKED")
    )
    if result.replayed:
        lines.append(
            f"  {result.replayed} replayed on a phone (liveness=passive): "
            + ("refused, not marked" if result.replay_refused else "NOT REFUSED")
        )
    timing = ", ".join(f"{i + 1}: {s:.1f} s" for i, (_, s) in enumerate(result.steps))
    lines.append(f"step times: {timing}")
    if result.as_expected:
        lines.append(
            f"demo OK: {len(result.enrolled)} enrolled people present once each, the stranger "
            "never, the phone replay refused"
        )
    else:
        missing = sorted(set(result.enrolled) - set(result.present))
        replay = "" if result.replay_refused else "; the phone replay was not refused"
        lines.append(f"demo NOT as expected: missing {missing or 'nobody'}{replay}; rows above")
    return lines


def run(args: argparse.Namespace, cfg: Config) -> int:
    """``attendance demo``: 0 when the table is as expected, 1 otherwise."""
    started = time.perf_counter()
    result = run_demo(
        cfg,
        Path(args.dir),
        stranger=args.stranger,
        photos=args.photos,
        fps=args.fps,
        hold=args.hold,
    )
    print(f"total: {time.perf_counter() - started:.1f} s; workspace kept in {result.workspace}")
    print(
        f"try it yourself: face_recognizer --workspace {result.workspace} "
        f"--source {result.video} --continuous"
    )
    print(
        f"see it in a browser: attendance user add admin --role admin --workspace "
        f"{result.workspace}; attendance serve --workspace {result.workspace}"
    )
    return 0 if result.as_expected else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m attendance.demo``."""
    from common.runner import run_single

    return run_single("attendance demo", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
