"""Enrol a person from uploaded photos, and judge single webcam frames: no web framework here.

:class:`EnrolService` is what the dashboard calls from a worker thread. Each photo goes
through the scanner's own steps: a size limit (``upload_max_bytes``), decoding by content
with the pixel limit read from the header (``max_image_pixels``; EXIF orientation applied),
detection with the same rule for several faces as preprocessing (``min_dominant_ratio``) and
the scanner's quality gate (:func:`scanner.quality.assess`). Accepted photos are re-encoded
from their decoded pixels (JPEG, or PNG for a PNG upload: no uploaded byte is stored
verbatim) and written as the person's next numbered shots (``images/<Name>/0007.jpg``, as the
scanner names them, atomically). Then, exactly as ``scanner`` does after a capture, this one
person is preprocessed and their gallery updated (:class:`scanner.enrol.Enroller`: with a
shared PostgreSQL store that publishes the person to every kiosk), and the duplicate /
mixed-people check runs (:func:`scanner.enrol.check_enrolment`).

**All or nothing.** Before the first shot is written, a journal is created in
``<workspace>/.web-uploads/`` (the person, the shot names that existed before, and the hashes
of the shots about to be written) and locked with ``flock`` for as long as the upload runs.
The upload is committed by deleting the journal, after its shots, crops and embeddings are
in place and the check accepted them. Any error before that rolls the upload back at once
(:func:`scanner.enrol.discard_shots` on exactly this upload's shots, which also removes their
crops and embeddings). A kill (even ``kill -9``) leaves the journal behind, unlocked (the
kernel drops the lock with the process): the next :meth:`EnrolService.enrol` (or an explicit
:meth:`EnrolService.recover`, e.g. at start-up) finds it and rolls that upload back the same
way, whatever step it had reached; the photos can then simply be uploaded again. A journal
still locked belongs to an upload in progress (this or another process) and is left alone.
Until the rollback, a killed upload may have left some shots, crops or (with a shared store,
already visible to kiosks) embeddings of the person, as a killed ``scanner`` can.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import fsync_dir, sha256_bytes, sha256_file
from common.image_io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    ImageTooLargeError,
    allowed_formats,
    decode_errors,
    decode_image,
    encode_png,
    max_file_bytes,
)
from common.names import list_identities, person_dir, validate_name
from preprocess.detect import Detector
from preprocess.pipeline import (
    GroupPhotoError,
    ImageTooSmallError,
    NoFaceError,
    detect_largest_face,
    load_manifest,
    manifest_path,
)
from scanner.enrol import (
    Enroller,
    LockedDetector,
    ShotCheck,
    check_enrolment,
    crop_relpaths,
    discard_shots,
)
from scanner.quality import Issue, Quality, QualityLimits, assess
from scanner.session import encode_jpeg, write_new_shot
from store.gallery import EmbedderLike

log = logging.getLogger(__name__)

#: Longest file name shown back to the browser.
MAX_SHOWN_NAME = 100
#: Where the journals of uploads in progress live, relative to the workspace root.
JOURNAL_DIR = ".web-uploads"

#: The quality gate's issues, worded for a photo (the scanner's hints are for a live camera).
_ISSUE_REASONS: dict[Issue, str] = {
    Issue.TOO_DARK: "too dark",
    Issue.TOO_BRIGHT: "too bright (overexposed)",
    Issue.NO_FACE: "no face found",
    Issue.SEVERAL_FACES: "several faces: crop the photo to one person",
    Issue.CUT_OFF: "face cut off by the edge of the picture",
    Issue.BLURRY: "too blurry",
}


class EnrolError(UserError, ValueError):
    """An enrolment request is refused as a whole (wrong number of photos); nothing stored."""


@dataclass(frozen=True)
class PhotoVerdict:
    """The outcome for one uploaded photo or webcam frame.

    ``filename`` is the browser's name, sanitised (:func:`safe_filename`); ``reason`` is ""
    when accepted, otherwise one short line ("too blurry", "no face found", ...).
    """

    filename: str
    accepted: bool
    reason: str = ""


@dataclass
class EnrolResult:
    """What :meth:`EnrolService.enrol` did.

    ``photos``: one verdict per uploaded file, in upload order. ``enrolled``: the photos are
    kept and the person is recognisable. ``shots_saved``: photos of this upload now in
    ``images/<Name>/``; ``crops``: their face crops (embedded in the gallery). Both are 0
    when nothing was kept. ``warnings``: the duplicate check's findings and notes.
    """

    name: str
    photos: list[PhotoVerdict]
    enrolled: bool
    message: str
    shots_saved: int = 0
    crops: int = 0
    warnings: list[str] = field(default_factory=list)


def safe_filename(raw: object) -> str:
    """A browser-supplied file name fit to show: base name only, printable, at most
    :data:`MAX_SHOWN_NAME` characters (``"photo"`` when nothing is left)."""
    text = unicodedata.normalize("NFC", str(raw or ""))
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if len(text) > MAX_SHOWN_NAME:
        text = text[: MAX_SHOWN_NAME - 1] + "…"
    return text or "photo"


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def _mp(pixels: float) -> str:
    """Megapixels, briefly: ``100``, ``1.5``, ``0.31``."""
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


@dataclass
class _Judged:
    """A photo that passed the gate, ready to be written."""

    index: int  # position in the upload
    data: bytes  # re-encoded from the decoded pixels
    suffix: str  # ".jpg" or ".png"
    sha256: str  # of ``data``


class EnrolService:
    """Enrolment by upload and webcam-frame checks for one workspace; thread-safe.

    ``detector`` / ``embedder``: injected instances (tests); by default MTCNN
    (``preprocess.detectors.make_detector``) and the active FaceNet model
    (``scanner.cli.load_embedder``) are loaded on first use, once. Detection is serialised
    (one detector call at a time); :meth:`enrol` and :meth:`recover` run one at a time.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        detector: Detector | None = None,
        embedder: EmbedderLike | None = None,
    ) -> None:
        self.cfg = cfg
        self.limits = QualityLimits.from_config(cfg)
        self._detector: LockedDetector | None = (
            LockedDetector(detector) if detector is not None else None
        )
        self._embedder = embedder
        self._embedder_loaded_here = embedder is None  # an injected one is kept as it is
        self._lock = threading.Lock()  # one enrolment (or recovery) at a time
        # separate: loading the embedder (seconds) must not hold up webcam checks
        self._detector_lock = threading.Lock()
        self._embedder_lock = threading.Lock()

    def reconfigure(self, cfg: Config) -> None:
        """Use ``cfg`` from now on (a settings change): new limits, and the embedder of the
        new model version when it changed (loaded again on first use)."""
        with self._lock, self._embedder_lock:
            model_changed = (cfg.model_version, cfg.weights) != (
                self.cfg.model_version,
                self.cfg.weights,
            )
            self.cfg = cfg
            self.limits = QualityLimits.from_config(cfg)
            if model_changed and self._embedder_loaded_here:
                self._embedder = None

    # -- models ---------------------------------------------------------------------------
    @property
    def detector(self) -> LockedDetector:
        """The face detector, loaded on first use."""
        with self._detector_lock:
            if self._detector is None:
                from preprocess.detectors import make_detector

                log.info("loading the face detector")
                self._detector = LockedDetector(make_detector(self.cfg))
            return self._detector

    @property
    def embedder(self) -> EmbedderLike:
        """The embedder, loaded (and warmed up) on first use."""
        with self._embedder_lock:
            if self._embedder is None:
                from scanner.cli import load_embedder

                log.info("loading the FaceNet model")
                self._embedder = load_embedder(self.cfg)
            return self._embedder

    # -- one photo ------------------------------------------------------------------------
    def check_photo(self, data: bytes, filename: str = "frame") -> PhotoVerdict:
        """The verdict on one photo or webcam frame: size and pixel limits, decoding,
        detection and the quality gate. Nothing is stored."""
        verdict, _ = self._judge(data, safe_filename(filename))
        return verdict

    def _judge(self, data: bytes, shown: str) -> tuple[PhotoVerdict, np.ndarray | None]:
        """The verdict on ``data``, and its decoded RGB pixels when accepted."""

        def refuse(reason: str) -> tuple[PhotoVerdict, None]:
            return PhotoVerdict(shown, False, reason), None

        cfg = self.cfg
        if len(data) > cfg.upload_max_bytes:
            return refuse(f"too large: {_mb(len(data))} > {cfg.upload_max_bytes / 1e6:g} MB")
        if not data:
            return refuse("empty file")
        problem = self._header_problem(data)
        if problem:
            return refuse(problem)
        try:
            rgb = decode_image(data, shown, cfg.max_image_pixels)
        except ImageTooLargeError:
            return refuse(f"too large: more than {_mp(cfg.max_image_pixels)} MP")
        except ImageReadError:
            return refuse("corrupt or truncated image (could not decode)")
        try:
            face, count = detect_largest_face(
                rgb, self.detector, cfg.min_face_px, shown, cfg.min_dominant_ratio
            )
        except GroupPhotoError as exc:
            return refuse(f"{exc.faces} faces: crop the photo to one person")
        except ImageTooSmallError:
            height, width = rgb.shape[:2]
            return refuse(f"too small: {width}x{height} px")
        except NoFaceError:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            return refuse(self._issue_reason(assess(gray, [], self.limits)))
        # several faces pass only when one dominates (the preprocessing rule): judge that one
        quality = assess(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), [face], self.limits)
        if not quality.ok:
            return refuse(self._issue_reason(quality))
        if count > 1:
            log.info("%s: %d faces, the largest dominates: accepted", shown, count)
        return PhotoVerdict(shown, True, ""), rgb

    def _header_problem(self, data: bytes) -> str | None:
        """Why ``data`` is refused from its header alone: not an image of an accepted type,
        or more than ``max_image_pixels`` pixels (None: go on and decode it)."""
        from PIL import Image

        limit = self.cfg.max_image_pixels
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=allowed_formats()) as image:
                width, height = image.size
        except Image.DecompressionBombError as exc:  # beyond Pillow's own limit
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{_mp(int(found.group(1)))} MP" if found else "too many pixels"
            return f"too large: {size} > {_mp(limit)} MP"
        except decode_errors():  # unidentified, or a header Pillow cannot parse: not an image
            return "not an image (could not decode); use JPEG or PNG"
        if width * height > limit:
            return f"too large: {width}x{height} px ({_mp(width * height)} MP) > {_mp(limit)} MP"
        return None

    def _issue_reason(self, quality: Quality) -> str:
        issue = quality.issues[0] if quality.issues else Issue.NO_FACE
        if issue is Issue.TOO_SMALL and quality.metrics is not None:
            return (
                f"face too small: {quality.metrics.side:.0f} px, at least "
                f"{self.limits.min_face_px:.0f} px (use a closer or larger photo)"
            )
        return _ISSUE_REASONS.get(issue, issue.hint)

    # -- enrolment ------------------------------------------------------------------------
    def enrol(
        self, name: str, files: Sequence[tuple[str, bytes]], *, force: bool = False
    ) -> EnrolResult:
        """Enrol ``name`` from ``files`` (``(filename, bytes)`` pairs); see the module doc.

        Raises :class:`common.names.InvalidName` for a bad name and :class:`EnrolError` for
        fewer than ``upload_min_files`` or more than ``upload_max_files`` files, before any
        photo is decoded. Fewer than ``upload_min_files`` usable photos store nothing. When
        the check finds the photos match someone already enrolled or show more than one
        person, the upload is removed again unless ``force``.
        """
        cfg = self.cfg
        folder = person_dir(cfg.images_dir, name)  # validates: the name never leaves images/
        name = folder.name
        count = len(files)
        if count < cfg.upload_min_files:
            raise EnrolError(
                f"enrolling {name} takes at least {cfg.upload_min_files} photos; {count} given"
            )
        if count > cfg.upload_max_files:
            raise EnrolError(
                f"enrolling {name} takes at most {cfg.upload_max_files} photos; {count} given"
            )
        with self._lock:
            started = time.perf_counter()
            self._recover_locked()
            result = self._enrol_locked(name, folder, files, force)
            log.info(
                "upload enrolment of %s: %s (%.1f s)",
                name,
                result.message,
                time.perf_counter() - started,
            )
            return result

    def _enrol_locked(
        self, name: str, folder: Path, files: Sequence[tuple[str, bytes]], force: bool
    ) -> EnrolResult:
        cfg = self.cfg
        existing = _existing_shots(folder, cfg.max_image_pixels)
        verdicts: list[PhotoVerdict] = []
        judged: list[_Judged] = []
        seen: dict[str, str] = {}  # sha256 of the uploaded bytes -> shown name
        for index, (raw_name, data) in enumerate(files):
            shown = safe_filename(raw_name)
            digest = sha256_bytes(data)
            if digest in seen:
                verdicts.append(PhotoVerdict(shown, False, f"same photo as {seen[digest]}"))
                continue
            seen[digest] = shown
            verdict, rgb = self._judge(data, shown)
            if rgb is not None:
                encoded, suffix = _reencode(rgb, data)
                del rgb
                sha = sha256_bytes(encoded)
                if sha in existing:
                    verdict = PhotoVerdict(
                        shown, False, f"already enrolled (same photo as {existing[sha]})"
                    )
                else:
                    judged.append(_Judged(index, encoded, suffix, sha))
            verdicts.append(verdict)
        warnings_: list[str] = _case_notes(cfg, name)
        needed = cfg.upload_min_files
        if len(judged) < needed:
            return EnrolResult(
                name,
                verdicts,
                False,
                f"not enrolled: only {len(judged)} of {len(files)} photos are usable, at least "
                f"{needed} are needed; nothing was stored",
                warnings=warnings_,
            )

        embedder, detector = self.embedder, self.detector
        journal = _Journal.begin(cfg, name, folder, [j.sha256 for j in judged])
        shots: list[Path] = []
        try:
            for item in judged:
                shots.append(write_new_shot(folder, item.data, item.suffix))
            judged_at = {shot: item.index for shot, item in zip(shots, judged, strict=True)}
            Enroller(cfg, name, detector, embedder, background=False).finish()
            crops = crop_relpaths(cfg, shots)
            rejected = [shot for shot, rel in crops.items() if rel is None]
            if rejected:
                reasons = _crop_rejections(cfg, rejected)
                for shot in rejected:
                    index = judged_at[shot]
                    verdicts[index] = PhotoVerdict(
                        verdicts[index].filename, False, f"no usable face crop ({reasons[shot]})"
                    )
            kept = [shot for shot in shots if crops[shot] is not None]
            if len(kept) < needed:
                discard_shots(cfg, name, shots, embedder, detector)
                result = EnrolResult(
                    name,
                    verdicts,
                    False,
                    f"not enrolled: only {len(kept)} of {len(files)} photos gave a usable face "
                    f"crop, at least {needed} are needed; nothing was stored",
                    warnings=warnings_,
                )
            else:
                check = check_enrolment(cfg, name, kept, embedder)
                result = self._decide(
                    name, verdicts, shots, rejected, kept, check, force, warnings_
                )
        except BaseException:
            # whatever was published, known or not: the journal finds this upload's shots
            found: list[Path] = []
            with contextlib.suppress(Exception):
                found = journal.shots()
            self._roll_back(journal, sorted(set(shots) | set(found)))
            raise
        journal.commit()
        return result

    def _decide(
        self,
        name: str,
        verdicts: list[PhotoVerdict],
        shots: list[Path],
        rejected: list[Path],
        kept: list[Path],
        check: ShotCheck,
        force: bool,
        notes: list[str],
    ) -> EnrolResult:
        """Keep or remove the upload after the duplicate check."""
        cfg, embedder, detector = self.cfg, self.embedder, self.detector
        lines = check.lines()
        if check.suspicious and not force:
            discard_shots(cfg, name, shots, embedder, detector)
            return EnrolResult(
                name,
                verdicts,
                False,
                f"not enrolled: {lines[0].removeprefix('warning: ')}; nothing was kept. If "
                "these photos are right, submit them again with force",
                warnings=notes + lines,
            )
        if rejected:
            discard_shots(cfg, name, rejected, embedder, detector)
        warnings_ = notes + (lines if check.suspicious else [])
        if check.suspicious:
            warnings_.append("kept despite the warnings (force)")
        refused = len(verdicts) - len(kept)
        message = (
            f"{name} is enrolled: {len(kept)} new photo(s), {check.new_count} new embedding(s) "
            "in the gallery"
        )
        if refused:
            message += f"; {refused} of {len(verdicts)} photos refused"
        return EnrolResult(
            name,
            verdicts,
            True,
            message,
            shots_saved=len(kept),
            crops=len(kept),
            warnings=warnings_,
        )

    # -- rollback -------------------------------------------------------------------------
    def recover(self) -> int:
        """Roll back every upload a killed process left unfinished; how many there were."""
        with self._lock:
            return self._recover_locked()

    def _recover_locked(self) -> int:
        count = 0
        for journal in _Journal.abandoned(self.cfg):
            with journal:
                try:
                    shots = journal.shots()
                except OSError as exc:
                    log.error("%s: cannot list the upload's shots (%s); left for later",
                              journal.path, exc)  # fmt: skip
                    continue
                log.warning(
                    "rolling back an unfinished upload of %s (%d photo(s) still stored)",
                    journal.name,
                    len(shots),
                )
                self._roll_back(journal, shots)
                count += 1
        return count

    def _roll_back(self, journal: _Journal, shots: Sequence[Path]) -> None:
        """Remove ``shots`` with their crops and embeddings, then the journal. If that fails
        too, the journal stays for the next :meth:`recover` (the error is logged)."""
        try:
            _remove_dead_shot_temps(person_dir(self.cfg.images_dir, journal.name))
            discard_shots(self.cfg, journal.name, shots, self.embedder, self.detector)
        except (UserError, OSError, ValueError) as exc:
            log.error(
                "could not roll back the upload of %s (%s); the next enrolment retries",
                journal.name,
                exc,
            )
            journal.release()
            return
        journal.commit()


# --------------------------------------------------------------------------- helpers
def _remove_dead_shot_temps(folder: Path, older_than: float = 5.0) -> None:
    """Delete ``.shot-*.tmp`` files a killed writer left in ``folder`` (only ones untouched
    for ``older_than`` seconds: a scanner may be writing one right now)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - older_than
    for temp in folder.glob(".shot-*.tmp"):
        with contextlib.suppress(OSError):
            if temp.lstat().st_mtime < cutoff:
                temp.unlink()


def _reencode(rgb: np.ndarray, original: bytes) -> tuple[bytes, str]:
    """The photo re-encoded from its pixels: PNG (lossless) for a PNG upload, else JPEG."""
    from common.image_io import PNG_SIGNATURE

    if original.startswith(PNG_SIGNATURE):
        return encode_png(rgb), ".png"
    return encode_jpeg(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), ".jpg"


def _existing_shots(folder: Path, max_pixels: int) -> dict[str, str]:
    """sha256 -> file name of the shots already in ``folder`` (unreadable ones skipped)."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        with contextlib.suppress(OSError):
            out.setdefault(sha256_file(path, max_file_bytes(max_pixels)), path.name)
    return out


def _case_notes(cfg: Config, name: str) -> list[str]:
    """A note for each enrolled name that differs from ``name`` only in upper/lower case."""
    return [
        f"note: {other!r} is already enrolled; {name!r} differs only in upper/lower case"
        for other in list_identities(cfg.images_dir)
        if other != name and other.casefold() == name.casefold()
    ]


def _crop_rejections(cfg: Config, shots: Sequence[Path]) -> dict[Path, str]:
    """Why preprocessing made no crop of each of ``shots`` (from its manifest)."""
    entries = load_manifest(manifest_path(cfg))
    images = Path(cfg.images_dir)
    out: dict[Path, str] = {}
    for shot in shots:
        rel = shot.relative_to(images).as_posix()
        reason = str((entries.get(rel) or {}).get("reason") or "not processed")
        out[shot] = reason.removeprefix(f"{rel}: ")
    return out


class _Journal:
    """The record of one upload in progress: ``<root>/.web-uploads/<id>.json``, locked with
    ``flock`` while its upload runs; deleting it commits the upload."""

    def __init__(self, path: Path, fd: int, data: dict[str, Any], cfg: Config) -> None:
        self.path, self.fd, self.data, self.cfg = path, fd, data, cfg

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @classmethod
    def begin(cls, cfg: Config, name: str, folder: Path, sha256s: Sequence[str]) -> _Journal:
        """Create, lock and fsync the journal of an upload of ``name`` about to write shots
        with contents ``sha256s`` into ``folder``."""
        base = Path(cfg.root) / JOURNAL_DIR
        base.mkdir(parents=True, exist_ok=True)
        before = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        data = {"name": name, "before": before, "sha256": list(sha256s), "pid": os.getpid()}
        path = base / f"{uuid.uuid4().hex}.json"
        temp = path.with_suffix(".tmp")  # never seen by recovery half-written or unlocked
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temp, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            _lock(fd, wait=True)
            os.write(fd, json.dumps(data, ensure_ascii=True).encode("ascii"))
            os.fsync(fd)
            os.rename(temp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        fsync_dir(base)
        return cls(path, fd, data, cfg)

    @classmethod
    def abandoned(cls, cfg: Config) -> list[_Journal]:
        """The journals nobody holds (their upload's process died), each now locked by us.
        An unreadable journal (killed while being written: no shot was written yet) is
        deleted."""
        base = Path(cfg.root) / JOURNAL_DIR
        if not base.is_dir():
            return []
        found = []
        for path in sorted(base.glob("*.json")):
            try:
                fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue
            if not _lock(fd, wait=False):
                os.close(fd)  # an upload in progress
                continue
            try:  # committed (deleted) between our open and our lock: not abandoned
                current = os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            try:
                data = json.loads(os.pread(fd, 1 << 20, 0).decode("ascii"))
                validate_name(data["name"])
                if not all(isinstance(data[k], list) for k in ("before", "sha256")):
                    raise ValueError("malformed")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                log.warning("%s: unreadable upload journal (no shot was written); deleted", path)
                with contextlib.suppress(OSError):
                    path.unlink()
                os.close(fd)
                continue
            found.append(cls(path, fd, data, cfg))
        return found

    def shots(self) -> list[Path]:
        """The shots this upload wrote that are still there: files of the person's folder
        that were not there before and whose content is one the upload wrote."""
        folder = person_dir(self.cfg.images_dir, self.name)
        if not folder.is_dir():
            return []
        before, wanted = set(self.data["before"]), set(self.data["sha256"])
        limit = max_file_bytes(self.cfg.max_image_pixels)
        out = []
        for path in sorted(folder.iterdir()):
            if path.name in before or path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if path.is_file() and sha256_file(path, limit) in wanted:
                    out.append(path)
        return out

    def commit(self) -> None:
        """The upload is done (kept or rolled back): delete the journal and unlock it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fsync_dir(self.path.parent)
        self.release()

    def release(self) -> None:
        """Unlock without deleting (a failed rollback: the next recovery retries)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(fd: int, *, wait: bool) -> bool:
    """``flock`` ``fd`` exclusively; False when another holder has it (``wait=False``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: uploads are not journalled safely
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
