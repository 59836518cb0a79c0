"""web.enrolment with a fake detector and embedder (synthetic faces), plus one real-weight run.

The fakes are the scanner tests' own: :class:`FakeDetector` finds the textured rectangles of
:func:`make_frame`, :class:`FakeEmbedder` embeds a crop by its mean colour (a tint is a person).
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_scanner_enrol import ADA_TINT, ALAN_TINT, FakeEmbedder, rows_of, write_shots
from test_scanner_session import BACKGROUND, FakeDetector, make_frame

from common.config import Config
from common.names import InvalidName
from preprocess.detect import Face
from preprocess.pipeline import run_preprocess
from store.factory import open_embedding_store, upgrade_store
from store.gallery import sync_gallery
from web.enrolment import JOURNAL_DIR, EnrolError, EnrolService, PhotoVerdict, safe_filename

TESTS = Path(__file__).resolve().parent
ADA = "Ada Lovelace"


# --------------------------------------------------------------------------- helpers
def png(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def jpeg(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
    assert ok
    return buf.tobytes()


def faces(tint, count: int, seed: int = 0, encode=png) -> list[tuple[str, bytes]]:
    """``count`` distinct good photos of the person with ``tint``."""
    return [(f"photo{i}.png", encode(make_frame(seed=seed + i, tint=tint))) for i in range(count)]


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a tiny file: a pixel bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class CountingDetector(FakeDetector):
    """The fake detector, recording how many calls overlap (thread-safety) and which images."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self._guard = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return super().detect(rgb)
        finally:
            with self._guard:
                self.active -= 1


class DegenerateLeftDetector(FakeDetector):
    """A face left of x=100 gets landmarks all at one point: the quality gate (which does not
    look at landmarks) accepts it, and alignment in preprocessing rejects it."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        out = []
        for face in super().detect(rgb):
            if face.box[0] < 100:
                face = Face(face.box, face.score, np.full((5, 2), 50.0, np.float32))
            out.append(face)
        return out


LEFT = ((40, 130, 170, 200),)  # a face whose crop preprocessing refuses (DegenerateLeftDetector)


@pytest.fixture
def cfg(workspace: Config) -> Config:
    """A workspace where Alan Turing is already enrolled (5 shots); the scanner tests' limits."""
    cfg = workspace.replace(embed_batch=4, threshold=0.6, enrol_check_distance=0.6)
    write_shots(cfg, "Alan Turing", ALAN_TINT, 5, seed=100)
    run_preprocess(cfg, detector=FakeDetector(), progress=False)
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    return cfg


def service(cfg: Config, detector=None, embedder=None) -> EnrolService:
    return EnrolService(
        cfg, detector=detector or FakeDetector(), embedder=embedder or FakeEmbedder()
    )


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def no_journal(cfg: Config) -> bool:
    return listing(cfg.root / JOURNAL_DIR) == []


# --------------------------------------------------------------------------- request checks
@pytest.mark.parametrize(
    ("count", "message"), [(4, "at least 5 photos; 4 given"), (36, "at most 35")]
)
def test_the_number_of_files_is_checked_before_anything_is_decoded(
    cfg: Config, count: int, message: str
) -> None:
    detector, embedder = CountingDetector(), FakeEmbedder()
    files = [(f"{i}.jpg", png(make_frame(seed=i, tint=ADA_TINT))) for i in range(count)]
    with pytest.raises(EnrolError, match=message):
        service(cfg, detector, embedder).enrol(ADA, files)
    assert detector.calls == 0 and embedder.embedded == []
    assert not (cfg.images_dir / ADA).exists()


@pytest.mark.parametrize("name", ["../x", "../../etc", "a/b", ".hidden", "", "  ", "x\ny"])
def test_a_bad_name_is_refused_and_nothing_is_written(cfg: Config, name: str) -> None:
    detector = CountingDetector()
    before = sorted(str(p) for p in cfg.root.rglob("*"))
    with pytest.raises(InvalidName) as info:
        service(cfg, detector).enrol(name, faces(ADA_TINT, 5))
    if name.strip():
        assert repr(name.strip()) in str(info.value)  # the message names what was refused
    assert detector.calls == 0
    assert sorted(str(p) for p in cfg.root.rglob("*")) == before
    assert not (cfg.root.parent / "etc").exists()


def test_file_names_shown_back_are_sanitised() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\ada\\me.jpg") == "me.jpg"
    assert safe_filename("evil\x1b[31m\u202egpj.exe\n") == "evil[31mgpj.exe"
    assert safe_filename("") == "photo" and safe_filename(None) == "photo"
    long = safe_filename("a" * 500 + ".jpg")
    assert len(long) == 100 and long.endswith("…")


# --------------------------------------------------------------------------- one photo
TWO_APART = make_frame(boxes=((60, 130, 170, 200), (400, 130, 170, 200)))
SMALL_BESIDE = make_frame(boxes=((220, 130, 170, 200), (40, 40, 40, 48)))  # 17x the area
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png(make_frame()), ""),
        (jpeg(make_frame()), ""),
        (png(SMALL_BESIDE), ""),  # a small face in the background: the preprocessing rule
        (png(make_frame(blur=6.0)), "too blurry"),
        (png(np.full((480, 640, 3), BACKGROUND, np.uint8)), "no face found"),
        (png(np.full((480, 640, 3), 10, np.uint8)), "too dark"),
        (png(make_frame(tint=(-110, -110, -110))), "too dark"),
        (png(make_frame(tint=(120, 120, 120))), "too bright (overexposed)"),
        (png(TWO_APART), "2 faces: crop the photo to one person"),
        (
            png(make_frame(boxes=((300, 200, 50, 60),))),
            "face too small: 54 px, at least 80 px (use a closer or larger photo)",
        ),
        (b"GIF89a\x01\x00 this is not really an image", "not an image (could not decode)"),
        (b"<html><script>alert(1)</script></html>", "not an image (could not decode)"),
        (EPS, "not an image (could not decode)"),  # never handed to Ghostscript
        (png(make_frame())[:300], "corrupt or truncated image (could not decode)"),
        (b"", "empty file"),
    ],
)
def test_check_photo_gives_one_reason_per_photo(cfg: Config, data: bytes, reason: str) -> None:
    verdict = service(cfg).check_photo(data, "me.jpg")
    assert verdict.filename == "me.jpg"
    assert verdict.accepted == (reason == "")
    assert verdict.reason.startswith(reason) if reason else verdict.reason == ""


def test_check_photo_stores_nothing(cfg: Config) -> None:
    before = sorted(str(p) for p in cfg.root.rglob("*"))
    verdict = service(cfg).check_photo(jpeg(make_frame(tint=ADA_TINT)))
    assert verdict == PhotoVerdict("frame", True, "")
    assert sorted(str(p) for p in cfg.root.rglob("*")) == before


def test_size_limit(cfg: Config) -> None:
    cfg = cfg.replace(upload_max_bytes=10_000)
    detector = CountingDetector()
    data = png(make_frame())
    assert len(data) > 10_000
    verdict = service(cfg, detector).check_photo(data, "big.png")
    assert not verdict.accepted
    assert verdict.reason == f"too large: {len(data) / 1e6:.1f} MB > 0.01 MB"
    assert detector.calls == 0


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (10_000, 10_000, "too large: 10000x10000 px (100 MP) > 50 MP"),
        (100_000, 100_000, "too large: 10000 MP > 50 MP"),  # beyond Pillow's own bomb limit
    ],
)
def test_the_pixel_limit_is_read_from_the_header(
    cfg: Config, width: int, height: int, reason: str
) -> None:
    detector = CountingDetector()
    data = png_header(width, height)
    assert len(data) < 200
    started = time.perf_counter()
    verdict = service(cfg, detector).check_photo(data, "bomb.png")
    assert verdict == PhotoVerdict("bomb.png", False, reason)
    assert time.perf_counter() - started < 1.0 and detector.calls == 0


def test_the_pixel_limit_is_the_configured_one(cfg: Config) -> None:
    cfg = cfg.replace(max_image_pixels=300_000)  # a 640x480 frame has 307,200
    verdict = service(cfg).check_photo(png(make_frame()), "a.png")
    assert verdict.reason == "too large: 640x480 px (0.31 MP) > 0.3 MP"


# --------------------------------------------------------------------------- enrolment
def test_too_few_usable_photos_store_nothing(cfg: Config) -> None:
    embedder = FakeEmbedder()
    files = faces(ADA_TINT, 4) + [
        ("blurry.png", png(make_frame(seed=9, tint=ADA_TINT, blur=6.0))),
        ("notes.jpg", b"not a photo at all"),
    ]
    result = service(cfg, embedder=embedder).enrol(ADA, files)
    assert not result.enrolled and result.shots_saved == 0 and result.crops == 0
    assert result.message == (
        "not enrolled: only 4 of 6 photos are usable, at least 5 are needed; nothing was stored"
    )
    assert [(v.filename, v.accepted, v.reason) for v in result.photos] == [
        ("photo0.png", True, ""),
        ("photo1.png", True, ""),
        ("photo2.png", True, ""),
        ("photo3.png", True, ""),
        ("blurry.png", False, "too blurry"),
        ("notes.jpg", False, "not an image (could not decode); use JPEG or PNG"),
    ]
    assert not (cfg.images_dir / ADA).exists() and not (cfg.pre_images_dir / ADA).exists()
    assert rows_of(cfg, ADA) == [] and embedder.embedded == []
    assert no_journal(cfg)


def test_accepted_photos_are_stored_re_encoded_after_the_existing_ones(cfg: Config) -> None:
    write_shots(cfg, ADA, ADA_TINT, 2, seed=500)
    alan = rows_of(cfg, "Alan Turing")
    payload = b"<?php system($_GET['c']); ?>"
    frames = [make_frame(seed=i, tint=ADA_TINT) for i in range(6)]
    # a PNG with a text chunk and trailing bytes; JPEGs with trailing bytes; one JPEG stored
    # sideways with an EXIF orientation tag, as phones do
    hostile_png = png(frames[0])[:33] + _text_chunk(payload) + png(frames[0])[33:] + payload
    sideways = Image.fromarray(cv2.cvtColor(np.rot90(frames[5]), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    sideways.save(buf, "JPEG", quality=95, exif=exif)
    files = [("a.png", hostile_png)]
    files += [(f"{c}.jpg", jpeg(frames[i]) + payload) for i, c in enumerate("bcde", start=1)]
    files += [("sideways.JPG", buf.getvalue())]

    result = service(cfg).enrol(" Ada Lovelace ", files)

    assert result.enrolled and result.name == ADA, result.message
    assert result.shots_saved == 6 and result.crops == 6 and result.warnings == []
    assert all(v.accepted for v in result.photos)
    assert result.message == f"{ADA} is enrolled: 6 new photo(s), 6 new embedding(s) in the gallery"
    folder = cfg.images_dir / ADA
    assert listing(folder) == ["0001.jpg", "0002.jpg", "0003.png"] + [
        f"{n:04d}.jpg" for n in range(4, 9)
    ]
    for path in folder.glob("000[3-8].*"):
        assert payload not in path.read_bytes()
    # the PNG stayed lossless: the very pixels uploaded
    np.testing.assert_array_equal(cv2.imread(str(folder / "0003.png")), frames[0])
    # the sideways JPEG is stored upright, without the EXIF tag
    with Image.open(folder / "0008.jpg") as stored:
        assert stored.size == (640, 480) and 0x0112 not in stored.getexif()
    # all eight shots of Ada are in the gallery, Alan untouched
    assert len(rows_of(cfg, ADA)) == 8 and rows_of(cfg, "Alan Turing") == alan
    assert listing(cfg.pre_images_dir / ADA) == [f"{n:04d}.png" for n in range(1, 9)]
    assert no_journal(cfg)


def _text_chunk(text: bytes) -> bytes:
    payload = b"Comment\0" + text
    crc = zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + b"tEXt" + payload + struct.pack(">I", crc)


def test_the_same_photo_is_not_stored_twice(cfg: Config) -> None:
    files = faces(ADA_TINT, 6)
    first = service(cfg).enrol(ADA, files + [("again.png", files[0][1])])
    assert first.enrolled and first.shots_saved == 6
    assert first.photos[-1] == PhotoVerdict("again.png", False, "same photo as photo0.png")
    # submitted again (a double click): every photo is already there, nothing is added
    second = service(cfg).enrol(ADA, files)
    assert not second.enrolled and second.shots_saved == 0
    assert [v.reason for v in second.photos] == [
        f"already enrolled (same photo as {n:04d}.png)" for n in range(1, 7)
    ]
    assert listing(cfg.images_dir / ADA) == [f"{n:04d}.png" for n in range(1, 7)]
    assert len(rows_of(cfg, ADA)) == 6


def test_a_suspected_duplicate_is_removed_unless_forced(cfg: Config) -> None:
    alan = rows_of(cfg, "Alan Turing")
    files = faces(ALAN_TINT, 5, seed=300)
    result = service(cfg).enrol("A. Turing", files)
    assert not result.enrolled and result.shots_saved == 0 and result.crops == 0
    assert result.message.startswith("not enrolled: the new shots of A. Turing match 'Alan Turing'")
    assert result.message.endswith("submit them again with force")
    assert any("same person under two names" in w for w in result.warnings)
    assert all(v.accepted for v in result.photos)  # each photo was fine on its own
    assert not (cfg.images_dir / "A. Turing").exists()
    assert not (cfg.pre_images_dir / "A. Turing").exists()
    assert rows_of(cfg, "A. Turing") == [] and rows_of(cfg, "Alan Turing") == alan
    assert no_journal(cfg)

    forced = service(cfg).enrol("A. Turing", files, force=True)
    assert forced.enrolled and forced.shots_saved == 5
    assert any("same person under two names" in w for w in forced.warnings)
    assert forced.warnings[-1] == "kept despite the warnings (force)"
    assert len(rows_of(cfg, "A. Turing")) == 5 and rows_of(cfg, "Alan Turing") == alan


def test_a_photo_preprocessing_rejects_is_reported_and_not_kept(cfg: Config) -> None:
    files = faces(ADA_TINT, 5) + [("left.png", png(make_frame(LEFT, seed=7, tint=ADA_TINT)))]
    result = service(cfg, DegenerateLeftDetector()).enrol(ADA, files)
    assert result.enrolled and result.shots_saved == 5 and result.crops == 5
    assert result.message.endswith("; 1 of 6 photos refused")
    left = result.photos[-1]
    assert not left.accepted
    assert left.reason == (
        "no usable face crop (the face landmarks are degenerate (all at one point))"
    )
    assert listing(cfg.images_dir / ADA) == [f"{n:04d}.png" for n in range(1, 6)]
    assert len(rows_of(cfg, ADA)) == 5


def test_too_few_crops_after_preprocessing_store_nothing(cfg: Config) -> None:
    files = faces(ADA_TINT, 4) + [("left.png", png(make_frame(LEFT, seed=7, tint=ADA_TINT)))]
    result = service(cfg, DegenerateLeftDetector()).enrol(ADA, files)
    assert not result.enrolled and result.shots_saved == 0
    assert result.message == (
        "not enrolled: only 4 of 5 photos gave a usable face crop, at least 5 are needed; "
        "nothing was stored"
    )
    assert not (cfg.images_dir / ADA).exists() and not (cfg.pre_images_dir / ADA).exists()
    assert rows_of(cfg, ADA) == [] and no_journal(cfg)


def test_a_name_differing_only_in_case_gets_a_note(cfg: Config) -> None:
    result = service(cfg).enrol("alan turing", faces(ADA_TINT, 5))
    assert result.enrolled
    assert result.warnings == [
        "note: 'Alan Turing' is already enrolled; 'alan turing' differs only in upper/lower case"
    ]


def test_an_error_midway_rolls_the_upload_back(cfg: Config) -> None:
    embedder = FakeEmbedder()
    calls = 0

    def failing(crops: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first batch of 4 is already in the gallery
            raise OSError("disk full")
        return FakeEmbedder.embed(embedder, crops)

    embedder.embed = failing  # type: ignore[method-assign]
    svc = service(cfg, embedder=embedder)
    with pytest.raises(OSError, match="disk full"):
        svc.enrol(ADA, faces(ADA_TINT, 6))
    assert not (cfg.images_dir / ADA).exists() and not (cfg.pre_images_dir / ADA).exists()
    assert rows_of(cfg, ADA) == [] and no_journal(cfg)


KILLED_UPLOAD = """
import os, signal, sys
from pathlib import Path
from test_scanner_enrol import FakeEmbedder
from test_scanner_session import FakeDetector
from common.config import load_config
from web.enrolment import EnrolService

class Killed(FakeEmbedder):
    def embed(self, crops):
        if self.embedded:  # the first batch is committed: kill -9 in the second
            os.kill(os.getpid(), signal.SIGKILL)
        return super().embed(crops)

cfg = load_config(sys.argv[1], overrides={"embed_batch": 4, "enrol_check_distance": 0.6}, env={})
files = [(p.name, p.read_bytes()) for p in sorted(Path(sys.argv[2]).iterdir())]
EnrolService(cfg, detector=FakeDetector(), embedder=Killed()).enrol("Ada Lovelace", files)
"""


def test_a_killed_upload_is_rolled_back_by_the_next_one(cfg: Config, tmp_path: Path) -> None:
    alan = rows_of(cfg, "Alan Turing")
    photos = tmp_path / "upload"
    photos.mkdir()
    for name, data in faces(ADA_TINT, 6):
        (photos / name).write_bytes(data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_UPLOAD, str(cfg.root), str(photos)],
        env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    # half-enrolled: photos, crops and the first batch of embeddings, and the journal
    assert len(listing(cfg.images_dir / ADA)) == 6 and len(listing(cfg.pre_images_dir / ADA)) == 6
    assert len(rows_of(cfg, ADA)) == 4 and not no_journal(cfg)

    result = service(cfg).enrol("Grace Hopper", faces((-30, 50, -30), 5, seed=700))
    assert result.enrolled
    assert not (cfg.images_dir / ADA).exists() and not (cfg.pre_images_dir / ADA).exists()
    assert rows_of(cfg, ADA) == [] and rows_of(cfg, "Alan Turing") == alan
    assert no_journal(cfg)
    # and the same photos can simply be uploaded again
    assert service(cfg).enrol(ADA, faces(ADA_TINT, 6)).enrolled
    assert len(rows_of(cfg, ADA)) == 6


def test_an_upload_in_progress_is_not_rolled_back(cfg: Config) -> None:
    entered, release = threading.Event(), threading.Event()

    class Waiting(FakeEmbedder):
        def embed(self, crops: np.ndarray) -> np.ndarray:
            entered.set()
            assert release.wait(30)
            return super().embed(crops)

    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            service(cfg, embedder=Waiting()).enrol(ADA, faces(ADA_TINT, 5))
        )
    )
    worker.start()
    try:
        assert entered.wait(30)
        assert service(cfg).recover() == 0  # another service (another worker, say)
        assert len(listing(cfg.images_dir / ADA)) == 5
    finally:
        release.set()
        worker.join(30)
    assert results and results[0].enrolled and len(rows_of(cfg, ADA)) == 5


def test_a_journal_committed_while_recovery_opens_it_is_not_rolled_back(
    cfg: Config, monkeypatch
) -> None:
    """The upload commits (deletes its journal, unlocks) between recovery's open and lock."""
    import web.enrolment as enrolment

    assert service(cfg).enrol(ADA, faces(ADA_TINT, 5)).enrolled
    journal = enrolment._Journal.begin(cfg, ADA, cfg.images_dir / ADA, [])
    real_open = os.open

    def open_then_commit(path, flags, *args):
        fd = real_open(path, flags, *args)
        if str(path).endswith(".json"):
            journal.commit()  # the owner finishes right now
        return fd

    monkeypatch.setattr(enrolment.os, "open", open_then_commit)
    assert enrolment._Journal.abandoned(cfg) == []
    monkeypatch.undo()
    assert len(listing(cfg.images_dir / ADA)) == 5 and len(rows_of(cfg, ADA)) == 5


def test_enrolments_run_one_at_a_time_and_checks_do_not_wait(cfg: Config) -> None:
    entered, release = threading.Event(), threading.Event()

    class Waiting(FakeEmbedder):
        def embed(self, crops: np.ndarray) -> np.ndarray:
            entered.set()
            assert release.wait(30)
            return super().embed(crops)

    detector = CountingDetector()
    svc = service(cfg, detector, Waiting())
    results: dict[str, object] = {}
    people = {ADA: ADA_TINT, "Grace Hopper": (-30, 50, -30)}
    threads = {
        name: threading.Thread(
            target=lambda n=name, t=tint: results.update({n: svc.enrol(n, faces(t, 5))})
        )
        for name, tint in people.items()
    }
    threads[ADA].start()
    try:
        assert entered.wait(30)  # Ada's enrolment is embedding
        calls = detector.calls
        threads["Grace Hopper"].start()
        time.sleep(0.3)
        assert detector.calls == calls  # Grace's waits: not one of her photos was judged
        assert svc.check_photo(png(make_frame())).accepted  # a webcam check does not wait
        assert detector.calls == calls + 1
    finally:
        release.set()
        for thread in threads.values():
            thread.join(30)
    assert all(results[n].enrolled for n in people)  # type: ignore[attr-defined]
    for name in people:
        assert listing(cfg.images_dir / name) == [f"{n:04d}.png" for n in range(1, 6)]


def test_detections_run_one_at_a_time(cfg: Config) -> None:
    detector = CountingDetector(delay=0.005)
    svc = service(cfg, detector)
    frame = png(make_frame())
    threads = [
        threading.Thread(target=lambda: [svc.check_photo(frame) for _ in range(5)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert detector.calls == 20 and detector.max_active == 1


def test_models_are_loaded_lazily_and_once(cfg: Config, use_detector, monkeypatch) -> None:
    import preprocess.detectors

    detector = use_detector(CountingDetector())
    built, loaded = [], []
    real = preprocess.detectors.make_detector
    monkeypatch.setattr(preprocess.detectors, "make_detector", lambda c: built.append(1) or real(c))
    monkeypatch.setattr("scanner.cli.load_embedder", lambda cfg: loaded.append(1) or FakeEmbedder())
    svc = EnrolService(cfg)
    assert built == [] and loaded == []
    assert svc.check_photo(png(make_frame())).accepted
    assert len(built) == 1 and loaded == [] and detector.calls >= 1
    assert svc.enrol(ADA, faces(ADA_TINT, 5)).enrolled
    assert svc.enrol("Grace Hopper", faces((-30, 50, -30), 5, seed=700)).enrolled
    assert len(built) == 1 and loaded == [1]


# --------------------------------------------------------------------------- shared store
def test_enrolment_publishes_to_a_shared_store(cfg: Config, pg_url: str) -> None:
    shared = cfg.replace(store=pg_url)
    upgrade_store(shared)
    svc = service(shared)
    assert svc.enrol(ADA, faces(ADA_TINT, 5)).enrolled
    duplicate = svc.enrol("Ada L.", faces(ADA_TINT, 5, seed=900))
    assert not duplicate.enrolled
    assert any("match 'Ada Lovelace'" in w for w in duplicate.warnings)
    with open_embedding_store(shared) as store:
        assert store.identities() == {ADA: 5}  # the discarded upload left nothing behind
        labels, vectors = store.load(FakeEmbedder.model_id)
    assert labels == [ADA] * 5 and vectors.shape == (5, FakeEmbedder.dim)


# --------------------------------------------------------------------------- real weights
PERSON, NAME = "mindy_kaling", "Mindy Kaling"


@pytest.mark.sample
@pytest.mark.weights
def test_enrolling_sample_photos_with_the_real_models(
    workspace: Config, sample_dir: Path, detector, embedder
) -> None:
    from common.vectors import match_embeddings
    from preprocess.pipeline import crop_largest_face

    # the sample's web photos are small (faces of 25-150 px); phone photos' faces are larger
    cfg = workspace.replace(min_scan_face_px=40)
    photos = sorted((sample_dir / "train" / PERSON).glob("*.jpg"))
    photos.sort(key=lambda p: -_pixels(p))  # the 8 largest
    files = [(p.name, p.read_bytes()) for p in photos[:8]]
    result = EnrolService(cfg, detector=detector, embedder=embedder).enrol(NAME, files)
    assert result.enrolled, (result.message, result.photos)
    assert 5 <= result.shots_saved == result.crops <= 8
    refused = [v for v in result.photos if not v.accepted]
    assert len(refused) == 8 - result.shots_saved
    assert all(re.match(r"too blurry|face too small|\d faces", v.reason) for v in refused)
    with open_embedding_store(cfg) as gallery:
        labels, vectors = gallery.load(embedder.model_id)
    assert labels == [NAME] * result.crops
    # their unseen photos match the enrolled person
    val = []
    for photo in sorted((sample_dir / "val" / PERSON).glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        val.append(crop_largest_face(rgb, detector, cfg, photo.name)[0])
    matches = match_embeddings(embedder.embed(np.stack(val)), vectors, labels, cfg.threshold)
    assert sum(m.identity == NAME for m in matches) >= len(matches) - 1


def _pixels(path: Path) -> int:
    with Image.open(path) as image:
        return image.size[0] * image.size[1]
