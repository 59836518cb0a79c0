"""After capture: make the new person recognisable at once, and check the shots make sense.

:class:`Enroller` runs the incremental preprocessing (``preprocess.pipeline.run_preprocess``)
and the gallery update (``Gallery.sync``) for this one person only — nobody else is re-embedded,
nothing is retrained. It reuses the scanner's MTCNN detector (start-up is not paid twice) and
keeps one embedder. With ``background=True`` it already works while shots are being taken, so
what is left after the last shot is that shot's crop and embedding.

:func:`check_shots` then warns when the new shots look like someone already enrolled (the same
person under two names) or like more than one person (someone else stepped in), and
:func:`discard_shots` removes exactly this session's shots, crops and embeddings if the user
declines.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.names import person_dir
from common.vectors import euclidean_distances
from preprocess.detect import Detector, Face
from preprocess.pipeline import PreprocessSummary, load_manifest, manifest_path, run_preprocess
from store.factory import embedding_store_exists, open_embedding_store
from store.gallery import EmbedderLike, SyncSummary, sync_gallery

log = logging.getLogger(__name__)


class LockedDetector:
    """One detector shared by the capture loop and the background enroller, one call at a time."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            return self.inner.detect(rgb)


EmbedderSource = EmbedderLike | cf.Future | Callable[[], EmbedderLike]


@dataclass
class EnrolTiming:
    """How long the last step took, from the end of capture to recognisable."""

    seconds: float  # end of capture -> gallery up to date
    preprocess_seconds: float
    gallery_seconds: float
    waited_seconds: float  # waiting for background work (and the embedder) to finish
    preprocess: PreprocessSummary | None = None
    gallery: SyncSummary | None = None
    background_rounds: int = 0

    def line(self) -> str:
        return (
            f"recognisable {self.seconds:.1f} s after the last shot "
            f"(waiting for background work {self.waited_seconds:.1f} s, "
            f"preprocess {self.preprocess_seconds:.1f} s, gallery {self.gallery_seconds:.1f} s)"
        )


class Enroller:
    """Incremental preprocessing and gallery update for one person.

    ``embedder`` is an embedder, a future of one (loading in the background) or a callable
    that loads one. Call :meth:`shot_saved` after each saved shot (background mode starts a
    round of work if none is queued), then :meth:`finish` once capture is over.
    """

    def __init__(
        self,
        cfg: Config,
        name: str,
        detector: Detector,
        embedder: EmbedderSource,
        *,
        background: bool = True,
    ) -> None:
        self.cfg = cfg
        self.name = person_dir(cfg.images_dir, name).name
        self.detector = detector
        self._embedder_source = embedder
        self._embedder: EmbedderLike | None = None
        self.background = background
        self._pool = (
            cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="enrol") if background else None
        )
        self._rounds: list[cf.Future] = []

    # -- embedder ---------------------------------------------------------------------------
    def _ready_embedder(self) -> EmbedderLike | None:
        """The embedder if it is available without waiting."""
        if self._embedder is not None:
            return self._embedder
        source = self._embedder_source
        if isinstance(source, cf.Future):
            return source.result() if source.done() else None
        return self.embedder()

    def embedder(self) -> EmbedderLike:
        """The embedder, waiting for (or running) its loading."""
        if self._embedder is None:
            source = self._embedder_source
            if isinstance(source, cf.Future):
                self._embedder = source.result()
            elif callable(source) and not hasattr(source, "embed"):
                self._embedder = source()
            else:
                self._embedder = source  # type: ignore[assignment]
        return self._embedder

    # -- work -------------------------------------------------------------------------------
    def _preprocess(self) -> PreprocessSummary:
        return run_preprocess(self.cfg, names=[self.name], detector=self.detector, progress=False)

    def _sync(self, embedder: EmbedderLike) -> SyncSummary:
        with open_embedding_store(self.cfg) as gallery:
            return sync_gallery(gallery, self.cfg, embedder, names=[self.name], progress=False)

    def _round(self) -> None:
        """One background round: crops for new shots, then their embeddings if possible."""
        self._preprocess()
        embedder = self._ready_embedder()
        if embedder is not None:
            self._sync(embedder)

    def shot_saved(self, path: Path | None = None) -> None:
        """A shot was saved: in background mode, queue a round unless one is already queued."""
        if self._pool is None:
            return
        pending = [f for f in self._rounds if not f.done()]
        if len(pending) >= 2 or (pending and not pending[-1].running()):
            return  # a queued round will see this shot too
        self._rounds.append(self._pool.submit(self._round))
        log.debug("background enrolment round queued for %s", path or self.name)

    def finish(self) -> EnrolTiming:
        """Wait for background rounds, then bring crops and gallery fully up to date."""
        start = time.perf_counter()
        for future in self._rounds:
            future.result()  # re-raises what went wrong in the background, in this thread
        embedder = self.embedder()
        waited = time.perf_counter() - start
        t0 = time.perf_counter()
        pre = self._preprocess()
        t1 = time.perf_counter()
        sync = self._sync(embedder)
        t2 = time.perf_counter()
        self.close()
        return EnrolTiming(
            seconds=t2 - start,
            preprocess_seconds=t1 - t0,
            gallery_seconds=t2 - t1,
            waited_seconds=waited,
            preprocess=pre,
            gallery=sync,
            background_rounds=len(self._rounds),
        )

    def close(self) -> None:
        """Stop the background worker (waits for a running round)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# --------------------------------------------------------------------------- embeddings
def crop_relpaths(cfg: Config, shots: Sequence[Path]) -> dict[Path, str | None]:
    """For each shot (a file in ``images/<Name>/``), its crop relative to ``pre_images/``
    according to the preprocessing manifest (``None``: rejected or not processed)."""
    entries = load_manifest(manifest_path(cfg))
    images = Path(cfg.images_dir)
    out: dict[Path, str | None] = {}
    for shot in shots:
        rel = Path(shot).relative_to(images).as_posix()
        entry = entries.get(rel) or {}
        out[Path(shot)] = entry.get("output") if entry.get("status") == "ok" else None
    return out


def identity_rows(cfg: Config, model_id: str, name: str) -> tuple[list[str], np.ndarray]:
    """``(relpaths, embeddings)`` of identity ``name`` in the gallery, sorted by relpath
    (:meth:`Gallery.load_identity`); empty, without creating a file, when there is no gallery."""
    if not embedding_store_exists(cfg):
        return [], np.zeros((0, 0), np.float32)
    with open_embedding_store(cfg) as gallery:
        return gallery.load_identity(model_id, name)


# --------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class IdentityDistance:
    """How close the new shots are to another enrolled identity."""

    identity: str
    mean_nearest: float  # mean over the new shots of the distance to that identity's nearest
    nearest: float  # the single smallest distance
    matched: float  # fraction of new shots within the threshold of that identity

    def __str__(self) -> str:
        return (
            f"{self.identity}: mean nearest distance {self.mean_nearest:.2f}, "
            f"closest {self.nearest:.2f}, {self.matched:.0%} of the shots within the threshold"
        )


@dataclass(frozen=True)
class ShotGroup:
    """A group of this person's shots that looks like a different person from the main group."""

    relpaths: tuple[str, ...]
    new: int  # how many of them were taken in this session
    distance: float  # mean distance to the main group

    def __str__(self) -> str:
        shown = ", ".join(Path(r).name for r in self.relpaths[:6])
        more = f" and {len(self.relpaths) - 6} more" if len(self.relpaths) > 6 else ""
        return (
            f"{len(self.relpaths)} shot(s) ({shown}{more}) at mean distance "
            f"{self.distance:.2f} from the others"
        )


@dataclass
class ShotCheck:
    """Warnings about the new shots; :attr:`suspicious` means: ask before keeping them."""

    name: str
    threshold: float
    new_count: int
    closest: list[IdentityDistance] = field(default_factory=list)  # nearest identities first
    duplicates: list[IdentityDistance] = field(default_factory=list)  # below the threshold
    groups: list[ShotGroup] = field(default_factory=list)  # groups apart from the main one

    @property
    def suspicious(self) -> bool:
        return bool(self.duplicates or self.groups)

    def lines(self) -> list[str]:
        """Human-readable findings (distances included)."""
        out: list[str] = []
        for dup in self.duplicates:
            out.append(
                f"warning: the new shots of {self.name} match {dup.identity!r}, who is already "
                f"enrolled (threshold {self.threshold:.2f}) - the same person under two names? "
                f"{dup}"
            )
        for group in self.groups:
            kind = "another person" if len(group.relpaths) > 1 else "someone else"
            out.append(
                f"warning: {self.name}'s shots look like more than one person: {group} "
                f"(threshold {self.threshold:.2f}) - did {kind} step in?"
            )
        if not self.duplicates and self.closest:
            out.append(
                f"closest other identity: {self.closest[0]} (threshold {self.threshold:.2f})"
            )
        return out


def compare_with_others(
    new: np.ndarray, labels: Sequence[str], gallery: np.ndarray, name: str, threshold: float
) -> list[IdentityDistance]:
    """Distances from the new embeddings to every other identity, closest first."""
    if len(new) == 0:
        return []
    labels_arr = np.asarray(labels, dtype=object)
    out = []
    for identity in sorted(set(labels) - {name}):
        dist = euclidean_distances(new, gallery[labels_arr == identity])
        nearest = dist.min(axis=1)
        out.append(
            IdentityDistance(
                identity=identity,
                mean_nearest=float(nearest.mean()),
                nearest=float(nearest.min()),
                matched=float((nearest < threshold).mean()),
            )
        )
    return sorted(out, key=lambda d: d.mean_nearest)


def split_groups(
    relpaths: Sequence[str], embeddings: np.ndarray, new: set[str], threshold: float
) -> list[ShotGroup]:
    """Groups of one person's shots that sit apart from the main group.

    Average-linkage clustering cut at ``threshold``: the largest cluster is the person; every
    other cluster (a single odd shot, or several shots of someone else) is reported with its
    mean distance to the main cluster, if that distance exceeds ``threshold``. Old shots are
    included, so appending a different person's shots to an existing name is caught too.
    """
    if len(relpaths) < 2:
        return []
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(np.asarray(embeddings, dtype=np.float64), method="average", metric="euclidean")
    labels = fcluster(tree, t=threshold, criterion="distance")
    sizes = np.bincount(labels)
    main = int(np.argmax(sizes))
    main_rows = embeddings[labels == main]
    groups = []
    for cluster in sorted(set(labels.tolist()) - {main}):
        rows = np.flatnonzero(labels == cluster)
        distance = float(euclidean_distances(embeddings[rows], main_rows).mean())
        if distance <= threshold:
            continue
        members = tuple(relpaths[i] for i in rows)
        groups.append(ShotGroup(members, sum(1 for m in members if m in new), distance))
    return sorted(groups, key=lambda g: -len(g.relpaths))


def check_shots(
    name: str,
    own: tuple[Sequence[str], np.ndarray],
    new_relpaths: Sequence[str],
    others: tuple[Sequence[str], np.ndarray],
    threshold: float,
) -> ShotCheck:
    """Duplicate checks for ``name``'s shots.

    ``own``: ``(relpaths, embeddings)`` of all of this person's crops; ``new_relpaths``: those
    from this session; ``others``: ``(labels, embeddings)`` of the whole gallery (rows of
    ``name`` are ignored). An identity is a suspected duplicate when the mean, over the new
    shots, of the distance to its nearest embedding is below ``threshold``.
    """
    relpaths, embeddings = list(own[0]), np.asarray(own[1], dtype=np.float32)
    new_set = set(new_relpaths)
    rows = [i for i, r in enumerate(relpaths) if r in new_set]
    new = embeddings[rows] if rows else np.zeros((0, 0), np.float32)
    labels, gallery = list(others[0]), np.asarray(others[1], dtype=np.float32)
    keep = [i for i, label in enumerate(labels) if label != name]
    closest = []
    if keep and rows:
        closest = compare_with_others(
            new, [labels[i] for i in keep], gallery[keep], name, threshold
        )
    check = ShotCheck(name=name, threshold=threshold, new_count=len(rows), closest=closest)
    check.duplicates = [d for d in closest if d.mean_nearest < threshold]
    if rows:
        check.groups = split_groups(relpaths, embeddings, new_set, threshold)
    return check


def check_enrolment(
    cfg: Config, name: str, new_shots: Sequence[Path], embedder: EmbedderLike
) -> ShotCheck:
    """:func:`check_shots` for ``name`` with the gallery of workspace ``cfg``."""
    mapping = crop_relpaths(cfg, new_shots)
    new_relpaths = [r for r in mapping.values() if r]
    with open_embedding_store(cfg) as gallery:
        own = gallery.load_identity(embedder.model_id, name, dim=embedder.dim)
        others = gallery.load(embedder.model_id, dim=embedder.dim)
    return check_shots(name, own, new_relpaths, others, cfg.enrol_check_distance)


# --------------------------------------------------------------------------- undo
def discard_shots(
    cfg: Config, name: str, shots: Sequence[Path], embedder: EmbedderLike, detector: Any = None
) -> int:
    """Delete this session's ``shots`` and, through an incremental run, their crops and
    embeddings; an emptied person folder is removed. Returns how many shots were deleted."""
    folder = person_dir(cfg.images_dir, name)
    deleted = 0
    for shot in shots:
        shot = Path(shot)
        if shot.parent != folder:
            raise ValueError(f"{shot} is not a shot of {name}")
        with contextlib.suppress(FileNotFoundError):
            shot.unlink()
            deleted += 1
    with contextlib.suppress(OSError):
        if folder.is_dir() and not any(folder.iterdir()):
            os.rmdir(folder)
    if Path(cfg.images_dir).is_dir():
        run_preprocess(cfg, names=[folder.name], detector=detector, progress=False)
    with open_embedding_store(cfg) as gallery:
        # no revival: discarding shots never brings back a person removed meanwhile
        sync_gallery(gallery, cfg, embedder, names=[folder.name], progress=False, revive=False)
    log.info("discarded %d shot(s) of %s with their crops and embeddings", deleted, folder.name)
    return deleted
