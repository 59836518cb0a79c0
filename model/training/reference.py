"""Reference people: photos of people who are not enrolled, to judge a fine-tune on.

``reference_dir`` (``--reference DIR``) holds one folder of photos per person
(``DIR/<identity>/*.jpg``, or ``train/`` and ``val/`` split folders of them). Their largest
faces are detected and aligned exactly as preprocessing does, once: the crops are kept in
``<models_dir>/reference-crops.npz`` (plain arrays, written atomically) and reused while the
photos (size and content hash) and the crop settings stay the same, so a rerun, even after
kill -9, only detects photos it has not seen.

Reference identities are labelled ``reference:<folder>`` (a name no enrolled person can have)
and split like ``attendance evaluate`` splits a folder: ``train/`` photos are the evaluation
gallery and ``val/`` photos the probes; in a flat folder, per identity, the first half of the
sorted photos (rounded up) is the gallery and the rest are probes.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.fsutil import atomic_open, sha256_bytes
from model.evaluation.dataset import SPLITS
from model.training.data import CropSet
from model.training.errors import TrainError
from model.training.split import GALLERY, HOLDOUT, PROBE, Split

log = logging.getLogger(__name__)

CACHE_NAME = "reference-crops.npz"
CACHE_FORMAT = 1
PREFIX = "reference:"
#: A judging set is capped, deterministically, so its pairs fit in memory (N photos make
#: N²/2 pairs per model): the first photos of each person in sorted order, and at most this many
#: people (chosen by a stable hash of their names).
MAX_PHOTOS_PER_IDENTITY = 20
MAX_IDENTITIES = 200


@dataclass(frozen=True)
class ReferenceCrops:
    """Aligned crops of the reference photos that have a usable face."""

    root: Path
    identities: list[str]  # folder names, one per crop
    relpaths: list[str]  # relative to root
    crops: np.ndarray  # uint8 (N, S, S, 3)
    failed: list[str]  # "relpath: reason" of photos without a usable face

    @property
    def names(self) -> list[str]:
        return sorted(set(self.identities))


def _fingerprint(path: Path) -> str | None:
    """Size and content hash (a copied or touched photo is the same photo); None if unreadable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.warning("skipping reference photo %s: cannot read it (%s)", path, exc.strerror or exc)
        return None
    return f"{len(data)}:{sha256_bytes(data)}"


def _settings(cfg: Config, size: int) -> str:
    from preprocess.pipeline import crop_settings

    settings = {**crop_settings(cfg), "format": CACHE_FORMAT, "model_size": size}
    return json.dumps(settings, sort_keys=True)


def _regular_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file reached without symlinks and stays inside ``root``."""
    current = path
    while current != root:
        if current.is_symlink():
            return False
        current = current.parent
        if current == current.parent:
            return False
    return path.is_file() and path.resolve().is_relative_to(root.resolve())


def _capped(items: list[Any]) -> list[Any]:
    """At most :data:`MAX_IDENTITIES` people and :data:`MAX_PHOTOS_PER_IDENTITY` photos each."""
    by_identity: dict[str, list[Any]] = {}
    for item in items:
        by_identity.setdefault(item.identity, []).append(item)
    names = sorted(by_identity, key=lambda n: sha256_bytes(n.encode("utf-8")))
    if len(names) > MAX_IDENTITIES:
        log.warning(
            "reference_dir has %d people; judging on %d of them (chosen by a stable hash)",
            len(names), MAX_IDENTITIES,
        )  # fmt: skip
    keep = set(names[:MAX_IDENTITIES])
    capped = []
    for name, photos in by_identity.items():
        if name in keep:
            capped += sorted(photos, key=lambda it: it.relpath)[:MAX_PHOTOS_PER_IDENTITY]
    return sorted(capped, key=lambda it: it.relpath)


def _read_cache(path: Path, settings: str) -> dict[str, tuple[str, str, np.ndarray | None, str]]:
    """``relpath -> (fingerprint, identity, crop or None, failure reason)`` of a usable cache."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings"]) != settings:
                log.info("%s: made with other crop settings; detecting again", path)
                return {}
            crops = data["crops"]
            found: dict[str, tuple[str, str, np.ndarray | None, str]] = {}
            for k, (rel, fp, who) in enumerate(
                zip(data["relpaths"], data["fingerprints"], data["identities"], strict=True)
            ):
                found[str(rel)] = (str(fp), str(who), crops[k], "")
            for rel, fp, who, reason in zip(
                data["failed_relpaths"], data["failed_fingerprints"], data["failed_identities"],
                data["failed_reasons"], strict=True,
            ):  # fmt: skip
                found[str(rel)] = (str(fp), str(who), None, str(reason))
            return found
    except (OSError, KeyError, IndexError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable (%s); detecting the reference photos again", path, exc)
        return {}


_Entry = tuple[str, str, "np.ndarray | None", str]  # fingerprint, identity, crop, failure


def _write_cache(path: Path, settings: str, entries: dict[str, _Entry], size: int) -> None:
    ok = sorted(rel for rel, entry in entries.items() if entry[2] is not None)
    bad = sorted(rel for rel, entry in entries.items() if entry[2] is None)
    crops = [entries[rel][2] for rel in ok]
    arrays = {
        "settings": np.array(settings),
        "relpaths": np.array(ok, dtype=str),
        "fingerprints": np.array([entries[r][0] for r in ok], dtype=str),
        "identities": np.array([entries[r][1] for r in ok], dtype=str),
        "crops": np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        "failed_relpaths": np.array(bad, dtype=str),
        "failed_fingerprints": np.array([entries[r][0] for r in bad], dtype=str),
        "failed_identities": np.array([entries[r][1] for r in bad], dtype=str),
        "failed_reasons": np.array([entries[r][3] for r in bad], dtype=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_reference(
    cfg: Config,
    root: Path,
    size: int,
    progress: bool = True,
    save_every: int = 500,
    exclude: set[str] | None = None,
) -> ReferenceCrops:
    """Aligned ``size``×``size`` crops of the photos under ``root`` (see the module docstring).

    Only regular files reached without symlinks are read; the set is capped
    (:data:`MAX_IDENTITIES`, :data:`MAX_PHOTOS_PER_IDENTITY`). Photos are detected in chunks
    of ``save_every``; the cache is saved after each chunk, so an interrupted run resumes
    where it stopped. People in ``exclude`` (case-folded folder names: the enrolled) are left
    out before the cap, so they take no place in it.
    """
    import cv2

    from model.evaluation import EvaluationError
    from model.evaluation.crops import crop_images
    from model.evaluation.dataset import list_images
    from preprocess.detectors import make_detector

    root = Path(root)
    try:
        items = list_images(root)
    except EvaluationError as exc:
        raise TrainError(f"reference_dir: {exc}") from None
    except OSError as exc:
        raise TrainError(
            f"reference_dir: cannot read {exc.filename or root} ({exc.strerror or exc}); fix its "
            "permissions or choose another folder"
        ) from None
    linked = [item for item in items if not _regular_inside(root, item.path)]
    if linked:
        log.warning(
            "skipping %d reference photo(s) that are symlinks or not regular files, e.g. %s",
            len(linked), linked[0].relpath,
        )  # fmt: skip
    linked_paths = {item.relpath for item in linked}
    excluded = exclude or set()
    items = _capped(
        [
            item
            for item in items
            if item.relpath not in linked_paths and item.identity.casefold() not in excluded
        ]
    )
    cache = cfg.models_dir / CACHE_NAME
    settings = _settings(cfg, size)
    stored = _read_cache(cache, settings)
    entries: dict[str, tuple[str, str, np.ndarray | None, str]] = {}
    todo = []
    for item in items:
        fingerprint = _fingerprint(item.path)
        if fingerprint is None:
            continue
        hit = stored.get(item.relpath)
        if hit is not None and hit[0] == fingerprint and hit[1] == item.identity:
            entries[item.relpath] = hit
        else:
            todo.append((item, fingerprint))
    if todo:
        log.info("detecting faces in %d reference photo(s) of %s", len(todo), root)
        detector = make_detector(cfg)
        for start in range(0, len(todo), save_every):
            chunk = todo[start : start + save_every]
            made = crop_images([item for item, _ in chunk], detector, cfg, progress=progress)
            index = {item.relpath: k for k, item in enumerate(made.items)}
            reasons = dict(made.failed)
            crops = made.crops[cfg.alignment]
            for item, fingerprint in chunk:
                k = index.get(item.relpath)
                if k is None:
                    reason = reasons.get(item.relpath, "no usable face")
                    entries[item.relpath] = (fingerprint, item.identity, None, reason)
                    continue
                crop = crops[k]
                if crop.shape[0] != size:
                    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
                entries[item.relpath] = (fingerprint, item.identity, crop, "")
            _write_cache(cache, settings, entries, size)
    elif len(entries) != len(stored):  # photos were deleted: keep the cache in step
        _write_cache(cache, settings, entries, size)
    ok = sorted(rel for rel, entry in entries.items() if entry[2] is not None)
    failed = [f"{rel}: {entries[rel][3]}" for rel in sorted(entries) if entries[rel][2] is None]
    if failed:
        log.info("%d reference photo(s) have no usable face", len(failed))
    crops = [entries[rel][2] for rel in ok]
    return ReferenceCrops(
        root=root,
        identities=[entries[rel][1] for rel in ok],
        relpaths=ok,
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        failed=failed,
    )


def add_reference(
    crops: CropSet, split: Split, reference: ReferenceCrops
) -> tuple[CropSet, Split, list[str]]:
    """``crops`` and ``split`` extended with the reference people (in memory only: the stored
    split stays the workspace's). Returns the skipped reference identities too: people
    enrolled under the same name (letter case ignored), and anyone with fewer than 2 usable
    photos. Someone enrolled under another name is caught later, by face
    (:func:`model.training.run.same_person_names`)."""
    enrolled = {name.casefold() for name in crops.labels}
    by_identity: dict[str, list[int]] = {}
    for k, who in enumerate(reference.identities):
        by_identity.setdefault(who, []).append(k)
    skipped = []
    labels, paths, hashes, rows = list(crops.labels), list(crops.paths), list(crops.sha256), []
    identities, images = dict(split.identities), dict(split.images)
    for who in sorted(by_identity):
        members = sorted(by_identity[who], key=lambda k: reference.relpaths[k])
        if who.casefold() in enrolled or len(members) < 2:
            skipped.append(who)
            continue
        label = PREFIX + who
        identities[label] = HOLDOUT
        half = math.ceil(len(members) / 2)
        for position, k in enumerate(members):
            rel = f"{label}/{reference.relpaths[k]}"
            labels.append(label)
            paths.append(rel)
            hashes.append(sha256_bytes(reference.crops[k].tobytes()))
            images[rel] = _role(reference.relpaths[k], position < half)
            rows.append(k)
    if skipped:
        log.warning(
            "reference people left out (enrolled under the same name, or fewer than 2 usable "
            "photos): %s", ", ".join(skipped),
        )  # fmt: skip
    extra = reference.crops[rows] if rows else np.zeros((0, *crops.crops.shape[1:]), np.uint8)
    combined = CropSet(labels, paths, hashes, np.concatenate([crops.crops, extra]))
    merged = Split(
        identities, images, split.seed, split.holdout_image_fraction,
        split.holdout_identity_fraction,
    )  # fmt: skip
    return combined, merged, skipped


def _role(relpath: str, first_half: bool) -> str:
    """Evaluation role of a reference photo: ``train/`` photos are the gallery and ``val/``
    photos the probes (as ``attendance evaluate`` splits such a folder); otherwise the first
    half of a person's sorted photos is the gallery."""
    top = relpath.split("/", 1)[0]
    if top in SPLITS:
        return GALLERY if top == SPLITS[0] else PROBE
    return GALLERY if first_half else PROBE


def describe(reference: ReferenceCrops | None, skipped: list[str]) -> dict[str, Any]:
    """What a version's metadata records about the reference people it was judged on."""
    if reference is None:
        return {}
    used = [who for who in reference.identities if who not in set(skipped)]
    return {
        "dir": str(reference.root),
        "identities": len(set(used)),
        "images": len(used),
        "skipped_identities": sorted(skipped),
        "without_face": len(reference.failed),
    }
