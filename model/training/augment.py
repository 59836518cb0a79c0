"""Augmentation of aligned crops for training: :func:`augment_crop` draws a mild random
flip, rotation, scale, brightness, contrast and colour cast from a seeded generator, the kind
of variation two webcam shots of one person show, without moving the face out of alignment.
"""

from __future__ import annotations

import numpy as np


def augment_crop(
    crop: np.ndarray,
    rng: np.random.Generator,
    max_rotation: float = 8.0,
    scale: tuple[float, float] = (0.92, 1.08),
    brightness: float = 0.15,
    contrast: tuple[float, float] = (0.75, 1.25),
    channel_jitter: float = 0.05,
) -> np.ndarray:
    """A randomly flipped, rotated (±``max_rotation``°), scaled, brightened and contrasted copy.

    Brightness and contrast act per image with a small per-channel jitter; prewhitening
    removes a purely global affine change, so what survives is the clipping and the colour
    cast, which is exactly the camera variation worth learning.
    """
    import cv2

    h, w = crop.shape[:2]
    image = crop[:, ::-1] if rng.random() < 0.5 else crop
    angle = rng.uniform(-max_rotation, max_rotation)
    factor = rng.uniform(*scale)
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, factor)
    image = cv2.warpAffine(
        np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )  # fmt: skip
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    gain = rng.uniform(*contrast) * (1.0 + rng.uniform(-channel_jitter, channel_jitter, 3))
    shift = 255.0 * (rng.uniform(-brightness, brightness) + rng.uniform(-0.02, 0.02, 3))
    pixels = (pixels - mean) * gain + mean + shift
    return np.clip(pixels, 0, 255).astype(np.uint8)
