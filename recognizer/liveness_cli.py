"""``attendance liveness CLIP…``: the passive liveness verdict on recorded clips.

Each clip (a video file, or a folder of frames in name order; a folder holding videos stands
for each of them) runs through the recogniser's own detection schedule (every
``detect_every``-th frame, shrunk for faces of ``detect_min_face_px``), tracker and liveness
gate, without recognition. For the clip's main face (the track seen most often) it prints the
verdict the recogniser would act on — ``live`` (it would be marked), ``spoof`` (refused) or
``undecided`` — with its score (the share of looks that showed a device or paper border), the
time from the face's first look to the verdict, and the cues that decided. ``--json`` prints
one JSON object per clip instead. Exit status: 0, or 1 when a clip could not be read.

The verdict is the first one reached: a face called live is marked at once by the
recogniser, even if a border shows up later (that later verdict is reported as ``then``).
Without recognition, a track here is only split by the tracker; the recogniser also starts a
face's verdict afresh when its embedding says another person stepped into the box.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.config import Config
from common.errors import UserError
from common.sources import Frame, open_source
from liveness.passive import UNDECIDED, Assessment
from preprocess.detect import detect_scaled
from preprocess.regions import detection_scale, frame_scale, large_enough
from recognizer.liveness_gate import LivenessGate
from recognizer.tracker import IoUTracker

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
HELP = "judge recorded clips with the passive liveness check (live, spoof or undecided)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clips", nargs="+", metavar="VIDEO_OR_FOLDER",
                        help="video files, folders of frames, or folders of videos")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per clip")


@dataclass
class ClipVerdict:
    """The liveness verdict on one clip's main face."""

    clip: str
    verdict: str  # live, spoof or undecided: the first verdict reached
    score: float  # at the verdict: share of the face's looks whose edges framed it
    seconds_to_verdict: float | None  # from the face's first look (frame time)
    decided_by: list[str] = field(default_factory=list)
    then: str | None = None  # a different verdict reached later, if any
    looks: int = 0  # detections of the main face
    faces: int = 0  # tracks in the clip
    frames: int = 0
    ms_per_look: float = 0.0  # liveness cost per detection of a face
    track_verdicts: list[str] = field(default_factory=list)  # first verdict of every track
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.clip}: error: {self.error}"
        when = "-" if self.seconds_to_verdict is None else f"{self.seconds_to_verdict:.2f} s"
        cues = ", ".join(self.decided_by) or "-"
        later = f" (then {self.then})" if self.then else ""
        return (
            f"{self.clip}: {self.verdict}{later}  score={self.score:.2f}  after {when}  "
            f"cues: {cues}  ({self.looks} looks, {self.faces} face(s), {self.frames} frames)"
        )


class _TrackLog:
    """The first decisive assessment of one track, and its last one."""

    def __init__(self) -> None:
        self.first: Assessment | None = None
        self.last: Assessment | None = None

    def add(self, seen: Assessment) -> None:
        if self.first is None and seen.verdict != UNDECIDED:
            self.first = seen
        self.last = seen


def assess_frames(frames: Iterable[Frame], detector: Any, cfg: Config, name: str) -> ClipVerdict:
    """Run the recogniser's detection schedule, tracker and passive gate over ``frames``."""
    gate = LivenessGate("passive")
    tracker = IoUTracker(cfg.confirm_k, cfg.confirm_m, max_gap=cfg.track_gap_seconds)
    logs: dict[int, _TrackLog] = {}
    scale = detection_scale(cfg.detect_min_face_px)
    count = since = 0
    spent = 0.0
    looks = 0
    for frame in frames:
        count += 1
        if count > 1 and since + 1 < cfg.detect_every:
            since += 1
            tracker.coast()
            continue
        since = 0
        faces = detect_scaled(
            detector, frame.image, frame_scale(scale, frame.image.shape), bgr=True
        )
        faces = large_enough(faces, cfg.detect_min_face_px)
        for track in tracker.update(faces, frame.timestamp, frame.index):
            if not track.fresh:
                continue
            start = time.perf_counter()
            gate.observe(track.id, frame, track.face)
            spent += time.perf_counter() - start
            looks += 1
            seen = gate.assessment(track.id)
            if seen is not None:
                logs.setdefault(track.id, _TrackLog()).add(seen)
    result = ClipVerdict(name, UNDECIDED, 0.0, None, frames=count, faces=len(logs))
    result.ms_per_look = round(1000.0 * spent / looks, 3) if looks else 0.0
    if not logs:
        return result
    result.track_verdicts = [(t.first or t.last).verdict for t in logs.values() if t.last]
    main = max(logs.values(), key=lambda t: t.last.looks if t.last else 0)
    last = main.last
    assert last is not None
    first = main.first or last
    result.verdict = first.verdict
    result.score = first.score
    result.seconds_to_verdict = first.decided_at
    result.decided_by = list(first.decided_by)
    result.looks = last.looks
    if main.first is not None and last.verdict not in (UNDECIDED, first.verdict):
        result.then = last.verdict
    return result


def clip_specs(args: list[str]) -> list[Path]:
    """Every clip named: files as they are; a folder holding videos stands for each of them
    (name order); any other folder is one clip of frames."""
    specs: list[Path] = []
    for text in args:
        path = Path(text).expanduser()
        if path.is_dir():
            videos = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)  # fmt: skip
            specs.extend(videos or [path])
        else:
            specs.append(path)
    return specs


def run(args: argparse.Namespace, cfg: Config) -> int:
    from preprocess.detectors import make_detector

    detector = make_detector(cfg, whole_frames=True)  # as the recogniser detects
    failed = False
    for path in clip_specs(args.clips):
        try:
            with open_source(str(path), reconnect=False) as source:
                result = assess_frames(source, detector, cfg, str(path))
        except UserError as exc:
            failed = True
            result = ClipVerdict(str(path), UNDECIDED, 0.0, None, error=str(exc))
        if result.error is None and result.frames == 0:
            failed = True
            result.error = "no frame could be read; check the file or folder"
        if args.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(result.line(), flush=True)
    return 1 if failed else 0
