"""The fixed held-out split, stored as ``<models_dir>/split.json``.

Whole identities and part of every other identity's images are held out once and for all:
the held-out images are never trained on and form the evaluation's gallery and probes, so the
figures of every version are measured on the same unseen photos and stay comparable.
:func:`update_split` creates the split on first use and extends it to new people and photos
by a stable hash of their names, never changing a stored assignment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.fsutil import atomic_write_text
from model.training.data import CropSet
from model.training.errors import TrainError

log = logging.getLogger(__name__)

SPLIT_NAME = "split.json"
SPLIT_FORMAT = 1
TRAIN, HOLDOUT = "train", "holdout"  # identity roles ("train" is also an image role)
GALLERY, PROBE = "gallery", "probe"  # roles of held-out images in the evaluation
#: Share of a training identity's images held out when a split is first drawn.
HOLDOUT_IMAGE_FRACTION = 0.3
#: Share of identities held out entirely when a split is first drawn.
HOLDOUT_IDENTITY_FRACTION = 0.2


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
    seed: int,
    holdout_image_fraction: float = HOLDOUT_IMAGE_FRACTION,
    holdout_identity_fraction: float = HOLDOUT_IDENTITY_FRACTION,
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
        log.debug("split saved to %s", path)
    return split
