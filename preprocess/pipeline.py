"""``images/<Name>/*`` -> ``pre_images/<Name>/*.png``: detect, align, write; incrementally.

The run is driven by a manifest, ``pre_images/.manifest.json``, mapping each input (path
relative to ``images/``) to its content sha256, the settings used, its output and its status
(``ok`` or ``rejected`` with the reason). An input whose content and settings are unchanged
is skipped; outputs of removed inputs (and removed person folders) are deleted.

Crash safety: every crop is written atomically, the manifest is saved every
:data:`SAVE_EVERY` images, and every crop carries its input's sha256 and settings in its PNG
metadata, so a run killed at any point resumes without redoing finished images.

Hostile input: only regular files are read (a FIFO, socket or device is rejected unopened);
a person folder that is a symbolic link, and a photo that is a symbolic link leading out of
``images/``, are refused; every path read from the manifest is checked to stay inside its
folder (:func:`common.fsutil.inside`) before anything is read or deleted, and a bad entry is
dropped with a warning; photos above ``max_image_pixels`` are refused from their header; an
enrolment photo with several faces of similar size is refused (``min_dominant_ratio``). Two
runs on one workspace take turns on ``pre_images/.lock``, which names its holder; a run waits
at most ``lock_timeout_seconds`` for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import (
    FileTooLarge,
    NotRegularFile,
    UnsafePath,
    atomic_write_bytes,
    atomic_write_text,
    check_relpath,
    file_kind,
    inside,
    read_regular_bytes,
    regular_file_problem,
    remove_stale_temps,
    sha256_bytes,
    sha256_file,
)
from common.image_io import (
    ImageReadError,
    ImageTooLargeError,
    decode_image,
    encode_png,
    max_file_bytes,
    read_error,
    read_photo_bytes,
    read_png_metadata,
)
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
#: Longest crop file name, in bytes: with the temporary file's prefix and suffix
#: (:func:`common.fsutil.atomic_open` adds 14 bytes) it fits the usual 255-byte limit.
MAX_OUTPUT_NAME_BYTES = 240
#: Characters refused in photo file names: control characters (a newline would break the
#: one-line messages) and bidirectional overrides (they make a name display as another).
_BAD_NAME_CHARS = frozenset(
    [chr(c) for c in range(32)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
    + list("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)  # fmt: skip
#: A manifest larger than this is not read (it is rebuilt from the crops on disk).
MAX_MANIFEST_BYTES = 256 << 20
#: Configuration keys a verdict may depend on besides the crop settings (manifest "checks").
CHECK_KEYS = frozenset({"min_dominant_ratio", "max_image_pixels"})


class ImageRejected(UserError, ValueError):
    """An image is readable but gives no usable face crop."""


class NoFaceError(ImageRejected):
    """No face passing the size and score thresholds was found."""


class ImageTooSmallError(ImageRejected):
    """The image is smaller than ``min_face_px``: it cannot hold a usable face."""


class GroupPhotoError(ImageRejected):
    """Several faces and none clearly the largest: whom the photo enrols is a guess."""

    def __init__(self, name: str, faces: int, ratio: float, min_ratio: float) -> None:
        super().__init__(
            f"{name}: 2 or more faces ({faces} found, the largest only {ratio:.1f}x the area of "
            f"the next; min_dominant_ratio={min_ratio:g}); crop the photo to one person"
        )
        self.faces = faces
        self.ratio = ratio


class LockTimeout(UserError):
    """Another run held ``pre_images/.lock`` for longer than ``lock_timeout_seconds``."""


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


def dominance(faces: list[Face]) -> float:
    """Area of the largest face / area of the second largest (inf with fewer than two)."""
    if len(faces) < 2:
        return float("inf")
    first, second = sort_faces(list(faces))[:2]
    return first.area / second.area if second.area > 0 else float("inf")


def detect_largest_face(
    rgb: np.ndarray,
    detector: Detector,
    min_face_px: int,
    name: str = "image",
    min_dominant_ratio: float | None = None,
) -> tuple[Face, int]:
    """The largest face in ``rgb`` and how many faces were found.

    A photo smaller than ``min_face_px`` is refused. When nothing is found (e.g. a tight crop
    where the face touches the border) the image is padded with its replicated border by
    each of :data:`PAD_FRACTIONS` on every side in turn and searched again.

    ``min_dominant_ratio`` (enrolment photos): with several faces, the largest must have at
    least this many times the area of the next, else :class:`GroupPhotoError`; a small face
    in the background passes, a second person beside the first does not. None: always keep
    the largest.
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
        ratio = dominance(faces)
        if min_dominant_ratio is not None and ratio < min_dominant_ratio:
            raise GroupPhotoError(name, len(faces), ratio, min_dominant_ratio)
        x, y, w, h = faces[0].box
        log.info(
            "%s: %d faces found, keeping the largest (%.0fx%.0f px at %.0f,%.0f; %.1fx the "
            "area of the next)",
            name, len(faces), w, h, x, y, ratio,
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
    rgb: np.ndarray,
    detector: Detector,
    cfg: Config,
    name: str = "image",
    min_dominant_ratio: float | None = None,
) -> tuple[np.ndarray, Face]:
    """The aligned 160x160 RGB crop of the largest face in ``rgb`` (per ``cfg.alignment``).

    ``min_dominant_ratio``: as for :func:`detect_largest_face` (enrolment passes
    ``cfg.min_dominant_ratio``; by default the largest face is kept, as evaluation does).
    Raises :class:`NoFaceError` (or :class:`ImageTooSmallError`, :class:`GroupPhotoError`,
    :class:`AlignmentError`).
    """
    face, _ = detect_largest_face(rgb, detector, cfg.min_face_px, name, min_dominant_ratio)
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
    (``a.jpg.png``); names are compared case-insensitively. A name longer than
    :data:`MAX_OUTPUT_NAME_BYTES` is shortened and made unique with a hash of the input name,
    so the crop and its temporary file fit the file system's 255-byte limit.
    """
    files = sorted(filenames)
    stems = Counter(Path(f).stem.casefold() for f in files)
    used: set[str] = set()
    result: dict[str, str] = {}
    for name in files:
        stem = Path(name).stem
        candidate = f"{stem}.png" if stems[stem.casefold()] == 1 else f"{name}.png"
        if len(candidate.encode("utf-8", "surrogateescape")) > MAX_OUTPUT_NAME_BYTES:
            stem = (
                _shorten(stem, MAX_OUTPUT_NAME_BYTES - 24)
                + "~"
                + sha256_bytes(name.encode("utf-8", "surrogateescape"))[:12]
            )
            candidate = f"{stem}.png"
        counter = 1
        while candidate.casefold() in used:
            candidate = f"{stem}~{counter}.png"
            counter += 1
        used.add(candidate.casefold())
        result[name] = candidate
    return result


def _shorten(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that is at most ``max_bytes`` in UTF-8."""
    data = text.encode("utf-8", "surrogateescape")[:max_bytes]
    return data.decode("utf-8", "ignore")


# --------------------------------------------------------------------------- manifest + lock


def manifest_path(cfg: Config) -> Path:
    """Where the manifest of ``cfg``'s workspace lives."""
    return Path(cfg.pre_images_dir) / MANIFEST_NAME


def load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries keyed by input relpath ({} if absent; a corrupt one is ignored).

    Only a regular file is read. An entry whose key (``<folder>/<file>`` under ``images/``)
    or ``output`` (``<identity>/<file>`` under ``pre_images/``) is not a plain relative path
    of that form (``..``, absolute, NUL, ...), or whose fields have the wrong types, is
    dropped with a warning naming it: nothing is ever read or deleted because of it.
    """
    return _load_manifest(path)[0]


def _load_manifest(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """:func:`load_manifest` and how many entries it dropped."""
    if not os.path.lexists(path):
        return {}, 0
    try:
        data = json.loads(read_regular_bytes(path, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        log.warning("%s is unreadable (%s); rebuilding it from the crops on disk", path, reason)
        return {}, 0
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or data.get("version") != MANIFEST_VERSION:
        log.warning("%s has an unknown format; rebuilding it from the crops on disk", path)
        return {}, 0
    kept: dict[str, dict[str, Any]] = {}
    for rel, entry in entries.items():
        problem = _entry_problem(rel, entry)
        if problem:
            log.warning("%s: dropped the entry %r (%s); it is not acted on", path, rel, problem)
        else:
            kept[rel] = entry
    return kept, len(entries) - len(kept)


_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "identity": str,
    "sha256": str,
    "status": str,
    "reason": str,
    "crop_sha256": str,
    "faces": int,
    "checks": dict,
}


def _entry_problem(rel: str, entry: Any) -> str | None:
    """Why manifest entry ``rel`` cannot be trusted (None: it can)."""
    if not isinstance(entry, dict):
        return "not an object"
    try:
        check_relpath(rel, parts=2)
        if entry.get("output") is not None:
            check_relpath(entry["output"], parts=2)
    except UnsafePath as exc:
        return str(exc)
    for key, kind in _ENTRY_TYPES.items():
        if entry.get(key) is not None and not isinstance(entry[key], kind):
            return f"{key} is not a {getattr(kind, '__name__', kind)}"
    return None


def save_manifest(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Write the manifest atomically."""
    data = {"version": MANIFEST_VERSION, "entries": dict(sorted(entries.items()))}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=True) + "\n")


@contextlib.contextmanager
def _exclusive(folder: Path, timeout: float) -> Iterator[Callable[[], None]]:
    """Hold ``folder/.lock`` so two preprocess runs on one workspace take turns.

    ``flock`` is released by the kernel when its holder dies (even by ``kill -9``), so a lock
    file left behind never blocks. The holder writes its PID and command into the file; a run
    that finds the lock taken logs who holds it and waits as long as the holder makes progress,
    but at most ``timeout`` seconds without, then fails with :class:`LockTimeout` naming the
    holder. Yields ``beat()``: the holder calls it at every photo (it touches the lock file).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: runs are not serialised
        yield lambda: None
        return
    lock = folder / LOCK_NAME
    if os.path.lexists(lock):
        problem = regular_file_problem(lock, follow_symlinks=False)
        if problem:
            raise UserError(f"{lock}: {problem}; delete it and run again")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(lock, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise _write_error(lock, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{lock}: not a regular file ({file_kind(mode)}); delete it")
        try:
            if not _try_lock(fcntl, fd):
                _wait_for_lock(fcntl, fd, lock, timeout)
        except OSError as exc:  # e.g. a file system without locks
            raise UserError(
                f"cannot lock {lock} ({exc.strerror or exc}); keep pre_images on a local disk"
            ) from None
        try:
            _write_holder(fd)
            yield lambda: _touch(fd)
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _touch(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.utime(fd)


def _try_lock(fcntl: Any, fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_lock(fcntl: Any, fd: int, lock: Path, timeout: float) -> None:
    """Poll for the lock while its holder makes progress (it touches the lock file at every
    photo); after ``timeout`` seconds without progress, :class:`LockTimeout`."""
    log.warning(
        "%s is held by %s (another preprocess run); waiting while it makes progress "
        "(at most %g s without)",
        lock, lock_holder(fd), timeout,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    beat = _heartbeat(fd)
    delay = 0.05
    while not _try_lock(fcntl, fd):
        if _heartbeat(fd) != beat:  # the holder is working: a long run is not a hang
            beat, deadline = _heartbeat(fd), time.monotonic() + timeout
        left = deadline - time.monotonic()
        if left <= 0:
            holder = lock_holder(fd)
            raise LockTimeout(
                f"{lock} is held by {holder} with no progress for more than "
                f"lock_timeout_seconds={timeout:g}; it seems to hang: stop it, then run again"
            )
        time.sleep(min(delay, left))
        delay = min(2 * delay, 0.5)


def _heartbeat(fd: int) -> int:
    """The lock file's modification time (ns): the holder's last sign of progress."""
    return os.fstat(fd).st_mtime_ns


def _write_holder(fd: int) -> None:
    """Record this process in the lock file: ``<pid> <command>`` (one line)."""
    command = " ".join(sys.argv) or sys.executable
    printable = "".join(ch if ch.isprintable() else "?" for ch in command)  # one safe line
    line = f"{os.getpid()} {printable}"[:300] + "\n"
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode("utf-8", "replace"), 0)


def lock_holder(fd: int) -> str:
    """Who the lock file open as ``fd`` names: "process 123 (call_preprocess ...)"."""
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    pid, _, command = text.strip().partition(" ")
    if not pid.isdigit():
        return "an unknown process (it wrote no PID)"
    command = "".join(ch if ch.isprintable() else "?" for ch in command[:80])
    return f"process {pid} ({command})" if command else f"process {pid}"


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
    # folders that could not be listed (maybe transiently): their records and crops are kept
    held: set[str] = field(default_factory=set)


def _visible(entries: Iterable[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _outside(path: str | Path, root: Path) -> bool:
    """Whether ``path`` (symbolic links resolved) lies outside the resolved folder ``root``."""
    target = Path(os.path.realpath(path))
    return target != root and root not in target.parents


def _shown(text: str) -> str:
    """``text`` for a message: as is if printable, else its ``repr`` (one line, no escapes)."""
    return text if text.isprintable() else repr(text)


def _linked_folder_reason(entry: os.DirEntry, root: Path) -> str:
    target = _shown(os.path.realpath(entry.path))
    where = ", outside images/" if _outside(entry.path, root) else ""
    return (
        f"{_shown(entry.name + '/')}: the person folder is a symbolic link (to {target}{where}); "
        "its photos are not read, as `attendance remove` refuses it too: make "
        f"images/{_shown(entry.name)} a real folder holding the photos"
    )


def _file_problem(item: os.DirEntry, rel: str, root: Path) -> Rejection | None:
    """Why the entry ``item`` of a person folder is not read as a photo (None: it is).

    Decided from the name and ``lstat``/``stat`` only: nothing is opened.
    """
    if not _utf8(item.name):
        return Rejection(rel, f"{rel!r}: the file name is not valid UTF-8")
    if _BAD_NAME_CHARS.intersection(item.name):
        return Rejection(
            rel, f"{rel!r}: the file name contains control or text-direction characters; rename it"
        )
    try:
        if item.is_symlink():
            if _outside(item.path, root):
                target = _shown(os.path.realpath(item.path))
                return Rejection(
                    rel,
                    f"{_shown(rel)}: a symbolic link to a file outside images/ ({target}); it "
                    "is not read: copy the photo into the folder instead",
                )
            mode = os.stat(item.path).st_mode  # the link's target, inside images/
        else:
            mode = item.stat(follow_symlinks=False).st_mode
    except OSError as exc:
        return Rejection(rel, f"{_shown(rel)}: cannot read the file ({exc.strerror or exc})")
    if stat.S_ISDIR(mode):
        return Rejection(
            rel + "/", f"{_shown(rel + '/')}: nested folders are not read; move the photos up"
        )
    if not stat.S_ISREG(mode):
        return Rejection(
            rel, f"{_shown(rel)}: not a regular file ({file_kind(mode)}); only photo files are read"
        )
    return None


def _scan(cfg: Config, wanted: set[str] | None) -> _Scan:
    """List ``images/``: the inputs in scope, and a :class:`Rejection` for everything refused.

    Nothing is opened here: the type of each entry comes from ``lstat``/``stat``, so a FIFO
    or device is refused before anyone tries to read it.
    """
    images = Path(cfg.images_dir)
    root = images.resolve()
    scan = _Scan()
    folders: dict[str, str] = {}  # identity -> folder name
    with os.scandir(images) as it:
        top = _visible(it)
    for entry in top:
        if not entry.is_dir():  # follows a link: a link to a folder is refused below
            log.debug("ignoring %s: not a person folder", entry.path)
            continue
        try:
            identity = validate_name(entry.name)
            person_dir(cfg.pre_images_dir, identity)
        except InvalidName as exc:
            if wanted is None:
                key = entry.name + "/"
                scan.rejected.append(Rejection(key, f"{_shown(key)}: {exc}"))
            continue
        if wanted is not None and identity not in wanted:
            continue
        if _BAD_NAME_CHARS.intersection(entry.name):  # e.g. "Ada\n": valid once trimmed
            key = entry.name + "/"
            reason = "the folder name contains control or text-direction characters; rename it"
            scan.rejected.append(Rejection(key, f"{key!r}: {reason}"))
            continue
        if entry.is_symlink():
            scan.rejected.append(Rejection(entry.name + "/", _linked_folder_reason(entry, root)))
            continue
        if identity in folders:
            scan.rejected.append(
                Rejection(
                    entry.name + "/",
                    f"{_shown(entry.name + '/')}: same identity as folder {folders[identity]!r} "
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
            reason = f"{_shown(entry.name + '/')}: cannot list the folder ({exc.strerror or exc})"
            scan.rejected.append(Rejection(entry.name + "/", reason))
            scan.held.add(entry.name)
            continue
        names: list[str] = []
        for item in files:
            problem = _file_problem(item, f"{entry.name}/{item.name}", root)
            if problem is None:
                names.append(item.name)
            else:
                scan.rejected.append(problem)
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

    def __init__(
        self,
        cfg: Config,
        detector: Detector | None,
        summary: PreprocessSummary,
        beat: Callable[[], None] = lambda: None,
    ):
        self.cfg = cfg
        self.images = Path(cfg.images_dir)
        self.pre = Path(cfg.pre_images_dir)
        self.settings = crop_settings(cfg)
        self.manifest_file = manifest_path(cfg)
        self.entries, dropped = _load_manifest(self.manifest_file)
        self.summary = summary
        self.beat = beat
        self.dirty = dropped > 0  # save it without the dropped entries
        self.unsaved = 0
        self._detector = detector

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = make_detector(self.cfg)
        return self._detector

    def metadata(self, sha256: str) -> dict[str, Any]:
        return {"source_sha256": sha256, "settings": self.settings}

    def out_path(self, out_rel: str) -> Path | None:
        """``pre_images/<out_rel>`` if it stays inside ``pre_images/`` (else None, logged)."""
        try:
            return inside(self.pre, out_rel, parts=2)
        except UnsafePath as exc:
            log.warning("%s: %s; it is left alone", self.pre, exc)
            return None

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
        self.beat()  # a waiting run sees progress
        self.entries[item.rel] = {
            "identity": item.identity,
            "sha256": item.sha256,
            "alignment": self.cfg.alignment,
            "settings": self.settings,
            **{k: v for k, v in values.items() if v is not None or k in ("output", "reason")},
        }
        self.dirty = True
        self.unsaved += 1

    def remove_output(self, out_rel: str | None, keep: set[str]) -> None:
        if not out_rel or out_rel in keep:
            return
        path = self.out_path(out_rel)
        if path is None:
            return
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot remove %s (%s); left in place", path, exc.strerror or exc)
            return
        self.summary.removed.append(out_rel)
        log.info("removed %s", path)

    def checks_current(self, entry: dict[str, Any]) -> bool:
        """Whether the configuration values a verdict depended on are unchanged."""
        checks = entry.get("checks") or {}
        if not set(checks) <= CHECK_KEYS:
            return False
        if any(getattr(self.cfg, key) != value for key, value in checks.items()):
            return False
        faces = entry.get("faces")
        several = isinstance(faces, int) and faces > 1
        # a photo with several faces accepted before group photos were checked: check it now
        return not (several and "min_dominant_ratio" not in checks)

    def up_to_date(self, item: _Input) -> bool:
        entry = self.entries.get(item.rel)
        if not entry or entry.get("sha256") != item.sha256:
            return False
        if not same_settings(entry.get("settings"), self.settings):
            return False
        if not self.checks_current(entry):
            return False
        if entry.get("status") == "rejected":
            return True
        if entry.get("output") != item.out_rel:
            return False
        path = self.out_path(item.out_rel)
        return path is not None and path.is_file()

    def recovered(self, item: _Input) -> bool:
        """An output already on disk made from this very input with these settings (and not
        one whose verdict is on record as made under other checks: that one is redone)."""
        entry = self.entries.get(item.rel) or {}
        if (
            entry.get("sha256") == item.sha256
            and same_settings(entry.get("settings"), self.settings)
            and not self.checks_current(entry)
        ):
            return False
        path = self.out_path(item.out_rel)
        meta = None if path is None else read_png_metadata(path)
        return (
            meta is not None
            and meta.get("source_sha256") == item.sha256
            and same_settings(meta.get("settings"), self.settings)
        )

    def refuse(self, item: _Input, reason: str) -> None:
        """Report ``item`` as rejected without recording it (the cause may not last)."""
        log.warning("rejected %s", reason)
        self.summary.rejected.append(Rejection(item.rel, reason))

    def process(self, item: _Input, keep: set[str]) -> None:
        """Detect, align and write one input; ``keep`` are outputs owned by other inputs."""
        cfg = self.cfg
        others = keep - {item.out_rel}
        old_output = (self.entries.get(item.rel) or {}).get("output")
        target = self.out_path(item.out_rel)
        if target is None:
            self.refuse(item, f"{item.rel}: its crop would be written outside {self.pre}")
            return
        try:
            inside(self.images, item.rel, parts=2)
            data = read_photo_bytes(item.path, cfg.max_image_pixels, item.rel)
        except UnsafePath as exc:
            self.refuse(item, f"{item.rel}: not read: {exc}")
            return
        except ImageReadError as exc:
            self.refuse(item, str(exc))
            return
        item.sha256 = sha256_bytes(data)
        try:
            rgb = decode_image(data, item.rel, cfg.max_image_pixels)
            del data
            face, count = detect_largest_face(
                rgb, self.detector, cfg.min_face_px, item.rel, cfg.min_dominant_ratio
            )
            crop = align_face(rgb, face, method=cfg.alignment, size=CROP_SIZE, margin=cfg.margin)
        except (ImageReadError, ImageRejected, AlignmentError) as exc:
            reason = str(exc) if str(exc).startswith(item.rel) else f"{item.rel}: {exc}"
            extra: dict[str, Any] = {}
            if isinstance(exc, GroupPhotoError):
                extra = {
                    "faces": exc.faces,
                    "checks": {"min_dominant_ratio": cfg.min_dominant_ratio},
                }
            elif isinstance(exc, ImageTooLargeError):
                extra = {"checks": {"max_image_pixels": cfg.max_image_pixels}}
            self.reject(item, reason, **extra)
            self.remove_output(old_output, others)
            self.remove_output(item.out_rel, set())
            return
        png = encode_png(crop, self.metadata(item.sha256))
        write_output(target, png)
        if old_output != item.out_rel:
            self.remove_output(old_output, others)
        self.record(
            item,
            status="ok",
            output=item.out_rel,
            reason=None,
            faces=count,
            checks={"min_dominant_ratio": cfg.min_dominant_ratio} if count > 1 else None,
            score=round(float(face.score), 4),
            crop_sha256=sha256_bytes(png),
        )
        self.summary.processed.append(item.rel)

    def reject(self, item: _Input, reason: str, **values: Any) -> None:
        log.info("rejected %s", reason)
        self.record(item, status="rejected", output=None, reason=reason, **values)
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
    to MTCNN, which is only loaded when some image actually needs detecting. Raises
    :class:`LockTimeout` when another run holds the workspace longer than
    ``cfg.lock_timeout_seconds``.
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
    with _exclusive(pre, cfg.lock_timeout_seconds) as beat:
        run = _Run(cfg, detector, summary, beat)
        try:
            _run_locked(run, wanted, progress)
        finally:
            run.save(force=True)
    summary.seconds = time.perf_counter() - started
    log.debug("preprocess: %s", summary.lines()[0])
    return summary


def _in_scope(identity: str | None, wanted: set[str] | None) -> bool:
    return wanted is None or identity in wanted


def _reusable(run: _Run) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Crops on record by their input's content hash (for moved or renamed inputs)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for entry in run.entries.values():
        if (
            entry.get("status") == "ok"
            and entry.get("sha256")
            and entry.get("output")
            and same_settings(entry.get("settings"), run.settings)
            and run.checks_current(entry)
        ):
            path = run.out_path(entry["output"])
            if path is not None:
                found[entry["sha256"]] = (path, entry)
    return found


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
    reuse: list[tuple[_Input, Path, dict[str, Any]]] = []
    live: set[str] = set()  # outputs that stay as they are
    by_content = _reusable(run)
    max_bytes = max_file_bytes(cfg.max_image_pixels)
    for item in scan.inputs:
        try:
            inside(run.images, item.rel, parts=2)  # again: the scan and this may differ
            item.sha256 = sha256_file(item.path, max_bytes)
        except UnsafePath as exc:
            run.refuse(item, f"{item.rel}: not read: {exc}")
            continue
        except OSError as exc:
            run.refuse(item, str(read_error(item.rel, exc, cfg.max_image_pixels)))
            old = run.entries.get(item.rel) or {}
            if not isinstance(exc, (NotRegularFile, FileTooLarge)) and old.get("output"):
                live.add(old["output"])  # perhaps a passing error: keep its crop for now
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
            crop_sha = sha256_file(inside(pre, item.out_rel, parts=2))
            run.record(item, status="ok", output=item.out_rel, reason=None, crop_sha256=crop_sha)
            summary.skipped.append(item.rel)
            live.add(item.out_rel)
        elif item.sha256 in by_content and _made_from(by_content[item.sha256][0], item.sha256):
            reuse.append((item, *by_content[item.sha256]))
        else:
            todo.append(item)

    # 2. copy crops of moved/renamed inputs (byte-identical, so embeddings stay valid).
    for item, source, source_entry in reuse:
        target = run.out_path(item.out_rel)
        try:
            data = read_regular_bytes(source)
        except OSError:
            data = b""
        if target is None or not data:
            todo.append(item)
            continue
        write_output(target, data)
        old = (run.entries.get(item.rel) or {}).get("output")
        run.record(
            item, status="ok", output=item.out_rel, reason=None,
            faces=source_entry.get("faces"), checks=source_entry.get("checks"),
            crop_sha256=sha256_bytes(data),
        )  # fmt: skip
        if old and old != item.out_rel:
            run.remove_output(old, live | {item.out_rel})
        log.info("%s: same photo as %s, crop reused", item.rel, source.relative_to(pre))
        summary.processed.append(item.rel)
        live.add(item.out_rel)
    run.save()

    # 3. forget removed inputs and delete their crops (records of unlistable folders stay).
    current = {item.rel for item in scan.inputs}
    held = {rel for rel in run.entries if rel.split("/", 1)[0] in scan.held}
    live |= {str(run.entries[rel]["output"]) for rel in held if run.entries[rel].get("output")}
    planned = live | {item.out_rel for item in todo}
    for rel in sorted(run.entries):
        entry = run.entries[rel]
        if rel in current or rel in held or not _in_scope(entry.get("identity"), wanted):
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
    """Delete our crops that no input accounts for; drop emptied folders of removed people.

    Only real folders and regular files of ``pre_images/`` are looked at: a symbolic link
    there (to a folder or a file) is never followed, so nothing outside is read or deleted.
    """
    pre = run.pre
    with os.scandir(pre) as it:
        listed = _visible(it)
    for folder in listed:
        if folder.is_symlink():
            log.warning("%s is a symbolic link; call_preprocess leaves it alone", folder.path)
            continue
        if not folder.is_dir(follow_symlinks=False):
            continue
        try:
            identity = validate_name(folder.name)
        except InvalidName:
            continue
        if identity != folder.name or not _in_scope(identity, wanted):
            continue
        remove_stale_temps(folder.path)
        with os.scandir(folder.path) as it:
            files = [e for e in _visible(it) if e.is_file(follow_symlinks=False)]
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
