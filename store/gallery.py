"""The gallery: embeddings of the enrolled crops (``pre_images/<Name>/*.png``) in an
:class:`store.interfaces.EmbeddingStore`, kept in line with the folder.

:func:`sync_gallery` brings the store in line with the folder: it embeds only crops it has not
seen (by content, for the embedder's model id), copies the vector of a crop that was merely
renamed, drops rows of deleted or changed crops and of removed people, and drops rows of other
model ids. Embedding runs in batches of ``cfg.embed_batch``, each committed in its own
transaction, so an interrupted sync keeps its work and the next one resumes. Inside each
write transaction (with the store's write lock held) every crop is checked again on disk: a
crop deleted or changed while it was being embedded (``attendance remove`` running meanwhile)
is not stored, so a removal can never be undone by a sync in flight.
:func:`load_gallery` syncs and then only reads: no network, nothing recomputed.
:class:`GalleryWatcher` lets a running recogniser notice, cheaply, that another process changed
the store (someone enrolled or removed) and reload it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Protocol

import numpy as np

from common.config import Config
from common.fsutil import sha256_file
from common.image_io import ImageReadError, decode_image, read_image
from common.names import InvalidName, person_dir, validate_name
from store.interfaces import EmbeddingStore
from store.records import CropEmbedding, GalleryError, StoredCrop

log = logging.getLogger(__name__)

CROP_SUFFIX = ".png"


class EmbedderLike(Protocol):
    """What the gallery needs from an embedder (``model.embedder.Embedder``)."""

    model_id: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings (N, dim) of uint8 RGB crops (N, size, size, 3)."""
        ...


@dataclass
class SyncSummary:
    """What one :func:`sync_gallery` did."""

    model_id: str
    embedded: int = 0  # crops run through the model
    reused: int = 0  # crops whose identical content was already stored under another path
    unchanged: int = 0  # crops already stored
    removed: int = 0  # rows of deleted or changed crops and of removed people
    other_models: int = 0  # rows of other model ids dropped
    vanished: int = 0  # crops removed or changed while being embedded: not stored
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)

    def __str__(self) -> str:
        text = (
            f"gallery {self.model_id}: {self.embedded} embedded, {self.reused} reused, "
            f"{self.unchanged} unchanged, {self.removed} removed"
        )
        if self.other_models:
            text += f", {self.other_models} of other models dropped"
        if self.vanished:
            text += f", {self.vanished} removed or changed meanwhile (not stored)"
        if self.skipped:
            text += f", {len(self.skipped)} crops skipped"
        return text


@dataclass(frozen=True)
class _Crop:
    relpath: str
    identity: str
    path: Path
    size: int
    mtime_ns: int
    sha256: str = ""
    png: bytes | None = None  # the file's bytes, read only for a store that holds crops


def sync_gallery(
    store: EmbeddingStore,
    cfg: Config,
    embedder: EmbedderLike,
    names: Sequence[str] | None = None,
    progress: bool | None = None,
    *,
    revive: bool = True,
) -> SyncSummary:
    """Bring the stored embeddings for ``embedder.model_id`` in line with ``pre_images/``.

    ``names`` limits the work to those identities (a name whose folder is gone has its
    rows removed); ``None`` means everybody, and also drops rows of other model ids.
    In a shared store, ``names`` are being enrolled (again): a removed person named here is
    brought back, unless ``revive=False`` (shots being discarded, an upload rolled back).
    ``progress``: show a tqdm bar (``None``: only on a terminal).
    """
    model_id = embedder.model_id
    summary = SyncSummary(model_id=model_id)
    scope = None if names is None else sorted({validate_name(n) for n in names})
    shared = bool(getattr(store, "holds_crops", False))
    if shared:
        # A shared store holds everyone's people: publish only those this workspace has a
        # folder for, and manage only the crops it published itself. People named explicitly
        # are being enrolled (again); a sweep of the folder does not bring back the removed.
        # A name given without a folder here (its shots discarded) loses only the crops this
        # workspace published; an empty workspace has none, so it changes nothing.
        base = Path(cfg.pre_images_dir)
        revived = [] if scope is None or not revive else scope
        if scope is None:
            scope = sorted({c.identity for c in _scan(base, None)})
        store.begin_publish(revived)  # type: ignore[attr-defined]
        scope = _not_removed(store, scope, revived, summary)
        if not scope:
            log.info("%s", summary)
            return summary
    crops = _scan(Path(cfg.pre_images_dir), scope)
    stored = store.stored(model_id, scope)
    current: dict[str, _Crop] = {}
    for crop in crops:
        try:
            current[crop.relpath] = _hashed(crop, stored.get(crop.relpath, []))
        except OSError as exc:
            summary.skipped.append((crop.relpath, f"cannot read: {exc.strerror or exc}"))
    keep = {(c.relpath, c.sha256) for c in current.values()}
    valid = {
        (relpath, row.sha256) for relpath, rows in stored.items() for row in rows if row.intact
    }
    stale = [
        (row.sha256, relpath)
        for relpath, rows in stored.items()
        for row in rows
        if (relpath, row.sha256) not in keep or (relpath, row.sha256) not in valid
    ]
    todo = [c for c in current.values() if (c.relpath, c.sha256) not in valid]
    summary.unchanged = len(current) - len(todo)
    known = store.vectors(model_id, {c.sha256 for c in todo})  # renamed or copied crops
    reused = [c for c in todo if c.sha256 in known]
    todo = [c for c in todo if c.sha256 not in known]
    kept: list[CropEmbedding] = []
    if shared:
        reused = _with_bytes(reused, summary)
    summary.removed, summary.other_models = store.replace(
        model_id,
        stale,
        [_row(c, *known[c.sha256]) for c in reused],
        scope,
        _kept(still_on_disk(Path(cfg.pre_images_dir)), kept),
    )
    summary.reused = len(kept)
    summary.vanished += len(reused) - len(kept)
    _embed(store, cfg, embedder, todo, summary, progress, shared)
    log.info("%s", summary)
    for relpath, reason in summary.skipped:
        log.warning("gallery: skipped %s: %s", relpath, reason)
    return summary


def _embed(
    store: EmbeddingStore,
    cfg: Config,
    embedder: EmbedderLike,
    todo: list[_Crop],
    summary: SyncSummary,
    progress: bool | None,
    with_bytes: bool = False,
) -> None:
    """Embed ``todo`` in batches of ``cfg.embed_batch``, one transaction per batch
    (``with_bytes``: the rows carry the crop files' bytes, for a store that holds crops)."""
    if not todo:
        return
    from tqdm import tqdm

    size = int(getattr(embedder, "input_size", 160))
    batch_size = max(1, int(cfg.embed_batch))
    bar = tqdm(
        total=len(todo),
        desc="embedding crops",
        unit="crop",
        disable=None if progress is None else not progress,
    )
    with bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            if with_bytes:
                batch = _with_bytes(batch, summary)
            ok: list[_Crop] = []
            pixels: list[np.ndarray] = []
            for crop in batch:
                try:
                    if crop.png is not None:
                        rgb = decode_image(crop.png, crop.relpath)
                    else:
                        rgb = read_image(crop.path)
                except ImageReadError as exc:
                    summary.skipped.append((crop.relpath, str(exc)))
                    continue
                if rgb.shape != (size, size, 3):
                    summary.skipped.append(
                        (
                            crop.relpath,
                            f"the crop is {rgb.shape[1]}x{rgb.shape[0]}, expected "
                            f"{size}x{size}; run preprocessing again for this person",
                        )
                    )
                    continue
                ok.append(crop)
                pixels.append(rgb)
            if ok:
                vectors = np.asarray(embedder.embed(np.stack(pixels)), dtype="<f4")
                if vectors.shape != (len(ok), embedder.dim):
                    raise GalleryError(
                        f"the embedder returned shape {vectors.shape} for {len(ok)} crops, "
                        f"expected ({len(ok)}, {embedder.dim})"
                    )
                stored = store.insert(
                    summary.model_id,
                    [_row(c, embedder.dim, v.tobytes()) for c, v in zip(ok, vectors, strict=True)],
                    still_on_disk(Path(cfg.pre_images_dir)),
                )
                summary.embedded += stored
                summary.vanished += len(ok) - stored
            bar.update(len(batch))


def still_on_disk(base: Path) -> Callable[[CropEmbedding], bool]:
    """``check(row)``: is the crop of ``row`` still a regular file under ``base`` with the
    size and mtime it had when it was hashed? (Asked by the store inside its write
    transaction, see :meth:`EmbeddingStore.insert`.)"""

    def check(row: CropEmbedding) -> bool:
        try:
            info = os.stat(base / row.relpath)
        except OSError:
            return False
        return (
            S_ISREG(info.st_mode) and info.st_size == row.size and info.st_mtime_ns == row.mtime_ns
        )

    return check


def _kept(
    check: Callable[[CropEmbedding], bool], kept: list[CropEmbedding]
) -> Callable[[CropEmbedding], bool]:
    """``check``, also collecting the rows it accepts into ``kept``."""

    def wrapped(row: CropEmbedding) -> bool:
        ok = check(row)
        if ok:
            kept.append(row)
        return ok

    return wrapped


def _row(crop: _Crop, dim: int, vector: bytes) -> CropEmbedding:
    return CropEmbedding(
        crop.sha256, crop.relpath, crop.identity, crop.size, crop.mtime_ns, dim, vector, crop.png
    )


def _with_bytes(crops: list[_Crop], summary: SyncSummary) -> list[_Crop]:
    """``crops`` with their files' bytes (a crop that cannot be read is skipped)."""
    out: list[_Crop] = []
    for crop in crops:
        try:
            out.append(dataclasses.replace(crop, png=crop.path.read_bytes()))
        except OSError as exc:
            summary.skipped.append((crop.relpath, f"cannot read: {exc.strerror or exc}"))
    return out


def _not_removed(
    store: EmbeddingStore, scope: list[str], revive: Sequence[str], summary: SyncSummary
) -> list[str]:
    """The people of ``scope`` this workspace may publish to a shared store: not those removed
    from it, unless named in ``revive`` (enrolled again by name). A workspace that still holds
    an old enrolment must not bring someone back by a sweep."""
    removed = store.tombstones(scope)  # type: ignore[attr-defined]
    keep: list[str] = []
    for name in scope:
        when = removed.get(name)
        if when is not None and name not in revive:
            reason = (
                f"{name} was removed from {store.describe()} on {when:%Y-%m-%d %H:%M %Z}; "
                f"delete this folder, or enrol them again by name (call_preprocess --name "
                f"{name!r})"
            )
            summary.skipped.append((name, reason))
            continue
        keep.append(name)
    return keep


def _scan(base: Path, scope: list[str] | None) -> list[_Crop]:
    """The crops under ``base`` (all identity folders, or those named in ``scope``)."""
    if scope is None:
        if not base.is_dir():
            log.warning("%s does not exist: the gallery is empty", base)
            return []
        folders = []
        for entry in sorted(base.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                if validate_name(entry.name) != entry.name:
                    raise InvalidName(f"{entry.name!r} is not in canonical form")
            except InvalidName as exc:
                log.warning("%s: folder skipped, not a valid identity: %s", entry, exc)
                continue
            folders.append(entry)
    else:
        folders = [person_dir(base, name) for name in scope]
    crops: list[_Crop] = []
    for folder in folders:
        if folder.is_symlink():
            log.warning(
                "%s: folder skipped, it is a symbolic link (crops are read in place)", folder
            )
            continue
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() != CROP_SUFFIX:
                continue
            try:
                stat = path.lstat()  # a link is not followed: crops live in pre_images/ only
            except OSError:
                continue
            if not S_ISREG(stat.st_mode):
                continue
            crops.append(
                _Crop(
                    relpath=f"{folder.name}/{path.name}",
                    identity=folder.name,
                    path=path,
                    size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                )
            )
    return crops


def _hashed(crop: _Crop, rows: list[StoredCrop]) -> _Crop:
    """``crop`` with its sha256: taken from a stored row with the same size and mtime, else read."""
    for row in rows:
        if row.size == crop.size and row.mtime_ns == crop.mtime_ns:
            return dataclasses.replace(crop, sha256=row.sha256)
    return dataclasses.replace(crop, sha256=sha256_file(crop.path))


def load_gallery(
    store: EmbeddingStore,
    cfg: Config,
    embedder: EmbedderLike,
    progress: bool | None = None,
    cache: dict[str, np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Sync ``store`` with the workspace ``cfg`` for ``embedder``, then load it.

    A shared store (``holds_crops``) is not synced with this workspace's folder (a kiosk
    with an empty workspace must not remove everyone; enrolment publishes): its crops that
    have no embedding for this model yet are embedded from the stored bytes instead
    (``cache``: see :func:`embed_stored_crops`).
    """
    if getattr(store, "holds_crops", False):
        extra = embed_stored_crops(store, cfg, embedder, progress, cache=cache)
        labels, vectors = store.load(embedder.model_id, dim=embedder.dim)
        if extra[0]:  # embedded here but not stored (a kiosk role may not write embeddings)
            labels, vectors = labels + extra[0], np.concatenate([vectors, extra[1]])
        return labels, vectors
    sync_gallery(store, cfg, embedder, progress=progress)
    return store.load(embedder.model_id, dim=embedder.dim)


def embed_stored_crops(
    store: EmbeddingStore,
    cfg: Config,
    embedder: EmbedderLike,
    progress: bool | None = None,
    names: set[str] | None = None,
    cache: dict[str, np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Embed the crops of a shared store (of ``names``, or everyone's) that lack an embedding
    for ``embedder`` and store the vectors. When the store refuses them (a kiosk role without
    that grant), they are returned ``(labels, vectors)`` to be used from memory; else nothing
    is returned. ``cache`` (sha256 -> vector) keeps such vectors so they are embedded once."""
    missing = store.missing(embedder.model_id, names)  # type: ignore[attr-defined]
    cache = {} if cache is None else cache
    labels: list[str] = []
    kept: list[np.ndarray] = []
    if not missing:
        return labels, np.zeros((0, embedder.dim), np.float32)
    from tqdm import tqdm

    size = int(getattr(embedder, "input_size", 160))
    batch_size = max(1, int(cfg.embed_batch))
    refused = False
    with tqdm(
        total=len(missing),
        desc="embedding stored crops",
        unit="crop",
        disable=None if progress is None else not progress,
    ) as bar:
        for start in range(0, len(missing), batch_size):
            batch = []
            chunk = missing[start : start + batch_size]
            # only crops not embedded before are downloaded (a reload after a reconnection
            # must not fetch every image again)
            pngs = store.crop_bytes({sha for sha, _, _ in chunk if sha not in cache})  # type: ignore[attr-defined]
            for sha, identity, relpath in chunk:
                if sha in cache:  # embedded before, kept in memory
                    labels.append(identity)
                    kept.append(cache[sha][None])
                    continue
                png = pngs.get(sha)
                if png is None:  # removed meanwhile
                    continue
                try:
                    rgb = decode_image(png, f"{store.describe()}: {relpath}")
                except ImageReadError as exc:
                    log.warning("gallery: skipped %s", exc)
                    continue
                if rgb.shape == (size, size, 3):
                    batch.append((sha, identity, rgb))
                else:
                    log.warning("gallery: skipped %s: not a %dx%d crop", relpath, size, size)
            bar.update(min(batch_size, len(missing) - start))
            if not batch:
                continue
            vectors = np.asarray(embedder.embed(np.stack([b[2] for b in batch])), dtype="<f4")
            rows = [
                (sha, embedder.dim, v.tobytes())
                for (sha, _, _), v in zip(batch, vectors, strict=True)
            ]
            if not refused:
                try:
                    store.add_vectors(embedder.model_id, rows)  # type: ignore[attr-defined]
                    continue
                except GalleryError as exc:
                    refused = True
                    log.warning("embeddings kept in memory only: %s", exc)
            labels += [identity for _, identity, _ in batch]
            kept.append(vectors.astype(np.float32))
            for (sha, _, _), vector in zip(batch, vectors, strict=True):
                cache[sha] = vector.astype(np.float32)
    if not kept:
        return labels, np.zeros((0, embedder.dim), np.float32)
    return labels, np.concatenate(kept)


# --- watching for changes made by other processes ------------------------------------------------
class GalleryWatcher:
    """Notices changes other processes make to an embedding store and reloads it, read-only.

    A running recogniser uses this to pick up people enrolled (or removed) meanwhile by the
    scanner or ``attendance remove``. :meth:`poll` costs nothing until ``interval`` seconds
    have passed since the previous check; then it compares the store's change token (for
    SQLite: ``PRAGMA data_version`` on a connection kept open for the purpose, and the file's
    identity). Only when something changed does it read the stored embeddings of ``model_id``
    with :meth:`EmbeddingStore.load`; nothing is embedded.

    A failed reload (a damaged file or vector, a file that vanished) is logged once and
    retried at the next check; the gallery loaded last stays in use meanwhile.
    """

    def __init__(
        self,
        store: EmbeddingStore,
        model_id: str,
        *,
        dim: int | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        fill: Callable[[EmbeddingStore, set[str] | None], tuple[list[str], np.ndarray]]
        | None = None,
    ) -> None:
        self.store: EmbeddingStore | None = store
        # for a shared store: embeds the changed people's crops that have no vector for this
        # model yet, returning those it keeps in memory (embed_stored_crops)
        self.fill = fill
        self.model_id = model_id
        self.dim = dim
        self.interval = float(interval)
        self._clock = clock
        try:
            self._token: Hashable = store.change_token()
        except (OSError, GalleryError):
            self.close()
            raise
        self._pending = False  # a change was seen but not loaded yet
        self._problem: str | None = None  # the last warning, not repeated at every check
        self._missing = False  # the store was gone at the last check
        self._next_check = clock() + self.interval
        # the gallery in use, for stores that say which identities changed (shared ones)
        self._current: tuple[list[str], np.ndarray] | None = None
        self._dirty: set[str] | None = set()  # changes not applied yet (None: everything)
        self.checks = 0  # how many times the store was actually looked at
        self.reloads = 0  # how many times new contents were returned

    def __enter__(self) -> GalleryWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the watching connection (idempotent)."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def poll(self) -> tuple[list[str], np.ndarray] | None:
        """``(labels, embeddings)`` as :meth:`EmbeddingStore.load` gives them, if the store
        changed since the last successful reload (and a check is due); else ``None``."""
        now = self._clock()
        if now < self._next_check or self.store is None:
            return None
        self._next_check = now + self.interval
        self.checks += 1
        if self._current is not None and hasattr(self.store, "changed_identities"):
            return self._apply_changes(self.store)
        try:
            if self._changed(self.store):
                self._pending = True
            if not self._pending:
                return None
            loaded = self.store.load(self.model_id, dim=self.dim)
            others = [] if loaded[0] else [m for m in self.store.model_ids() if m != self.model_id]
        except (GalleryError, OSError) as exc:
            self._warn(f"the gallery was not reloaded, the previous one stays in use: {exc}")
            return None
        self._pending = False
        self._problem = None
        self.reloads += 1
        if others:
            log.warning(
                "%s holds no embeddings for model %s any more (it has %s): restart the "
                "recogniser to use that model",
                self.store.describe(),
                self.model_id,
                ", ".join(others),
            )
        return loaded

    def prime(self, labels: Sequence[str], embeddings: np.ndarray) -> None:
        """Tell the watcher the gallery in use (loaded after it started watching): a store
        that names the identities it changed then costs one small read per change, not a
        reload of everyone."""
        self._current = (list(labels), np.asarray(embeddings, np.float32))

    def _apply_changes(self, store: EmbeddingStore) -> tuple[list[str], np.ndarray] | None:
        """Re-read only the identities the store says changed and patch the gallery."""
        assert self._current is not None
        try:
            changed = store.changed_identities()  # type: ignore[attr-defined]
            if changed is None or self._dirty is None:
                self._dirty = None
            else:
                self._dirty |= changed
            if self._dirty == set():
                return None
            if self._dirty is None:
                labels, vectors = self._with_filled(
                    store, None, store.load(self.model_id, dim=self.dim)
                )
            else:
                names = self._dirty
                fresh = self._with_filled(
                    store,
                    names,
                    store.load_identities(self.model_id, names, dim=self.dim),  # type: ignore[attr-defined]
                )
                keep = [i for i, label in enumerate(self._current[0]) if label not in names]
                labels = [self._current[0][i] for i in keep] + fresh[0]
                parts = [p for p in (self._current[1][keep], fresh[1]) if len(p)]
                width = self.dim or self._current[1].shape[1]
                vectors = (
                    np.concatenate(parts).astype(np.float32)
                    if parts
                    else np.zeros((0, width), np.float32)
                )
        except (GalleryError, OSError, InvalidName) as exc:
            self._warn(f"the gallery was not updated, the previous one stays in use: {exc}")
            return None
        self._dirty = set()
        self._problem = None
        self.reloads += 1
        self._current = (labels, vectors)
        return labels, vectors

    def _with_filled(
        self,
        store: EmbeddingStore,
        names: set[str] | None,
        loaded: tuple[list[str], np.ndarray],
    ) -> tuple[list[str], np.ndarray]:
        """``loaded`` plus what :attr:`fill` embeds for ``names`` and keeps in memory."""
        if self.fill is None:
            return loaded
        extra = self.fill(store, names)
        if not extra[0]:
            return loaded
        if not loaded[0]:
            return list(extra[0]), np.asarray(extra[1], np.float32)
        return loaded[0] + list(extra[0]), np.concatenate([loaded[1], extra[1]]).astype(np.float32)

    def _changed(self, store: EmbeddingStore) -> bool:
        """Did the store change since the previous check?"""
        try:
            token = store.change_token()
        except FileNotFoundError:
            if not self._missing:
                log.warning(
                    "%s is missing; the gallery loaded before stays in use", store.describe()
                )
            self._missing = True
            return False
        self._missing = False
        changed, self._token = token != self._token, token
        return changed

    def _warn(self, message: str) -> None:
        if message != self._problem:
            log.warning("%s", message)
        self._problem = message
