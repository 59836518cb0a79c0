"""The headless per-frame engine: detect → align → embed → match → decide → record.

:class:`RecognitionPipeline` turns one :class:`common.sources.Frame` into a
:class:`FrameResult` (what to draw, what was recorded, per-stage timings). It has no window
and no key handling; ``recognizer.display`` draws results and ``recognizer.cli`` drives it.

Cost control:

- frames are shrunk for detection so that faces of ``cfg.detect_min_face_px`` source pixels
  are still found (``preprocess.regions.detection_scale``), and smaller ones are ignored;
- without ``live``, detection runs in the loop every ``cfg.detect_every``-th frame, and the
  IoU tracker carries the boxes in between;
- with ``live`` (``recognizer.live_detection.AsyncDetection``, cameras and streams),
  detection runs beside the loop on the newest frame (whole-frame scans and regions around
  the tracks), tracks follow the faces by optical flow on every frame, and a round's faces
  are aligned and embedded from the frame they were detected on;
- :meth:`RecognitionPipeline.prepare` and :meth:`RecognitionPipeline.complete` split a frame
  around embedding, so several cameras embed their new faces in one batch;
- a tracked face is embedded (one batch per frame for all faces) only while it is new or not
  yet decided (its k-of-m window is not full), then at most every ``cfg.refresh_seconds``;
- with ``independent_frames=True`` (image folders: ``recognizer.cli`` sets it for a
  ``FolderSource``) every frame is its own scene: tracks are dropped before each frame,
  detection runs on every frame, and each face is embedded and judged on that one sighting
  (1-of-1: ``confirm_k``/``confirm_m`` and ``refresh_seconds`` do not apply).

Gates (``recognizer.gates``, e.g. a liveness check):

- ``gates`` is an ordered sequence of :class:`recognizer.gates.Gate`; every detection of
  every tracked face (each detection round that updates the track, whether or not an
  embedding is due) is fed to every gate, and each gate's latest verdict is kept per track;
- a confirmed person is recorded only while every gate's verdict on that same track is
  ``PASS``; the track is embedded on the detection round its gates decide, so it is recorded
  on the first round all gates pass (or refused on the round one fails), from that round's
  own embedding (while a gate is undecided, the usual refresh cadence applies);
- a ``FAIL`` holding a confirmed person back gives one event per track and failing gate,
  with the gate's audit action (e.g. ``refused``), written with ``Recorder.log_event``; it
  is not an attendance sighting (not ``recorded``, not in :attr:`RecognitionPipeline.marked`);
- gates forget a track when it ends (lost, reset, every image of a folder, split by
  ``track_jump``) and whenever a fresh embedding names a person other than the last one the
  track named (a stranger's track that suddenly shows Ada, Bob stepping into Ada's box), so a
  face never inherits another person's verdict; a look that names nobody (a head turned
  away, as a liveness challenge asks) keeps them;
- :class:`FaceView` carries the verdicts (``display_status`` "refused"/"checking"); without
  gates nothing changes.

Decisions:

- an identity is confirmed when it wins ``cfg.confirm_k`` of the last ``cfg.confirm_m``
  observations of one track below ``cfg.threshold``; strangers stay ``Unknown`` and are never
  written (a full window without a winner gives one ``unknown`` event, not a database row);
- a confirmed identity holds only while fresh embeddings agree: one that does not (a stranger
  or someone else stepped into the same box) starts the track's window over with itself, so
  the label changes at once and the old name is not recorded again; a swap behind a
  confirmed track is therefore caught at its next refresh at the latest;
- a track is one face: it ends when it is missed in two detection rounds and undetected
  for more than ``cfg.track_gap_seconds`` (frame time), or when a fresh embedding lies farther than
  ``cfg.track_jump`` from the track's previous one (another face stepped into the box); the
  face after it starts a new track with an empty window, so it never inherits votes, marks
  or gate verdicts;
- a person is recorded only from an embedding of this very frame that matches them below
  the threshold, with that embedding's distance;
- *continuous* mode records every confirmed person, at most once per ``cfg.cooldown_seconds``
  each (a person who stays in view is recorded again, as ``seen``, after the cool-down);
- *single* mode (the window's scan mode) records the first confirmed person, then pauses
  recognition until :meth:`RecognitionPipeline.resume`; someone recorded within the
  cool-down is not recorded again, so the next scan finds the next person even if the
  previous one lingers in view.

Times for confirmation, refresh and cool-down are frame timestamps (media time for files),
so results do not depend on processing speed; database times come from ``clock()``.

The gallery can be swapped between frames with :meth:`RecognitionPipeline.update_gallery`
(``recognizer.cli`` does so when ``store.gallery.GalleryWatcher`` sees the store change),
so people enrolled or removed while the recogniser runs are taken into account at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from common.config import Config
from common.sources import Frame
from common.vectors import UNKNOWN, GalleryIndex, identity_templates
from preprocess.detect import detect_scaled
from preprocess.regions import detection_scale, frame_scale, large_enough
from recognizer.confirm import Cooldown
from recognizer.gates import Gate, GateBoard, Verdict, Verdicts
from recognizer.tracker import Box, IoUTracker, Track
from store.records import ACTION_REMOVED

log = logging.getLogger(__name__)

# per-frame stages timed; "gates" only in a pipeline that has gates
STAGES = ("detect", "gates", "align", "embed", "match", "record")
ACTION_QUEUED = "queued"  # the database was busy: kept in memory and retried
ACTION_UNKNOWN = "unknown"  # a face nobody in the gallery matched (never written)


class Recorder(Protocol):
    """Where confirmed sightings go (``store.pending.PendingWriter`` or an attendance store)."""

    def mark_present(
        self, name: str, when: dt.datetime, distance: float | None, source: str
    ) -> Any: ...

    def log_event(
        self, name: str, when: dt.datetime, distance: float | None, source: str, action: str
    ) -> Any:
        """Write one audit-trail event that is not attendance (e.g. a gate's ``refused``)."""
        ...


@dataclass(frozen=True)
class FaceView:
    """One face to draw: box in frame pixels, label, distance, and decision status."""

    track_id: int
    box: Box
    label: str  # a name or "Unknown"
    distance: float
    status: str  # "confirmed", "candidate" (winning, not yet confirmed) or "unknown"
    verdicts: Verdicts = ()  # (gate name, verdict) of every gate, in order

    @property
    def refusal(self) -> tuple[str, Verdict] | None:
        """The first failing gate and its verdict, if any."""
        return next(((name, v) for name, v in self.verdicts if v.failed), None)

    @property
    def checking(self) -> tuple[str, Verdict] | None:
        """The first undecided gate and its verdict, when none fails."""
        if self.refusal is not None:
            return None
        return next(((name, v) for name, v in self.verdicts if v.pending), None)

    @property
    def display_status(self) -> str:
        """``status``, or "refused" when a gate fails, or "checking" when a recognised face
        (confirmed or candidate) waits for a gate."""
        if self.refusal is not None:
            return "refused"
        if self.checking is not None and self.status != "unknown":
            return "checking"
        return self.status


@dataclass(frozen=True)
class RecognitionEvent:
    """A decision worth one log line: a person recorded (or queued), a stranger seen, or a
    confirmed person held back by a failing gate (``gate`` set; action e.g. "refused")."""

    when: dt.datetime
    name: str
    distance: float
    action: str  # store.records ACTION_* ("present", "seen", ...), "queued" or "unknown"
    source: str
    track_id: int
    frame_index: int
    timestamp: float  # frame timestamp (s)
    first_seen: float  # timestamp (s) the track was first detected
    entry_time: str | None = None  # HH:MM:SS the person became present today (when saved)
    gate: str | None = None  # the failing gate that held this person back
    reason: str = ""  # that gate's reason

    @property
    def refused(self) -> bool:
        """True when a gate held this confirmed person back (nothing was recorded)."""
        return self.gate is not None

    @property
    def recorded(self) -> bool:
        """True when this event is an attendance sighting (saved or queued): not a stranger,
        not a refusal, not someone the shared store says was removed."""
        return self.action not in (ACTION_UNKNOWN, ACTION_REMOVED) and not self.refused

    def line(self) -> str:
        """The one-line log form: time, name, distance, action (and a refusal's gate)."""
        why = f"; {self.gate}: {self.reason}" if self.refused and self.reason else ""
        if self.refused and not self.reason:
            why = f"; {self.gate}"
        return (
            f"{self.when:%Y-%m-%d %H:%M:%S}  {self.name}  distance={self.distance:.3f}  "
            f"{self.action}  (track {self.track_id}, {self.source}{why})"
        )


@dataclass
class FrameResult:
    """What one frame produced."""

    frame: Frame
    faces: list[FaceView] = field(default_factory=list)
    events: list[RecognitionEvent] = field(default_factory=list)
    detected: bool = False  # a detection round ran on this frame
    embedded: int = 0  # crops embedded on this frame
    paused: bool = False
    banner: str | None = None  # single mode: "NAME — present at HH:MM"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


@dataclass
class Step:
    """A frame between :meth:`RecognitionPipeline.prepare` and ``complete``: the crops to
    embed (one per track in ``due``), from ``source``, the frame they were detected on."""

    result: FrameResult
    source: Frame | None = None
    due: list[Track] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    held: bool = False  # paused: nothing was looked at


@dataclass(frozen=True)
class GalleryChange:
    """What :meth:`RecognitionPipeline.update_gallery` swapped in."""

    people: int  # people in the new gallery
    embeddings: int  # stored embeddings loaded (crops)
    added: tuple[str, ...]  # people who were not in the previous gallery
    removed: tuple[str, ...]  # people of the previous gallery who are gone

    def line(self) -> str:
        """``gallery reloaded: N people (+added, -removed)``, naming who came and went."""
        text = f"gallery reloaded: {self.people} people (+{len(self.added)}, -{len(self.removed)})"
        if self.added:
            text += f"; added {', '.join(self.added)}"
        if self.removed:
            text += f"; removed {', '.join(self.removed)}"
        return text


def default_aligner(cfg: Config, size: int) -> Callable[[np.ndarray, Any], np.ndarray]:
    """``align(rgb, face) -> crop`` with the configured alignment method."""
    from preprocess.align import align_face

    def align(rgb: np.ndarray, face: Any) -> np.ndarray:
        return align_face(rgb, face, method=cfg.alignment, size=size, margin=cfg.margin)

    return align


def _names_someone_else(last_known: str | None, match: Any) -> bool:
    """Does ``match`` name a person other than the last one the track's earlier looks named
    (Ada -> Bob, or a stranger's track (none) -> Ada)? Gate verdicts belong to the face that
    earned them, so they are not carried over. A look that names nobody (a head turned away,
    a stranger) does not reset the gates: a turned face is often not recognised, and a head
    turn is what a liveness challenge asks for; nothing is recorded until the track names its
    person again, and a face that jumps farther than ``track_jump`` starts a new track anyway.
    Called only for a track that has been embedded before (a first look: the gates have seen
    only this face so far)."""
    return bool(match.known) and match.identity != last_known


class RecognitionPipeline:
    """The per-frame recognition engine (no window, no keys)."""

    def __init__(
        self,
        cfg: Config,
        detector: Any,
        embedder: Any,
        labels: Sequence[str],
        embeddings: np.ndarray,
        recorder: Recorder,
        *,
        continuous: bool = True,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
        aligner: Callable[[np.ndarray, Any], np.ndarray] | None = None,
        independent_frames: bool = False,
        gates: Sequence[Gate] = (),
        live: Any = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.embedder = embedder
        # (labels, embeddings) as matched: swapped as one tuple by update_gallery
        self._gallery = self._prepare_gallery(labels, embeddings)
        # prepared once per gallery, not per frame
        self._index = GalleryIndex(self._gallery[1], self._gallery[0])
        self.recorder = recorder
        self.continuous = continuous
        self.clock = clock
        self.crop_size = int(getattr(embedder, "input_size", 160))
        self.align = aligner or default_aligner(cfg, self.crop_size)
        self.independent_frames = independent_frames
        if live is not None and independent_frames:
            raise ValueError("a folder of independent images is not detected asynchronously")
        # recognizer.live_detection.AsyncDetection: detection beside the loop (cameras)
        self.live = live
        self.scale = detection_scale(cfg.detect_min_face_px)
        self.gates = GateBoard(gates)
        self.stages = tuple(s for s in STAGES if s != "gates" or self.gates)
        if independent_frames:
            if (cfg.confirm_k, cfg.confirm_m) != (1, 1):
                log.info(
                    "independent frames: each image is judged on its own sighting "
                    "(confirm_k=%d/confirm_m=%d do not apply)",
                    cfg.confirm_k,
                    cfg.confirm_m,
                )
            self.tracker = IoUTracker(1, 1, on_end=self._track_ended)  # one sighting decides
        else:
            self.tracker = IoUTracker(
                cfg.confirm_k, cfg.confirm_m, on_end=self._track_ended,
                max_gap=cfg.track_gap_seconds,
            )  # fmt: skip
        self.cooldown = Cooldown(cfg.cooldown_seconds)
        self.paused = False
        self.banner: str | None = None
        self.frames = 0  # frames processed
        self.events: list[RecognitionEvent] = []
        self.totals: dict[str, float] = dict.fromkeys(self.stages, 0.0)
        self.detections = 0  # detection rounds
        self.embedded = 0  # crops embedded
        self._since_detect: int | None = None  # frames since the last detection round

    # -- the gallery -----------------------------------------------------------------------
    def _prepare_gallery(
        self, labels: Sequence[str], embeddings: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """Check ``labels``/``embeddings`` and put them in the form matched on every frame.

        In ``template`` mode that is one mean per person, computed here once rather than on
        every frame.
        """
        labels = [str(label) for label in labels]
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if len(labels) != len(embeddings):
            raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings")
        if not labels:
            dim = int(getattr(self.embedder, "dim", 0) or 0)
            return [], np.zeros((0, dim), np.float32)
        dim = getattr(self.embedder, "dim", None)
        if embeddings.ndim != 2 or (dim is not None and embeddings.shape[1] != dim):
            raise ValueError(
                f"gallery embeddings have shape {embeddings.shape} but the embedder "
                f"({getattr(self.embedder, 'model_id', '?')}) gives dimension {dim}"
            )
        if self.cfg.match_mode == "template":
            labels, embeddings = identity_templates(embeddings, labels)
        return labels, embeddings

    @property
    def labels(self) -> list[str]:
        """The labels matched against (one per person in ``template`` mode)."""
        return self._gallery[0]

    @property
    def embeddings(self) -> np.ndarray:
        """The embeddings matched against (per-person templates in ``template`` mode)."""
        return self._gallery[1]

    @property
    def people(self) -> list[str]:
        """The people in the gallery, sorted."""
        return sorted(set(self._gallery[0]))

    def update_gallery(self, labels: Sequence[str], embeddings: np.ndarray) -> GalleryChange | None:
        """Swap in a reloaded gallery (call between frames); ``None`` when nothing changed.

        Tracks are kept: a confirmed track keeps its identity until its next refresh, which is
        matched against the new gallery (a person removed becomes Unknown then); an undecided
        one goes on being matched, now against the new gallery. An empty gallery makes every
        new face Unknown. Logs one line ``gallery reloaded: N people (+added, -removed)``.
        """
        prepared = self._prepare_gallery(labels, embeddings)
        old_labels, old_embeddings = self._gallery
        if (
            prepared[0] == old_labels
            and prepared[1].shape == old_embeddings.shape
            # equal up to float rounding (a template of a template differs by ~1e-8)
            and np.allclose(prepared[1], old_embeddings, rtol=0.0, atol=1e-6)
        ):
            log.debug("gallery reloaded: unchanged")
            return None
        before, after = set(old_labels), set(prepared[0])
        self._gallery = prepared
        self._index = GalleryIndex(prepared[1], prepared[0])
        change = GalleryChange(
            people=len(after),
            embeddings=len(labels),
            added=tuple(sorted(after - before)),
            removed=tuple(sorted(before - after)),
        )
        log.info("%s", change.line())
        return change

    # -- control -------------------------------------------------------------------------
    def resume(self) -> None:
        """Single mode: start scanning for the next person (forget current tracks)."""
        self.paused = False
        self.banner = None
        self.tracker.reset()
        self._since_detect = None
        if self.live is not None:
            self.live.reset()

    @property
    def marked(self) -> list[str]:
        """Names recorded (saved or queued) so far, in order, without repeats."""
        return list(dict.fromkeys(e.name for e in self.events if e.recorded))

    # -- the loop body ---------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameResult:
        """Run every stage due on ``frame``; return what to draw and what was recorded."""
        step = self.prepare(frame)
        vectors = None
        if step.crops:
            start = time.perf_counter()
            vectors = self.embedder.embed(np.stack(step.crops).astype(np.uint8))
            step.result.timings["embed"] += time.perf_counter() - start
        return self.complete(step, vectors)

    def prepare(self, frame: Frame) -> Step:
        """Everything before embedding: detect (or collect a round), track, check gates, align
        the faces due. Several cameras embed their :attr:`Step.crops` in one batch, then each
        calls :meth:`complete`; :meth:`process` does both for one camera."""
        self.frames += 1
        result = FrameResult(frame=frame, timings=dict.fromkeys(self.stages, 0.0))
        step = Step(result)
        if self.paused:
            result.paused, result.banner = True, self.banner
            step.held = True
            return step
        if self.independent_frames:  # a new scene: nothing carries over from the last frame
            self.tracker.reset()
            self._since_detect = None
        if self.live is not None:
            start = time.perf_counter()
            landed = self.live.step(frame, self.tracker.tracks)
            if landed is None:
                self.tracker.coast()
            else:
                tracks = self.tracker.update(
                    landed.faces, landed.frame.timestamp, landed.frame.index, boxes=landed.boxes
                )
                pairs = zip(landed.faces, landed.points, strict=True)
                where = {id(face): points for face, points in pairs}
                for track in tracks:
                    if track.fresh:
                        track.points = where.get(id(track.face), track.points)
            # after the update: a face found by this round is re-detected by the next one
            self.live.submit(frame, self.tracker.tracks)
            result.timings["detect"] += time.perf_counter() - start
            if landed is None:
                return step
            self.detections += 1
            result.detected = True
            step.source = landed.frame  # the faces' landmarks belong to the detected frame
        else:
            due = self._since_detect is None or self._since_detect + 1 >= self.cfg.detect_every
            if not due:
                self._since_detect = (self._since_detect or 0) + 1
                self.tracker.coast()
                return step
            self._since_detect = 0
            result.detected = True
            faces = self._detect(frame.image, result.timings)
            tracks = self.tracker.update(faces, frame.timestamp, frame.index)
            step.source = frame
        self._check_gates(step.source, tracks, result.timings)
        self._align(step, tracks)
        return step

    def complete(self, step: Step, vectors: np.ndarray | None) -> FrameResult:
        """Match ``vectors`` (the embeddings of ``step.crops``, in order), decide, record."""
        result = step.result
        if step.held:
            return result
        if step.due:
            if vectors is None or len(vectors) != len(step.due):
                raise ValueError(f"{len(step.due)} crops need as many embeddings")
            self._recognise(step, np.asarray(vectors, np.float32))
        result.faces = [self._view(t) for t in self.tracker.visible()]
        result.paused, result.banner = self.paused, self.banner
        for stage, seconds in result.timings.items():
            self.totals[stage] += seconds
        return result

    def close(self) -> None:
        """Stop the detection worker, if detection runs beside the loop."""
        if self.live is not None:
            self.live.close()

    def _detect(self, bgr: np.ndarray, timings: dict[str, float]) -> list[Any]:
        start = time.perf_counter()
        # shrunk first, then converted to RGB (cheaper on the small copy)
        faces = detect_scaled(self.detector, bgr, frame_scale(self.scale, bgr.shape), bgr=True)
        faces = large_enough(faces, self.cfg.detect_min_face_px)
        self.detections += 1
        timings["detect"] += time.perf_counter() - start
        return faces

    # -- gates -------------------------------------------------------------------------------
    def _check_gates(self, frame: Frame, tracks: list[Track], timings: dict[str, float]) -> None:
        """Feed this detection round's faces (fresh tracks) to every gate."""
        if not self.gates:
            return
        start = time.perf_counter()
        for track in tracks:
            if track.fresh:
                self.gates.observe(track.id, frame, track.face)
        timings["gates"] += time.perf_counter() - start

    def _track_ended(self, track: Track) -> None:
        self.gates.forget(track.id)

    def _awaits_gates(self, track: Track, now: float) -> bool:
        """A confirmed person due to be recorded (cool-down over) whose gates have just
        decided: every gate passes, or a refusal is still to be told. Such a track is embedded
        on this detection round, so it is recorded (or refused) from this round's own
        embedding; while a gate is still undecided the usual refresh cadence applies."""
        name = track.identity
        if name is None or not self.gates or not self.cooldown.ready(name, now):
            return False
        return self.gates.cleared(track.id) or bool(self.gates.untold(track.id))

    def _needs_embedding(self, track: Track, now: float) -> bool:
        if not track.fresh:
            return False
        if track.last_embedded is None:
            return True  # new
        undecided = track.identity is None and not track.confirmation.settled
        if undecided or self._awaits_gates(track, now):
            return True
        return now - track.last_embedded >= self.cfg.refresh_seconds or now < track.last_embedded

    def _align(self, step: Step, tracks: list[Track]) -> None:
        """The crops of the tracks due for an embedding, from the frame they were detected on."""
        frame = step.source
        assert frame is not None
        due = [t for t in tracks if self._needs_embedding(t, frame.timestamp)]
        if not due:
            return
        import cv2

        start = time.perf_counter()
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        for track in due:
            try:
                step.crops.append(self.align(rgb, track.face))
            except ValueError as exc:  # preprocess.align.AlignmentError: degenerate geometry
                log.debug("track %d: cannot align this detection (%s)", track.id, exc)
                continue
            step.due.append(track)
        step.result.timings["align"] += time.perf_counter() - start

    def _recognise(self, step: Step, vectors: np.ndarray) -> None:
        frame, result, due = step.source, step.result, list(step.due)
        assert frame is not None
        timings = result.timings
        result.embedded += len(due)
        self.embedded += len(due)

        start = time.perf_counter()
        matches = self._index.match(vectors, self.cfg.threshold)
        for i, (track, vector, match) in enumerate(zip(list(due), vectors, matches, strict=True)):
            track = due[i] = self._same_face(track, vector, frame)
            track.last_vector = np.asarray(vector, np.float32)
            before = track.identity
            seen_before = track.confirmation.latest is not None
            last_known = track.last_known
            restarted = track.observe(match, frame.timestamp)
            if match.known:
                track.last_known = match.identity
            if restarted:
                log.debug(
                    "track %d: was %s, now %s (%.3f): confirmation restarted",
                    track.id, before, match.identity, match.distance,
                )  # fmt: skip
            if self.gates and seen_before and _names_someone_else(last_known, match):
                # another person's face: it is judged afresh, from this detection on
                self.gates.forget(track.id)
                self.gates.observe(track.id, frame, track.face)
        timings["match"] += time.perf_counter() - start

        start = time.perf_counter()
        for track in due:
            for event in self._decide(track, frame):
                result.events.append(event)
                self.events.append(event)
        timings["record"] += time.perf_counter() - start

    def _same_face(self, track: Track, vector: np.ndarray, frame: Frame) -> Track:
        """``track``, or a new track in its place when ``vector`` (its fresh embedding) jumped
        farther than ``cfg.track_jump`` from its previous one: another face is in the box
        (the next person stepped in), and it inherits nothing of the old track."""
        if track.last_vector is None:
            return track
        moved = float(np.linalg.norm(np.asarray(vector, np.float64) - track.last_vector))
        if moved <= self.cfg.track_jump:
            return track
        new = self.tracker.split(track, frame.timestamp, frame.index)
        log.debug(
            "track %d: the face changed (embedding moved %.3f > track_jump %.3f): new track %d",
            track.id, moved, self.cfg.track_jump, new.id,
        )  # fmt: skip
        if self.gates:  # the old track's gates forgot it; the new face is judged from here on
            self.gates.observe(new.id, frame, new.face)
        return new

    # -- decisions ---------------------------------------------------------------------------
    def _decide(self, track: Track, frame: Frame) -> list[RecognitionEvent]:
        """Record ``track``'s confirmed person, if the sighting just embedded is them and
        every gate passes this track."""
        name = track.identity
        if name is None:
            stranger = self._stranger(track, frame)
            return [stranger] if stranger is not None else []
        latest = track.confirmation.latest
        if latest is None or not latest.known or latest.identity != name:
            return []  # this very face is not (known as) them: never record on old votes
        if self.paused or not self.cooldown.ready(name, frame.timestamp):
            return []
        distance = latest.distance
        if not self.gates.cleared(track.id):
            return self._held_back(track, frame, name, distance)
        when = self.clock()
        saved = self.recorder.mark_present(name, when, distance, frame.source)
        self.cooldown.note(name, frame.timestamp)
        track.marked.add(name)
        action = getattr(saved, "action", None) or ACTION_QUEUED
        entry = getattr(saved, "entry_time", None)
        event = RecognitionEvent(
            when, name, distance, action, frame.source, track.id, frame.index,
            frame.timestamp, track.first_seen, entry,
        )  # fmt: skip
        if not self.continuous:
            self.paused = True
            self.banner = f"{name} \u2014 present at {(entry or f'{when:%H:%M}')[:5]}"
        return [event]

    def _held_back(
        self, track: Track, frame: Frame, name: str, distance: float
    ) -> list[RecognitionEvent]:
        """``name`` is confirmed but a gate does not pass: one audit event per failing gate
        and track (a pending gate just waits)."""
        events: list[RecognitionEvent] = []

        def refuse(gate: str, verdict: Verdict) -> None:
            when = self.clock()
            self.recorder.log_event(name, when, distance, frame.source, verdict.action)
            log.info(
                "track %d: %s held back by %s (%s)", track.id, name, gate, verdict.reason or "-"
            )
            event = RecognitionEvent(
                when, name, distance, verdict.action, frame.source, track.id, frame.index,
                frame.timestamp, track.first_seen, gate=gate, reason=verdict.reason,
            )  # fmt: skip
            events.append(event)

        self.gates.announce(track.id, refuse)
        return events

    def _stranger(self, track: Track, frame: Frame) -> RecognitionEvent | None:
        """One ``unknown`` event when a track's window fills without a winner."""
        if track.announced_unknown or not track.confirmation.settled:
            return None
        latest = track.confirmation.latest
        if latest is None or latest.known:
            return None
        track.announced_unknown = True
        return RecognitionEvent(
            self.clock(), UNKNOWN, latest.distance, ACTION_UNKNOWN, frame.source, track.id,
            frame.index, frame.timestamp, track.first_seen,
        )  # fmt: skip

    def _view(self, track: Track) -> FaceView:
        label, distance, status = track.confirmation.label()
        verdicts = self.gates.verdicts(track.id) if self.gates else ()
        return FaceView(track.id, track.box, label, distance, status, verdicts)

    # -- reporting ---------------------------------------------------------------------------
    def stage_ms(self) -> dict[str, float]:
        """Mean milliseconds per processed frame of each stage."""
        n = max(1, self.frames)
        return {stage: 1000.0 * total / n for stage, total in self.totals.items()}
