"""Embed a folder of identity subfolders and evaluate the model on it.

Layouts understood (image files directly inside each identity folder):

* ``DIR/<identity>/*.jpg`` — for evaluation split deterministically: per identity, the first
  half of the sorted file names (rounded up) is the gallery, the rest are probes;
* ``DIR/train/<identity>/*`` + ``DIR/val/<identity>/*`` — gallery = train, probes = val.

Faces are found and aligned exactly as preprocessing does
(:func:`preprocess.pipeline.crop_largest_face`). Images without a usable face are listed, not
fatal. With ``compare=True`` every combination of alignment ("landmarks", "margin") and flip
averaging (on, off) is evaluated; detection runs once per image and each variant's
embeddings are kept in memory for the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import ALIGNMENTS, Config, write_config_value
from common.errors import UserError
from common.fsutil import atomic_open, atomic_write_bytes
from common.vectors import MODES
from model.metrics import (
    decision_distances,
    evaluate_embeddings,
    few_shot_open_set_false_accept,
    pair_scores,
    roc_curve,
    threshold_at_far,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")
FEW_SHOT = 3  # gallery images per identity of the few-shot open-set figure
FEW_SHOT_KEY = f"open_set_false_accept_{FEW_SHOT}shot"
#: (metric key, label, higher is better, depends on the match mode) of the "best" summary
HEADLINE = (
    ("auc", "AUC", True, False),
    ("eer", "EER", False, False),
    ("tar_at_far_1e-3", "TAR@1e-3", True, False),
    ("rank1", "rank-1", True, True),
    ("open_set_false_accept", "open-set FA", False, True),
    (FEW_SHOT_KEY, f"open-set FA {FEW_SHOT}-shot", False, True),
)
#: the stable array names of ``attendance embed`` files (external tools read them)
NPZ_ARRAYS = (
    "paths", "identities", "embeddings", "boxes", "scores", "failed_paths", "failed_reasons",
    "model_id", "alignment", "flip_average",
)  # fmt: skip


class EvaluationError(UserError):
    """The folder cannot be embedded or evaluated (missing, empty, too few identities)."""


# --------------------------------------------------------------------------- discovering images
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


# --------------------------------------------------------------------------- faces and crops
class _MemoDetector:
    """Runs the real detector once per distinct image array (several alignments, one detection)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._seen: dict[tuple[tuple[int, ...], str], list[Any]] = {}

    def detect(self, rgb: np.ndarray) -> list[Any]:
        key = (rgb.shape, hashlib.sha1(np.ascontiguousarray(rgb).data).hexdigest())
        if key not in self._seen:
            self._seen[key] = list(self.inner.detect(rgb))
        return list(self._seen[key])

    def clear(self) -> None:
        self._seen.clear()


@dataclass
class CropSet:
    """Aligned crops of the images that have a face, per alignment method."""

    items: list[ImageItem]
    crops: dict[str, np.ndarray]  # alignment -> uint8 (N, 160, 160, 3)
    boxes: np.ndarray  # float32 (N, 4): x, y, w, h in image pixels
    scores: np.ndarray  # float32 (N,): detection confidence
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)

    def subset(self, relpaths: Sequence[str]) -> np.ndarray:
        """Row indices of ``relpaths`` that have a crop (in the given order)."""
        index = {item.relpath: k for k, item in enumerate(self.items)}
        return np.array([index[r] for r in relpaths if r in index], dtype=np.int64)


def crop_images(
    items: Sequence[ImageItem],
    detector: Any,
    cfg: Config,
    alignments: Sequence[str] | None = None,
    progress: bool | None = None,
) -> CropSet:
    """Detect the largest face of every image once and align it with each method.

    An image that fails with any method (unreadable, no face, tiny, unalignable) is left out of
    every method, so all variants are evaluated on the same images.
    """
    from tqdm import tqdm

    from common.image_io import ImageReadError, read_image
    from preprocess.align import AlignmentError
    from preprocess.pipeline import ImageRejected, crop_largest_face

    alignments = list(alignments or [cfg.alignment])
    configs = {a: cfg if a == cfg.alignment else cfg.replace(alignment=a) for a in alignments}
    memo = _MemoDetector(detector)
    ok: list[ImageItem] = []
    crops: dict[str, list[np.ndarray]] = {a: [] for a in alignments}
    boxes, scores, failed = [], [], []
    bar = tqdm(items, desc="detecting faces", unit="img", disable=_disable(progress))
    for item in bar:
        memo.clear()
        try:
            rgb = read_image(item.path)
            made = {a: crop_largest_face(rgb, memo, c, item.relpath) for a, c in configs.items()}
        except (ImageReadError, ImageRejected, AlignmentError) as exc:
            failed.append((item.relpath, str(exc)))
            continue
        face = made[alignments[0]][1]
        ok.append(item)
        for a in alignments:
            crops[a].append(made[a][0])
        boxes.append(face.box)
        scores.append(face.score)
    for relpath, reason in failed:
        log.warning("no usable face: %s", reason if relpath in reason else f"{relpath}: {reason}")
    return CropSet(
        items=ok,
        crops={a: _stack(c) for a, c in crops.items()},
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float32),
        failed=failed,
    )


def _stack(crops: list[np.ndarray]) -> np.ndarray:
    return np.stack(crops) if crops else np.zeros((0, 160, 160, 3), np.uint8)


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def with_flip(embedder: Any, flip_average: bool) -> Any:
    """``embedder`` itself, or a sibling sharing its network with flip averaging on/off."""
    if bool(embedder.flip_average) == flip_average:
        return embedder
    base_id = str(embedder.model_id).removesuffix("+flip")
    return type(embedder)(embedder.model, base_id, embedder.batch_size, flip_average)


# --------------------------------------------------------------------------- embed export
@dataclass
class EmbeddedImages:
    """Unit-norm embeddings of a dataset folder, as written by ``attendance embed``."""

    paths: list[str]
    identities: list[str]
    embeddings: np.ndarray  # float32 (N, D)
    boxes: np.ndarray  # float32 (N, 4)
    scores: np.ndarray  # float32 (N,)
    failed_paths: list[str]
    failed_reasons: list[str]
    model_id: str
    alignment: str
    flip_average: bool

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz arrays (unicode strings, no object arrays)."""
        return {
            "paths": np.array(self.paths, dtype=str),
            "identities": np.array(self.identities, dtype=str),
            "embeddings": np.asarray(self.embeddings, dtype=np.float32),
            "boxes": np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(self.scores, dtype=np.float32),
            "failed_paths": np.array(self.failed_paths, dtype=str),
            "failed_reasons": np.array(self.failed_reasons, dtype=str),
            "model_id": np.array(self.model_id, dtype=str),
            "alignment": np.array(self.alignment, dtype=str),
            "flip_average": np.array(self.flip_average, dtype=bool),
        }

    def save(self, path: str | Path) -> Path:
        """Write the npz atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddedImages:
        """Read a file written by :meth:`save` (plain arrays only, object arrays refused)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in NPZ_ARRAYS if name not in data.files]
                if missing:
                    raise EvaluationError(f"{path}: not an embeddings file (no {missing[0]!r})")
                return cls(
                    paths=data["paths"].tolist(),
                    identities=data["identities"].tolist(),
                    embeddings=data["embeddings"],
                    boxes=data["boxes"],
                    scores=data["scores"],
                    failed_paths=data["failed_paths"].tolist(),
                    failed_reasons=data["failed_reasons"].tolist(),
                    model_id=str(data["model_id"]),
                    alignment=str(data["alignment"]),
                    flip_average=bool(data["flip_average"]),
                )
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise EvaluationError(f"{path}: cannot read embeddings ({exc})") from None


def embed_folder(
    root: Path, cfg: Config, detector: Any, embedder: Any, progress: bool | None = None
) -> EmbeddedImages:
    """Embeddings of every image under ``root`` with ``cfg.alignment`` and the embedder as given."""
    items = list_images(root)
    cropset = crop_images(items, detector, cfg, progress=progress)
    embeddings = embedder.embed(cropset.crops[cfg.alignment])
    return EmbeddedImages(
        paths=[item.relpath for item in cropset.items],
        identities=[item.identity for item in cropset.items],
        embeddings=np.asarray(embeddings, dtype=np.float32),
        boxes=cropset.boxes,
        scores=cropset.scores,
        failed_paths=[relpath for relpath, _ in cropset.failed],
        failed_reasons=[reason for _, reason in cropset.failed],
        model_id=str(embedder.model_id),
        alignment=cfg.alignment,
        flip_average=bool(getattr(embedder, "flip_average", False)),
    )


# --------------------------------------------------------------------------- evaluation
@dataclass
class VariantResult:
    """The figures of one (alignment, flip averaging, match mode) combination."""

    alignment: str
    flip_average: bool
    match_mode: str
    metrics: dict[str, float | int]
    current: bool  # the workspace's configured combination

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the variant's settings and metrics (non-finite numbers as null)."""
        return {
            "alignment": self.alignment,
            "flip_average": self.flip_average,
            "match_mode": self.match_mode,
            "current": self.current,
            **{k: _finite(v) for k, v in self.metrics.items()},
        }


@dataclass
class EvaluationReport:
    """Everything ``attendance evaluate`` found."""

    dataset: str
    split: str
    model_id: str
    n_gallery: int
    n_probes: int
    failed: list[tuple[str, str]]
    results: list[VariantResult]
    plots: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None  # current variant's decisions at cfg.threshold

    @property
    def current(self) -> VariantResult:
        """The result of the configured alignment / flip / match mode."""
        return next(r for r in self.results if r.current)

    def winners(self) -> list[str]:
        """One line per headline figure: its best value and every variant reaching it."""
        lines = []
        for key, label, higher, by_mode in HEADLINE:
            values = [r.metrics[key] for r in self.results]
            best = max(values) if higher else min(values)
            names = []
            for r, v in zip(self.results, values, strict=True):
                name = f"{r.alignment}, flip {'on' if r.flip_average else 'off'}"
                name += f", {r.match_mode}" if by_mode else ""
                if abs(v - best) <= 1e-12 and name not in names:
                    names.append(name)
            every = len(names) == len(values) // (1 if by_mode else len(MODES))
            lines.append(f"best {label}: {best:.4f} ({'all' if every else '; '.join(names)})")
        return lines

    def compared(self) -> bool:
        """Whether more than one alignment / flip setting was evaluated."""
        return len({(r.alignment, r.flip_average) for r in self.results}) > 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report (the ``--json`` output)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "model_id": self.model_id,
            "n_gallery": self.n_gallery,
            "n_probes": self.n_probes,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "results": [r.as_dict() for r in self.results],
            "plots": self.plots,
            "calibration": self.calibration,
            "decision": self.decision,
            "best": self.winners() if self.compared() else [],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.as_dict(), indent=2, allow_nan=False)

    def to_text(self) -> str:
        """A human-readable report: header, one table row per variant, notes."""
        lines = [
            f"dataset: {self.dataset}",
            f"split: {self.split} ({self.n_gallery} gallery, {self.n_probes} probe images "
            f"with a face)",
            f"model: {self.model_id}",
        ]
        if self.failed:
            lines.append(f"no usable face in {len(self.failed)} images (left out):")
            lines += [f"  {reason}" for _, reason in self.failed]
        header = (
            "alignment", "flip", "mode", "AUC", "EER", "TAR@1e-2", "TAR@1e-3", "best acc",
            "@thr", "rank-1", "open-set FA", "thr@1%FRR", f"FA {FEW_SHOT}-shot",
        )  # fmt: skip
        rows = [header]
        for r in self.results:
            m = r.metrics
            rows.append(
                (
                    r.alignment + (" *" if r.current else ""),
                    "on" if r.flip_average else "off",
                    r.match_mode,
                    f"{m['auc']:.4f}",
                    f"{m['eer']:.4f}",
                    f"{m['tar_at_far_1e-2']:.4f}",
                    f"{m['tar_at_far_1e-3']:.4f}",
                    f"{m['best_accuracy']:.4f}",
                    f"{m['best_threshold']:.3f}",
                    f"{m['rank1']:.4f}",
                    f"{m['open_set_false_accept']:.4f}",
                    f"{m['threshold_at_1pct_frr']:.3f}",
                    f"{m[FEW_SHOT_KEY]:.4f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        cur = self.current.metrics
        lines.append(
            f"* = current configuration; {cur['n_genuine_pairs']} genuine / "
            f"{cur['n_impostor_pairs']} impostor pairs, mean distance "
            f"{cur['genuine_distance_mean']:.3f} / {cur['impostor_distance_mean']:.3f}"
        )
        if self.decision:
            lines.append(decision_line(self.decision))
        if self.compared():
            lines += self.winners()
        for name, path in self.plots.items():
            lines.append(f"{name}: {path}")
        if self.calibration:
            c = self.calibration
            lines.append(
                f"calibrated threshold {c['threshold']:.4f} for FAR {c['far']:g} on "
                f"{c['mode']} decisions (TAR {c['tar']:.4f}, strangers accepted "
                f"{c['n_strangers_accepted']}/{c['n_strangers']}; was {c['previous']:.4f}) "
                f"written to {c['config']}"
            )
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decision_summary(
    mode: str, genuine: np.ndarray, stranger: np.ndarray, threshold: float
) -> dict[str, Any]:
    """How the recogniser's rule (winner distance ``<= threshold``) treats the decisions.

    ``genuine`` and ``stranger`` come from :func:`model.metrics.decision_distances`.
    """
    accepted_genuine = int(np.sum(genuine <= threshold))
    accepted_strangers = int(np.sum(stranger <= threshold))
    return {
        "mode": mode,
        "threshold": float(threshold),
        "genuine_max": float(genuine.max()),
        "stranger_min": _finite(float(stranger.min())),
        "genuine_accept": accepted_genuine / len(genuine),
        "stranger_accept": accepted_strangers / len(stranger),
        "n_genuine": len(genuine),
        "n_genuine_accepted": accepted_genuine,
        "n_strangers": len(stranger),
        "n_strangers_accepted": accepted_strangers,
    }


def decision_line(d: dict[str, Any]) -> str:
    """One text line of :func:`decision_summary`."""
    stranger_min = "none" if d["stranger_min"] is None else f"{d['stranger_min']:.3f}"
    return (
        f"decision ({d['mode']}): genuine max {d['genuine_max']:.3f}, stranger min "
        f"{stranger_min}, genuine accepted at threshold {d['threshold']:.4f}: "
        f"{100 * d['genuine_accept']:.1f}% ({d['n_genuine_accepted']}/{d['n_genuine']}), "
        f"strangers accepted: {100 * d['stranger_accept']:.1f}% "
        f"({d['n_strangers_accepted']}/{d['n_strangers']})"
    )


def evaluate_folder(
    root: Path,
    cfg: Config,
    detector: Any,
    embedder: Any,
    *,
    compare: bool = False,
    out_dir: Path | None = None,
    calibrate_far: float | None = None,
    progress: bool | None = None,
) -> EvaluationReport:
    """Evaluate ``embedder`` on dataset folder ``root``; write plots; optionally calibrate.

    The embedder's own flip setting and ``cfg.alignment`` are the "current" variant; with
    ``compare`` the other alignment and flip setting are evaluated as well. Both match modes
    are always reported. Verification figures use image pairs; the ``decision_*`` figures and
    calibration use the distances the recogniser thresholds
    (:func:`model.metrics.decision_distances`). ``calibrate_far`` writes the threshold whose
    stranger accept rate is at most that FAR (current variant and ``cfg.match_mode``) to the
    workspace configuration.
    """
    root = Path(root)
    split = split_dataset(root)
    alignments = [cfg.alignment] + (
        [a for a in ALIGNMENTS if a != cfg.alignment] if compare else []
    )
    flips = [bool(embedder.flip_average)] + ([not embedder.flip_average] if compare else [])
    cropset = crop_images(split.gallery + split.probes, detector, cfg, alignments, progress)
    g_rows = cropset.subset([it.relpath for it in split.gallery])
    p_rows = cropset.subset([it.relpath for it in split.probes])
    labels = np.array([it.identity for it in cropset.items], dtype=str)
    if len(set(labels[g_rows])) < 2 or len(p_rows) == 0:
        raise EvaluationError(
            f"{root}: faces found in {len(g_rows)} gallery images of "
            f"{len(set(labels[g_rows]))} identities and {len(p_rows)} probe images; "
            "evaluation needs at least two identities with a face in both sets"
        )
    results: list[VariantResult] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    current_pairs: tuple[np.ndarray, np.ndarray] | None = None
    current_decisions: tuple[np.ndarray, np.ndarray] | None = None
    for alignment in alignments:
        for flip in flips:
            variant = with_flip(embedder, flip)
            log.info("embedding %d crops (alignment=%s, flip=%s)", len(labels), alignment, flip)
            emb = np.asarray(variant.embed(cropset.crops[alignment]), dtype=np.float32)
            is_current = alignment == cfg.alignment and flip == flips[0]
            for mode in [cfg.match_mode] + [m for m in MODES if m != cfg.match_mode]:
                try:
                    metrics = evaluate_embeddings(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], mode=mode
                    )
                    metrics[FEW_SHOT_KEY] = few_shot_open_set_false_accept(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], FEW_SHOT,
                        mode=mode,
                    )  # fmt: skip
                    genuine, stranger = decision_distances(
                        emb[g_rows], labels[g_rows], emb[p_rows], labels[p_rows], mode
                    )
                except ValueError as exc:
                    raise EvaluationError(f"{root}: cannot evaluate: {exc}") from None
                metrics["decision_genuine_max"] = float(genuine.max())
                metrics["decision_stranger_min"] = float(stranger.min())
                if is_current and mode == cfg.match_mode:
                    current_decisions = genuine, stranger
                results.append(
                    VariantResult(
                        alignment, flip, mode, metrics, is_current and mode == cfg.match_mode
                    )
                )
            pairs = pair_scores(np.concatenate([emb[g_rows], emb[p_rows]]),
                                np.concatenate([labels[g_rows], labels[p_rows]]))  # fmt: skip
            far, tar, _ = roc_curve(*pairs)
            curves[f"{alignment}, flip {'on' if flip else 'off'}"] = (far, tar)
            if is_current:
                current_pairs = pairs
    # the first variant is always the current one
    assert current_pairs is not None and current_decisions is not None
    report = EvaluationReport(
        dataset=str(root),
        split=split.description,
        model_id=str(embedder.model_id),
        n_gallery=len(g_rows),
        n_probes=len(p_rows),
        failed=cropset.failed,
        results=results,
        decision=decision_summary(cfg.match_mode, *current_decisions, cfg.threshold),
    )
    if calibrate_far is not None:
        report.calibration = calibrate(cfg, *current_decisions, far=calibrate_far)
    if out_dir is not None:
        report.plots = save_plots(
            Path(out_dir), curves, current_pairs, report.current, cfg.threshold,
            report.calibration, current_decisions,
        )  # fmt: skip
    return report


def calibrate(cfg: Config, genuine: np.ndarray, stranger: np.ndarray, far: float) -> dict[str, Any]:
    """Write the largest threshold accepting at most a fraction ``far`` of strangers.

    ``genuine`` and ``stranger`` are the decision distances of ``cfg.match_mode``
    (:func:`model.metrics.decision_distances`). The threshold is rounded down to 4 decimals, so
    it never accepts more strangers than the exact one; the genuine accept rate (TAR) there is
    reported, and a warning logged when the FAR target rejects genuine probes.
    """
    if not 0.0 < far < 1.0:
        raise EvaluationError(f"--far {far}: the target false accept rate must be in (0, 1)")
    genuine = np.asarray(genuine, dtype=np.float64)
    stranger = np.asarray(stranger, dtype=np.float64)
    if len(stranger) * far < 1.0:
        log.warning(
            "only %d stranger decisions: FAR %g cannot be measured finer than 1/%d; the "
            "threshold is set just below the closest stranger",
            len(stranger), far, len(stranger),
        )  # fmt: skip
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(stranger), bool)])
    try:
        threshold = threshold_at_far(np.concatenate([genuine, stranger]), same, far)
    except ValueError as exc:
        raise EvaluationError(f"cannot calibrate: {exc}") from None
    value = _round_down(min(threshold, 2.0))
    summary = decision_summary(cfg.match_mode, genuine, stranger, value)
    if summary["stranger_accept"] > far:
        raise EvaluationError(
            f"cannot calibrate: {summary['n_strangers_accepted']} strangers are at distance "
            f"{stranger.min():.4f} or closer, so no threshold >= 0 reaches FAR {far:g}; are "
            "the same photos filed under two identities?"
        )
    path = write_config_value(cfg.root, "threshold", value)
    if summary["n_genuine_accepted"] < len(genuine):
        log.warning(
            "FAR %g forces threshold %.4f below the farthest genuine probe (%.4f): %d of %d "
            "genuine probes (%.1f%%) would be rejected as Unknown",
            far, value, genuine.max(), len(genuine) - summary["n_genuine_accepted"],
            len(genuine), 100.0 * (1.0 - summary["genuine_accept"]),
        )  # fmt: skip
    log.info(
        "threshold %.4f (%s decisions: strangers accepted %d/%d <= FAR %g, TAR %.4f) "
        "written to %s",
        value, cfg.match_mode, summary["n_strangers_accepted"], len(stranger), far,
        summary["genuine_accept"], path,
    )  # fmt: skip
    return {
        "threshold": value,
        "far": far,
        "tar": summary["genuine_accept"],
        "previous": cfg.threshold,
        "config": str(path),
        "mode": cfg.match_mode,
        "stranger_accept": summary["stranger_accept"],
        "n_strangers_accepted": summary["n_strangers_accepted"],
        "n_strangers": summary["n_strangers"],
        "n_genuine": summary["n_genuine"],
        "genuine_max": summary["genuine_max"],
        "stranger_min": summary["stranger_min"],
    }


def _round_down(threshold: float) -> float:
    """``threshold`` to 4 decimals, never above it (float rounding included), at least 0."""
    steps = math.floor(threshold * 1e4)
    while steps > 0 and steps / 1e4 > threshold:
        steps -= 1
    return max(0.0, steps / 1e4)


def save_plots(
    out_dir: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    pairs: tuple[np.ndarray, np.ndarray],
    current: VariantResult,
    threshold: float,
    calibration: dict[str, Any] | None = None,
    decisions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, str]:
    """ROC curves (log FAR) and distance histograms as PNGs in ``out_dir``.

    ``distances.png`` shows the image-pair distances and, given ``decisions`` (genuine and
    stranger decision distances of ``current``), the distances the recogniser thresholds, with
    the configured and calibrated thresholds.
    """
    from matplotlib.figure import Figure

    distances, same = pairs
    roc = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = roc.subplots()
    floor = 1.0 / max(int((~same).sum()), 1)
    for name, (far, tar) in curves.items():
        ax.step(np.maximum(far, floor / 2), tar, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1.0)
    lowest = min(float(np.interp(floor / 2, far, tar)) for far, tar in curves.values())
    ax.set_ylim(max(0.0, np.floor((lowest - 0.05) * 10) / 10), 1.005)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC ({current.alignment}, flip {'on' if current.flip_average else 'off'}: "
                 f"AUC {current.metrics['auc']:.4f})")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")

    hist = Figure(figsize=(6.4, 8.4 if decisions is not None else 4.8), dpi=100)
    axes = hist.subplots(2 if decisions is not None else 1, 1, squeeze=False)[:, 0]
    bins = np.linspace(0.0, max(2.0, float(distances.max())), 61)
    panels = [(axes[0], distances[same], distances[~same], "distances of image pairs",
               ("same person", "different people"))]  # fmt: skip
    if decisions is not None:
        genuine, stranger = decisions
        panels.append((axes[1], genuine, stranger[np.isfinite(stranger)],
                       f"recogniser decisions ({current.match_mode}): distance to the winner",
                       ("own identity (probes)", "strangers (identity left out)")))  # fmt: skip
    for ax, genuine_d, impostor_d, title, names in panels:
        ax.hist(impostor_d, bins=bins, alpha=0.6, density=True, label=names[1])
        ax.hist(genuine_d, bins=bins, alpha=0.6, density=True, label=names[0])
        ax.set_ylabel("density")
        ax.set_title(title)
    ax = axes[-1]  # the thresholds apply to the decisions (or, without them, the only panel)
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    if calibration:
        ax.axvline(calibration["threshold"], color="r", linestyle=":",
                   label=f"calibrated {calibration['threshold']:.4f}")  # fmt: skip
    ax.set_xlabel("Euclidean distance between unit embeddings")
    for ax in axes:
        ax.legend()
    hist.tight_layout()

    out: dict[str, str] = {}
    for name, figure in (("roc", roc), ("distances", hist)):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        path = Path(out_dir) / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        out[name] = os.fspath(path)
    return out
