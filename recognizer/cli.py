"""``face_recognizer`` / ``attendance recognize``: the live loop into attendance.db.

Modes:

- window (default when a display exists): scan until one person is recognised and marked;
  the window shows "NAME — present at HH:MM" and recognition pauses until ``n``;
  ``esc`` (or ``q``, or closing the window) quits.
- ``--continuous``: mark everyone seen, no key needed, each person at most once per
  ``cooldown_seconds``.
- ``--headless`` (automatic without a display): no window; every event is one line on
  stdout. Without ``--continuous`` a headless run is a one-shot check-in: it stops after the
  first person marked (exit 0), or exits 1 if the source ended before anyone was recognised.

A folder of images is a set of independent photos: each image is its own scene (the
pipeline's ``independent_frames``), with detection on every image, no tracking from one image
to the next, and every face judged on that one look (1-of-1: ``confirm_k``/``confirm_m`` and
``refresh_seconds`` do not apply; ``cooldown_seconds`` still does, counted at a nominal 10
images per second).

People enrolled or removed while it runs (by ``attendance scan`` or ``attendance remove`` in
another terminal) are picked up without a restart: every ``RELOAD_INTERVAL`` seconds the loop
asks SQLite whether ``gallery.sqlite`` changed and, if so, reloads the stored embeddings (no
re-embedding) and swaps them in between two frames.

Stopping (esc, end of file, Ctrl-C, SIGTERM, a stream lost for good) always releases the
source, closes the database (saving queued sightings) and prints one summary line. The summary
names as "marked" only people whose sighting is saved; sightings the database did not take
are "queued (not saved yet)": they are journalled on disk, and the next recogniser started on
the workspace writes them (``store.pending``); the run then exits 2 with a one-line error.

While it runs, the recogniser reports a heartbeat to the site store every
``heartbeat_seconds`` (``recognizer.heartbeat``: kiosk name, source state, fps, people marked
and unknown faces today), from a background thread the loop never waits on; its last beat
says how the run ended ("ended", "stopped" or "error: ...").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from common.config import Config
from common.errors import UserError

log = logging.getLogger(__name__)

HELP = "recognise faces from a camera, video, stream or image folder and record attendance"
RELOAD_INTERVAL = 2.0  # seconds between checks whether gallery.sqlite changed
# A shared store pushes notifications: a check only reads what arrived (no query), so it is
# made often enough that an enrolment elsewhere is in use within 2 s.
SHARED_RELOAD_INTERVAL = 0.5


class NobodyEnrolled(UserError):
    """The gallery is empty: there is no one to recognise."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``face_recognizer``."""
    parser.add_argument(
        "--source",
        metavar="S",
        action="append",
        help="camera index (default: the `sources` setting, else 0), video file, rtsp:// or "
        "http(s):// stream URL, or a folder of images (each image is judged on its own: no "
        "tracking between images, one look decides, so confirm_k/confirm_m do not apply). "
        "Repeat it for several cameras in one process (continuous mode; events name their "
        "camera)",
    )
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="kiosk/CCTV mode: mark everyone seen, with a per-person cool-down "
        "(cooldown_seconds), no key needed",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="no window; one log line per event (automatic when there is no display). "
        "Without --continuous, stops after the first person marked",
    )
    parser.add_argument(
        "--record", metavar="FILE", help="also write the annotated video to FILE (.mp4 or .avi)"
    )
    parser.add_argument(
        "--max-frames", type=int, metavar="N", help="stop after N frames (default: no limit)"
    )
    parser.epilog = (
        "Window keys: n scans for the next person, esc (or q) quits. Every run ends with a "
        "summary line; headless runs print one line per event: time, name, distance, action."
    )


@dataclass
class RunSummary:
    """What a run did, for the closing line."""

    source: str
    frames: int = 0
    seconds: float = 0.0
    present: list[str] = field(default_factory=list)  # people with a saved sighting
    queued: list[str] = field(default_factory=list)  # people whose sightings are all unsaved
    events: int = 0
    strangers: int = 0
    refused: int = 0  # confirmed faces a gate held back (e.g. liveness)
    unsaved: int = 0
    stopped_by: str = "end of source"
    error: UserError | None = None  # what ended the run early (lost stream, broken database)
    sightings: list[Any] = field(default_factory=list, repr=False)  # recorded events, in order
    per_camera: str = ""  # several cameras: each one's frame rate

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def settle(self, pending: Iterable[Any]) -> None:
        """Split the people recorded into saved (``present``) and still queued (``queued``).

        ``pending``: what the writer has not saved (``PendingWriter.pending()``, entries with
        ``name``, ``when`` and ``action``); a sighting is unsaved when one of them has its name
        and time. ``unsaved`` counts all of them, audit events and earlier runs' included.
        """
        pending = list(pending)
        unsaved = Counter((m.name, m.when) for m in pending if m.action is None)
        saved: list[str] = []
        waiting: list[str] = []
        for event in self.sightings:
            key = (event.name, event.when)
            if unsaved[key] > 0:
                unsaved[key] -= 1
                waiting.append(event.name)
            else:
                saved.append(event.name)
        self.present = list(dict.fromkeys(saved))
        self.queued = [name for name in dict.fromkeys(waiting) if name not in self.present]
        self.unsaved = len(pending)

    def line(self) -> str:
        names = ", ".join(self.present) if self.present else "nobody"
        queued = f"; queued (not saved yet): {', '.join(self.queued)}" if self.queued else ""
        refused = f"{self.refused} refused, " if self.refused else ""
        rate = f"{self.fps:.1f} fps" + (f": {self.per_camera}" if self.per_camera else "")
        return (
            f"summary: {self.frames} frames in {self.seconds:.1f} s ({rate}) from "
            f"{self.source}; marked: {names}{queued}; {self.events} event(s), {self.strangers} "
            f"unknown face(s), {refused}{self.unsaved} unsaved; stopped by {self.stopped_by}"
        )


class FrameRate:
    """The window's frame-rate readout: frames the pipeline processed per second of wall-clock
    time, over the last ``span`` seconds.

    Only frames that were recognised count (not loop turns, not frames shown while paused),
    and the time between them includes everything the loop does (display, keys, pacing). A
    pause forgets the history, so the readout after ``n`` is measured afresh.
    """

    def __init__(self, span: float = 2.0) -> None:
        self.span = float(span)
        self._times: deque[float] = deque()

    def processed(self, now: float) -> None:
        """A frame was processed at ``now`` (seconds, monotonic)."""
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.span:
            self._times.popleft()

    def pause(self) -> None:
        """Recognition paused: nothing is processed until it resumes."""
        self._times.clear()

    def per_second(self) -> float | None:
        """Processed frames per second, or ``None`` before two frames were processed."""
        if len(self._times) < 2:
            return None
        elapsed = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / elapsed if elapsed > 0 else None


def hud_text(rate: FrameRate, paused: bool, source: str) -> str:
    """The window's top line: ``12.5 fps  camera 0``, ``paused  camera 0`` while paused, and
    only the source until a rate is known."""
    if paused:
        return f"paused  {source}"
    fps = rate.per_second()
    return source if fps is None else f"{fps:.1f} fps  {source}"


# --------------------------------------------------------------------------- building
def detects_async(cfg: Config, source: Any) -> bool:
    """Does detection run beside the loop for ``source`` (``detect_async``; ``auto``: for
    cameras and streams)? Never for a folder: each image is its own scene."""
    from common.sources import FolderSource, LiveSource

    if isinstance(source, FolderSource) or cfg.detect_async == "off":
        return False
    return cfg.detect_async == "on" or isinstance(source, LiveSource)


def build_pipeline(cfg: Config, recorder: Any, *, continuous: bool, embedder: Any = None,
                   detector: Any = None, independent_frames: bool = False,
                   gates: Any = (), crop_cache: dict[str, Any] | None = None,
                   live: Any = None, gallery: tuple[list[str], Any] | None = None,
                   ) -> Any:  # fmt: skip
    """Load the detector, the embedder and the gallery; return a ``RecognitionPipeline``.

    ``live``: detection beside the loop (``recognizer.live_detection.AsyncDetection``).
    ``gallery``: ``(labels, embeddings)`` already loaded (another camera's), else loaded here.
    ``independent_frames``: every frame is its own scene (a folder of photos).
    ``gates``: a sequence of ``recognizer.gates.Gate`` checks (in order) every face must pass
    before it is recorded: ``recognizer.liveness_gate.build_gates`` (the passive liveness
    check by default for cameras and streams).
    ``crop_cache``: vectors of a shared store's crops kept in memory (see
    ``store.gallery.embed_stored_crops``), shared with the gallery watcher.
    """
    from preprocess.detectors import make_detector
    from recognizer.pipeline import RecognitionPipeline
    from store.factory import open_embedding_store
    from store.gallery import load_gallery

    if embedder is None:
        from model.embedder import Embedder

        embedder = Embedder.from_config(cfg)
    if gallery is None:
        with open_embedding_store(cfg) as store:
            gallery = load_gallery(store, cfg, embedder, cache=crop_cache)
    labels, embeddings = gallery
    if not labels:
        raise NobodyEnrolled(
            f"nobody is enrolled: {cfg.pre_images_dir} has no face crops; run "
            "`attendance scan` (or put photos in images/<Name>/) and `attendance preprocess`"
        )
    log.info("gallery: %d embeddings of %d people", len(labels), len(set(labels)))
    detector = detector or make_detector(cfg, whole_frames=True)  # the scale: detect_min_face_px
    return RecognitionPipeline(
        cfg, detector, embedder, labels, embeddings, recorder, continuous=continuous,
        independent_frames=independent_frames, gates=gates, live=live,
    )  # fmt: skip


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (a service manager stopping us) ends the loop cleanly, like esc."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- the loop
def run_loop(
    source: Any,
    pipeline: Any,
    *,
    window: Any = None,
    video: Any = None,
    stop_after_first: bool = False,
    max_frames: int | None = None,
    on_event: Callable[[Any], None] = lambda event: None,
    stop: threading.Event | None = None,
    gallery: Any = None,
    heartbeat: Any = None,
) -> RunSummary:
    """Feed ``source`` frames to ``pipeline`` until the source ends or a stop is asked for.

    ``window`` (``recognizer.display.Window``) shows each annotated frame and handles keys:
    ``n`` resumes a paused scan, ``esc``/``q`` quit. While paused on a file or folder the
    current frame is held (the file does not run on); live sources keep showing live frames.
    ``video`` (``recognizer.display.VideoRecorder``) receives the same annotated frames.
    ``gallery`` (``store.gallery.GalleryWatcher``) is polled between frames; a reloaded
    gallery goes to ``pipeline.update_gallery``.
    ``heartbeat`` (``recognizer.heartbeat.HeartbeatReporter``) counts each processed frame and
    event (in memory only) and is told the run's final state; whoever opened it closes it.
    An expected failure mid-run (:class:`UserError`) ends the loop and is kept in
    ``summary.error`` so the caller can print the summary before reporting it.
    """
    from common.sources import LiveSource
    from recognizer.display import annotate

    summary = RunSummary(source=source.describe())
    stop = stop or threading.Event()
    live = isinstance(source, LiveSource)
    pace = 1.0 / source.fps if (window is not None and not live and source.fps) else 0.0
    started = time.monotonic()
    frames = iter(source)
    last_image = None
    rate = FrameRate()  # processed frames per second, for the window's readout
    try:
        while not stop.is_set():
            if max_frames is not None and summary.frames >= max_frames:
                summary.stopped_by = f"--max-frames {max_frames}"
                break
            if gallery is not None:
                reloaded = gallery.poll()  # cheap: looks at the file every few seconds only
                if reloaded is not None:
                    pipeline.update_gallery(*reloaded)
            retry = getattr(pipeline.recorder, "retry", None)
            if retry is not None:
                retry()  # sightings queued while the store was away: saved once it is back
            if window is not None and pipeline.paused and not live and last_image is not None:
                key = window.key(30)  # hold the frame until n or esc
                if _handle_key(key, pipeline, summary):
                    break
                continue
            tick = time.monotonic()
            frame = next(frames, None)
            if frame is None:
                break
            result = pipeline.process(frame)
            summary.frames += 1
            if result.paused:
                rate.pause()
            else:
                rate.processed(time.monotonic())
            if heartbeat is not None:
                heartbeat.frame(paused=result.paused)
                for event in result.events:
                    heartbeat.event(event)
            for event in result.events:
                on_event(event)
            if window is not None or video is not None:
                hud = hud_text(rate, result.paused, summary.source)
                last_image = annotate(result, hint=_hint(pipeline), hud=hud)
                if video is not None:
                    video.write(last_image)
                if window is not None:
                    window.show(last_image)
                    wait_ms = int(1000 * (pace - (time.monotonic() - tick)))
                    if _handle_key(window.key(max(1, wait_ms)), pipeline, summary):
                        break
            if stop_after_first and pipeline.paused:
                summary.stopped_by = "first person marked"
                break
        else:
            summary.stopped_by = "stop signal"
    except KeyboardInterrupt:
        summary.stopped_by = "Ctrl-C"
    except UserError as exc:  # a lost stream, an unusable database: summarise, then report
        summary.stopped_by = "error"
        summary.error = exc
    finally:
        summary.seconds = time.monotonic() - started
        summary.sightings = [e for e in pipeline.events if e.recorded]
        pending = getattr(getattr(pipeline, "recorder", None), "pending", None)
        summary.settle(pending() if callable(pending) else [])
        summary.events = sum(1 for e in pipeline.events if e.recorded)
        summary.strangers = sum(1 for e in pipeline.events if not e.recorded and not e.refused)
        summary.refused = sum(1 for e in pipeline.events if e.refused)
        if heartbeat is not None:
            from recognizer.heartbeat import final_state

            heartbeat.finish(final_state(summary.stopped_by, summary.error))
    return summary


def _hint(pipeline: Any) -> str:
    if pipeline.continuous:
        return "continuous mode   esc: quit"
    if pipeline.paused:
        return "n: next person   esc: quit"
    return "scanning...   esc: quit"


def _handle_key(key: str | None, pipeline: Any, summary: RunSummary) -> bool:
    """Apply a key; True when it asks to quit."""
    if key in ("esc", "q"):
        summary.stopped_by = "esc"
        return True
    if key == "n" and pipeline.paused:
        log.info("scanning for the next person")
        pipeline.resume()
    return False


def _stored_crop_filler(cfg: Config, embedder: Any, cache: dict[str, Any]) -> Any:
    """For a shared store: embed the crops of changed people that have no vector for this
    model yet (enrolled with another model), keeping those the store may not take in memory
    (in ``cache``, each embedded once)."""
    from store.gallery import embed_stored_crops

    def fill(store: Any, names: set[str] | None) -> Any:
        return embed_stored_crops(store, cfg, embedder, progress=False, names=names, cache=cache)

    return fill


# --------------------------------------------------------------------------- command
def open_watched(cfg: Config, spec: str) -> Any:
    """``open_source(spec)``; with ``detect_async = "on"`` a video file is played in real time
    as a camera would deliver it (frames dropped when the loop is behind), since detection
    beside the loop keeps pace with a clock, not with a file read as fast as possible."""
    from common.sources import VideoFileSource, open_source, replay_source

    source = open_source(spec)
    if cfg.detect_async == "on" and isinstance(source, VideoFileSource):
        path = source.path
        source.close()
        log.info("%s: played in real time, as a camera (detect_async=on)", path.name)
        return replay_source(path)
    return source


def source_specs(args: argparse.Namespace, cfg: Config) -> list[str]:
    """The sources to watch: every ``--source``, else the ``sources`` setting, else camera 0."""
    return list(args.source or cfg.sources or ["0"])


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Open the source(s), load the models and the gallery, run the loop, print a summary."""
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames {args.max_frames}: must be at least 1")
    headless = bool(args.headless)
    if not headless and not has_display():
        log.info("no display ($DISPLAY is not set): running headless")
        headless = True
    specs = source_specs(args, cfg)
    summary: RunSummary | None = None
    writer: Any = None
    try:
        with contextlib.ExitStack() as stack:
            if len(specs) > 1:
                summary, writer = _run_cameras(stack, args, cfg, specs, headless)
            else:
                summary, writer = _run_one(stack, args, cfg, specs[0], headless)
    finally:
        if summary is not None:
            # after the writer's last attempt at closing: what is saved now, what is not
            summary.settle(writer.pending() if writer is not None else [])
            print(summary.line(), flush=True)
    if summary.error is not None:
        raise summary.error
    if headless and not args.continuous and len(specs) == 1 and not summary.present:
        return 1
    return 0


def has_display() -> bool:
    from recognizer.display import has_display as display

    return display()


def _open_models(stack: contextlib.ExitStack, cfg: Config) -> tuple[Any, Any, Any, dict]:
    """The writer, the embedder and the gallery watcher (closed by ``stack``)."""
    from model.embedder import Embedder
    from store.factory import is_shared, open_pending_writer, watch_embedding_store
    from store.gallery import GalleryWatcher

    writer = open_pending_writer(cfg)
    stack.callback(writer.close)  # saves queued sightings, closes the database
    embedder = Embedder.from_config(cfg)
    crop_cache: dict[str, Any] = {}  # a shared store's vectors kept in memory
    # watching starts before the gallery is loaded, so no change can slip in between
    watcher = GalleryWatcher(
        watch_embedding_store(cfg),
        embedder.model_id,
        dim=embedder.dim,
        interval=SHARED_RELOAD_INTERVAL if is_shared(cfg) else RELOAD_INTERVAL,
        fill=_stored_crop_filler(cfg, embedder, crop_cache) if is_shared(cfg) else None,
    )
    stack.callback(watcher.close)
    return writer, embedder, watcher, crop_cache


def _run_one(
    stack: contextlib.ExitStack, args: argparse.Namespace, cfg: Config, spec: str, headless: bool
) -> tuple[RunSummary, Any]:
    """One source: the window (scan mode, keys) or headless loop."""
    from common.sources import FolderSource
    from recognizer.display import VideoRecorder, Window
    from recognizer.heartbeat import HeartbeatReporter
    from recognizer.live_detection import AsyncDetection, warm_up
    from recognizer.liveness_gate import build_gates

    stop = threading.Event()
    source = stack.enter_context(open_watched(cfg, spec))
    log.info("source: %s", source.describe())
    # reports from now on (loading the models counts as running); its final beat, after
    # everything opened below is closed, says how the run ended
    heartbeat = stack.enter_context(HeartbeatReporter(cfg, source))
    video = None
    if args.record:
        video = VideoRecorder(args.record, source.fps or 15.0)
        stack.callback(video.close)
    writer, embedder, watcher, crop_cache = _open_models(stack, cfg)
    live = detector = None
    if detects_async(cfg, source):
        from preprocess.detectors import make_detector

        detector = make_detector(cfg, whole_frames=True)
        warm_up(detector, embedder)
        live = AsyncDetection(cfg, detector)
        stack.callback(live.close)
        log.info("detection beside the loop (detect_async=%s)", cfg.detect_async)
    pipeline = build_pipeline(
        cfg,
        writer,
        continuous=args.continuous,
        embedder=embedder,
        detector=detector,
        independent_frames=isinstance(source, FolderSource),  # each image its own scene
        gates=build_gates(cfg, source, headless=headless),
        crop_cache=crop_cache,
        live=live,
    )
    # what the pipeline matches (per-person templates in template mode: the template of one
    # template is itself, up to float rounding, so patching these with fresh crops gives the
    # templates a full reload would)
    watcher.prime(pipeline.labels, pipeline.embeddings)
    window = None
    if not headless:
        window = Window()
        stack.callback(window.close)
    stack.enter_context(_stop_on_sigterm(stop))
    summary = run_loop(
        source,
        pipeline,
        window=window,
        video=video,
        stop_after_first=headless and not args.continuous,
        max_frames=args.max_frames,
        on_event=lambda event: print(event.line(), flush=True),
        stop=stop,
        gallery=watcher,
        heartbeat=heartbeat,
    )
    return summary, writer


def _run_cameras(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    cfg: Config,
    specs: list[str],
    headless: bool,
) -> tuple[RunSummary, Any]:
    """Several sources in one process: shared models, one detection worker, one embedding
    batch per turn (``recognizer.cameras``)."""
    from common.sources import FolderSource
    from preprocess.detectors import make_detector
    from recognizer.cameras import Camera, run_cameras, unique_names
    from recognizer.display import VideoRecorder, Window, annotate
    from recognizer.heartbeat import HeartbeatReporter
    from recognizer.live_detection import AsyncDetection, detection_worker, warm_up
    from recognizer.liveness_gate import build_gates
    from store.factory import open_embedding_store
    from store.gallery import load_gallery

    if not args.continuous:
        log.info("%d cameras: continuous mode (everyone seen is marked)", len(specs))
    stop = threading.Event()
    sources = [stack.enter_context(open_watched(cfg, spec)) for spec in specs]
    folders = [s.describe() for s in sources if isinstance(s, FolderSource)]
    if folders:
        raise UserError(
            f"{folders[0]}: a folder of photos cannot be one of several cameras; "
            "run it with a single --source"
        )
    names = unique_names([s.describe() for s in sources])
    for name in names:
        log.info("camera: %s", name)
    beats = []
    prefix = cfg.kiosk_name or socket.gethostname()
    for source, name in zip(sources, names, strict=True):
        # one heartbeat per camera, named after it (the camera's name kept whole)
        kiosk = f"{prefix[: max(1, 99 - len(name))]} {name}"[-100:]
        beats.append(stack.enter_context(HeartbeatReporter(cfg.replace(kiosk_name=kiosk), source)))
    video = None
    if args.record:
        video = VideoRecorder(args.record, max(s.fps or 15.0 for s in sources))
        stack.callback(video.close)
    writer, embedder, watcher, crop_cache = _open_models(stack, cfg)
    detector = make_detector(cfg, whole_frames=True)
    warm_up(detector, embedder)
    worker = detection_worker(detector)  # one detector thread serves every camera in turn
    stack.callback(worker.close)
    with open_embedding_store(cfg) as store:
        gallery = load_gallery(store, cfg, embedder, cache=crop_cache)
    cameras = []
    for source, name, beat in zip(sources, names, beats, strict=True):
        live = AsyncDetection(cfg, detector, worker) if detects_async(cfg, source) else None
        # a camera detecting in the loop has its own detector: the worker thread's is busy
        pipeline = build_pipeline(
            cfg, writer, continuous=True, embedder=embedder,
            detector=detector if live is not None else None,
            gates=build_gates(cfg, source, headless=headless), live=live, gallery=gallery,
        )  # fmt: skip
        cameras.append(Camera(source, pipeline, beat, label=name))
    watcher.prime(cameras[0].pipeline.labels, cameras[0].pipeline.embeddings)
    window = None
    if not headless:
        window = Window()
        stack.callback(window.close)
    stack.enter_context(_stop_on_sigterm(stop))
    summary = RunSummary(source=f"{len(cameras)} cameras ({', '.join(names)})")
    hud = "continuous mode   esc: quit"
    try:
        rates = run_cameras(
            cameras, embedder, summary=summary, window=window, video=video,
            max_frames=args.max_frames, on_event=lambda event: print(event.line(), flush=True),
            stop=stop, gallery=watcher,
            annotate=lambda result: annotate(result, hint=hud, hud=result.frame.source),
        )  # fmt: skip
    finally:
        _close_run(summary, [c.pipeline for c in cameras])
        for beat in beats:
            from recognizer.heartbeat import final_state

            beat.finish(final_state(summary.stopped_by, summary.error))
    summary.seconds = rates.seconds
    summary.per_camera = rates.rates()
    return summary, writer


def _close_run(summary: RunSummary, pipelines: list[Any]) -> None:
    """Fill ``summary`` from every pipeline's events (as run_loop does for one)."""
    events = [e for p in pipelines for e in p.events]
    summary.sightings = [e for e in events if e.recorded]
    pending = getattr(getattr(pipelines[0], "recorder", None), "pending", None)
    summary.settle(pending() if callable(pending) else [])
    summary.events = sum(1 for e in events if e.recorded)
    summary.strangers = sum(1 for e in events if not e.recorded and not e.refused)
    summary.refused = sum(1 for e in events if e.refused)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``face_recognizer``."""
    from common.runner import run_single

    return run_single("face_recognizer", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
