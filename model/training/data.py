"""The training data: the aligned crops of ``pre_images/<Name>/`` as one :class:`CropSet`.

:func:`load_crops` reads every crop preprocessing wrote (canonical identity folders only,
files ending in one of :data:`common.image_io.IMAGE_SUFFIXES`), skipping with a warning any
file that cannot be decoded or is not an aligned square crop of the model's input size, and
remembers each file's content hash so :func:`data_hash` can identify what a model was trained
on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.fsutil import sha256_bytes
from common.image_io import IMAGE_SUFFIXES, ImageReadError, decode_image
from common.names import InvalidName, list_identities, validate_name
from model.training.errors import TrainError

log = logging.getLogger(__name__)


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
    """Read every ``<Name>/*`` crop (the endings of :data:`~common.image_io.IMAGE_SUFFIXES`;
    preprocessing writes ``.png``); files that are unreadable or not ``size``×``size`` are
    skipped with a warning naming them (run ``attendance preprocess`` to redo them)."""
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
