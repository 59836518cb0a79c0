"""read_image on awkward files, and the PNG crops with their metadata."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_preprocess_pipeline import _unblock_fifo_after

from common.config import Config
from common.errors import UserError
from common.image_io import (
    DEFAULT_MAX_PIXELS,
    PNG_SIGNATURE,
    ImageReadError,
    ImageTooLargeError,
    _chunk,
    decode_image,
    encode_png,
    max_file_bytes,
    read_image,
    read_png_metadata,
)

ORIENTATION = 0x0112


def two_halves(width: int = 40, height: int = 20) -> np.ndarray:
    """Left half red, right half blue."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (255, 0, 0)
    rgb[:, width // 2 :] = (0, 0, 255)
    return rgb


def test_plain_rgb_jpeg(tmp_path: Path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(two_halves()).save(path, quality=95)
    rgb = read_image(path)
    assert rgb.shape == (20, 40, 3) and rgb.dtype == np.uint8
    assert rgb[10, 5, 0] > 200 and rgb[10, 5, 2] < 60  # red stays red (RGB order, not BGR)


def test_exif_orientation_is_applied(tmp_path: Path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(two_halves()).save(path, exif=exif, quality=95)
    rgb = read_image(path)
    assert rgb.shape == (40, 20, 3)
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 60  # the red left half is now on top
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 60


def test_grayscale(tmp_path: Path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L").save(path)
    rgb = read_image(path)
    assert rgb.shape == (10, 12, 3)
    assert np.all(rgb == 77)


def test_16_bit_grayscale_png(tmp_path: Path):
    path = tmp_path / "gray16.png"
    values = np.array([[0, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    assert cv2.imwrite(str(path), values)
    rgb = read_image(path)
    assert rgb.shape == (4, 3, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 128, 255])
    assert np.all(rgb[..., 0] == rgb[..., 2])


def test_16_bit_colour_png(tmp_path: Path):
    path = tmp_path / "colour16.png"
    bgr = np.zeros((5, 5, 3), np.uint16)
    bgr[..., 2] = 65535  # red, in OpenCV's BGR order
    bgr[..., 1] = 257 * 100
    assert cv2.imwrite(str(path), bgr)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[2, 2], [255, 100, 0])


def test_float_tiff(tmp_path: Path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((6, 6), 0.5, np.float32), mode="F").save(path)
    assert np.all(np.abs(read_image(path).astype(int) - 128) <= 1)


def test_alpha_is_composited_over_white(tmp_path: Path):
    path = tmp_path / "alpha.png"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (10, 200, 30, 255)  # opaque green
    rgba[:, 4:] = (0, 0, 0, 0)  # fully transparent (black underneath)
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = read_image(path)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[0, 0], [10, 200, 30])
    np.testing.assert_array_equal(rgb[0, 7], [255, 255, 255])


def test_palette_with_transparency(tmp_path: Path):
    path = tmp_path / "palette.gif"
    image = Image.new("P", (6, 6), 0)
    image.putpalette([0, 0, 0, 250, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 3, 6))
    image.save(path, transparency=0)
    rgb = read_image(path)
    np.testing.assert_array_equal(rgb[0, 0], [250, 0, 0])
    np.testing.assert_array_equal(rgb[0, 5], [255, 255, 255])


def test_cmyk_jpeg(tmp_path: Path):
    path = tmp_path / "cmyk.jpg"
    source = np.zeros((16, 16, 3), np.uint8)
    source[:] = (200, 120, 40)
    Image.fromarray(source).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = read_image(path)
    assert rgb.shape == (16, 16, 3)
    assert np.abs(rgb.astype(int) - (200, 120, 40)).max() < 20


def test_truncated_jpeg_is_refused_with_the_file_name(tmp_path: Path):
    full = tmp_path / "full.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(full, quality=95)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"broken\.jpg.*corrupt or truncated") as info:
        read_image(broken)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: the file is empty"):
        read_image(path)


def test_non_image_file(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n", encoding="utf-8")
    with pytest.raises(ImageReadError, match=r"notes\.jpg: not an image"):
        read_image(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageReadError, match=r"nothere\.jpg: cannot read the file"):
        read_image(tmp_path / "nothere.jpg")


def test_png_crop_is_lossless_and_carries_metadata(tmp_path: Path):
    crop = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    meta = {"source_sha256": "ab" * 32, "settings": {"alignment": "landmarks", "size": 160}}
    path = tmp_path / "crop.png"
    path.write_bytes(encode_png(crop, meta))
    assert read_png_metadata(path) == meta
    np.testing.assert_array_equal(read_image(path), crop)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], crop)  # valid for OpenCV too


def test_png_metadata_absent_or_unreadable(tmp_path: Path):
    plain = tmp_path / "plain.png"
    plain.write_bytes(encode_png(np.zeros((4, 4, 3), np.uint8)))
    assert read_png_metadata(plain) is None
    text = tmp_path / "text.png"
    text.write_text("not a png", encoding="utf-8")
    assert read_png_metadata(text) is None
    assert read_png_metadata(tmp_path / "missing.png") is None


# --------------------------------------------------------------------------- pixel limit (#9)


def png_bytes(width: int, height: int, rows: int | None = None, color_type: int = 2) -> bytes:
    """A PNG whose header says ``width`` x ``height``; only ``rows`` rows of zeros are stored
    (all of them by default), compressed as they are made, so a huge image costs little."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\0" + bytes(width * channels)
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(height if rows is None else rows))
    data += packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(12000, 12000, rows=4))  # a few hundred bytes
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: the image is 12000x12000 px") as info:
        read_image(path)
    assert f"max_image_pixels={Config.max_image_pixels}" in str(info.value)
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)
    huge = tmp_path / "huge.png"  # beyond Pillow's own guard too
    huge.write_bytes(png_bytes(20000, 20000, rows=1))
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: the image has 400 MP, more than"):
        read_image(huge)


def test_pixel_limit_is_the_callers_and_defaults_to_the_configuration(tmp_path: Path):
    assert DEFAULT_MAX_PIXELS == Config.max_image_pixels == Config().max_image_pixels
    path = tmp_path / "photo.png"
    Image.fromarray(two_halves(40, 20)).save(path)
    assert read_image(path).shape == (20, 40, 3)
    assert read_image(path, max_pixels=800).shape == (20, 40, 3)  # exactly at the limit
    with pytest.raises(ImageTooLargeError, match=r"40x20 px .* max_image_pixels=799"):
        read_image(path, max_pixels=799)
    with pytest.raises(ImageTooLargeError):
        decode_image(path.read_bytes(), "photo.png", 799)


def test_file_larger_than_any_photo_of_the_limit_is_not_read(tmp_path: Path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(max_file_bytes(Config.max_image_pixels) + 1)  # sparse: costs nothing
    with pytest.raises(ImageReadError, match=r"huge\.jpg: the file is \d+ bytes, more than"):
        read_image(path)


def test_fifo_is_refused_without_being_opened(tmp_path: Path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    done, needed = _unblock_fifo_after(fifo, 10.0)  # frees a blocked reader, and says so
    try:
        with pytest.raises(ImageReadError, match=r"x\.jpg: not a regular file \(a FIFO"):
            read_image(fifo)
        assert read_png_metadata(fifo) is None
    finally:
        done.set()
    assert not needed, "the FIFO was opened"


# VmHWM, not getrusage's ru_maxrss: the latter keeps the high-water mark of the process before
# exec (here: pytest's, which holds TensorFlow), so it would measure the test runner.
PEAK = """
import sys, time
from common.image_io import ImageReadError, read_image
started = time.perf_counter()
try:
    outcome = "decoded %s" % (read_image(sys.argv[1]).shape,)
except ImageReadError as exc:
    outcome = "refused: %s" % exc
with open("/proc/self/status") as status:
    hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("%.0f %.1f %s" % (hwm_kb / 1024, time.perf_counter() - started, outcome))
"""


def peak_rss_mb(path: Path) -> tuple[float, str]:
    """Peak resident memory (MB) of a fresh process that reads ``path`` (and the outcome)."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    peak, _, outcome = proc.stdout.strip().split(" ", 2)
    return float(peak), outcome


def test_decoding_stays_under_1_gb_for_a_12000x12000_png_and_the_largest_allowed(tmp_path):
    """A real 12000x12000 PNG (it peaked at 2-4 GB) is refused unread; an RGBA PNG just under
    the default limit (the costliest mode: alpha is composited) decodes in well under 1 GB."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(12000, 12000))
    peak, outcome = peak_rss_mb(bomb)
    print(f"12000x12000 RGB PNG: peak {peak:.0f} MB, {outcome}")
    assert outcome.startswith("refused:") and "12000x12000" in outcome
    assert peak < 1024
    side = int(Config.max_image_pixels**0.5)
    largest = tmp_path / "largest.png"
    largest.write_bytes(png_bytes(side, side, color_type=6))
    peak, outcome = peak_rss_mb(largest)
    print(f"{side}x{side} RGBA PNG: peak {peak:.0f} MB, {outcome}")
    assert outcome == f"decoded ({side}, {side}, 3)"
    assert peak < 1024


def test_postscript_is_refused_before_any_decoder_runs(monkeypatch) -> None:
    """Pillow would hand EPS to Ghostscript: only the photo formats are ever opened."""
    from PIL import EpsImagePlugin

    from common.image_io import ImageReadError, decode_image

    calls: list[str] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append("gs"))
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs", raising=False)
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
           b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")  # fmt: skip
    with pytest.raises(ImageReadError, match="not an image this program reads"):
        decode_image(eps, "drawing.eps")
    assert calls == []
