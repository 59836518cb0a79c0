"""Triplet-loss fine-tuning of FaceNet that never ships a worse model.

Pipeline of :func:`run_training`:

1. read the aligned crops of ``pre_images/<Name>/`` (:func:`load_crops`);
2. split them once and for all (:func:`update_split`, ``<models_dir>/split.json``): whole
   identities and part of every other identity's images are held out; the held-out images
   (never trained on) form the evaluation's gallery and probes;
3. cut the network at ``trainable_from`` (:func:`split_model`): the frozen front is run once
   per image and augmentation variant (:class:`FeatureSource`, an in-memory cache), so an
   epoch only runs the trainable head, a sub-model built from the same layers;
4. evaluate on the held-out split with :func:`model.metrics.evaluate_embeddings` (the figures
   of ``attendance evaluate``), train with online triplet mining (:mod:`model.mining`),
   keep the best checkpoint, evaluate again;
5. :func:`decide`: save a new version (:mod:`model.versions`) and make it active only if the
   held-out metrics improve; ``force`` saves anyway (without activating it).

BatchNorm layers stay frozen (inference statistics): batches of P×K = 16 faces are far too
small to re-estimate them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import atomic_write_text, sha256_bytes, sha256_file
from common.names import InvalidName, list_identities, validate_name
from common.vectors import l2_normalize
from model.embedder import prewhiten
from model.mining import MINING_MODES, batch_all_loss, mine, triplet_loss

log = logging.getLogger(__name__)

SPLIT_NAME = "split.json"
SPLIT_FORMAT = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRAIN, HOLDOUT = "train", "holdout"  # identity roles ("train" is also an image role)
GALLERY, PROBE = "gallery", "probe"  # roles of held-out images in the evaluation
#: Held-out figures that decide acceptance: (key, +1 if higher is better else -1).
HEADLINE_METRICS = (("tar_at_far_1e-3", 1), ("open_set_false_accept", -1), ("rank1", 1))
#: Consulted only when every headline metric ties.
TIEBREAK_METRICS = (("auc", 1), ("eer", -1))
_TOLERANCE = 1e-9
CHECKPOINTS = ("best", "last")


class TrainError(UserError):
    """Training cannot run on this data or with these settings."""


# --- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """Every knob of a training run (defaults from :class:`~common.config.Config`)."""

    identities: int = 4  # P identities per batch
    images: int = 4  # K images per identity
    margin: float = 0.2
    epochs: int = 10
    learning_rate: float = 1e-4
    trainable_from: str = "Block8_1"
    seed: int = 0
    mining: str = "semi-hard"
    augment: int = 4  # augmented variants per training image (plus the original and its mirror)
    cache_features: bool = True
    checkpoint: str = "best"  # "best" (lowest monitor loss) or "last" epoch's weights
    force: bool = False
    activate: bool = True
    holdout_image_fraction: float = 0.3
    holdout_identity_fraction: float = 0.2
    min_gain: float = 0.005  # smallest held-out gain that counts as an improvement
    batches_per_epoch: int | None = None  # default: enough to see every training image once
    batch_size: int = 32  # inference batch for the frozen part and evaluation
    flip_average: bool = True
    match_mode: str = "nearest"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mining not in MINING_MODES:
            raise TrainError(f"--mining {self.mining!r} is not one of {', '.join(MINING_MODES)}")
        if self.checkpoint not in CHECKPOINTS:
            raise TrainError(
                f"--checkpoint {self.checkpoint!r} is not one of {', '.join(CHECKPOINTS)}"
            )
        if self.augment < 0 or self.augment > 64:
            raise TrainError(f"--augment {self.augment} must be within 0..64")
        if not 0.0 <= self.holdout_image_fraction < 1.0:
            raise TrainError(
                f"holdout_image_fraction={self.holdout_image_fraction} must be within [0, 1)"
            )
        if not 0.0 <= self.holdout_identity_fraction < 1.0:
            raise TrainError(
                f"holdout_identity_fraction={self.holdout_identity_fraction} must be within [0, 1)"
            )
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise TrainError(f"batches_per_epoch={self.batches_per_epoch} must be at least 1")

    @classmethod
    def from_config(cls, cfg: Config, **changes: Any) -> TrainOptions:
        """Options from the configuration, with ``changes`` (None values ignored) on top."""
        base = cls(
            identities=cfg.train_identities,
            images=cfg.train_images,
            margin=cfg.train_margin,
            epochs=cfg.train_epochs,
            learning_rate=cfg.learning_rate,
            trainable_from=cfg.trainable_from,
            seed=cfg.seed,
            batch_size=cfg.embed_batch,
            flip_average=cfg.flip_average,
            match_mode=cfg.match_mode,
            min_gain=cfg.train_min_gain,
        )
        changes = {k: v for k, v in changes.items() if v is not None}
        return cls(**{**asdict(base), **changes})

    def hyperparameters(self) -> dict[str, Any]:
        """What is recorded in a version's metadata."""
        keep = (
            "identities", "images", "margin", "epochs", "learning_rate", "trainable_from",
            "seed", "mining", "augment", "checkpoint", "cache_features", "holdout_image_fraction",
            "holdout_identity_fraction", "batches_per_epoch", "flip_average", "match_mode",
            "min_gain",
        )  # fmt: skip
        params = {k: getattr(self, k) for k in keep}
        params.update(optimizer="adam", batchnorm="frozen", distance="squared euclidean")
        return params


# --- data --------------------------------------------------------------------------------


@dataclass
class CropSet:
    """Aligned crops of ``pre_images/``: ``labels[i]`` owns ``crops[i]`` read from ``paths[i]``."""

    labels: list[str]
    paths: list[str]  # relative to pre_images/, POSIX style: "Name/0001.png"
    sha256: list[str]
    crops: np.ndarray  # uint8 (N, S, S, 3)

    def __len__(self) -> int:
        return len(self.labels)


def load_crops(pre_images_dir: Path, size: int = 160) -> CropSet:
    """Read every ``<Name>/*.png|jpg`` crop; files that are unreadable or not ``size``×``size``
    are skipped with a warning naming them (run ``attendance preprocess`` to redo them)."""
    from common.image_io import ImageReadError, decode_image

    root = Path(pre_images_dir)
    if not root.is_dir():
        raise TrainError(f"{root} does not exist; run `attendance preprocess` first")
    labels: list[str] = []
    paths: list[str] = []
    hashes: list[str] = []
    crops: list[np.ndarray] = []
    for folder in list_identities(root):
        try:
            name = validate_name(folder)
        except InvalidName as exc:
            log.warning("skipping folder %s: %s", root / folder, exc)
            continue
        if name != folder:
            log.warning("skipping folder %s: its name is not in canonical form", root / folder)
            continue
        files = sorted(
            p
            for p in (root / folder).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for path in files:
            try:
                data = path.read_bytes()
                rgb = decode_image(data, str(path))
            except OSError as exc:
                log.warning("skipping %s: cannot read it (%s)", path, exc)
                continue
            except ImageReadError as exc:
                log.warning("skipping %s", exc)
                continue
            if rgb.shape != (size, size, 3):
                log.warning(
                    "skipping %s: %dx%d is not an aligned %dx%d crop; re-run `attendance "
                    "preprocess`", path, rgb.shape[1], rgb.shape[0], size, size,
                )  # fmt: skip
                continue
            labels.append(name)
            paths.append(f"{folder}/{path.name}")
            hashes.append(sha256_bytes(data))
            crops.append(rgb)
    array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return CropSet(labels, paths, hashes, array)


def data_hash(crops: CropSet, rows: np.ndarray) -> str:
    """sha256 over the (path, content hash) of ``rows``: identifies the training data."""
    lines = sorted(f"{crops.paths[i]}\t{crops.sha256[i]}" for i in rows)
    return sha256_bytes("\n".join(lines).encode("utf-8"))


# --- the fixed split ---------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Who is trained on and which images are held out; stored as JSON and kept fixed.

    Identity roles: ``train`` or ``holdout`` (never trained on). Image roles: ``train``
    (training identities only), or held out as an evaluation ``gallery`` or ``probe`` image.
    Evaluation uses held-out images only, so no figure is inflated by trained-on images.
    """

    identities: dict[str, str]  # name -> "train" | "holdout"
    images: dict[str, str]  # "Name/file.png" -> "train" | "gallery" | "probe"
    seed: int
    holdout_image_fraction: float
    holdout_identity_fraction: float

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "seed": self.seed,
            "holdout_image_fraction": self.holdout_image_fraction,
            "holdout_identity_fraction": self.holdout_identity_fraction,
            "identities": dict(sorted(self.identities.items())),
            "images": dict(sorted(self.images.items())),
        }

    def rows(self, crops: CropSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(train, gallery, probe)`` row indices of ``crops`` by image role."""
        found: dict[str, list[int]] = {TRAIN: [], GALLERY: [], PROBE: []}
        for i, rel in enumerate(crops.paths):
            found[self.images[rel]].append(i)
        return tuple(np.asarray(found[r], int) for r in (TRAIN, GALLERY, PROBE))  # type: ignore[return-value]


def unit_hash(seed: int, kind: str, key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key``."""
    digest = hashlib.sha256(f"{seed}:{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose_holdout_identities(names: list[str], fraction: float, seed: int) -> set[str]:
    """For a new split: ``round(fraction * n)`` identities (at least 1 when n >= 3), always
    leaving at least two identities to train on."""
    if len(names) < 3 or fraction <= 0:
        return set()
    count = min(max(1, round(fraction * len(names))), len(names) - 2)
    order = sorted(names, key=lambda n: unit_hash(seed, "identity", n))
    return set(order[:count])


def assign_images(files: list[str], fraction: float, seed: int, role: str) -> dict[str, str]:
    """Image roles for an identity new to the split.

    A held-out identity's images are halved into evaluation gallery and probes. A training
    identity holds out ``round(fraction * n)`` images (at least 2 from 4 images on, 1 from 3;
    always keeping 2 to train on), halved the same way (probes get the odd one).
    """
    order = sorted(files, key=lambda f: unit_hash(seed, "image", f))
    n = len(order)
    if role == HOLDOUT:
        cut = max(1, n // 2)
        return {f: GALLERY if k < cut else PROBE for k, f in enumerate(order)}
    held = 0
    if fraction > 0 and n >= 3:
        held = min(max(2 if n >= 4 else 1, round(fraction * n)), n - 2)
    roles = {f: TRAIN for f in order[held:]}
    roles.update({f: GALLERY if k < held // 2 else PROBE for k, f in enumerate(order[:held])})
    return roles


def assign_new_image(file: str, fraction: float, seed: int, role: str) -> str:
    """The role of an image added to an identity already in the split (stable hash rule)."""
    if role == TRAIN and unit_hash(seed, "image", file) >= fraction:
        return TRAIN
    return GALLERY if unit_hash(seed, "eval", file) < 0.5 else PROBE


def _read_split(path: Path) -> Split:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SPLIT_FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        identities = {str(k): str(v) for k, v in data["identities"].items()}
        images = {str(k): str(v) for k, v in data["images"].items()}
        if not set(identities.values()) <= {TRAIN, HOLDOUT}:
            raise ValueError("unknown identity roles")
        for rel, role in images.items():
            owner = identities.get(rel.split("/", 1)[0])
            if role not in (TRAIN, GALLERY, PROBE) or owner is None:
                raise ValueError(f"bad entry {rel!r}: {role!r}")
            if role == TRAIN and owner == HOLDOUT:
                raise ValueError(f"{rel!r} is a training image of a held-out identity")
        return Split(
            identities,
            images,
            int(data["seed"]),
            float(data["holdout_image_fraction"]),
            float(data["holdout_identity_fraction"]),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrainError(
            f"{path}: unreadable split ({exc}); restore it, or delete it to draw a new split "
            "(metrics of older versions then stop being comparable)"
        ) from None


def update_split(
    path: Path,
    crops: CropSet,
    seed: int = 0,
    holdout_image_fraction: float = 0.3,
    holdout_identity_fraction: float = 0.2,
) -> Split:
    """Load the stored split (creating it on first use) and extend it to new crops.

    Stored assignments never change (the stored seed and fractions win over the arguments).
    A first split holds out ``round(fraction * n)`` identities and images per identity;
    identities or images added later are assigned by a stable hash of their name. The file
    is rewritten (atomically) only when something was added.
    """
    stored = path.exists()
    if stored:
        split = _read_split(path)
        identities, images = dict(split.identities), dict(split.images)
        seed, holdout_image_fraction = split.seed, split.holdout_image_fraction
        holdout_identity_fraction = split.holdout_identity_fraction
    else:
        identities, images = {}, {}
    by_identity: dict[str, list[str]] = {}
    for name, rel in zip(crops.labels, crops.paths, strict=True):
        by_identity.setdefault(name, []).append(rel)
    new_names = [n for n in by_identity if n not in identities]
    changed = not stored
    if new_names and identities:  # extending a stored split: a stable per-name rule
        for name in new_names:
            held = unit_hash(seed, "identity", name) < holdout_identity_fraction
            identities[name] = HOLDOUT if held else TRAIN
    elif new_names:
        held = choose_holdout_identities(new_names, holdout_identity_fraction, seed)
        identities.update({n: HOLDOUT if n in held else TRAIN for n in new_names})
    for name, files in by_identity.items():
        new_files = [f for f in files if f not in images]
        if not new_files:
            continue
        changed = True
        role = identities[name]
        if len(new_files) == len(files):
            images.update(assign_images(files, holdout_image_fraction, seed, role))
        else:
            images.update(
                {f: assign_new_image(f, holdout_image_fraction, seed, role) for f in new_files}
            )
    split = Split(identities, images, seed, holdout_image_fraction, holdout_identity_fraction)
    if changed:
        atomic_write_text(path, json.dumps(split.to_json(), indent=2) + "\n")
        log.info("split saved to %s", path)
    return split


# --- augmentation ------------------------------------------------------------------------


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


# --- cutting the network -----------------------------------------------------------------


def _block_prefix(name: str) -> str:
    """The block a layer belongs to: "Block8_1_Branch_0_..." -> "Block8_1"."""
    parts = name.split("_")
    if parts[0] in ("Block35", "Block17", "Block8") and len(parts) > 1:
        return "_".join(parts[:2])
    if parts[0] in ("Mixed", "Conv2d", "MaxPool") and len(parts) > 1:
        return "_".join(parts[:3]) if parts[0] != "Mixed" else "_".join(parts[:2])
    if name.startswith("Bottleneck"):
        return "Bottleneck"
    return name


def trainable_points(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Names ``trainable_from`` accepts, in network order (first layer of each block)."""
    seen: list[str] = []
    for layer in model.layers[1:]:
        prefix = _block_prefix(layer.name)
        if prefix not in seen:
            seen.append(prefix)
    return seen


def describe_points(points: list[str]) -> str:
    """``Conv2d_1a_3x3, ..., Block35_1..5, Mixed_6a, ...``: runs of blocks collapsed."""
    parts: list[str] = []
    runs: dict[str, list[str]] = {}
    for point in points:
        family, _, index = point.rpartition("_")
        if family in ("Block35", "Block17", "Block8") and index.isdigit():
            if family not in runs:
                runs[family] = []
                parts.append(family)
            runs[family].append(index)
        else:
            parts.append(point)
    return ", ".join(
        f"{p}_{runs[p][0]}..{runs[p][-1]}"
        if p in runs and len(runs[p]) > 1
        else (f"{p}_{runs[p][0]}" if p in runs else p)
        for p in parts
    )


def _tensor_ids(tensors) -> set[int]:  # type: ignore[no-untyped-def]
    import keras

    return {id(t) for t in keras.tree.flatten(tensors)}


def split_model(model, trainable_from: str):  # type: ignore[no-untyped-def]
    """``(frozen, head)``: two sub-models sharing ``model``'s layers, cut where the block
    ``trainable_from`` starts. ``frozen`` is None when everything is trainable.

    The head is built from the same layer objects (names kept), so training it trains
    ``model`` and the weights save by name.
    """
    import keras

    members = [
        layer
        for layer in model.layers[1:]
        if layer.name == trainable_from or layer.name.startswith(trainable_from + "_")
    ]
    if not members:
        raise TrainError(
            f"trainable_from={trainable_from!r} names no block of the network; choose one of "
            f"{describe_points(trainable_points(model))}"
        )
    produced = set().union(*(_tensor_ids(layer.output) for layer in members))
    external = {}
    for layer in members:
        for tensor in keras.tree.flatten(layer.input):
            if id(tensor) not in produced:
                external[id(tensor)] = tensor
    if len(external) != 1:
        raise TrainError(
            f"trainable_from={trainable_from!r} does not start a block with one input; "
            f"choose one of {describe_points(trainable_points(model))}"
        )
    boundary = next(iter(external.values()))
    if id(boundary) in _tensor_ids(model.inputs):
        return None, model
    try:
        frozen = keras.Model(model.inputs[0], boundary, name="frozen_front")
        head = keras.Model(boundary, model.outputs[0], name="trainable_head")
    except ValueError as exc:
        raise TrainError(f"cannot cut the network at {trainable_from!r}: {exc}") from None
    return frozen, head


def freeze_batchnorm(model) -> None:  # type: ignore[no-untyped-def]
    """Put every BatchNormalization layer of ``model`` in inference mode, untrainable."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def reseed_layers(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Restart the random streams of stochastic layers (Dropout) from ``seed``.

    Keras layers keep their generator state across calls, so without this a second run in
    the same process would draw different dropout masks.
    """
    for layer in model.layers:
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            state = generator.state
            state.assign(np.asarray([seed + 1, 0], dtype=state.dtype))


# --- features ----------------------------------------------------------------------------


class FeatureSource:
    """Inputs of the trainable head for (row, variant) pairs.

    Variant 0 is the crop, 1 its mirror image, 2.. random augmentations. With ``cache=True``
    the frozen front runs once per image and variant (augmentations drawn once, with the
    seeded generator) and the results stay in memory; otherwise every request runs the front
    again, with fresh augmentations.
    """

    def __init__(
        self,
        frozen,  # type: ignore[no-untyped-def]
        crops: np.ndarray,
        train_rows: np.ndarray,
        augment: int,
        rng: np.random.Generator,
        cache: bool = True,
        batch_size: int = 32,
        progress: bool = False,
    ) -> None:
        import tensorflow as tf

        self.crops = crops
        self.augment = int(augment)
        self.variants = 2 + self.augment
        self.rng = rng
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        size = crops.shape[1]
        if frozen is None:
            self._front = None
            self.feature_shape: tuple[int, ...] = (size, size, 3)
        else:
            spec = tf.TensorSpec((None, size, size, 3), tf.float32)
            self._front = tf.function(lambda x: frozen(x, training=False), input_signature=[spec])
            self.feature_shape = tuple(int(d) for d in frozen.output.shape[1:])
        self._fixed: np.ndarray | None = None  # (N, 2, *shape): crop and mirror
        self._augmented: np.ndarray | None = None  # (len(train_rows), augment, *shape)
        self._aug_pos = np.full(len(crops), -1, dtype=np.int64)
        self._aug_pos[train_rows] = np.arange(len(train_rows))
        self.seconds = 0.0
        if cache:
            self._fill(train_rows)

    def _run_front(self, images: np.ndarray) -> np.ndarray:
        """Front outputs of uint8 images, in inference batches."""
        out = np.empty((len(images), *self.feature_shape), np.float32)
        for start in range(0, len(images), self.batch_size):
            x = prewhiten(images[start : start + self.batch_size])
            out[start : start + len(x)] = x if self._front is None else self._front(x).numpy()
        return out

    def _variant_image(self, row: int, variant: int) -> np.ndarray:
        crop = self.crops[row]
        if variant == 0:
            return crop
        if variant == 1:
            return crop[:, ::-1]
        return augment_crop(crop, self.rng)

    def _fill(self, train_rows: np.ndarray) -> None:
        from tqdm import tqdm

        started = time.perf_counter()
        n = len(self.crops)
        fixed = np.empty((n, 2, *self.feature_shape), np.float32)
        augmented = np.empty((len(train_rows), self.augment, *self.feature_shape), np.float32)
        jobs = [(r, v) for r in range(n) for v in (0, 1)]
        jobs += [(int(r), v) for r in train_rows for v in range(2, self.variants)]
        step = max(self.batch_size, 1)
        with tqdm(
            total=len(jobs), desc="frozen features", unit="img", disable=not self.progress
        ) as bar:
            for start in range(0, len(jobs), step):
                chunk = jobs[start : start + step]
                images = np.stack([self._variant_image(r, v) for r, v in chunk])
                feats = self._run_front(images)
                for (r, v), f in zip(chunk, feats, strict=True):
                    if v < 2:
                        fixed[r, v] = f
                    else:
                        augmented[self._aug_pos[r], v - 2] = f
                bar.update(len(chunk))
        self._fixed, self._augmented = fixed, augmented
        self.seconds = time.perf_counter() - started
        log.info(
            "cached the frozen features of %d image variants in %.1f s (%.0f MB)",
            len(jobs), self.seconds, (fixed.nbytes + augmented.nbytes) / 2**20,
        )  # fmt: skip

    def get(self, rows: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Head inputs (len(rows), *feature_shape) for each (row, variant)."""
        rows = np.asarray(rows, int)
        variants = np.asarray(variants, int)
        if self.cache:
            assert self._fixed is not None and self._augmented is not None
            out = np.empty((len(rows), *self.feature_shape), np.float32)
            plain = variants < 2
            out[plain] = self._fixed[rows[plain], variants[plain]]
            aug = ~plain
            if aug.any():
                pos = self._aug_pos[rows[aug]]
                if (pos < 0).any():
                    raise ValueError("augmented variants exist only for training rows")
                out[aug] = self._augmented[pos, variants[aug] - 2]
            return out
        images = np.stack(
            [self._variant_image(int(r), int(v)) for r, v in zip(rows, variants, strict=True)]
        )
        return self._run_front(images)


# --- training ----------------------------------------------------------------------------


@dataclass
class EpochStats:
    """One epoch's figures; ``monitor_loss`` (batch-all loss on the clean training images)
    picks the best checkpoint without looking at held-out data."""

    epoch: int
    loss: float
    active_fraction: float
    triplets: int
    monitor_loss: float
    monitor_active: float
    seconds: float  # the whole epoch, including the monitor pass
    step_seconds: float  # the training steps alone (batch assembly included)


class BatchSampler:
    """P identities × K images, each image as a random variant."""

    def __init__(
        self,
        labels: np.ndarray,
        rows: np.ndarray,
        identities: int,
        images: int,
        variants: int,
        rng: np.random.Generator,
    ) -> None:
        self.rng = rng
        self.p, self.k, self.variants = identities, images, variants
        self.by_identity = [rows[labels == name] for name in np.unique(labels)]
        self.by_identity = [r for r in self.by_identity if len(r) >= 2]
        if len(self.by_identity) < 2:
            raise TrainError(
                "training needs at least two identities with two or more training images; "
                "enrol more people or more photos"
            )

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, variants, identity indices)`` of one batch."""
        count = min(self.p, len(self.by_identity))
        chosen = self.rng.choice(len(self.by_identity), size=count, replace=False)
        rows, ids = [], []
        for ident in chosen:
            pool = self.by_identity[ident]
            replace = len(pool) < self.k
            rows.append(self.rng.choice(pool, size=self.k, replace=replace))
            ids.append(np.full(self.k, ident))
        rows_arr = np.concatenate(rows)
        return (
            rows_arr,
            self.rng.integers(0, self.variants, size=len(rows_arr)),
            np.concatenate(ids).astype(np.int32),
        )


class FineTuner:
    """Trains the head of ``model`` on one split; see the module docstring."""

    def __init__(
        self,
        model,  # type: ignore[no-untyped-def]
        crops: CropSet,
        split: Split,
        opts: TrainOptions,
    ) -> None:
        import keras

        self.model = model
        self.crops = crops
        self.opts = opts
        self.labels = np.asarray(crops.labels, dtype=str)
        self.train_rows, self.gallery_rows, self.probe_rows = split.rows(crops)
        size = int(model.input_shape[1])
        if crops.crops.shape[1:] != (size, size, 3):
            raise TrainError(f"crops are {crops.crops.shape[1:]}, the model wants {size}x{size}")
        keras.utils.set_random_seed(opts.seed)
        seeds = np.random.SeedSequence(opts.seed).spawn(3)
        self._aug_rng = np.random.default_rng(seeds[0])
        self._batch_rng = np.random.default_rng(seeds[1])
        self._mine_rng = np.random.default_rng(seeds[2])
        self.frozen, self.head = split_model(model, opts.trainable_from)
        freeze_batchnorm(self.head)
        reseed_layers(self.head, opts.seed)
        self.variables = list(self.head.trainable_variables)
        if not self.variables:
            raise TrainError(f"nothing to train from {opts.trainable_from!r}")
        self.initial_weights = self._snapshot()
        self.best_epoch = 0
        self.initial_monitor: tuple[float, float] | None = None
        self.features: FeatureSource | None = None
        self._infer = None
        self._step = None

    # -- plumbing --
    def _snapshot(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.variables]

    def _restore(self, weights: list[np.ndarray]) -> None:
        for variable, value in zip(self.variables, weights, strict=True):
            variable.assign(value)

    def restore_initial(self) -> None:
        """Put the model back to the weights it had before training."""
        self._restore(self.initial_weights)

    def prepare(self) -> float:
        """Build the feature source (the frozen cache) and compiled functions; return seconds."""
        import tensorflow as tf

        self.features = FeatureSource(
            self.frozen,
            self.crops.crops,
            self.train_rows,
            self.opts.augment,
            self._aug_rng,
            cache=self.opts.cache_features,
            batch_size=self.opts.batch_size,
            progress=self.opts.progress,
        )
        spec = tf.TensorSpec((None, *self.features.feature_shape), tf.float32)
        head = self.head
        self._infer = tf.function(lambda x: head(x, training=False), input_signature=[spec])
        self._step = self._make_step(spec)
        return self.features.seconds

    def _make_step(self, spec):  # type: ignore[no-untyped-def]
        import keras
        import tensorflow as tf

        opts = self.opts
        optimizer = keras.optimizers.Adam(learning_rate=opts.learning_rate)
        optimizer.build(self.variables)
        head, variables, rng = self.head, self.variables, self._mine_rng

        def mine_np(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.int32]:
            mined = mine(emb, labels, opts.margin, opts.mining, rng)
            return mined.triplets.astype(np.int32), np.int32(mined.candidates)

        @tf.function(input_signature=[spec, tf.TensorSpec((None,), tf.int32)])
        def step(x, labels):
            with tf.GradientTape() as tape:
                emb = head(x, training=True)
                triplets, candidates = tf.numpy_function(
                    mine_np, [tf.stop_gradient(emb), labels], [tf.int32, tf.int32], stateful=True
                )
                loss, losses = triplet_loss(emb, triplets, opts.margin)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            active = tf.reduce_sum(tf.cast(losses > 0, tf.int32))
            return loss, active, tf.size(losses), candidates

        return step

    def embed_rows(self, rows: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings of ``rows`` exactly as :class:`~model.embedder.Embedder`
        computes them (mirror-averaged when ``flip_average``)."""
        assert self.features is not None and self._infer is not None
        dim = int(self.model.output_shape[-1])
        out = np.empty((len(rows), dim), np.float32)
        for start in range(0, len(rows), self.opts.batch_size):
            chunk = rows[start : start + self.opts.batch_size]
            emb = self._infer(self.features.get(chunk, np.zeros(len(chunk), int))).numpy()
            if self.opts.flip_average:
                emb = emb + self._infer(self.features.get(chunk, np.ones(len(chunk), int))).numpy()
            out[start : start + len(chunk)] = emb
        return l2_normalize(out)

    def evaluate(self) -> dict[str, float]:
        """Held-out figures of the current weights (``model.metrics.evaluate_embeddings``)."""
        from model.metrics import evaluate_embeddings

        gallery = self.embed_rows(self.gallery_rows)
        probes = self.embed_rows(self.probe_rows)
        try:
            metrics = evaluate_embeddings(
                gallery,
                self.labels[self.gallery_rows].tolist(),
                probes,
                self.labels[self.probe_rows].tolist(),
                mode=self.opts.match_mode,
            )
        except ValueError as exc:
            raise TrainError(f"the held-out split cannot be evaluated: {exc}") from None
        return {k: float(v) for k, v in metrics.items()}

    def monitor(self) -> tuple[float, float]:
        """Batch-all triplet loss (and active fraction) on the clean training images."""
        emb = self.embed_rows(self.train_rows)
        return batch_all_loss(emb, self.labels[self.train_rows], self.opts.margin)

    def sampler(self) -> BatchSampler:
        """The seeded P×K batch sampler over the training rows (prepares features if needed)."""
        if self.features is None:
            self.prepare()
        assert self.features is not None
        return BatchSampler(
            self.labels[self.train_rows],
            self.train_rows,
            self.opts.identities,
            self.opts.images,
            self.features.variants,
            self._batch_rng,
        )

    def batches_per_epoch(self) -> int:
        if self.opts.batches_per_epoch is not None:
            return self.opts.batches_per_epoch
        per_batch = self.opts.identities * self.opts.images
        return max(1, math.ceil(len(self.train_rows) / per_batch))

    def train_epoch(self, epoch: int, sampler: BatchSampler) -> EpochStats:
        """One epoch of online-mined triplet steps, then the monitor loss."""
        from tqdm import tqdm

        assert self.features is not None and self._step is not None
        started = time.perf_counter()
        total_loss, active, triplets, candidates = 0.0, 0, 0, 0
        n = self.batches_per_epoch()
        with tqdm(
            total=n, desc=f"epoch {epoch}/{self.opts.epochs}", unit="batch",
            disable=not self.opts.progress, leave=False,
        ) as bar:  # fmt: skip
            for _ in range(n):
                rows, variants, ids = sampler()
                x = self.features.get(rows, variants)
                loss, n_active, n_triplets, n_candidates = self._step(x, ids)
                total_loss += float(loss)
                active += int(n_active)
                triplets += int(n_triplets)
                candidates += int(n_candidates)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(loss):.4f}", active=f"{active / max(candidates, 1):.2f}"
                )
        step_seconds = time.perf_counter() - started
        monitor_loss, monitor_active = self.monitor()
        return EpochStats(
            epoch=epoch,
            loss=total_loss / n,
            active_fraction=active / max(candidates, 1),
            triplets=triplets,
            monitor_loss=monitor_loss,
            monitor_active=monitor_active,
            seconds=time.perf_counter() - started,
            step_seconds=step_seconds,
        )

    def train(
        self, on_epoch: Callable[[EpochStats], None] | None = None
    ) -> tuple[list[EpochStats], bool]:
        """Train for ``opts.epochs``; keep the checkpoint with the lowest monitor loss
        (the starting weights count as epoch 0), or the last one with ``checkpoint="last"``.
        Ctrl-C stops training early and keeps that checkpoint.

        Returns ``(history, interrupted)``; the model holds the best weights afterwards.
        """
        sampler = self.sampler()
        self.initial_monitor = self.monitor()
        best_loss = self.initial_monitor[0]
        best_weights = self.initial_weights
        self.best_epoch = 0
        history: list[EpochStats] = []
        interrupted = False
        try:
            for epoch in range(1, self.opts.epochs + 1):
                stats = self.train_epoch(epoch, sampler)
                history.append(stats)
                if stats.monitor_loss < best_loss or self.opts.checkpoint == "last":
                    best_loss, best_weights, self.best_epoch = (
                        stats.monitor_loss, self._snapshot(), epoch,
                    )  # fmt: skip
                log.info(
                    "epoch %d/%d: loss %.4f, active %.2f, train batch-all loss %.4f%s (%.1f s)",
                    epoch, self.opts.epochs, stats.loss, stats.active_fraction,
                    stats.monitor_loss, " *" if self.best_epoch == epoch else "", stats.seconds,
                )  # fmt: skip
                if on_epoch is not None:
                    on_epoch(stats)
        except KeyboardInterrupt:
            interrupted = True
            log.warning(
                "interrupted: stopping after %d epoch(s); keeping the best checkpoint (epoch %d)",
                len(history), self.best_epoch,
            )  # fmt: skip
        self._restore(best_weights)
        return history, interrupted


# --- the decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether the fine-tuned model is better on the held-out split, and why."""

    accepted: bool
    improved: tuple[str, ...]
    regressed: tuple[str, ...]
    reason: str


def _direction_change(before: float, after: float, sign: int, min_gain: float = 0.0) -> int:
    """+1 if ``after`` is better by at least ``min_gain``, -1 if it is worse at all, else 0."""
    delta = (after - before) * sign
    if not (math.isfinite(before) and math.isfinite(after)):
        return 0 if before == after else (1 if delta > 0 else -1)
    if delta < -_TOLERANCE:
        return -1
    return 1 if delta >= max(min_gain, _TOLERANCE) else 0


def decide(before: dict[str, float], after: dict[str, float], min_gain: float = 0.0) -> Decision:
    """Accept only if no headline metric (TAR@FAR=1e-3, open-set false accept, rank-1) gets
    worse and one of them improves by at least ``min_gain``; when all three tie, AUC must
    improve by ``min_gain`` without EER getting worse. Any loss, however small, rejects:
    a gain of one pair on a small held-out set is noise, a loss is not shipped."""
    changes = {key: _direction_change(before[key], after[key], sign, min_gain) for key, sign in
               HEADLINE_METRICS + TIEBREAK_METRICS}  # fmt: skip
    headline = [key for key, _ in HEADLINE_METRICS]
    regressed = tuple(k for k in headline if changes[k] < 0)
    improved = tuple(k for k in headline if changes[k] > 0)
    if regressed:
        return Decision(False, improved, regressed, f"worse on {', '.join(regressed)}")
    if improved:
        return Decision(True, improved, (), f"better on {', '.join(improved)}, worse on none")
    if changes["auc"] > 0 and changes["eer"] >= 0:
        return Decision(True, ("auc",), (), "headline metrics tie; AUC improved")
    tie_regressed = tuple(k for k, _ in TIEBREAK_METRICS if changes[k] < 0)
    reason = "no held-out improvement"
    if min_gain > 0:
        reason += f" of at least {min_gain:g}"
    return Decision(False, (), tie_regressed, reason)


# --- the whole run -----------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """The model training starts from (the workspace's active model)."""

    version: str
    model_id: str
    weights_sha256: str


@dataclass
class TrainReport:
    """Everything a training run produced."""

    before: dict[str, float]
    after: dict[str, float]
    decision: Decision
    history: list[EpochStats]
    interrupted: bool
    base: BaseModel
    version: Any = None  # model.versions.ModelVersion when saved
    activated: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    monitor_before: float = 0.0  # batch-all triplet loss on the training images, before


def load_active_model(cfg: Config):  # type: ignore[no-untyped-def]
    """``(keras model, BaseModel)`` of the workspace's active model."""
    from model.versions import resolve_active
    from model.weights import load_model

    path, model_id = resolve_active(cfg)
    return load_model(Path(path)), BaseModel(cfg.model_version, model_id, sha256_file(path))


def run_training(
    cfg: Config,
    opts: TrainOptions | None = None,
    model=None,  # type: ignore[no-untyped-def]
    base: BaseModel | None = None,
) -> TrainReport:
    """Fine-tune the active model on ``cfg.pre_images_dir``; save and activate it only if
    the held-out metrics improve (see :func:`decide`). ``model``/``base`` override the
    active model (tests use tiny networks)."""
    from model.versions import save_version, use_version
    from model.weights import model_tensors

    opts = opts or TrainOptions.from_config(cfg)
    if not Path(cfg.pre_images_dir).is_dir():
        raise TrainError(f"{cfg.pre_images_dir} does not exist; run `attendance preprocess` first")
    if model is None:
        model, base = load_active_model(cfg)
    elif base is None:
        raise ValueError("pass base= with model=")
    crops = load_crops(cfg.pre_images_dir, int(model.input_shape[1]))
    if len(crops) == 0:
        raise TrainError(f"no crops in {cfg.pre_images_dir}; run `attendance preprocess` first")
    split_path = cfg.models_dir / SPLIT_NAME
    split = update_split(
        split_path, crops, opts.seed, opts.holdout_image_fraction, opts.holdout_identity_fraction
    )
    tuner = FineTuner(model, crops, split, opts)
    counts = {
        "train_identities": len({crops.labels[i] for i in tuner.train_rows}),
        "holdout_identities": sum(1 for r in split.identities.values() if r == HOLDOUT),
        "train_images": len(tuner.train_rows),
        "eval_gallery_images": len(tuner.gallery_rows),
        "eval_probe_images": len(tuner.probe_rows),
    }
    log.info("split: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    gallery_ids = set(tuner.labels[tuner.gallery_rows])
    probe_ids = set(tuner.labels[tuner.probe_rows]) & gallery_ids
    if len(gallery_ids) < 2 or len(probe_ids) < 2:
        raise TrainError(
            f"the held-out split ({split_path}) has too few images to evaluate on: "
            f"{len(gallery_ids)} identities in its gallery, probes of {len(probe_ids)}; "
            "enrol at least 3 people with 4 or more photos each"
        )
    timings = {"features_seconds": tuner.prepare()}
    before = tuner.evaluate()
    started = time.perf_counter()
    history, interrupted = tuner.train()
    timings["train_seconds"] = time.perf_counter() - started
    after = tuner.evaluate()
    decision = decide(before, after, opts.min_gain)
    report = TrainReport(before, after, decision, history, interrupted, base, counts=counts,
                         timings=timings, best_epoch=tuner.best_epoch,
                         monitor_before=(tuner.initial_monitor or (0.0, 0.0))[0])  # fmt: skip
    if decision.accepted or opts.force:
        if not decision.accepted:
            log.warning("saving a model that is not better (--force): %s", decision.reason)
        meta = {
            "base": asdict(base),
            "training_data_sha256": data_hash(crops, tuner.train_rows),
            "split_sha256": sha256_file(split_path),
            "hyperparameters": opts.hyperparameters(),
            "metrics": {"before": before, "after": after},
            "decision": asdict(decision),
            "forced": not decision.accepted,
            "counts": counts,
            "epochs_run": len(history),
            "best_epoch": tuner.best_epoch,
            "monitor_loss_before": report.monitor_before,
            "interrupted": interrupted,
            "history": [asdict(h) for h in history],
        }
        report.version = save_version(cfg, model_tensors(model), meta)
        if decision.accepted and opts.activate:
            use_version(cfg, report.version.version)
            report.activated = True
    if not report.activated:
        tuner.restore_initial()  # the caller's model stays the current model
    return report
