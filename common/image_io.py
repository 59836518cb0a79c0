"""Reading photos robustly and writing lossless crops.

:func:`read_image` decodes with Pillow, which applies EXIF orientation and handles grayscale,
16-bit, palette, alpha and CMYK (including Adobe inverted CMYK JPEG). Whatever goes wrong
becomes one :class:`ImageReadError` naming the file.

Bounded memory: an image with more than ``max_pixels`` pixels (``max_image_pixels`` of
:class:`~common.config.Config`, also the default here) is refused from its header, before any
pixel is decoded, and a file larger than :func:`max_file_bytes` is not read at all. Only
regular files are read (a FIFO or device is refused, never opened; see :mod:`common.fsutil`).

Crops are PNG with one ``tEXt`` chunk of JSON metadata (see :func:`encode_png`), so a crop on
disk says which input and which settings produced it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import FileTooLarge, NotRegularFile, open_regular, read_regular_bytes

log = logging.getLogger(__name__)

#: File endings read as photos wherever a folder is listed (sources, evaluation, training,
#: shots). Pillow decodes all of them; the Netpbm ones (.pgm: the AT&T face set) included.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".pnm",
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_META_KEYWORD = b"facenet-attendance"
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
#: The decoding pixel limit callers get when they pass none: the configuration's default.
DEFAULT_MAX_PIXELS: int = Config.max_image_pixels
#: Bytes an encoded file may take per pixel allowed: 16-bit RGBA stored uncompressed.
_BYTES_PER_PIXEL = 8
#: ... plus this much for headers, metadata and embedded previews.
_FILE_SLACK = 16 << 20
#: Rows converted at a time (see :func:`_strips`).
_STRIP_ROWS = 256


class ImageReadError(UserError, ValueError):
    """A file cannot be read as a photo (missing, empty, corrupt or not an image)."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than the limit (``max_image_pixels``); it was not decoded."""


def decode_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # What Pillow's decoders raise on malformed input (several plugins use SyntaxError,
    # struct.error or IndexError for bad headers), plus its decompression-bomb guard.
    return (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        IndexError,
        Image.DecompressionBombError,
    )


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest file read as a photo of at most ``max_pixels`` pixels.

    No encoding of such a photo is larger (16-bit RGBA, uncompressed, plus metadata), so a
    larger file is refused unread instead of being loaded into memory.
    """
    return _BYTES_PER_PIXEL * int(max_pixels) + _FILE_SLACK


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read the photo at ``path`` as RGB uint8 (H, W, 3), upright per its EXIF orientation.

    Only a regular file is read; more than ``max_pixels`` pixels is refused before decoding.
    """
    path = Path(path)
    data = read_photo_bytes(path, max_pixels)
    return decode_image(data, str(path), max_pixels)


def read_photo_bytes(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = ""
) -> bytes:
    """The bytes of the photo file ``path``: a regular file of at most :func:`max_file_bytes`.

    A FIFO, socket, device or folder is refused without being opened. Failures raise one
    :class:`ImageReadError` naming ``name`` (default: the path).
    """
    name = name or str(path)
    try:
        return read_regular_bytes(path, max_file_bytes(max_pixels))
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL in the path
        raise read_error(name, exc, max_pixels) from None


def read_error(name: str, exc: OSError | ValueError, max_pixels: int) -> ImageReadError:
    """The one-line :class:`ImageReadError` for photo ``name`` that could not be read."""
    if isinstance(exc, NotRegularFile):
        return ImageReadError(f"{name}: {exc.strerror}; only photo files are read")
    if isinstance(exc, FileTooLarge):
        return ImageReadError(
            f"{name}: {exc.strerror} for a photo of at most max_image_pixels={max_pixels}; "
            "use a smaller photo"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ImageReadError(f"{name}: cannot read the file ({reason})")


def _quiet_bomb_warning() -> None:
    """Silence Pillow's DecompressionBombWarning: ``max_pixels`` is checked instead.

    (Re-added on each call, which replaces the identical filter: a test harness may reset
    the filters between calls.)
    """
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


#: What photos may be (checked from the header): the raster formats of cameras, phones and
#: screenshots. Anything else is refused before Pillow picks a decoder for it: Pillow would
#: otherwise hand an EPS or PostScript file to Ghostscript, a program we never want to run
#: on a dropped-in or uploaded file.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "MPO")


def allowed_formats() -> list[str]:
    """Pillow's names of :data:`IMAGE_FORMATS` this Pillow build can read."""
    from PIL import Image

    Image.init()
    return [name for name in IMAGE_FORMATS if name in Image.OPEN]  # e.g. a build without WebP


def decode_image(
    data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image ``data`` (as :func:`read_image`); ``name`` is used in messages.

    The size is read from the header first: more than ``max_pixels`` pixels is refused
    before decoding, so a pixel bomb (a small file claiming a huge image) costs nothing.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageReadError(f"{name}: the file is empty; replace it with a photo or delete it")
    _quiet_bomb_warning()
    errors = decode_errors()
    try:
        with Image.open(io.BytesIO(data), formats=allowed_formats()) as opened:
            _check_pixels(opened.size, max_pixels, name)
            opened.load()
            try:
                ImageOps.exif_transpose(opened, in_place=True)  # no second copy in memory
            except errors as exc:
                log.warning("%s: unreadable EXIF orientation ignored (%s)", name, exc)
            rgb = _to_rgb(opened)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not an image this program reads (JPEG, PNG, WebP, BMP, GIF, TIFF, PPM); "
            "convert it or delete the file"
        ) from None
    except Image.DecompressionBombError as exc:  # beyond Pillow's own limit (~179 MP)
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "too many pixels"
        raise ImageTooLargeError(
            f"{name}: the image has {size}, more than max_image_pixels={max_pixels} "
            f"({max_pixels / 1e6:g} MP); downscale the photo"
        ) from None
    except MemoryError:
        raise ImageReadError(
            f"{name}: not enough memory to decode the image; downscale the photo"
        ) from None
    except errors as exc:
        raise ImageReadError(
            f"{name}: the image is corrupt or truncated ({exc}); retake or delete it"
        ) from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageReadError(f"{name}: the image has no pixels")
    return rgb


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    """Refuse an image of ``size`` (width, height, from its header) above ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the image is {width}x{height} px ({width * height / 1e6:.0f} MP), more "
            f"than max_image_pixels={max_pixels} ({max_pixels / 1e6:g} MP); downscale the photo "
            "or raise max_image_pixels"
        )


def _strips(image) -> Iterator[tuple[slice, Any]]:  # type: ignore[no-untyped-def]
    """``(rows, strip)`` for consecutive strips of :data:`_STRIP_ROWS` rows of a Pillow image.

    Converting strip by strip keeps a 50 MP photo's peak memory at the decoded image plus the
    result (no whole-image converted copies).
    """
    width, height = image.size
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        yield slice(top, bottom), image.crop((0, top, width, bottom))


def _gray_scaler(image) -> Callable[[np.ndarray], np.ndarray]:  # type: ignore[no-untyped-def]
    """How to scale single-channel integer or float pixels of ``image`` (mode I*, F) to 0..255.

    The range is measured over the whole image (finite values only), strip by strip.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        return lambda values: values.astype(np.uint32) // 257
    bottom, top = math.inf, -math.inf
    for _, strip in _strips(image):
        values = np.asarray(strip)
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
        if finite.size:
            bottom = min(bottom, float(finite.min()))
            top = max(top, float(finite.max()))
    if bottom > top:  # no finite value at all
        bottom = top = 0.0
    if mode == "I" and bottom >= 0 and top <= 255:
        return lambda values: values.astype(np.float64)
    if mode == "I" and bottom >= 0 and top <= 65535:
        return lambda values: values / 257.0  # 16-bit data that Pillow widened to 32-bit
    if mode == "F" and bottom >= 0 and top <= 1.0:
        return lambda values: values.astype(np.float64) * 255.0
    span = top - bottom  # arbitrary range: stretch to 0..255
    if span > 0:
        return lambda values: (values.astype(np.float64) - bottom) * (255.0 / span)
    return lambda values: np.zeros(values.shape, np.float64)


def _to_rgb(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A Pillow image of any mode as an RGB uint8 array; alpha is composited over white."""
    from PIL import Image

    mode = image.mode
    width, height = image.size
    out = np.empty((height, width, 3), np.uint8)
    if mode.startswith("I") or mode == "F":
        scale = _gray_scaler(image)
        for rows, strip in _strips(image):
            values = np.asarray(strip)
            if values.dtype != np.uint8:
                scaled = scale(values)
                values = np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
            out[rows] = values[:, :, None]
        return out
    alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info)
    for rows, strip in _strips(image):
        if alpha:
            rgba = strip if strip.mode == "RGBA" else strip.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            strip = Image.alpha_composite(white, rgba).convert("RGB")
        elif strip.mode != "RGB":
            strip = strip.convert("RGB")
        out[rows] = np.asarray(strip, dtype=np.uint8)
    return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray, metadata: dict[str, object] | None = None) -> bytes:
    """Lossless PNG bytes of RGB uint8 ``rgb``, with ``metadata`` as a JSON ``tEXt`` chunk."""
    import cv2

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("OpenCV could not encode the crop as PNG")
    png = buffer.tobytes()
    if metadata is None:
        return png
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=True).encode("latin-1")
    ihdr_end = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR header, IHDR data, CRC
    if png[12:16] != b"IHDR":
        raise OSError("OpenCV wrote a PNG without a leading IHDR chunk")
    return png[:ihdr_end] + _chunk(b"tEXt", _META_KEYWORD + b"\0" + text) + png[ihdr_end:]


def read_png_metadata(path: str | Path) -> dict[str, object] | None:
    """The metadata :func:`encode_png` stored in the PNG at ``path``; None if absent/unreadable.

    Reads only the chunks before the image data, so it is cheap.
    """
    try:
        with open_regular(path) as handle:  # never a FIFO or device
            if handle.read(8) != PNG_SIGNATURE:
                return None
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    return None
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return None
                payload = handle.read(length)
                handle.read(4)  # CRC
                if kind == b"tEXt" and payload.startswith(_META_KEYWORD + b"\0"):
                    value = json.loads(payload[len(_META_KEYWORD) + 1 :].decode("latin-1"))
                    return value if isinstance(value, dict) else None
    except (OSError, struct.error, ValueError):
        return None
