"""Benchmark the recogniser: end-to-end FPS, per-stage milliseconds, appearance-to-row latency.

Builds 640×480 videos from the sample photos (held-back photos of 4 enrolled people: one face
per frame, and three faces per frame), runs the real pipeline (MTCNN + FaceNet + SQLite) on
them as fast as possible, and prints:

- processing FPS (decode + every stage, frames from a file, no pacing);
- mean milliseconds per frame of each stage (detect, align, embed, match, record), plus the
  cost of one detection call;
- the time from a face's first appearance to its attendance row: in processing (wall) time,
  and in video time (what a live camera would see if processing kept up).

Targets on the reference 2-core machine: >= 15 FPS with one face, <= 1.5 s to the row.
Usage: ``python bench/bench_recognizer.py [--dir DIR] [--seconds 10] [--fps 15] [--baseline]
[--liveness]`` (``--liveness`` also runs the one-face video with the passive liveness gate and
without it, alternately, twice each: its FPS cost, measured back to back)
(``--dir`` keeps the enrolled workspace between runs; ``--baseline`` also times a naive loop:
full-resolution detection on every frame and every face embedded in every frame).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attendance.demo import Appearance, build_video, enrol, load_photo, pretty_name
from common.config import Config, load_config
from common.runner import setup_logging
from common.sdist import SAMPLE_PEOPLE, ensure_sample_data

log = logging.getLogger("bench")
PEOPLE = [p for p in SAMPLE_PEOPLE if p != "mindy_kaling"]


@dataclass
class Run:
    name: str
    frames: int
    seconds: float
    stage_ms: dict[str, float]
    detect_call_ms: float
    embedded: int
    latencies_wall: list[float]
    latencies_video: list[float]
    missed: list[str]

    def lines(self) -> list[str]:
        fps = self.frames / self.seconds
        total_ms = 1000 * self.seconds / self.frames
        other = total_ms - sum(self.stage_ms.values())
        stages = "  ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        out = [
            f"{self.name}: {self.frames} frames in {self.seconds:.1f} s = {fps:.1f} FPS "
            f"({total_ms:.1f} ms/frame)",
            f"  ms/frame: {stages}  decode+track+other {other:.1f}",
            f"  one detection call {self.detect_call_ms:.0f} ms; {self.embedded} crops embedded "
            f"({self.embedded / self.frames:.2f} per frame)",
        ]
        if self.latencies_wall:
            out.append(
                f"  first appearance -> attendance row ({len(self.latencies_wall)} faces): "
                f"processing time median {statistics.median(self.latencies_wall):.2f} s, "
                f"max {max(self.latencies_wall):.2f} s; video time median "
                f"{statistics.median(self.latencies_video):.2f} s, "
                f"max {max(self.latencies_video):.2f} s"
            )
        if self.missed:
            out.append(f"  NOT marked: {', '.join(self.missed)}")
        return out


def prepare(cfg: Config, sample: Path, detector, embedder):
    """Enrol the 4 people (incremental) and return the gallery."""
    from preprocess.pipeline import run_preprocess
    from store.factory import open_embedding_store
    from store.gallery import load_gallery

    enrol(cfg, sample, PEOPLE)
    run_preprocess(cfg, detector=detector, progress=False)
    with open_embedding_store(cfg) as gallery:
        return load_gallery(gallery, cfg, embedder, progress=False)


def make_videos(folder: Path, sample: Path, seconds: float, fps: float):
    val = {p: sorted((sample / "val" / p).glob("*.jpg")) for p in PEOPLE}
    one, three = [], []
    i = 0
    while len(one) * 2.0 < seconds:
        person = PEOPLE[i % len(PEOPLE)]
        one.append((pretty_name(person), True, [load_photo(val[person][(i // 4) % 5])]))
        i += 1
    j = 0
    while len(three) * 3.0 < seconds:
        trio = [PEOPLE[(j + k) % len(PEOPLE)] for k in range(3)]
        photos = [load_photo(val[p][(j + k) % 5]) for k, p in enumerate(trio)]
        three.append(("+".join(pretty_name(p) for p in trio), True, photos))
        j += 1
    videos = {
        "1 face": (folder / "one_face.mp4", build_video(
            folder / "one_face.mp4", one, fps=fps, hold=1.8, gap=0.2)),
        "3 faces": (folder / "three_faces.mp4", build_video(
            folder / "three_faces.mp4", three, fps=fps, hold=2.8, gap=0.2)),
    }  # fmt: skip
    return videos


def run_once(name, cfg, video: Path, appearances: list[Appearance], labels, vectors,
             detector, embedder, db_dir: Path, gates=()) -> Run:  # fmt: skip
    from common.sources import open_source
    from recognizer.pipeline import RecognitionPipeline
    from store.factory import open_pending_writer

    db_path = db_dir / f"{name.replace(' ', '_')}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    started_at: dict[int, float] = {}
    done_at: dict[int, float] = {}
    with (
        open_pending_writer(cfg.replace(db_path=db_path)) as writer,
        open_source(str(video)) as source,
    ):
        pipe = RecognitionPipeline(
            cfg, detector, embedder, labels, vectors, writer, continuous=True, gates=gates
        )
        fps = source.fps or 15.0
        t0 = time.perf_counter()
        frames = iter(source)
        while True:
            tick = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            started_at[frame.index] = tick
            pipe.process(frame)
            done_at[frame.index] = time.perf_counter()
        seconds = time.perf_counter() - t0
    wall, media, missed = [], [], []
    for app in appearances:
        for person in app.name.split("+"):
            hit = next(
                (e for e in pipe.events
                 if e.recorded and e.name == person and app.start <= e.frame_index < app.end),
                None,
            )  # fmt: skip
            if hit is None:
                missed.append(f"{person}@{app.start}")
                continue
            wall.append(done_at[hit.frame_index] - started_at[app.start])
            media.append((hit.frame_index - app.start + 1) / fps)
    detect_call = 1000 * pipe.totals["detect"] / max(1, pipe.detections)
    return Run(name, pipe.frames, seconds, pipe.stage_ms(), detect_call, pipe.embedded,
               wall, media, missed)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="workspace to enrol into (kept); default: a temp dir")
    parser.add_argument("--seconds", type=float, default=10.0, help="video length (default 10)")
    parser.add_argument("--fps", type=float, default=15.0, help="video frame rate (default 15)")
    parser.add_argument("--baseline", action="store_true", help="also time the naive loop")
    parser.add_argument("--liveness", action="store_true", help="FPS with and without liveness")
    args = parser.parse_args(argv)
    setup_logging(0, quiet=True)

    from model.embedder import Embedder
    from preprocess.detectors import make_detector

    with tempfile.TemporaryDirectory(prefix="bench-recognizer-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp) / "ws"
        root.mkdir(parents=True, exist_ok=True)
        cfg = load_config(root, overrides={"cooldown_seconds": 0.0}, env=None)
        sample = ensure_sample_data(cfg.cache_dir)
        embedder = Embedder.from_config(cfg)
        detector = make_detector(cfg)
        labels, vectors = prepare(cfg, sample, detector, embedder)
        videos = make_videos(Path(tmp), sample, args.seconds, args.fps)
        # warm-up: first calls trace the TensorFlow graphs
        warm = np.zeros((480, 640, 3), np.uint8)
        warm[100:300, 200:400] = load_photo(sorted((sample / "val" / PEOPLE[0]).glob("*.jpg"))[0])[
            :200, :200]  # fmt: skip
        detector.detect(warm[::2, ::2].copy())
        embedder.embed(np.zeros((3, 160, 160, 3), np.uint8))

        print(
            f"config: detect_width={cfg.detect_width} detect_every={cfg.detect_every} "
            f"confirm={cfg.confirm_k}-of-{cfg.confirm_m} refresh={cfg.refresh_seconds}s "
            f"flip_average={cfg.flip_average}; video {args.fps:g} fps, 640x480, "
            f"cool-down off (every appearance measured)"
        )
        runs = []
        for name, (video, appearances) in videos.items():
            runs.append(run_once(name, cfg, video, appearances, labels, vectors,
                                 detector, embedder, Path(tmp)))  # fmt: skip
        if args.baseline:
            naive = cfg.replace(detect_width=640, detect_every=1, refresh_seconds=0.0)
            video, appearances = videos["1 face"]
            runs.append(run_once("naive 1 face (full-res detect + embed every frame)", naive,
                                 video, appearances, labels, vectors, detector, embedder,
                                 Path(tmp)))  # fmt: skip
        for run in runs:
            for line in run.lines():
                print(line)
        if args.liveness:
            from recognizer.liveness_gate import LivenessGate

            video, appearances = videos["1 face"]
            fps: dict[str, list[float]] = {"off": [], "passive": []}
            for _ in range(2):
                for mode in fps:
                    gates = [LivenessGate("passive")] if mode == "passive" else []
                    run = run_once(f"1 face, liveness {mode}", cfg, video, appearances, labels,
                                   vectors, detector, embedder, Path(tmp), gates)  # fmt: skip
                    fps[mode].append(run.frames / run.seconds)
                    gate_ms = run.stage_ms.get("gates", 0.0)
                    print(f"1 face, liveness {mode}: {fps[mode][-1]:.1f} FPS "
                          f"(gates {gate_ms:.2f} ms/frame)")  # fmt: skip
            print("liveness off: " + ", ".join(f"{v:.1f}" for v in fps["off"]) + " FPS; passive: "
                  + ", ".join(f"{v:.1f}" for v in fps["passive"]) + " FPS")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
