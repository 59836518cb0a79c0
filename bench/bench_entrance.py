"""Benchmark entrance cameras: recall of every face ≥ min_face_px, frame rate, several cameras.

Runs the live recogniser (detection beside the loop, optical-flow tracking, one embedding
batch per turn) on videos *replayed in real time* as if they were cameras
(``common.sources.replay_source``: frames the loop is too slow for are dropped, as with a
camera), and prints:

- **recall**: ground truth is full-resolution MTCNN on every frame; a person is a chain of
  ground-truth boxes across frames; each person seen in at least 5 frames whose face reaches
  ``detect_min_face_px`` (default 40) counts, and is *found* when the pipeline embedded a
  crop overlapping them (IoU ≥ 0.3) within 1 s of the first frame their face was that large;
- **processed FPS**: frames the loop processed per second of wall time (≤ the video's rate),
  and frames dropped;
- on the real 1080p walking clip (``../shared/data/video/walking_people_1080p.mp4``), the
  same clip at 720p, and a synthetic 1080p crowd (7 sample faces of 40-120 px moving over a
  textured background, 8 s);
- **4 cameras**: four 640×480 kiosk videos of the sample people replayed at once, processed
  by one process (``recognizer.cameras``): FPS per camera;
- **kiosk**: the 640×480 one-face video replayed at 30 fps (a webcam), live path, and the
  same file processed as fast as possible with detection in the loop (the file path).

Usage: ``python bench/bench_entrance.py [--dir DIR] [--only walking,720p,crowd,cameras,kiosk]
[--in-loop] [--set KEY=VALUE]`` (``--in-loop`` also runs each clip with detection in the loop,
as video files are processed, for comparison)
Ground truth is cached in ``<cache_dir>/bench/`` (full-size MTCNN takes ~1 s a frame).
Targets (2 cores): 1080p with up to 7 faces ≥ 95% recall within 1 s and ≥ 15 FPS; 4 cameras
≥ 8 FPS each; kiosk ≥ 25 FPS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_recognizer import PEOPLE, make_videos, prepare  # noqa: E402

from common.config import Config, load_config  # noqa: E402
from common.runner import setup_logging  # noqa: E402
from common.sdist import ensure_sample_data  # noqa: E402
from preprocess.regions import iou  # noqa: E402

log = logging.getLogger("bench")
WALKING = ROOT.parent / "shared" / "data" / "video" / "walking_people_1080p.mp4"
WITHIN_SECONDS = 1.0
MATCH_IOU = 0.3
# A ground-truth chain shorter than this (frames) is a flicker of the detector, or someone
# crossing a corner in a blink: not a person an entrance camera could be asked to find.
MIN_FRAMES = 5


# --------------------------------------------------------------------------- ground truth
def ground_truth(video: Path, cfg: Config) -> list[list[list[float]]]:
    """Full-resolution MTCNN boxes of every frame (cached by the video's content)."""
    import cv2

    from preprocess.detect import FaceDetector

    digest = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    cache = Path(cfg.cache_dir) / "bench" / f"gt-{video.stem}-{digest}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    detector = FaceDetector(min_face_px=12, min_score=cfg.min_detection_score, max_side=0)
    cap = cv2.VideoCapture(str(video))
    boxes: list[list[list[float]]] = []
    started = time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        faces = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        boxes.append([[float(v) for v in f.box] for f in faces])
    cap.release()
    log.info("ground truth of %s: %d frames in %.0f s", video.name, len(boxes),
             time.perf_counter() - started)  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(boxes))
    tmp.replace(cache)
    return boxes


def people(boxes: list[list[list[float]]], max_gap: int = 3) -> list[dict[int, list[float]]]:
    """Chain per-frame boxes into people (greedy IoU to the last box, gaps up to ``max_gap``)."""
    chains: list[dict[int, list[float]]] = []
    for index, frame_boxes in enumerate(boxes):
        open_chains = [c for c in chains if index - max(c) <= max_gap]
        pairs = sorted(
            ((iou(c[max(c)], b), ci, bi) for ci, c in enumerate(open_chains)
             for bi, b in enumerate(frame_boxes)),
            reverse=True,
        )  # fmt: skip
        used_c, used_b = set(), set()
        for score, ci, bi in pairs:
            if score < MATCH_IOU:
                break
            if ci in used_c or bi in used_b:
                continue
            used_c.add(ci)
            used_b.add(bi)
            open_chains[ci][index] = frame_boxes[bi]
        for bi, b in enumerate(frame_boxes):
            if bi not in used_b:
                chains.append({index: b})
    return chains


# --------------------------------------------------------------------------- the live run
@dataclass
class LiveRun:
    name: str
    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    embedded: list[tuple[int, tuple[float, float, float, float]]] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    full_scans: int = 0
    unknown_events: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def run_live(name, cfg, video: Path, labels, vectors, detector, embedder, db: Path,
             fps: float | None = None, in_loop: bool = False) -> LiveRun:  # fmt: skip
    """The video replayed in real time through the live pipeline; what it embedded where.
    ``in_loop``: detection in the loop instead (every ``detect_every``-th frame processed)."""
    from common.sources import replay_source
    from recognizer.live_detection import AsyncDetection
    from recognizer.pipeline import RecognitionPipeline
    from store.factory import open_pending_writer

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    run = LiveRun(name)
    with open_pending_writer(cfg.replace(db_path=db)) as writer:
        live = None if in_loop else AsyncDetection(cfg, detector)
        pipe = RecognitionPipeline(cfg, detector, embedder, labels, vectors, writer,
                                   continuous=True, live=live)  # fmt: skip
        try:
            with replay_source(video, fps) as source:
                started = time.perf_counter()
                for frame in source:
                    step = pipe.prepare(frame)
                    vectors_now = None
                    if step.crops:
                        t = time.perf_counter()
                        vectors_now = embedder.embed(np.stack(step.crops))
                        step.result.timings["embed"] += time.perf_counter() - t
                    for track in step.due:
                        run.embedded.append((step.source.index, tuple(track.face.box)))
                    pipe.complete(step, vectors_now)
                    run.frames += 1
                run.seconds = time.perf_counter() - started
                run.dropped = source.dropped
        finally:
            pipe.close()
        run.stage_ms = pipe.stage_ms()
        run.rounds = pipe.detections if live is None else live.landed
        run.full_scans = pipe.detections if live is None else live.full_scans
        run.unknown_events = sum(1 for e in pipe.events if e.action == "unknown")
    return run


def recall(run: LiveRun, truth, fps: float, min_face_px: float) -> tuple[int, int, list[float]]:
    """(people found within 1 s, people counted, seconds to the first embedding of each)."""
    counted = found = 0
    delays: list[float] = []
    for chain in people(truth):
        big = [i for i in sorted(chain) if min(chain[i][2:]) >= min_face_px]
        if len(chain) < MIN_FRAMES or not big:
            continue
        first = big[0]
        if first / fps > len(truth) / fps - WITHIN_SECONDS:
            continue  # appears in the clip's last second: cannot be judged
        counted += 1
        deadline = first + WITHIN_SECONDS * fps
        hits = [
            index for index, box in run.embedded
            if index in chain and index <= deadline and iou(box, chain[index]) >= MATCH_IOU
        ]  # fmt: skip
        if hits:
            found += 1
            delays.append(max(0.0, (min(hits) - first) / fps))
        else:
            log.info("missed: a face first %.0f px at frame %d (%.2f s), box %s, seen in "
                     "frames %d-%d", min(chain[first][2:]), first, first / fps,
                     [round(v) for v in chain[first]], min(chain), max(chain))  # fmt: skip
    return found, counted, delays


# --------------------------------------------------------------------------- media
def resized(video: Path, out: Path, width: int, height: int) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return out


def crowd(sample: Path, out: Path, seconds: float = 8.0, fps: float = 25.0) -> Path:
    """7 sample faces (40-120 px, with hair and shoulders) walking over a textured 1080p
    background, entering one every 0.5 s and turning back at the edges. Only photos whose
    face full-size MTCNN finds at the size given are used, so the ground truth does not
    flicker (a face it loses and finds again would count as a new person)."""
    import cv2

    from attendance.demo import load_photo
    from preprocess.detect import FaceDetector

    rng = np.random.default_rng(7)
    noise = rng.integers(60, 190, (135, 240, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(cv2.resize(noise, (1920, 1080)), (0, 0), 6)
    detector = FaceDetector(min_face_px=12, min_score=0.9, max_side=0)
    photos = [
        p for part in ("val", "train") for person in PEOPLE
        for p in sorted((sample / part / person).glob("*.jpg"))
    ]  # fmt: skip
    sizes = [40, 48, 56, 68, 80, 100, 120]
    tiles: list[np.ndarray] = []
    for path in photos:
        if len(tiles) == len(sizes):
            break
        bgr = load_photo(path)
        faces = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not faces:
            continue
        x, y, w, h = faces[0].box
        span = 1.8 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(max(0, cx - span / 2)), int(max(0, cy - span / 2))
        head = bgr[y0 : int(cy + span / 2), x0 : int(cx + span / 2)]
        if min(head.shape[:2]) < 40:
            continue
        side = int(sizes[len(tiles)] * span / max(w, h))
        tile = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
        check = background[:400, :400].copy()
        check[100 : 100 + side, 100 : 100 + side] = tile
        found = detector.detect(cv2.cvtColor(check, cv2.COLOR_BGR2RGB))
        if found and max(found[0].box[2:]) >= 0.8 * sizes[len(tiles)]:
            tiles.append(tile)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
    for i in range(int(seconds * fps)):
        t = i / fps
        frame = background.copy()
        for k, tile in enumerate(tiles):
            enter = 0.5 * k
            if t < enter:
                continue
            room = 1920 - tile.shape[1]
            speed = 60 + 25 * k  # px/s
            travel = (100 + 240 * k + speed * (t - enter)) % (2 * room)
            x = int(travel if travel < room else 2 * room - travel)  # back at the edges
            y = 120 + (k % 3) * 300
            frame[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        writer.write(frame)
    writer.release()
    return out


# --------------------------------------------------------------------------- report
def entrance_line(run: LiveRun, truth, fps: float, cfg: Config) -> str:
    found, counted, delays = recall(run, truth, fps, cfg.detect_min_face_px)
    share = 100.0 * found / counted if counted else float("nan")
    delay = f"median {np.median(delays):.2f} s, max {max(delays):.2f} s" if delays else "-"
    stages = "  ".join(f"{k} {v:.1f}" for k, v in run.stage_ms.items())
    return (
        f"{run.name}: recall {found}/{counted} = {share:.1f}% within {WITHIN_SECONDS:g} s "
        f"(first embedding {delay}); {run.fps:.1f} FPS processed ({run.frames} frames, "
        f"{run.dropped} dropped); {run.rounds} detection rounds ({run.full_scans} whole-frame); "
        f"{len(run.embedded)} crops embedded; {run.unknown_events} Unknown events\n"
        f"    loop ms/frame: {stages}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="workspace to enrol into (kept); default: a temp dir")
    parser.add_argument("--only", default="walking,720p,crowd,cameras,kiosk")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--in-loop",
        action="store_true",
        help="also run each clip with detection in the loop, for comparison",
    )
    args = parser.parse_args(argv)
    setup_logging(0, quiet=True)
    logging.getLogger("bench").setLevel(logging.INFO)
    parts = set(args.only.split(","))

    from model.embedder import Embedder
    from preprocess.detectors import make_detector

    overrides = {"cooldown_seconds": 0.0}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value
    with tempfile.TemporaryDirectory(prefix="bench-entrance-") as tmp:
        tmp_dir = Path(tmp)
        root = Path(args.dir) if args.dir else tmp_dir / "ws"
        root.mkdir(parents=True, exist_ok=True)
        cfg = load_config(root, overrides=overrides, env=None)
        sample = ensure_sample_data(cfg.cache_dir)
        embedder = Embedder.from_config(cfg)
        labels, vectors = prepare(cfg, sample, make_detector(cfg), embedder)
        detector = make_detector(cfg, whole_frames=True)
        detector.detect(np.zeros((240, 320, 3), np.uint8))  # trace the graphs
        embedder.embed(np.zeros((8, 160, 160, 3), np.uint8))
        print(
            f"config: detect_min_face_px={cfg.detect_min_face_px} full_scan_seconds="
            f"{cfg.full_scan_seconds} confirm={cfg.confirm_k}-of-{cfg.confirm_m} "
            f"refresh={cfg.refresh_seconds}s; videos replayed in real time"
        )
        clips = []
        if "walking" in parts:
            clips.append(("1080p walking clip", WALKING))
        if "720p" in parts:
            clips.append(("720p walking clip", resized(WALKING, tmp_dir / "w720.mp4", 1280, 720)))
        if "crowd" in parts:
            clips.append(("1080p synthetic crowd", crowd(sample, tmp_dir / "crowd.mp4")))
        for name, video in clips:
            import cv2

            cap = cv2.VideoCapture(str(video))
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            cap.release()
            truth = ground_truth(video, cfg)
            faces = [len(b) for b in truth]
            print(f"{name}: {len(truth)} frames, {min(faces)}-{max(faces)} faces per frame "
                  "(full-size MTCNN)")  # fmt: skip
            run = run_live(name, cfg, video, labels, vectors, detector, embedder,
                           tmp_dir / "entrance.db")  # fmt: skip
            print(entrance_line(run, truth, fps, cfg), flush=True)
            if args.in_loop:
                run = run_live(
                    f"{name}, detection in the loop",
                    cfg,
                    video,
                    labels,
                    vectors,
                    detector,
                    embedder,
                    tmp_dir / "entrance.db",
                    in_loop=True,
                )
                print(entrance_line(run, truth, fps, cfg), flush=True)  # fmt: skip
        if "cameras" in parts or "kiosk" in parts:
            videos = make_videos(tmp_dir, sample, 10.0, 30.0)
        if "cameras" in parts:
            print(cameras_line(cfg, videos, labels, vectors, detector, embedder, tmp_dir),
                  flush=True)  # fmt: skip
        if "kiosk" in parts:
            one = videos["1 face"][0]
            run = run_live("kiosk 640x480, 1 face, live at 30 fps", cfg, one, labels, vectors,
                           detector, embedder, tmp_dir / "kiosk.db")  # fmt: skip
            print(f"{run.name}: {run.fps:.1f} FPS processed ({run.frames} frames, "
                  f"{run.dropped} dropped); {run.rounds} detection rounds", flush=True)  # fmt: skip
            print(file_line(cfg, one, labels, vectors, detector, embedder, tmp_dir), flush=True)
    return 0


def file_line(cfg, video, labels, vectors, detector, embedder, tmp_dir) -> str:
    """The kiosk file as fast as possible, detection in the loop (bench_recognizer's case)."""
    from common.sources import open_source
    from recognizer.pipeline import RecognitionPipeline
    from store.factory import open_pending_writer

    with (
        open_pending_writer(cfg.replace(db_path=tmp_dir / "file.db")) as writer,
        open_source(str(video)) as source,
    ):
        pipe = RecognitionPipeline(cfg, detector, embedder, labels, vectors, writer)
        started = time.perf_counter()
        for frame in source:
            pipe.process(frame)
        seconds = time.perf_counter() - started
    return (f"kiosk 640x480, 1 face, file, detection in the loop: {pipe.frames / seconds:.1f} "
            f"FPS; marked {', '.join(pipe.marked) or 'nobody'}")  # fmt: skip


def cameras_line(cfg, videos, labels, vectors, detector, embedder, tmp_dir) -> str:
    """Four 640x480 replays (the 1-face and 3-faces videos, twice each) in one process."""
    import contextlib

    from common.sources import replay_source
    from recognizer.cameras import Camera, run_cameras
    from recognizer.cli import RunSummary
    from recognizer.live_detection import AsyncDetection, detection_worker
    from recognizer.pipeline import RecognitionPipeline
    from store.factory import open_pending_writer

    files = [videos["1 face"][0], videos["3 faces"][0]] * 2
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(open_pending_writer(cfg.replace(db_path=tmp_dir / "4.db")))
        worker = detection_worker(detector)
        stack.callback(worker.close)
        cameras = []
        for k, path in enumerate(files):
            source = stack.enter_context(replay_source(path, 25.0))
            live = AsyncDetection(cfg, detector, worker)
            pipe = RecognitionPipeline(cfg, detector, embedder, labels, vectors, writer,
                                       live=live)  # fmt: skip
            cameras.append(Camera(source, pipe, label=f"camera {k + 1}"))
        summary = RunSummary(source="4 cameras")
        rates = run_cameras(cameras, embedder, summary=summary)
        marked = sorted({e.name for c in cameras for e in c.pipeline.events if e.recorded})
    per = [c.frames / rates.seconds for c in cameras]
    return (f"4 cameras 640x480 replayed at 25 fps: {', '.join(f'{x:.1f}' for x in per)} FPS "
            f"each (min {min(per):.1f}); {worker.rounds} detection rounds; "
            f"marked {', '.join(marked)}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
