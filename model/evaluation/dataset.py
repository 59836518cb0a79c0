"""The photos of a dataset folder, and its gallery/probe split.

Layouts understood (image files directly inside each identity folder; every ending of
:data:`common.image_io.IMAGE_SUFFIXES`):

* ``DIR/<identity>/*.jpg`` — for evaluation split deterministically: per identity, the first
  half of the sorted file names (rounded up) is the gallery, the rest are probes;
* ``DIR/train/<identity>/*`` + ``DIR/val/<identity>/*`` — gallery = train, probes = val.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.image_io import IMAGE_SUFFIXES
from model.evaluation import EvaluationError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class ImageItem:
    """One photo: its path relative to the dataset folder and its identity (folder name)."""

    relpath: str
    identity: str
    path: Path


def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(e for e in entries if not e.name.startswith("."))


def identity_images(folder: Path, root: Path) -> list[ImageItem]:
    """Images in ``folder/<identity>/``, sorted; paths relative to ``root``."""
    items: list[ImageItem] = []
    for person in _visible(folder.iterdir()):
        if not person.is_dir():
            continue
        for path in _visible(person.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                items.append(ImageItem(path.relative_to(root).as_posix(), person.name, path))
    return items


def has_splits(root: Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``val/`` split folders."""
    return all((root / split).is_dir() for split in SPLITS)


def _check_folder(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such folder; give a folder of identity subfolders")
    return root


def list_images(root: Path) -> list[ImageItem]:
    """Every image of dataset folder ``root`` (both splits when it has ``train/`` + ``val/``)."""
    root = _check_folder(root)
    if has_splits(root):
        items = [it for split in SPLITS for it in identity_images(root / split, root)]
    else:
        items = identity_images(root, root)
    if not items:
        raise EvaluationError(
            f"{root}: no images found; expected {root}/<identity>/*.jpg "
            f"(or train/<identity>/ and val/<identity>/)"
        )
    return items


@dataclass(frozen=True)
class Split:
    """A gallery/probe split of a dataset folder."""

    gallery: list[ImageItem]
    probes: list[ImageItem]
    description: str


def split_dataset(root: Path) -> Split:
    """The stated gallery/probe split of ``root`` (see the module docstring)."""
    root = _check_folder(root)
    if has_splits(root):
        gallery = identity_images(root / "train", root)
        probes = identity_images(root / "val", root)
        description = "gallery = train/, probes = val/"
    else:
        gallery, probes = [], []
        by_identity: dict[str, list[ImageItem]] = {}
        for item in identity_images(root, root):
            by_identity.setdefault(item.identity, []).append(item)
        for items in by_identity.values():
            half = math.ceil(len(items) / 2)
            gallery += items[:half]
            probes += items[half:]
        description = (
            "per identity, first half of the sorted file names (rounded up) = gallery, "
            "rest = probes"
        )
    if not gallery or not probes:
        raise EvaluationError(
            f"{root}: {len(gallery)} gallery and {len(probes)} probe images; evaluation needs "
            "identities with at least two images each"
        )
    return Split(gallery, probes, description)
