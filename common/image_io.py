"""Reading photos robustly and writing lossless crops.

:func:`read_image` decodes with Pillow, which applies EXIF orientation and handles grayscale,
16-bit, palette, alpha and CMYK (including Adobe inverted CMYK JPEG). Whatever goes wrong
becomes one :class:`ImageReadError` naming the file.

Crops are PNG with one ``tEXt`` chunk of JSON metadata (see :func:`encode_png`), so a crop on
disk says which input and which settings produced it.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from common.errors import UserError

log = logging.getLogger(__name__)

#: File endings read as photos wherever a folder is listed (sources, evaluation, training,
#: shots). Pillow decodes all of them; the Netpbm ones (.pgm: the AT&T face set) included.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".pnm",
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_META_KEYWORD = b"facenet-attendance"
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}


class ImageReadError(UserError, ValueError):
    """A file cannot be read as a photo (missing, empty, corrupt or not an image)."""


def _decode_errors() -> tuple[type[BaseException], ...]:
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


def read_image(path: str | Path) -> np.ndarray:
    """Read the photo at ``path`` as RGB uint8 (H, W, 3), upright per its EXIF orientation."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image ``data`` (as :func:`read_image`); ``name`` is used in messages."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageReadError(f"{name}: the file is empty; replace it with a photo or delete it")
    errors = _decode_errors()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            try:
                image = ImageOps.exif_transpose(opened)
            except errors as exc:
                log.warning("%s: unreadable EXIF orientation ignored (%s)", name, exc)
                image = opened.copy()
            rgb = _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not an image Pillow can read; use JPEG or PNG, or delete the file"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: the image is too large to decode ({exc})") from None
    except errors as exc:
        raise ImageReadError(
            f"{name}: the image is corrupt or truncated ({exc}); retake or delete it"
        ) from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageReadError(f"{name}: the image has no pixels")
    return rgb


def _to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel integer or float array to uint8."""
    if values.dtype == np.uint8:
        return values
    if mode.startswith("I;16"):
        return (values.astype(np.uint32) // 257).astype(np.uint8)
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    bottom = float(finite.min()) if finite.size else 0.0
    if mode == "I" and bottom >= 0 and top <= 255:
        scaled = values
    elif mode == "I" and bottom >= 0 and top <= 65535:
        scaled = values / 257.0  # 16-bit data that Pillow widened to 32-bit
    elif mode == "F" and bottom >= 0 and top <= 1.0:
        scaled = values * 255.0
    else:  # arbitrary range: stretch to 0..255
        span = top - bottom
        scaled = (values - bottom) * (255.0 / span) if span > 0 else np.zeros_like(values)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def _to_rgb(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A Pillow image of any mode as an RGB uint8 array; alpha is composited over white."""
    from PIL import Image

    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        gray = _to_8bit(np.asarray(image), mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


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
        with open(path, "rb") as handle:
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
