"""Benchmark the passive liveness gate on real genuine clips and attacks rendered from them.

Data: ``../shared/data/liveness/`` (genuine clips of people turning, nodding, blinking and
talking; attack and genuine stills) and ``../shared/data/video/walking_people_1080p.mp4``
(real people in the street: every face there is live). Nothing is copied into the project.

Trials, each judged by ``recognizer.liveness_cli.assess_frames`` (the recogniser's detection
schedule, tracker and gate; the verdict is the first one reached, the one a kiosk acts on):

- **genuine**: every genuine clip cut into windows of ``--seconds`` (a fresh face each);
- **attacks** rendered from the first ``--seconds`` of every genuine clip with
  ``liveness.simulate`` (``--seeds`` poses and backgrounds each):
  ``phone_video`` / ``phone_still`` (the clip or its first frame on a hand-held phone,
  letterboxed, with bezel, sub-pixel grid, glare, refresh bands and a hand),
  ``laptop_video`` (a laptop screen on a table, nearly still), ``print_bent`` (the first
  frame printed, bent, tilted and moved by hand) and ``phone_close`` (a phone held so close
  that it fills most of the view);
- **stills**: each attack and genuine still held for 2 s (a perfectly static scene);
- **walking**: every face track of the 1080p street clip (detected at full width).

Prints per type: trials, attacks accepted (APCER) or genuine refused (BPCER; undecided
counts as refused), median and worst time to the verdict, and the gate's cost per face per
look and per frame (looks happen on detection rounds, every ``detect_every`` frames).

Usage: ``python bench/bench_liveness.py [--data ../shared/data] [--seconds 4] [--seeds 2]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.config import load_config  # noqa: E402
from common.runner import setup_logging  # noqa: E402
from common.sources import Frame  # noqa: E402
from liveness import simulate  # noqa: E402
from liveness.passive import LIVE, SPOOF  # noqa: E402
from recognizer.liveness_cli import ClipVerdict, assess_frames  # noqa: E402

log = logging.getLogger("bench")

ATTACKS = {
    # type: (device, still content, render options, device scale, steadiness)
    "phone_video": ("phone", False, {}, 1.0, 1.0),
    "phone_still": ("phone", True, {}, 1.0, 1.0),
    "laptop_video": ("laptop", False, {"hand": False}, 1.0, 0.15),
    "print_bent": ("print", True, {"bend": 0.5}, 1.0, 1.0),
    "phone_close": ("phone", False, {}, 2.3, 1.0),
}


def read_clip(path: Path) -> tuple[list[np.ndarray], float]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames, fps


def as_frames(images: list[np.ndarray], fps: float, name: str):
    return (Frame(image, i, i / fps, name) for i, image in enumerate(images))


def render_attack(kind: str, images: list[np.ndarray], fps: float, seed: int) -> list[np.ndarray]:
    device_name, still, options, scale, steady = ATTACKS[kind]
    device = simulate.DEVICES[device_name]
    if scale != 1.0:
        device = simulate.Device(device.kind, device.width * scale, device.aspect, device.bezel,
                                 device.body)  # fmt: skip
    motion = simulate.HandMotion(seed, steady=steady)
    scene = simulate.background(seed)
    rng = np.random.default_rng(seed)
    return [
        simulate.camera(
            simulate.render(
                images[0 if still else i], device, motion, i / fps, scene, seed=seed, **options
            ),  # fmt: skip
            rng,
        )
        for i in range(len(images))
    ]


def summarise(kind: str, results: list[ClipVerdict], attack: bool, detect_every: int) -> str:
    n = len(results)
    if attack:
        wrong = sum(r.verdict == LIVE for r in results)
        rate = f"APCER {wrong}/{n} = {100.0 * wrong / max(n, 1):5.1f}%"
    else:
        wrong = sum(r.verdict != LIVE for r in results)
        rate = f"BPCER {wrong}/{n} = {100.0 * wrong / max(n, 1):5.1f}%"
    times = [r.seconds_to_verdict for r in results if r.seconds_to_verdict is not None]
    when = (f"verdict after median {statistics.median(times):.2f} s, worst {max(times):.2f} s"
            if times else "no verdict")  # fmt: skip
    costs = [r.ms_per_look for r in results if r.looks]
    cost = statistics.mean(costs) if costs else 0.0
    return (f"{kind:14s} {rate}   {when}   {cost:.2f} ms/look = "
            f"{cost / detect_every:.2f} ms per face per frame")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=4.0, help="trial length (default 4)")
    parser.add_argument("--seeds", type=int, default=2, help="attack renderings per clip")
    parser.add_argument("--no-walking", action="store_true", help="skip the 1080p street clip")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per trial")
    args = parser.parse_args(argv)
    setup_logging(0, quiet=True)

    from preprocess.detectors import make_detector

    genuine_dir = args.data / "liveness" / "genuine"
    clips = sorted(genuine_dir.glob("*.mp4"))
    if not clips:
        print(f"{genuine_dir}: no genuine clips (see ../shared/data/README.md)")
        return 1
    cfg = load_config(ROOT / ".bench-liveness", env={})
    detector = make_detector(cfg, whole_frames=True)  # as the recogniser detects
    results: dict[str, list[ClipVerdict]] = defaultdict(list)
    started = time.perf_counter()

    def judge(kind: str, images: list[np.ndarray], fps: float, name: str, config=cfg) -> None:
        result = assess_frames(as_frames(images, fps, name), detector, config, name)
        results[kind].append(result)
        if args.verbose:
            print(f"  [{kind}] {result.line()}", flush=True)

    for path in clips:
        images, fps = read_clip(path)
        span = max(1, int(round(args.seconds * fps)))
        for start in range(0, len(images), span):
            window = images[start : start + span]
            if start and len(window) < span // 2:
                break  # a short tail is not a fair trial
            judge("genuine", window, fps, f"{path.stem}@{start / fps:.0f}s")
        head = images[:span]
        for kind in ATTACKS:
            for seed in range(args.seeds):
                judge(kind, render_attack(kind, head, fps, 1000 * seed + len(path.stem)), fps,
                      f"{path.stem}:{kind}:{seed}")  # fmt: skip

    import cv2

    for still in sorted((args.data / "liveness" / "images").glob("*")):
        image = cv2.imread(str(still), cv2.IMREAD_COLOR)
        if image is None:
            continue
        kind = "still_attack" if still.name.startswith("attack") else "still_genuine"
        judge(kind, [image] * 50, 25.0, still.name)

    walking = args.data / "video" / "walking_people_1080p.mp4"
    walking_faces: list[str] = []
    if walking.is_file() and not args.no_walking:
        images, fps = read_clip(walking)
        full = cfg.replace(detect_min_face_px=28)  # detected at full size
        result = assess_frames(as_frames(images, fps, walking.name), detector, full, walking.name)
        walking_faces = result.track_verdicts

    print(f"passive liveness bench: {len(clips)} genuine clips, {args.seconds:g} s trials, "
          f"{args.seeds} attack renderings per clip and type; detect_min_face_px="
          f"{cfg.detect_min_face_px}, "
          f"detect_every={cfg.detect_every}")  # fmt: skip
    for kind in ("genuine", "still_genuine"):
        print(summarise(kind, results[kind], False, cfg.detect_every))
    for kind in (*ATTACKS, "still_attack"):
        print(summarise(kind, results[kind], True, cfg.detect_every))
    attacks = [r for kind in ATTACKS for r in results[kind]]
    accepted = sum(r.verdict == LIVE for r in attacks)
    print(f"all rendered attacks: APCER {accepted}/{len(attacks)} = "
          f"{100.0 * accepted / max(1, len(attacks)):.1f}%")  # fmt: skip
    if walking_faces:
        refused = sum(v == SPOOF for v in walking_faces)
        live = sum(v == LIVE for v in walking_faces)
        short = len(walking_faces) - refused - live
        print(f"walking 1080p (live people): {len(walking_faces)} face tracks, {refused} called "
              f"spoof, {live} live, {short} undecided (short tracks)")  # fmt: skip
    print(f"bench time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
