"""``images/<Name>/*`` -> ``pre_images/<Name>/*.png``: detect, align, write; incrementally.

The run is driven by a manifest, ``pre_images/.manifest.json``, mapping each input (path
relative to ``images/``) to its content sha256, the settings used, its output and its status
(``ok`` or ``rejected`` with the reason). An input whose content and settings are unchanged
is skipped; outputs of removed inputs (and removed person folders) are deleted.

Crash safety: every crop is written atomically, the manifest is saved every
:data:`SAVE_EVERY` images, and every crop carries its input's sha256 and settings in its PNG
metadata, so a run killed at any point resumes without redoing finished images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temps,
    sha256_bytes,
    sha256_file,
)
from common.image_io import ImageReadError, decode_image, encode_png, read_png_metadata
from common.names import InvalidName, person_dir, validate_name
from preprocess.align import CROP_SIZE, TEMPLATE_PATH, AlignmentError, align_face
from preprocess.detect import Detector, Face, sort_faces
from preprocess.detectors import detector_settings, make_detector

log = logging.getLogger(__name__)

MANIFEST_NAME = ".manifest.json"
LOCK_NAME = ".lock"
MANIFEST_VERSION = 1
#: Bump when the crop-making code changes in a way that should redo every crop.
PIPELINE_VERSION = 1
#: The manifest is saved after this many finished images (and at the end of the run).
SAVE_EVERY = 10
#: When no face is found, each side is padded by these fractions of the image size in turn
#: (replicated border) and detection retried: MTCNN misses faces that touch the frame.
PAD_FRACTIONS = (0.25, 0.5)


class ImageRejected(UserError, ValueError):
    """An image is readable but gives no usable face crop."""


class NoFaceError(ImageRejected):
    """No face passing the size and score thresholds was found."""


class ImageTooSmallError(ImageRejected):
    """The image is smaller than ``min_face_px``: it cannot hold a usable face."""


class Rejection(NamedTuple):
    """A skipped input: its path relative to ``images/`` and a one-line reason naming it."""

    path: str
    reason: str


@dataclass
class PreprocessSummary:
    """What one :func:`run_preprocess` did. Paths are relative to ``images/`` (inputs) or
    ``pre_images/`` (``removed`` outputs)."""

    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """Human-readable report: one total line, then one line per rejected input."""
        head = (
            f"processed {len(self.processed)}, skipped {len(self.skipped)} (unchanged), "
            f"rejected {len(self.rejected)}, removed {len(self.removed)} in {self.seconds:.1f} s"
        )
        return [head] + [f"  rejected {r.reason}" for r in self.rejected]


# --------------------------------------------------------------------------- detection + crop


def detect_largest_face(
    rgb: np.ndarray, detector: Detector, min_face_px: int, name: str = "image"
) -> tuple[Face, int]:
    """The largest face in ``rgb`` and how many faces were found.

    A photo smaller than ``min_face_px`` is refused. When nothing is found (e.g. a tight crop
    where the face touches the border) the image is padded with its replicated border by
    each of :data:`PAD_FRACTIONS` on every side in turn and searched again.
    """
    height, width = rgb.shape[:2]
    if min(height, width) < min_face_px:
        raise ImageTooSmallError(
            f"{name}: the image is {width}x{height} px, smaller than min_face_px={min_face_px}; "
            "use a larger photo"
        )
    faces = sort_faces(list(detector.detect(rgb))) or _detect_padded(rgb, detector, name)
    if not faces:
        raise NoFaceError(
            f"{name}: no face found (also with a padded border); "
            "retake the photo with the face large, frontal and well lit"
        )
    if len(faces) > 1:
        x, y, w, h = faces[0].box
        log.info(
            "%s: %d faces found, keeping the largest (%.0fx%.0f px at %.0f,%.0f)",
            name, len(faces), w, h, x, y,
        )  # fmt: skip
    return faces[0], len(faces)


def _detect_padded(rgb: np.ndarray, detector: Detector, name: str) -> list[Face]:
    """Detect on ``rgb`` padded with its replicated border; faces in ``rgb`` coordinates."""
    import cv2

    height, width = rgb.shape[:2]
    for fraction in PAD_FRACTIONS:
        pad_x, pad_y = round(fraction * width), round(fraction * height)
        padded = cv2.copyMakeBorder(rgb, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
        faces = sort_faces(list(detector.detect(padded)))
        if faces:
            log.debug("%s: face found after padding the border by %.0f%%", name, 100 * fraction)
            return [f.mapped(1.0, -pad_x, -pad_y) for f in faces]
    return []


def crop_largest_face(
    rgb: np.ndarray, detector: Detector, cfg: Config, name: str = "image"
) -> tuple[np.ndarray, Face]:
    """The aligned 160x160 RGB crop of the largest face in ``rgb`` (per ``cfg.alignment``).

    Raises :class:`NoFaceError` (or :class:`ImageTooSmallError`, :class:`AlignmentError`).
    """
    face, _ = detect_largest_face(rgb, detector, cfg.min_face_px, name)
    crop = align_face(rgb, face, method=cfg.alignment, size=CROP_SIZE, margin=cfg.margin)
    return crop, face


# --------------------------------------------------------------------------- settings + names


def _template_digest() -> str:
    landmarks = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))["landmarks"]
    return hashlib.sha256(json.dumps(landmarks).encode()).hexdigest()[:12]


def crop_settings(cfg: Config) -> dict[str, Any]:
    """Everything that determines a crop; a change of any of these redoes the crops."""
    settings: dict[str, Any] = {
        "pipeline": PIPELINE_VERSION,
        "size": CROP_SIZE,
        "alignment": cfg.alignment,
        **detector_settings(cfg),
    }
    if cfg.alignment == "margin":
        settings["margin"] = cfg.margin
    else:
        settings["template"] = _template_digest()
    return settings


def same_settings(stored: Any, current: dict[str, Any]) -> bool:
    """Were crops made with ``stored`` settings made as ``current`` would make them?

    Settings recorded before detectors had names lack ``detector``: those crops were all made
    by MTCNN, so upgrading does not redo every crop.
    """
    if isinstance(stored, dict) and "detector" not in stored:
        stored = {"detector": "mtcnn", **stored}
    return stored == current


def output_names(filenames: Iterable[str]) -> dict[str, str]:
    """Output file name for each input file name of one folder: ``<stem>.png``.

    When stems clash (``a.jpg`` and ``a.png``) those inputs keep their extension
    (``a.jpg.png``); names are compared case-insensitively.
    """
    files = sorted(filenames)
    stems = Counter(Path(f).stem.casefold() for f in files)
    used: set[str] = set()
    result: dict[str, str] = {}
    for name in files:
        stem = Path(name).stem
        candidate = f"{stem}.png" if stems[stem.casefold()] == 1 else f"{name}.png"
        counter = 1
        while candidate.casefold() in used:
            candidate = f"{stem}~{counter}.png"
            counter += 1
        used.add(candidate.casefold())
        result[name] = candidate
    return result


# --------------------------------------------------------------------------- manifest + lock


def manifest_path(cfg: Config) -> Path:
    """Where the manifest of ``cfg``'s workspace lives."""
    return Path(cfg.pre_images_dir) / MANIFEST_NAME


def load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries keyed by input relpath ({} if absent; a corrupt one is ignored)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s); rebuilding it from the crops on disk", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or data.get("version") != MANIFEST_VERSION:
        log.warning("%s has an unknown format; rebuilding it from the crops on disk", path)
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, dict)}


def save_manifest(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Write the manifest atomically."""
    data = {"version": MANIFEST_VERSION, "entries": dict(sorted(entries.items()))}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=True) + "\n")


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` so two preprocess runs on one workspace take turns."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: runs are not serialised
        yield
        return
    try:
        handle = open(folder / LOCK_NAME, "a+b")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise _write_error(folder / LOCK_NAME, exc) from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another preprocess run holds %s; waiting for it", folder / LOCK_NAME)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_error(path: Path, exc: OSError) -> UserError:
    return UserError(
        f"cannot write {path} ({exc.strerror or exc}); check free disk space and permissions"
    )


def write_output(path: Path, data: bytes) -> None:
    """Write a crop atomically; a failure is a one-line :class:`UserError`."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise _write_error(path, exc) from None


def _made_from(crop: Path, sha256: str) -> bool:
    """Whether ``crop`` is one of our crops made from an input with content ``sha256``."""
    meta = read_png_metadata(crop)
    return meta is not None and meta.get("source_sha256") == sha256


# --------------------------------------------------------------------------- planning


@dataclass
class _Input:
    rel: str  # relative to images/, on-disk names, "/"-separated
    path: Path
    identity: str  # canonical name (also the pre_images folder name)
    out_rel: str  # relative to pre_images/
    sha256: str = ""


@dataclass
class _Scan:
    inputs: list[_Input] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    identities: set[str] = field(default_factory=set)  # present in images/ and in scope


def _visible(entries: Iterable[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(cfg: Config, wanted: set[str] | None) -> _Scan:
    images = Path(cfg.images_dir)
    scan = _Scan()
    folders: dict[str, str] = {}  # identity -> folder name
    with os.scandir(images) as it:
        top = _visible(it)
    for entry in top:
        if not entry.is_dir():
            log.debug("ignoring %s: not a person folder", entry.path)
            continue
        try:
            identity = validate_name(entry.name)
            person_dir(cfg.pre_images_dir, identity)
        except InvalidName as exc:
            if wanted is None:
                scan.rejected.append(Rejection(entry.name + "/", f"{entry.name}/: {exc}"))
            continue
        if wanted is not None and identity not in wanted:
            continue
        if identity in folders:
            scan.rejected.append(
                Rejection(
                    entry.name + "/",
                    f"{entry.name}/: same identity as folder {folders[identity]!r} "
                    "(differs only in spacing or Unicode form); merge the two folders",
                )
            )
            continue
        folders[identity] = entry.name
        scan.identities.add(identity)
        try:
            with os.scandir(entry.path) as it:
                files = _visible(it)
        except OSError as exc:
            reason = f"{entry.name}/: cannot list the folder ({exc.strerror or exc})"
            scan.rejected.append(Rejection(entry.name + "/", reason))
            continue
        names: list[str] = []
        for item in files:
            rel = f"{entry.name}/{item.name}"
            if item.is_dir():
                scan.rejected.append(
                    Rejection(rel + "/", f"{rel}/: nested folders are not read; move the photos up")
                )
            elif not _utf8(item.name):
                scan.rejected.append(Rejection(rel, f"{rel!r}: the file name is not valid UTF-8"))
            else:
                names.append(item.name)
        for name, out_name in output_names(names).items():
            scan.inputs.append(
                _Input(
                    rel=f"{entry.name}/{name}",
                    path=Path(entry.path) / name,
                    identity=identity,
                    out_rel=f"{identity}/{out_name}",
                )
            )
    return scan


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- the run


class _Run:
    """State of one preprocess run (manifest, summary, lazy detector)."""

    def __init__(self, cfg: Config, detector: Detector | None, summary: PreprocessSummary):
        self.cfg = cfg
        self.pre = Path(cfg.pre_images_dir)
        self.settings = crop_settings(cfg)
        self.manifest_file = manifest_path(cfg)
        self.entries = load_manifest(self.manifest_file)
        self.summary = summary
        self.dirty = False
        self.unsaved = 0
        self._detector = detector

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = make_detector(self.cfg)
        return self._detector

    def metadata(self, sha256: str) -> dict[str, Any]:
        return {"source_sha256": sha256, "settings": self.settings}

    def is_ours(self, path: Path) -> bool:
        meta = read_png_metadata(path)
        return meta is not None and "source_sha256" in meta and "settings" in meta

    def save(self, force: bool = False) -> None:
        if self.dirty and (force or self.unsaved >= SAVE_EVERY):
            try:
                save_manifest(self.manifest_file, self.entries)
            except OSError as exc:
                raise _write_error(self.manifest_file, exc) from None
            self.dirty = False
            self.unsaved = 0

    def record(self, item: _Input, **values: Any) -> None:
        self.entries[item.rel] = {
            "identity": item.identity,
            "sha256": item.sha256,
            "alignment": self.cfg.alignment,
            "settings": self.settings,
            **values,
        }
        self.dirty = True
        self.unsaved += 1

    def remove_output(self, out_rel: str | None, keep: set[str]) -> None:
        if not out_rel or out_rel in keep:
            return
        path = self.pre / out_rel
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            self.summary.removed.append(out_rel)
            log.info("removed %s", path)

    def up_to_date(self, item: _Input) -> bool:
        entry = self.entries.get(item.rel)
        if not entry or entry.get("sha256") != item.sha256:
            return False
        if not same_settings(entry.get("settings"), self.settings):
            return False
        if entry.get("status") == "rejected":
            return True
        return entry.get("output") == item.out_rel and (self.pre / item.out_rel).is_file()

    def recovered(self, item: _Input) -> bool:
        """An output already on disk made from this very input with these settings."""
        meta = read_png_metadata(self.pre / item.out_rel)
        return (
            meta is not None
            and meta.get("source_sha256") == item.sha256
            and same_settings(meta.get("settings"), self.settings)
        )

    def process(self, item: _Input, keep: set[str]) -> None:
        """Detect, align and write one input; ``keep`` are outputs owned by other inputs."""
        others = keep - {item.out_rel}
        old_output = (self.entries.get(item.rel) or {}).get("output")
        try:
            data = item.path.read_bytes()
        except OSError as exc:  # not recorded: it may be transient
            reason = f"{item.rel}: cannot read the file ({exc.strerror or exc})"
            log.warning("rejected %s", reason)
            self.summary.rejected.append(Rejection(item.rel, reason))
            return
        item.sha256 = sha256_bytes(data)
        try:
            rgb = decode_image(data, item.rel)
            face, count = detect_largest_face(rgb, self.detector, self.cfg.min_face_px, item.rel)
            crop = align_face(
                rgb, face, method=self.cfg.alignment, size=CROP_SIZE, margin=self.cfg.margin
            )
        except (ImageReadError, ImageRejected, AlignmentError) as exc:
            reason = str(exc) if str(exc).startswith(item.rel) else f"{item.rel}: {exc}"
            self.reject(item, reason)
            self.remove_output(old_output, others)
            self.remove_output(item.out_rel, set())
            return
        png = encode_png(crop, self.metadata(item.sha256))
        write_output(self.pre / item.out_rel, png)
        if old_output != item.out_rel:
            self.remove_output(old_output, others)
        self.record(
            item,
            status="ok",
            output=item.out_rel,
            reason=None,
            faces=count,
            score=round(float(face.score), 4),
            crop_sha256=sha256_bytes(png),
        )
        self.summary.processed.append(item.rel)

    def reject(self, item: _Input, reason: str) -> None:
        log.info("rejected %s", reason)
        self.record(item, status="rejected", output=None, reason=reason)
        self.summary.rejected.append(Rejection(item.rel, reason))


def run_preprocess(
    cfg: Config,
    names: Iterable[str] | None = None,
    detector: Detector | None = None,
    progress: bool = True,
) -> PreprocessSummary:
    """Bring ``pre_images/`` up to date with ``images/``; see the module docstring.

    ``names`` limits the run to those identities: other people's crops are left alone, and
    a listed name without an ``images/`` folder has its crops removed. ``detector`` defaults
    to MTCNN, which is only loaded when some image actually needs detecting.
    """
    started = time.perf_counter()
    images, pre = Path(cfg.images_dir), Path(cfg.pre_images_dir)
    if not images.is_dir():
        raise UserError(
            f"{images} does not exist; enrol people with `scanner` or create "
            f"{images}/<Name>/ folders of photos"
        )
    wanted = None if names is None else {validate_name(n) for n in names}
    try:
        pre.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(pre, exc) from None
    summary = PreprocessSummary()
    with _exclusive(pre):
        run = _Run(cfg, detector, summary)
        try:
            _run_locked(run, wanted, progress)
        finally:
            run.save(force=True)
    summary.seconds = time.perf_counter() - started
    log.debug("preprocess: %s", summary.lines()[0])
    return summary


def _in_scope(identity: str | None, wanted: set[str] | None) -> bool:
    return wanted is None or identity in wanted


def _run_locked(run: _Run, wanted: set[str] | None, progress: bool) -> None:
    from tqdm import tqdm

    cfg, pre, summary = run.cfg, run.pre, run.summary
    remove_stale_temps(pre)
    try:
        scan = _scan(cfg, wanted)
    except OSError as exc:
        raise UserError(f"cannot list {cfg.images_dir} ({exc.strerror or exc})") from None
    summary.rejected.extend(scan.rejected)

    # 1. hash every input and sort it: up to date, recoverable, reusable, or to do.
    todo: list[_Input] = []
    reuse: list[tuple[_Input, Path]] = []
    live: set[str] = set()  # outputs that stay as they are
    by_content = {
        e["sha256"]: pre / e["output"]
        for e in run.entries.values()
        if e.get("status") == "ok"
        and same_settings(e.get("settings"), run.settings)
        and e.get("output")
    }
    for item in scan.inputs:
        try:
            item.sha256 = sha256_file(item.path)
        except OSError as exc:
            summary.rejected.append(
                Rejection(item.rel, f"{item.rel}: cannot read the file ({exc.strerror or exc})")
            )
            continue
        if run.up_to_date(item):
            entry = run.entries[item.rel]
            if entry.get("status") == "rejected":
                summary.rejected.append(Rejection(item.rel, str(entry.get("reason"))))
            else:
                summary.skipped.append(item.rel)
                live.add(item.out_rel)
        elif run.recovered(item):
            log.debug("%s: crop already on disk, adopting it", item.rel)
            crop_sha = sha256_file(pre / item.out_rel)
            run.record(item, status="ok", output=item.out_rel, reason=None, crop_sha256=crop_sha)
            summary.skipped.append(item.rel)
            live.add(item.out_rel)
        elif item.sha256 in by_content and _made_from(by_content[item.sha256], item.sha256):
            reuse.append((item, by_content[item.sha256]))
        else:
            todo.append(item)

    # 2. copy crops of moved/renamed inputs (byte-identical, so embeddings stay valid).
    for item, source in reuse:
        data = source.read_bytes()
        write_output(pre / item.out_rel, data)
        old = (run.entries.get(item.rel) or {}).get("output")
        run.record(
            item, status="ok", output=item.out_rel, reason=None,
            crop_sha256=sha256_bytes(data),
        )  # fmt: skip
        if old and old != item.out_rel:
            run.remove_output(old, live | {item.out_rel})
        log.info("%s: same photo as %s, crop reused", item.rel, source.relative_to(pre))
        summary.processed.append(item.rel)
        live.add(item.out_rel)
    run.save()

    # 3. forget removed inputs and delete their crops.
    current = {item.rel for item in scan.inputs}
    planned = live | {item.out_rel for item in todo}
    for rel in sorted(run.entries):
        entry = run.entries[rel]
        if rel in current or not _in_scope(entry.get("identity"), wanted):
            continue
        run.remove_output(entry.get("output"), planned)
        del run.entries[rel]
        run.dirty = True
    _remove_orphans(run, wanted, scan.identities, planned)
    run.save(force=True)

    # 4. detect and align what is new or changed.
    if todo:
        log.info("preprocessing %d image(s) with alignment=%s", len(todo), cfg.alignment)
    bar = tqdm(todo, desc="preprocess", unit="img", disable=not progress or not todo)
    for item in bar:
        run.process(item, planned)
        run.save()
    summary.rejected.sort()


def _remove_orphans(
    run: _Run, wanted: set[str] | None, present: set[str], planned: set[str]
) -> None:
    """Delete our crops that no input accounts for; drop emptied folders of removed people."""
    pre = run.pre
    with os.scandir(pre) as it:
        folders = [e for e in _visible(it) if e.is_dir()]
    for folder in folders:
        try:
            identity = validate_name(folder.name)
        except InvalidName:
            continue
        if identity != folder.name or not _in_scope(identity, wanted):
            continue
        remove_stale_temps(folder.path)
        with os.scandir(folder.path) as it:
            files = [e for e in _visible(it) if e.is_file()]
        for entry in files:
            rel = f"{folder.name}/{entry.name}"
            if rel in planned:
                continue
            if run.is_ours(Path(entry.path)):
                run.remove_output(rel, planned)
            else:
                log.warning("%s was not made by call_preprocess; left in place", entry.path)
        if identity not in present:
            try:
                os.rmdir(folder.path)
                log.info("removed %s (no longer in %s)", folder.path, run.cfg.images_dir)
            except OSError:
                log.warning("%s holds files call_preprocess did not make; left it", folder.path)
