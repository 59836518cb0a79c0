"""Presentation attacks rendered from genuine footage, for the liveness bench and tests.

A real replay is a picture of a picture: the genuine frame is shown on a device (phone,
tablet, laptop) or printed on paper, and that object is held up to the kiosk camera. This
module renders such scenes from genuine frames, so the gate can be measured without recorded
attacks:

- **screens** (:func:`render_screen`): the frame letterboxed on an emissive display with
  an RGB sub-pixel grid (which aliases into moiré when the camera resamples it), a brighter,
  bluer tone curve, a glare highlight that slides as the device tilts, rolling refresh bands,
  a bezel, and a hand holding the device;
- **prints** (:func:`render_print`): the frame on paper with a white margin, duller ink,
  a halftone screen, bent around a vertical axis (shading follows the curve), held by a hand;
- **poses** (:class:`HandMotion`): the device or sheet moves like a held object: slow drift,
  hand tremor, roll and perspective tilt, all smooth in time and seeded;
- **camera** (:func:`camera`): the kiosk camera re-images the scene: slight defocus, sensor
  noise and JPEG compression.

Everything is deterministic for a given seed. No file is read or written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KINDS = ("phone", "tablet", "laptop", "print")


@dataclass(frozen=True)
class Device:
    """A display or a sheet: outer size in scene pixels and its look."""

    kind: str  # one of KINDS
    width: float  # outer width (scene pixels at the reference pose)
    aspect: float  # outer height / width
    bezel: float  # border width as a share of the outer width
    body: tuple[int, int, int]  # BGR of the bezel (or the paper margin)

    @property
    def height(self) -> float:
        return self.width * self.aspect


DEVICES = {
    "phone": Device("phone", 210.0, 1.9, 0.045, (20, 20, 24)),
    "tablet": Device("tablet", 320.0, 1.33, 0.07, (230, 230, 232)),
    "laptop": Device("laptop", 520.0, 0.66, 0.035, (30, 30, 30)),
    "print": Device("print", 300.0, 1.35, 0.07, (238, 240, 242)),
}


@dataclass
class HandMotion:
    """A held object's pose over time: position, roll, tilt and scale, smooth and seeded.

    ``steady`` scales the tremor and drift (a laptop on a table is nearly still: 0.15).
    """

    seed: int
    center: tuple[float, float] = (320.0, 240.0)
    steady: float = 1.0
    _phases: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._phases = rng.uniform(0, 2 * math.pi, size=(6, 3))
        self._freqs = rng.uniform([0.15, 0.5, 4.0], [0.35, 1.2, 8.0], size=(6, 3))

    def _wave(self, row: int, t: float, amps: tuple[float, float, float]) -> float:
        f, p = self._freqs[row], self._phases[row]
        waves = zip(amps, f, p, strict=True)
        return float(sum(a * math.sin(2 * math.pi * fi * t + pi) for a, fi, pi in waves))

    def pose(self, t: float) -> tuple[float, float, float, float, float, float]:
        """(cx, cy, roll°, tilt_x, tilt_y, scale) at time ``t`` (seconds)."""
        s = self.steady
        cx = self.center[0] + s * self._wave(0, t, (22.0, 8.0, 1.6))
        cy = self.center[1] + s * self._wave(1, t, (14.0, 6.0, 1.4))
        roll = s * self._wave(2, t, (5.0, 2.0, 0.3))
        tilt_x = s * self._wave(3, t, (0.16, 0.05, 0.005))
        tilt_y = s * self._wave(4, t, (0.12, 0.04, 0.005))
        scale = 1.0 + s * self._wave(5, t, (0.06, 0.02, 0.002))
        return cx, cy, roll, tilt_x, tilt_y, scale


def _corners(device: Device, pose: tuple[float, ...]) -> np.ndarray:
    """The device's outer corners in the scene (TL, TR, BR, BL), float32 (4, 2)."""
    cx, cy, roll, tilt_x, tilt_y, scale = pose
    w, h = device.width * scale / 2.0, device.height * scale / 2.0
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64)
    # perspective tilt: the near side grows, the far side shrinks
    depth = 1.0 + tilt_x * pts[:, 0] / w + tilt_y * pts[:, 1] / h
    pts = pts / depth[:, None]
    a = math.radians(roll)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T + [cx, cy]).astype(np.float32)


def _letterbox(content: np.ndarray, width: int, height: int, *, cover: bool) -> np.ndarray:
    """``content`` scaled to cover ``width``×``height`` (cropped, centred), or to fit in it
    with black bars (how a phone in portrait plays a square or landscape video)."""
    import cv2

    h, w = content.shape[:2]
    scale = max(width / w, height / h) if cover else min(width / w, height / h)
    resized = cv2.resize(content, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
    if cover:
        y0 = (resized.shape[0] - height) // 2
        x0 = (resized.shape[1] - width) // 2
        return resized[y0 : y0 + height, x0 : x0 + width]
    out = np.zeros((height, width, 3), np.uint8)
    y0 = (height - resized.shape[0]) // 2
    x0 = (width - resized.shape[1]) // 2
    out[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    return out


def _surface(device: Device, content: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The device's face as a flat image (bezel/margin included), before it is posed, and
    its opacity mask (rounded corners are transparent)."""
    import cv2

    up = 3 if device.kind != "print" else 2  # sub-pixel grid / halftone resolution
    outer_w = int(round(device.width)) * up
    outer_h = int(round(device.height)) * up
    border = int(round(device.bezel * device.width)) * up
    inner_w, inner_h = outer_w - 2 * border, outer_h - 2 * border
    surface = np.empty((outer_h, outer_w, 3), np.uint8)
    surface[:] = device.body
    picture = _letterbox(content, inner_w // up, inner_h // up, cover=device.kind != "phone")
    picture = cv2.resize(picture, (inner_w, inner_h), interpolation=cv2.INTER_NEAREST)
    picture = picture.astype(np.float32) / 255.0
    if device.kind == "print":
        grey = picture.mean(axis=2, keepdims=True)
        picture = 0.75 * picture + 0.25 * grey  # duller ink
        picture = 0.08 + 0.82 * picture  # paper white and ink black are not 0 and 1
        yy, xx = np.mgrid[0:inner_h, 0:inner_w]
        dots = 0.5 + 0.5 * np.cos(2 * math.pi * (xx + yy) / (2.5 * up)) * np.cos(
            2 * math.pi * (xx - yy) / (2.5 * up)
        )
        picture *= (0.93 + 0.07 * dots)[..., None]  # halftone screen
    else:
        picture = np.clip(picture, 0, 1) ** 0.85 * 1.05 + np.array(
            [0.03, 0.0, -0.02]
        )  # emissive, blue
        grid = np.full((up, 3), 0.9, np.float32)
        for i in range(3):
            grid[i % up, i] = 1.1  # R, G, B sub-pixel stripes: a faint grid that aliases
        stripes = np.tile(grid, (inner_w // up + 1, 1))[:inner_w]
        picture *= stripes[None, :, :]
        rows = np.arange(inner_h, dtype=np.float32)
        period = inner_h / 3.7
        band = 1.0 + 0.06 * np.sin(2 * math.pi * (rows / period + 2.3 * t))  # refresh bands
        picture *= band[:, None, None]
    surface[border : border + inner_h, border : border + inner_w] = np.clip(
        picture * 255.0, 0, 255
    ).astype(np.uint8)
    mask = np.full((outer_h, outer_w), 255, np.uint8)
    if device.kind != "print":  # rounded corners
        radius = int(0.12 * outer_w) if device.kind == "phone" else int(0.04 * outer_w)
        mask[:] = 0
        cv2.rectangle(mask, (radius, 0), (outer_w - radius, outer_h), 255, -1)
        cv2.rectangle(mask, (0, radius), (outer_w, outer_h - radius), 255, -1)
        for x, y in ((radius, radius), (outer_w - radius, radius), (radius, outer_h - radius),
                     (outer_w - radius, outer_h - radius)):  # fmt: skip
            cv2.circle(mask, (x, y), radius, 255, -1)
    return surface, mask


def _glare(shape: tuple[int, int], corners: np.ndarray, t: float, seed: int) -> np.ndarray:
    """An additive specular highlight on the device that slides with its tilt (float32 HxW)."""
    import cv2

    h, w = shape
    rng = np.random.default_rng(seed)
    u = 0.3 + 0.4 * (0.5 + 0.5 * math.sin(0.7 * t + rng.uniform(0, 6)))
    v = 0.2 + 0.3 * (0.5 + 0.5 * math.sin(0.5 * t + rng.uniform(0, 6)))
    tl, tr, br, bl = corners.astype(np.float64)
    top = tl + (tr - tl) * u
    bottom = bl + (br - bl) * u
    centre = top + (bottom - top) * v
    axis = float(np.linalg.norm(tr - tl)) * 0.35
    glare = np.zeros((h, w), np.float32)
    cv2.ellipse(glare, (int(centre[0]), int(centre[1])), (int(axis), int(axis * 0.45)),
                35.0, 0, 360, 1.0, -1)  # fmt: skip
    k = int(axis) | 1
    return cv2.GaussianBlur(glare, (k, k), axis / 3.0) * 0.35


def _hand(scene: np.ndarray, corners: np.ndarray, side: int) -> None:
    """Draw a hand (skin-coloured thumb and palm) over the device's lower edge, in place."""
    import cv2

    bl, br = corners[3].astype(np.float64), corners[2].astype(np.float64)
    width = float(np.linalg.norm(br - bl))
    anchor = bl + (br - bl) * (0.2 if side == 0 else 0.8)
    centre = (int(anchor[0]), int(anchor[1] + width * 0.18))
    cv2.ellipse(scene, centre, (int(width * 0.28), int(width * 0.3)), 0, 0, 360,
                (120, 150, 205), -1)  # fmt: skip
    thumb = (int(anchor[0]), int(anchor[1] - width * 0.02))
    cv2.ellipse(scene, thumb, (int(width * 0.06), int(width * 0.13)), 15, 0, 360,
                (110, 140, 200), -1)  # fmt: skip


def background(seed: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A plausible room behind the held device: a lit wall, a door, shelves and noise."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.uniform(120, 200, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 0.75 + 0.35 * (1.0 - np.hypot(xx / w - rng.uniform(0.2, 0.8), yy / h - 0.3))
    scene = (base[None, None, :] * light[..., None]).clip(0, 255).astype(np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        x1, y1 = x0 + int(rng.uniform(60, 250)), y0 + int(rng.uniform(40, 200))
        colour = tuple(int(c) for c in rng.uniform(40, 230, size=3))
        cv2.rectangle(scene, (x0, y0), (x1, y1), colour, -1)
    noise = rng.normal(0, 4, size=scene.shape)
    return np.clip(cv2.GaussianBlur(scene, (0, 0), 2.0) + noise, 0, 255).astype(np.uint8)


def _bend(surface: np.ndarray, amount: float) -> np.ndarray:
    """A sheet bent around a vertical axis: the middle bulges towards the camera, the sides
    are foreshortened and shaded."""
    import cv2

    h, w = surface.shape[:2]
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    # arc-length parametrisation of a circular arc: the sides get compressed
    angle = x * amount
    src_x = (np.sin(angle) / max(math.sin(amount), 1e-6) + 1.0) * 0.5 * (w - 1)
    lift = (np.cos(angle) - math.cos(amount)) / max(1.0 - math.cos(amount), 1e-6)
    map_x = np.tile(src_x, (h, 1)).astype(np.float32)
    centre_y = (h - 1) / 2.0
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_y = (centre_y + (ys - centre_y) * (1.0 - 0.04 * amount * lift[None, :])).astype(np.float32)
    bent = cv2.remap(surface, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    shade = 0.8 + 0.2 * np.cos(angle)
    return np.clip(bent * shade[None, :, None], 0, 255).astype(np.uint8)


def render(
    content: np.ndarray,
    device: Device,
    motion: HandMotion,
    t: float,
    scene: np.ndarray,
    *,
    seed: int = 0,
    hand: bool = True,
    bend: float = 0.0,
) -> np.ndarray:
    """One camera frame: ``content`` (BGR) shown on ``device`` posed by ``motion`` at time
    ``t`` in front of ``scene`` (BGR, the camera's size)."""
    import cv2

    surface, opacity = _surface(device, content, t)
    if bend:
        surface = _bend(surface, bend)
    h, w = scene.shape[:2]
    corners = _corners(device, motion.pose(t))
    sh, sw = surface.shape[:2]
    src = np.array([[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]], np.float32)
    homography = cv2.getPerspectiveTransform(src, corners)
    shrink = math.sqrt(abs(np.linalg.det(homography[:2, :2]))) or 1.0
    if shrink < 0.8:  # the lens blurs detail finer than a camera pixel, but not all of it
        surface = cv2.GaussianBlur(surface, (0, 0), 0.3 / shrink)
    warped = cv2.warpPerspective(surface, homography, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))  # fmt: skip
    mask = cv2.warpPerspective(opacity, homography, (w, h), flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    out = scene.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    if device.kind != "print":
        out += (_glare((h, w), corners, t, seed) * 255.0)[..., None] * alpha
    out = np.clip(out, 0, 255).astype(np.uint8)
    if hand:
        _hand(out, corners, seed % 2)
    return out


def camera(frame: np.ndarray, rng: np.random.Generator, quality: int = 80) -> np.ndarray:
    """The kiosk camera's own look: slight defocus, sensor noise, JPEG compression."""
    import cv2

    blurred = cv2.GaussianBlur(frame, (0, 0), 0.7)
    noisy = np.clip(blurred + rng.normal(0, 2.5, size=frame.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid array
        return noisy
    return cv2.imdecode(data, cv2.IMREAD_COLOR)
