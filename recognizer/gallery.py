"""The gallery: embeddings of the enrolled crops (``pre_images/<Name>/*.png``), kept in SQLite.

Each row holds one crop's embedding for one model: the crop's content sha256, the model id,
the identity, the crop's path relative to ``pre_images/``, the dimension and the float32 vector
(plus the file's size and mtime, so unchanged files are not even re-hashed).

:meth:`Gallery.sync` brings the store in line with the folder: it embeds only crops it has not
seen (by content, for the embedder's model id), copies the vector of a crop that was merely
renamed, drops rows of deleted or changed crops and of removed people, and drops rows of other
model ids. Embedding runs in batches of ``cfg.embed_batch``, each committed in its own
transaction, so an interrupted sync keeps its work and the next one resumes.
:meth:`Gallery.load` only reads: no network, no model, nothing recomputed.
:class:`GalleryWatcher` lets a running recogniser notice, cheaply, that another process changed
the file (someone enrolled or removed) and reload it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import sha256_file
from common.names import InvalidName, person_dir, validate_name

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CROP_SUFFIX = ".png"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    sha256   TEXT    NOT NULL,
    model_id TEXT    NOT NULL,
    relpath  TEXT    NOT NULL,
    identity TEXT    NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vector   BLOB    NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    created  REAL    NOT NULL,
    PRIMARY KEY (sha256, model_id, relpath)
);
CREATE INDEX IF NOT EXISTS embeddings_model_identity ON embeddings (model_id, identity, relpath);
"""


class GalleryError(UserError):
    """The gallery database cannot be opened, is locked, or holds unusable data."""


class EmbedderLike(Protocol):
    """What the gallery needs from :class:`model.embedder.Embedder`."""

    model_id: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings (N, dim) of uint8 RGB crops (N, size, size, 3)."""
        ...


@dataclass
class SyncSummary:
    """What one :meth:`Gallery.sync` did."""

    model_id: str
    embedded: int = 0  # crops run through the model
    reused: int = 0  # crops whose identical content was already stored under another path
    unchanged: int = 0  # crops already stored
    removed: int = 0  # rows of deleted or changed crops and of removed people
    other_models: int = 0  # rows of other model ids dropped
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)

    def __str__(self) -> str:
        text = (
            f"gallery {self.model_id}: {self.embedded} embedded, {self.reused} reused, "
            f"{self.unchanged} unchanged, {self.removed} removed"
        )
        if self.other_models:
            text += f", {self.other_models} of other models dropped"
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


class Gallery:
    """The SQLite embedding store at ``path`` (created on first use)."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=self.timeout)
        try:
            with self._errors("open"):
                self._prepare()
        except GalleryError:
            self._conn.close()
            raise

    # --- housekeeping -----------------------------------------------------------------------
    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite and file-system failures into one-line :class:`GalleryError` messages."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise GalleryError(
                    f"{self.path}: the gallery database is locked by another process "
                    f"(waited {self.timeout:g} s); stop it or try again"
                ) from None
            raise GalleryError(f"{self.path}: cannot {action} the gallery: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise GalleryError(
                f"{self.path}: not a usable gallery database ({exc}); move the file away and "
                "sync again to rebuild it from pre_images/"
            ) from None
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot {action} the gallery: {exc}") from None

    def _prepare(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema {version} is newer than this program's "
                f"({SCHEMA_VERSION}); upgrade facenet-attendance"
            )
        self._conn.execute("PRAGMA journal_mode=WAL")
        if version < SCHEMA_VERSION:
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- reading ------------------------------------------------------------------------------
    def load(self, model_id: str, dim: int | None = None) -> tuple[list[str], np.ndarray]:
        """``(labels, embeddings)`` of every stored crop for ``model_id``, sorted by identity.

        ``embeddings`` is float32 (N, dim); an empty gallery gives shape (0, ``dim`` or 0).
        """
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT identity, relpath, dim, vector FROM embeddings WHERE model_id = ? "
                "ORDER BY identity, relpath",
                (model_id,),
            ).fetchall()
        return [row[0] for row in rows], self._decode(model_id, rows, dim)

    def load_identity(
        self, model_id: str, name: str, dim: int | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(relpaths, embeddings)`` of one identity's crops for ``model_id``, by relpath.

        ``relpaths`` are relative to ``pre_images/`` (``"<Name>/0001.png"``); ``embeddings`` is
        float32 (N, dim), shape (0, ``dim`` or 0) when the person has no stored crops.
        """
        identity = validate_name(name)
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT identity, relpath, dim, vector FROM embeddings "
                "WHERE model_id = ? AND identity = ? ORDER BY relpath",
                (model_id, identity),
            ).fetchall()
        return [row[1] for row in rows], self._decode(model_id, rows, dim)

    def _decode(
        self, model_id: str, rows: Sequence[tuple[str, str, int, bytes]], dim: int | None
    ) -> np.ndarray:
        """The vectors of ``rows`` (identity, relpath, dim, blob) as float32 (N, dim)."""
        if not rows:
            return np.zeros((0, dim or 0), np.float32)
        dims = {row[2] for row in rows}
        if len(dims) != 1 or (dim is not None and dims != {dim}):
            raise GalleryError(
                f"{self.path}: embeddings of {model_id} have dimension {sorted(dims)}, "
                f"expected {dim}; sync the gallery again to rebuild them"
            )
        (width,) = dims
        for identity, relpath, _, blob in rows:
            if len(blob) != 4 * width:
                raise GalleryError(
                    f"{self.path}: the embedding of {relpath} ({identity}) is corrupt; "
                    "sync the gallery again to rebuild it"
                )
        vectors = np.frombuffer(b"".join(row[3] for row in rows), dtype="<f4")
        return vectors.reshape(len(rows), width).astype(np.float32)

    def data_version(self) -> int:
        """SQLite's change counter of this connection (``PRAGMA data_version``).

        It changes whenever *another* connection (in any process) has committed a change to
        the file since the previous call; this connection's own writes do not change it.
        """
        with self._errors("read"):
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def identities(self, model_id: str | None = None) -> dict[str, int]:
        """Stored identities with their number of crops (for one model id, or all)."""
        sql = "SELECT identity, COUNT(*) FROM embeddings"
        params: tuple[str, ...] = ()
        if model_id is not None:
            sql, params = sql + " WHERE model_id = ?", (model_id,)
        with self._errors("read"):
            rows = self._conn.execute(sql + " GROUP BY identity ORDER BY identity", params)
            return {name: count for name, count in rows.fetchall()}

    def model_ids(self) -> list[str]:
        """Every model id with stored embeddings."""
        with self._errors("read"):
            rows = self._conn.execute("SELECT DISTINCT model_id FROM embeddings ORDER BY 1")
            return [row[0] for row in rows.fetchall()]

    # --- writing ------------------------------------------------------------------------------
    def remove_identity(self, name: str) -> int:
        """Delete every embedding of identity ``name`` (all model ids); return how many.

        The crops themselves are not touched: while ``pre_images/<name>/`` exists, the next
        sync adds them back.
        """
        identity = validate_name(name)
        with self._errors("update"), self._conn:
            cursor = self._conn.execute("DELETE FROM embeddings WHERE identity = ?", (identity,))
        log.info("removed %d embeddings of %s from %s", cursor.rowcount, identity, self.path)
        return cursor.rowcount

    def sync(
        self,
        cfg: Config,
        embedder: EmbedderLike,
        names: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> SyncSummary:
        """Bring the stored embeddings for ``embedder.model_id`` in line with ``pre_images/``.

        ``names`` limits the work to those identities (a name whose folder is gone has its
        rows removed); ``None`` means everybody, and also drops rows of other model ids.
        ``progress``: show a tqdm bar (``None``: only on a terminal).
        """
        model_id = embedder.model_id
        summary = SyncSummary(model_id=model_id)
        scope = None if names is None else sorted({validate_name(n) for n in names})
        crops = _scan(Path(cfg.pre_images_dir), scope)
        stored = self._stored(model_id, scope)
        current: dict[str, _Crop] = {}
        for crop in crops:
            try:
                current[crop.relpath] = _hashed(crop, stored.get(crop.relpath, []))
            except OSError as exc:
                summary.skipped.append((crop.relpath, f"cannot read: {exc.strerror or exc}"))
        keep = {(c.relpath, c.sha256) for c in current.values()}
        valid = {(relpath, row[0]) for relpath, rows in stored.items() for row in rows if row[3]}
        stale = [
            (sha, relpath)
            for relpath, rows in stored.items()
            for (sha, *_rest) in rows
            if (relpath, sha) not in keep or (relpath, sha) not in valid
        ]
        todo = [c for c in current.values() if (c.relpath, c.sha256) not in valid]
        summary.unchanged = len(current) - len(todo)
        known = self._vectors(model_id, {c.sha256 for c in todo})  # renamed or copied crops
        reused = [c for c in todo if c.sha256 in known]
        todo = [c for c in todo if c.sha256 not in known]
        with self._errors("update"), self._conn:
            self._conn.executemany(
                "DELETE FROM embeddings WHERE model_id = ? AND sha256 = ? AND relpath = ?",
                [(model_id, sha, relpath) for sha, relpath in stale],
            )
            summary.removed = len(stale)
            summary.other_models = self._drop_other_models(model_id, scope)
            self._insert(
                model_id,
                reused,
                [known[c.sha256][0] for c in reused],
                [known[c.sha256][1] for c in reused],
            )
            summary.reused = len(reused)
        self._embed(cfg, embedder, todo, summary, progress)
        log.info("%s", summary)
        for relpath, reason in summary.skipped:
            log.warning("gallery: skipped %s: %s", relpath, reason)
        return summary

    def _stored(
        self, model_id: str, scope: list[str] | None
    ) -> dict[str, list[tuple[str, int, int, bool]]]:
        """relpath -> [(sha256, size, mtime_ns, intact)] of the rows for ``model_id`` in scope."""
        sql = (
            "SELECT relpath, sha256, size, mtime_ns, dim, length(vector) FROM embeddings "
            "WHERE model_id = ?"
        )
        params: list[str] = [model_id]
        if scope is not None:
            sql += f" AND identity IN ({','.join('?' * len(scope))})"
            params += scope
        out: dict[str, list[tuple[str, int, int, bool]]] = {}
        with self._errors("read"):
            for relpath, sha, size, mtime_ns, dim, length in self._conn.execute(sql, params):
                out.setdefault(relpath, []).append((sha, size, mtime_ns, length == 4 * dim))
        return out

    def _drop_other_models(self, model_id: str, scope: list[str] | None) -> int:
        sql = "DELETE FROM embeddings WHERE model_id != ?"
        params: list[str] = [model_id]
        if scope is not None:
            sql += f" AND identity IN ({','.join('?' * len(scope))})"
            params += scope
        return self._conn.execute(sql, params).rowcount

    def _vectors(self, model_id: str, shas: set[str]) -> dict[str, tuple[int, bytes]]:
        """sha256 -> (dim, vector) of intact stored embeddings with that content."""
        found: dict[str, tuple[int, bytes]] = {}
        wanted = sorted(shas)
        with self._errors("read"):
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                cursor = self._conn.execute(
                    "SELECT sha256, dim, vector FROM embeddings WHERE model_id = ? AND "
                    f"length(vector) = 4 * dim AND sha256 IN ({','.join('?' * len(chunk))})",
                    [model_id, *chunk],
                )
                for sha, dim, blob in cursor:
                    found[sha] = (dim, blob)
        return found

    def _insert(
        self, model_id: str, crops: Sequence[_Crop], dims: Iterable[int], blobs: Iterable[bytes]
    ) -> None:
        now = time.time()
        self._conn.executemany(
            "INSERT OR REPLACE INTO embeddings "
            "(sha256, model_id, relpath, identity, dim, vector, size, mtime_ns, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (c.sha256, model_id, c.relpath, c.identity, d, b, c.size, c.mtime_ns, now)
                for c, d, b in zip(crops, dims, blobs, strict=True)
            ],
        )

    def _embed(
        self,
        cfg: Config,
        embedder: EmbedderLike,
        todo: list[_Crop],
        summary: SyncSummary,
        progress: bool | None,
    ) -> None:
        """Embed ``todo`` in batches of ``cfg.embed_batch``, one transaction per batch."""
        if not todo:
            return
        from tqdm import tqdm

        from common.image_io import ImageReadError, read_image

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
                ok: list[_Crop] = []
                pixels: list[np.ndarray] = []
                for crop in batch:
                    try:
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
                    with self._errors("update"), self._conn:
                        self._insert(
                            summary.model_id,
                            ok,
                            [embedder.dim] * len(ok),
                            [v.tobytes() for v in vectors],
                        )
                    summary.embedded += len(ok)
                bar.update(len(batch))


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
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() != CROP_SUFFIX:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            if not path.is_file():
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


def _hashed(crop: _Crop, rows: list[tuple[str, int, int, bool]]) -> _Crop:
    """``crop`` with its sha256: taken from a stored row with the same size and mtime, else read."""
    for sha, size, mtime_ns, _intact in rows:
        if size == crop.size and mtime_ns == crop.mtime_ns:
            return dataclasses.replace(crop, sha256=sha)
    return dataclasses.replace(crop, sha256=sha256_file(crop.path))


def load_gallery(
    cfg: Config, embedder: EmbedderLike, progress: bool | None = None
) -> tuple[list[str], np.ndarray]:
    """Sync the gallery of workspace ``cfg`` for ``embedder``, then load it."""
    with Gallery(cfg.gallery_path, timeout=cfg.db_timeout_seconds) as gallery:
        gallery.sync(cfg, embedder, progress=progress)
        return gallery.load(embedder.model_id, dim=embedder.dim)


# --- watching for changes made by other processes ------------------------------------------------
def _file_identity(path: Path) -> tuple[int, int]:
    """(device, inode) of ``path``: a gallery moved away and rebuilt is another file."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


class GalleryWatcher:
    """Notices changes other processes make to the gallery file and reloads it, read-only.

    A running recogniser uses this to pick up people enrolled (or removed) meanwhile by the
    scanner or ``attendance remove``. :meth:`poll` costs nothing until ``interval`` seconds
    have passed since the previous check; then it compares SQLite's ``PRAGMA data_version``
    on a connection kept open for the purpose (it changes when any other connection, in any
    process, commits; WAL included) and the file's identity (a gallery moved away and rebuilt
    is a new file, which is then opened instead). Only when something changed does it read the
    stored embeddings of ``model_id`` with :meth:`Gallery.load`; nothing is embedded.

    A failed reload (a damaged file or vector, a file that vanished) is logged once and
    retried at the next check; the gallery loaded last stays in use meanwhile.
    """

    def __init__(
        self,
        path: str | Path,
        model_id: str,
        *,
        dim: int | None = None,
        timeout: float = 10.0,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.model_id = model_id
        self.dim = dim
        self.timeout = float(timeout)
        self.interval = float(interval)
        self._clock = clock
        self._gallery: Gallery | None = Gallery(self.path, timeout=self.timeout)
        try:
            self._file = _file_identity(self.path)
            self._version = self._gallery.data_version()
        except (OSError, GalleryError):
            self.close()
            raise
        self._pending = False  # a change was seen but not loaded yet
        self._problem: str | None = None  # the last warning, not repeated at every check
        self._missing = False  # the file was gone at the last check
        self._next_check = clock() + self.interval
        self.checks = 0  # how many times the file was actually looked at
        self.reloads = 0  # how many times new contents were returned

    def __enter__(self) -> GalleryWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the watching connection (idempotent)."""
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def poll(self) -> tuple[list[str], np.ndarray] | None:
        """``(labels, embeddings)`` as :meth:`Gallery.load` gives them, if the gallery changed
        since the last successful reload (and a check is due); else ``None``."""
        now = self._clock()
        if now < self._next_check or self._gallery is None:
            return None
        self._next_check = now + self.interval
        self.checks += 1
        try:
            if self._changed():
                self._pending = True
            if not self._pending:
                return None
            gallery = self._current()
            loaded = gallery.load(self.model_id, dim=self.dim)
            others = [] if loaded[0] else [m for m in gallery.model_ids() if m != self.model_id]
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
                self.path,
                self.model_id,
                ", ".join(others),
            )
        return loaded

    def _current(self) -> Gallery:
        if self._gallery is None:
            raise GalleryError(f"{self.path}: the gallery watcher is closed")
        return self._gallery

    def _changed(self) -> bool:
        """Did the file change (or get replaced) since the previous check?"""
        try:
            identity = _file_identity(self.path)
        except FileNotFoundError:
            if not self._missing:
                log.warning("%s is missing; the gallery loaded before stays in use", self.path)
            self._missing = True
            return False
        self._missing = False
        if identity != self._file:
            log.info("%s was replaced by a new file: reopening it", self.path)
            replacement = Gallery(self.path, timeout=self.timeout)
            try:
                version = replacement.data_version()
            except GalleryError:
                replacement.close()
                raise
            self.close()
            self._gallery, self._file, self._version = replacement, identity, version
            return True
        version = self._current().data_version()
        changed, self._version = version != self._version, version
        return changed

    def _warn(self, message: str) -> None:
        if message != self._problem:
            log.warning("%s", message)
        self._problem = message
